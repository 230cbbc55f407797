"""Incremental ingest: a re-run over an archive with 1% new series against ingesting those series alone.

A nightly run should cost what is new, not what the archive holds. The archive (small uncompressed CT-like series,
bench_ingest's writer) is ingested once; each round restores that dataset folder, writes 1% new series into the
archive and times three things in this process:

- `incremental`: `ingest_sources` over the whole archive into the restored folder (reads only the new files);
- `new_alone`: the new series alone into an empty folder (the floor: the same decode, QC, cache, preprocessing
  under the same spec, the archive's);
- `full_reread`: the whole archive into a restored folder with `incremental=False` (the behaviour before change
  detection: every file's header read and content hashed again, decodes served from the cache).

and, apart from a run, the listing a re-run starts with (walk and stat every file, the pool's workers started
beforehand): `listing_one_piece` (one worker walks all, as before the walk was split) against `listing_in_pieces`
(the walk cut into pieces over the workers, as a re-run does it).

    python benchmarks/bench_incremental.py --series 1000 --out benchmarks/results/incremental.json

With `--compare-with OTHER_CHECKOUT`, each round also re-runs the archive with this checkout and with the other,
each in a child process of its own (timed inside it, imports left out, with the ingest process's and its workers'
CPU time), in alternating order: a before/after comparison under the same load. `--compare-only` runs just those
two arms (more rounds in the same time).

Target (issue "Incremental"): incremental <= 3x new_alone. Archive files are dated an hour back, as an archive's
files are older than the run that reads them (files dated within 2 s of the last run's start are hashed again).
Times are medians over rounds with min and max; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from aside import SetAside
from bench_ingest import write_cohort

from medtl.contracts import PreprocessingSpec, read_json
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.execution import process_pool, start_workers
from medtl.ingest.incremental import merged_listing, submit_listing
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.worker import worker_count

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


def _age(root: Path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def _timed(sources: list[Path], out: Path, workers: int, **options) -> tuple[float, dict]:
    start = time.perf_counter()
    result = ingest_sources(sources, out=out, pseudonymizer=PSEUDO, workers=workers, **options)
    seconds = time.perf_counter() - start
    changes = result.report.changes
    return seconds, {"scans": result.fingerprint.n_scans, "files_read": changes.files_read if changes else None}


def _listing_seconds(archive: Path, workers: int, pieces: int) -> float:
    """Walk and stat the archive in `pieces` spread over a pool of started workers, as a re-run's listing does."""
    with process_pool(worker_count(workers)) as executor:
        start_workers(executor, worker_count(workers))
        start = time.perf_counter()
        futures = submit_listing(executor, [archive], PSEUDO, pieces)
        listed = merged_listing([archive], (future.result() for future in futures))
        seconds = time.perf_counter() - start
    assert len(listed) == sum(1 for path in archive.rglob("*") if path.is_file())
    return seconds


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from medtl.contracts import PreprocessingSpec, read_json
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources

def cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime

spec = read_json(PreprocessingSpec, Path(sys.argv[3]))
pseudonymizer = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
start, own, workers = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
ingest_sources([Path(sys.argv[1])], out=Path(sys.argv[2]), pseudonymizer=pseudonymizer, workers=int(sys.argv[4]),
               spec=spec)
print(json.dumps({"seconds": time.perf_counter() - start, "ingest_process_cpu": cpu(resource.RUSAGE_SELF) - own,
                  "workers_cpu": cpu(resource.RUSAGE_CHILDREN) - workers}))
"""


def _rerun_in_child(tree: Path, archive: Path, out: Path, spec_path: Path, workers: int) -> dict:
    """A re-run of the archive by the checkout at `tree`, in a process of its own, into `out` (a copy of the
    first ingest's folder)."""
    command = [sys.executable, "-c", _CHILD, str(archive), str(out), str(spec_path), str(workers)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=tree).stdout
    return json.loads(output.strip().splitlines()[-1])


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/incremental.json"))
    parser.add_argument("--series", type=int, default=1000, help="series in the archive")
    parser.add_argument("--new-percent", type=float, default=1.0)
    parser.add_argument("--slices", type=int, nargs=2, default=(3, 6), help="slices per series, from .. to")
    parser.add_argument("--size", type=int, default=64, help="rows = columns of each slice")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per CPU core")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--compare-with", type=Path, default=None, help="another checkout of medtl (see above)")
    parser.add_argument("--compare-only", action="store_true", help="with --compare-with: only the two re-run arms")
    parser.add_argument(
        "--delete-outputs",
        action="store_true",
        help="delete each run's output before the next run instead of setting it aside (benchmarks/aside.py)",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medtl-bench-incremental-"))
    archive, snapshot = workdir / "archive", workdir / "snapshot"
    shutil.rmtree(workdir / "archive", ignore_errors=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    started = time.perf_counter()
    write_cohort(archive, n_series=args.series, size=args.size, seed=0, slices=tuple(args.slices))
    _age(archive)
    n_files = sum(1 for _ in archive.rglob("*.dcm"))
    print(f"archive: {args.series} series, {n_files} files ({time.perf_counter() - started:.0f} s to write)")
    first_seconds, first = _timed([archive], snapshot, args.workers)
    print(f"first full ingest: {first_seconds:.1f} s")
    # every timed run uses the archive's spec, as scoring uses the artifact's: the new series alone do the same work
    spec = read_json(PreprocessingSpec, snapshot / "preprocessing.json")
    n_new = max(1, round(args.series * args.new_percent / 100))
    times: dict[str, list[float]] = {
        "incremental": [], "new_alone": [], "full_reread": [], "listing_one_piece": [], "listing_in_pieces": [],
    }  # fmt: skip
    details: list[dict] = []
    compared: dict[str, list[dict]] = {"this_checkout": [], "other_checkout": []}
    if args.compare_only and args.compare_with is None:
        parser.error("--compare-only needs --compare-with")
    # each run's folder moved away, not deleted, until the rounds are over (aside.py)
    with SetAside(workdir, delete=args.delete_outputs) as aside:
        for repeat in range(args.repeats):  # interleaved, so a noisy minute hits every method alike
            incoming = archive / f"incoming-{repeat}"
            write_cohort(incoming, n_series=n_new, size=args.size, seed=100 + repeat, slices=tuple(args.slices),
                         first=args.series + repeat * n_new)  # fmt: skip
            new_files = sum(1 for _ in incoming.rglob("*.dcm"))
            runs = {}
            if args.compare_with is not None:
                here, other = Path(__file__).resolve().parents[1], args.compare_with.resolve()
                arms = [("this_checkout", here), ("other_checkout", other)]
                for name, tree in arms if repeat % 2 == 0 else arms[::-1]:
                    target = workdir / f"{name}-{repeat}"
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(snapshot, target)
                    os.sync()
                    measured = _rerun_in_child(tree, archive, target, snapshot / "preprocessing.json", args.workers)
                    compared[name].append(measured)
                    runs[name] = measured
                    aside.put(target)
            for name in () if args.compare_only else ("incremental", "new_alone", "full_reread"):
                target = workdir / f"{name}-{repeat}"
                shutil.rmtree(target, ignore_errors=True)
                if name == "new_alone":
                    seconds, info = _timed([incoming], target, args.workers, spec=spec)
                else:
                    shutil.copytree(snapshot, target)
                    os.sync()  # the copy reaches the disk before the run, not during it
                    incremental = name == "incremental"
                    seconds, info = _timed([archive], target, args.workers, spec=spec, incremental=incremental)
                times[name].append(seconds)
                runs[name] = {"seconds": seconds, **info}
                aside.put(target)
            listings = (("listing_one_piece", 1), ("listing_in_pieces", 4 * worker_count(args.workers)))
            for name, pieces in () if args.compare_only else listings:
                times[name].append(_listing_seconds(archive, args.workers, pieces))
                runs[name] = {"seconds": times[name][-1]}
            details.append({"new_files": new_files, **runs})
            print(f"round {repeat + 1}: " + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in runs.items()))
            aside.put(incoming)  # out of the archive: the next round adds its own 1% to the same archive state
    report = {
        "benchmark": "incremental",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "archive": {"series": args.series, "files": n_files, "slices": list(args.slices), "size": args.size},
        "new": {"series": n_new, "percent": args.new_percent},
        "workers": args.workers,
        "outputs_between_runs": "deleted" if args.delete_outputs else "set aside (benchmarks/aside.py)",
        "first_full_ingest_seconds": first_seconds,
        "first_full_ingest": first,
        "rounds": details,
    }
    if not args.compare_only:
        report.update(_against_new_alone(times, details, n_files))
    if args.compare_with is not None:
        trees = {"this_commit": Path(__file__).resolve().parents[1], "other_commit": args.compare_with.resolve()}
        report["compared"] = {**{key: _commit(tree) for key, tree in trees.items()}, **_compared(compared)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {key: report[key] for key in ("ratios", "met") if key in report}
    if "compared" in report:
        summary["other_checkout_vs_this"] = report["compared"]["other_vs_this_seconds"]["median"]
    print(json.dumps(summary))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _against_new_alone(times: dict[str, list[float]], details: list[dict], n_files: int) -> dict:
    """The target's figures: a re-run against the new series alone, the re-read of everything before change
    detection, the listing in pieces against one piece, and what a kept and a new file cost."""
    ratio = [i / n for i, n in zip(times["incremental"], times["new_alone"], strict=True)]
    # what the target asks, per file: with 1% new, re-run / new alone ~ 1 + 99 x (a kept file's cost / a new one's)
    # each round's new series are set aside after it: every re-run kept the archive's n_files unread
    kept_us = [(i - n) / n_files * 1e6 for i, n in zip(times["incremental"], times["new_alone"], strict=True)]
    new_us = [n / d["new_files"] * 1e6 for n, d in zip(times["new_alone"], details, strict=True)]
    before = [f / i for f, i in zip(times["full_reread"], times["incremental"], strict=True)]
    pieces = [o / p for o, p in zip(times["listing_one_piece"], times["listing_in_pieces"], strict=True)]
    return {
        "seconds": {name: _spread(values) for name, values in times.items()},
        "ratios": {
            "incremental_vs_new_alone": _spread(ratio),
            "full_reread_vs_incremental": _spread(before),
            "listing_one_piece_vs_in_pieces": _spread(pieces),
        },
        "per_file_microseconds": {
            "kept_file_in_rerun": _spread(kept_us),  # (re-run - new alone) / files not read
            "new_file_alone": _spread(new_us),
            "note": "ratio ~ 1 + (kept files / new files) x kept_file_in_rerun / new_file_alone",
        },
        "target": {"incremental_vs_new_alone": "<= 3.0"},
        "met": {"incremental_vs_new_alone": float(np.median(ratio)) <= 3.0},
    }


def _commit(tree: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def _compared(compared: dict[str, list[dict]]) -> dict:
    """This checkout's re-runs against the other's, round by round (the same archive state and load)."""
    this, other = compared["this_checkout"], compared["other_checkout"]
    measures = ("seconds", "ingest_process_cpu", "workers_cpu")
    return {
        **{f"{arm}_{m}": _spread([run[m] for run in runs]) for arm, runs in compared.items() for m in measures},
        "other_vs_this_seconds": _spread([o["seconds"] / t["seconds"] for o, t in zip(other, this, strict=True)]),
        "other_vs_this_ingest_process_cpu": _spread(
            [o["ingest_process_cpu"] / t["ingest_process_cpu"] for o, t in zip(other, this, strict=True)]
        ),
    }


if __name__ == "__main__":
    main()
