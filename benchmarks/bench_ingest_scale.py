"""Ingest at scale, on a synthetic archive (`medtl synth-archive`: CT and MR, five transfer syntaxes, bad files):
medtl against a bare pydicom read of the same files, and the ingest flow on a local Dask cluster against local
worker processes, with the same manifest asserted for every medtl arm.

Two phases, each of interleaved rounds (drift in machine load hits all arms of a phase alike), each run a full
ingest into a new folder:
  phase 1, nothing else running:
    pydicom_1, pydicom_N   the bare read: `dcmread` + `pixel_array` + `numpy.stack`, series by series, in 1 and N
                           forked processes (largest series first, as medtl orders them); unreadable files skipped
    local_1, local_N       ingest_sources with 1 and N worker processes (the library, no Prefect)
    child_1, child_N       with --compare-with OTHER_CHECKOUT: this checkout's ingest in a child process (timed
    before_1, before_N     inside it, imports left out, with its own and its workers' CPU time) and the other's
  phase 2, with a Prefect server and Dask clusters up (as at a site; their start-up is recorded apart):
    dask_1, dask_N         the ingest flow on a running Dask LocalCluster of 1 and N worker processes (one thread
                           each); the flow's own process reads headers and preprocesses with N processes
    flow_N                 the same flow on its default task runner: N local worker processes decode (a flow run's
                           own fixed costs: its API calls and the end of its heartbeat thread, up to 1 s)
    local_N                again, under the same background load as the Dask arms
A warm-up round per phase is not counted (first imports, the file cache). Every arm's manifest (sorted by scan
id) must equal the first's, and every file's outcome the archive's expected.csv. Reported: medians over rounds with
min and max; medtl over the bare read with the same number of processes; parallel efficiency t1 / (N x tN) for
medtl and for the bare read; Dask throughput over local and over the same flow on local processes.

    python benchmarks/bench_ingest_scale.py --series 400 --workers 2 --out benchmarks/results/ingest_scale.json
"""

from __future__ import annotations

import argparse
import contextlib
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
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from aside import SetAside


def _spread(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "rounds": [round(v, 3) for v in values]}  # fmt: skip


def _fates(dataset: Path) -> dict[str, tuple[str, str]]:
    from medtl.contracts import read_json
    from medtl.contracts.ingest import IngestReport

    report = read_json(IngestReport, dataset / "ingest_report.json")
    index = pd.read_csv(dataset / "private" / "source_index.csv")
    names = dict(zip(index.file_id, index.relative_path, strict=True))
    return {names[record.file_id]: (record.status, record.reason_code or "") for record in report.files}


def _bare_series(folder: Path) -> int:
    """The bare read of one series folder: every file through pydicom, stacked; files pydicom refuses skipped."""
    import pydicom

    arrays = []
    for path in sorted(folder.iterdir()):
        try:
            arrays.append(pydicom.dcmread(path).pixel_array)
        except Exception:  # the archive's bad files: a bare loop can only skip them
            continue
    if len({array.shape for array in arrays}) == 1:
        return int(np.stack(arrays).shape[0])
    return len(arrays)


def _bare(folders: list[Path], workers: int) -> int:
    import pydicom  # noqa: F401  (imported before forking, as medtl is)

    if workers <= 1:
        return sum(_bare_series(folder) for folder in folders)
    from multiprocessing import get_context

    with get_context("fork").Pool(workers) as pool:
        return sum(pool.imap_unordered(_bare_series, folders))


def _series_folders(source: Path) -> list[Path]:
    """Folders holding files, largest first (by bytes), as medtl orders its series."""
    sizes: dict[Path, int] = {}
    for path in source.rglob("*"):
        if path.is_file():
            sizes[path.parent] = sizes.get(path.parent, 0) + path.stat().st_size
    return sorted(sizes, key=lambda folder: sizes[folder], reverse=True)


_CHILD = """
import json, resource, sys, time
from pathlib import Path
from medtl.identity import pseudonymizer_from_env
from medtl.ingest.pipeline import ingest_sources

def cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime

pseudonymizer = pseudonymizer_from_env(allow_development_key=True)
start, own, workers = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
ingest_sources([Path(sys.argv[1])], out=Path(sys.argv[2]), pseudonymizer=pseudonymizer, workers=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - start, "ingest_process_cpu": cpu(resource.RUSAGE_SELF) - own,
                  "workers_cpu": cpu(resource.RUSAGE_CHILDREN) - workers}))
"""


class ChildTimes(dict):
    """What a child-process arm measured itself: seconds, ingest_process_cpu, workers_cpu. A type of its own, so
    that an arm whose run returns some other dict (the ingest flow's summary) is timed from outside as usual."""


def _in_child(tree: Path, source: Path, workers: int):
    """The ingest of the checkout at `tree`, in a process of its own: timed inside it (imports left out), with the
    CPU time of the ingest process and of its workers."""

    def run(out: Path) -> ChildTimes:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, "-c", _CHILD, str(source), str(out), str(workers)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=tree).stdout
        return ChildTimes(json.loads(output.strip().splitlines()[-1]))

    return run


def _rounds(
    arms: dict,
    args: argparse.Namespace,
    work: Path,
    aside: SetAside,
    check,
    cpu: dict[str, list[dict]] | None = None,
) -> dict[str, list[float]]:
    """Warm-up rounds, then counted ones; every arm once per round, in order, each into a new folder, set aside
    after it (aside.py: deleting it would slow the next arm's file creation). An arm that times itself (a child
    process: `_in_child`) returns its seconds and CPU times, kept in `cpu`."""
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for round_number in range(args.warmup + args.rounds):
        for name, run in arms.items():
            out = work / f"{name}-{round_number}"
            start = time.perf_counter()
            timed = run(out)
            elapsed = timed["seconds"] if isinstance(timed, ChildTimes) else time.perf_counter() - start
            if round_number >= args.warmup:
                seconds[name].append(elapsed)
                if isinstance(timed, ChildTimes) and cpu is not None:
                    cpu.setdefault(name, []).append(timed)
            check(name, out)
            aside.put(out)
        print(json.dumps({"round": round_number, "seconds": {k: round(v[-1], 3) for k, v in seconds.items() if v}}),
              flush=True)  # fmt: skip
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--slices", type=int, nargs=2, default=[8, 24])
    parser.add_argument("--workers", type=int, default=2, help="N: worker processes of the parallel arms")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first in each phase and not counted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dask", action="store_true", help="phase 1 only (no Prefect server, no Dask)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest_scale.json"))
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="another checkout of medtl (e.g. a worktree of the previous commit): phase 1 also runs its ingest and "
        "this one's, each in a child process, in the same interleaved rounds (before/after under the same load)",
    )
    parser.add_argument(
        "--delete-outputs",
        action="store_true",
        help="delete each arm's output before the next arm instead of setting it aside (benchmarks/aside.py: on "
        "ext4 without a journal this slows the next ingest's file creation)",
    )
    args = parser.parse_args()

    from medtl.datasets.synth.archive import SOURCE, ArchiveOptions, iter_expected, make_archive
    from medtl.identity import pseudonymizer_from_env
    from medtl.ingest.pipeline import ingest_sources

    work = Path(tempfile.mkdtemp(prefix="medtl-bench-ingest-scale-"))
    n = args.workers
    options = ArchiveOptions(series=args.series, seed=args.seed, slices=tuple(args.slices), matrix=args.matrix)
    start = time.perf_counter()
    summary = make_archive(work / "archive", options, workers=n)
    synth_seconds = time.perf_counter() - start
    source = work / "archive" / SOURCE
    size_mb = sum(path.stat().st_size for path in source.rglob("*") if path.is_file()) / 1e6
    expected = {row["relative_path"]: (row["status"], row["reason_code"]) for row in iter_expected(work / "archive")}
    pseudonymizer = pseudonymizer_from_env(allow_development_key=True)
    folders = _series_folders(source)
    reference: list[pd.DataFrame] = []
    ingest_seconds: dict[str, list[float]] = {}  # per arm and round, warm-up included: the report's own wall time

    def check(name: str, out: Path) -> None:
        if name.startswith("pydicom"):
            return
        report = json.loads((out / "ingest_report.json").read_text())
        ingest_seconds.setdefault(name, []).append(report["timings"]["wall_seconds"])
        manifest = pd.read_parquet(out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
        if not reference:
            reference.append(manifest)
            assert _fates(out) == expected, "ingest did not meet expected.csv"
        pd.testing.assert_frame_equal(manifest, reference[0])  # the same manifest, row for row

    def local(workers: int):
        return lambda out: ingest_sources([source], out=out, pseudonymizer=pseudonymizer, workers=workers)

    def bare(workers: int):
        return lambda out: _bare(folders, workers)

    phase1 = {"pydicom_1": bare(1), f"pydicom_{n}": bare(n), "local_1": local(1), f"local_{n}": local(n)}
    if args.compare_with is not None:
        here = Path(__file__).resolve().parent.parent
        for workers in (1, n):
            phase1[f"child_{workers}"] = _in_child(here, source, workers)
            phase1[f"before_{workers}"] = _in_child(args.compare_with.resolve(), source, workers)
    cpu: dict[str, list[dict]] = {}
    start_up: dict[str, float] = {}
    with SetAside(work, delete=args.delete_outputs) as aside:
        seconds = _rounds(phase1, args, work, aside, check, cpu)
        if not args.no_dask:
            seconds.update(_dask_phase(args, work, aside, source, local(n), check, start_up))
    per_round = {name: np.array(values) for name, values in seconds.items()}
    median = {name: float(np.median(values)) for name, values in seconds.items()}
    ratios = {
        "medtl_vs_pydicom_same_processes_time": _spread(list(per_round[f"local_{n}"] / per_round[f"pydicom_{n}"])),
        "medtl_1_vs_pydicom_1_time": _spread(list(per_round["local_1"] / per_round["pydicom_1"])),
        "parallel_efficiency_local": _spread(list(per_round["local_1"] / (n * per_round[f"local_{n}"]))),
        "parallel_efficiency_pydicom": _spread(list(per_round["pydicom_1"] / (n * per_round[f"pydicom_{n}"]))),
    }
    if args.compare_with is not None:
        for workers in (1, n):
            ratios[f"speedup_over_before_{workers}"] = _spread(
                list(per_round[f"before_{workers}"] / per_round[f"child_{workers}"])
            )
            for kind in ("ingest_process_cpu", "workers_cpu"):
                for arm in (f"child_{workers}", f"before_{workers}"):
                    ratios[f"{kind}_seconds_{arm}"] = _spread([run[kind] for run in cpu[arm]])
    if not args.no_dask:
        ratios["parallel_efficiency_dask"] = _spread(list(per_round["dask_1"] / (n * per_round[f"dask_{n}"])))
        ratios["dask_throughput_vs_local"] = _spread(list(per_round[f"local_{n}_beside_dask"] / per_round[f"dask_{n}"]))
        # the same flow with local worker processes: what the Dask route costs beyond a flow run's own fixed costs
        ratios["dask_throughput_vs_flow"] = _spread(list(per_round[f"flow_{n}"] / per_round[f"dask_{n}"]))
        ratios["flow_vs_library_time"] = _spread(list(per_round[f"flow_{n}"] / per_round[f"local_{n}_beside_dask"]))
        # inside the flow, from each run's ingest_report.json (`timings.wall_seconds`: start of ingest to the report):
        # without the flow run's fixed costs, whose end Prefect's heartbeat thread rounds up to a whole second
        inner = {name: np.array(values[-args.rounds :]) for name, values in ingest_seconds.items()}
        ratios["dask_vs_flow_ingest_time"] = _spread(list(inner[f"dask_{n}"] / inner[f"flow_{n}"]))
        ratios["parallel_efficiency_dask_ingest"] = _spread(list(inner["dask_1"] / (n * inner[f"dask_{n}"])))
    archive = {"series": args.series, "files": summary.files, "megabytes": round(size_mb, 1), "matrix": args.matrix,
               "slices": args.slices, "counts": summary.counts, "transfer_syntaxes": summary.syntaxes,
               "scans": len(reference[0])}  # fmt: skip
    report = {
        "benchmark": "ingest_scale",
        "archive": archive,
        "synth_seconds": round(synth_seconds, 2),
        "synth_files_per_s": round(summary.files / synth_seconds, 1),
        "workers": n,
        "start_up": start_up,
        "seconds": {name: _spread(values) for name, values in seconds.items()},
        "ingest_report_wall_seconds": {
            name: _spread(values[-args.rounds :]) for name, values in ingest_seconds.items() if name in seconds
        },
        "files_per_s_median": {name: round(summary.files / value, 1) for name, value in median.items()},
        "ratios": ratios,
        "targets": {"medtl_vs_pydicom_same_processes_time": "<= 1.2", "parallel_efficiency_local": ">= 0.8"},
        "same_manifest_all_arms": True,
        "outputs_between_arms": "deleted" if args.delete_outputs else "set aside (benchmarks/aside.py)",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": "medians over interleaved rounds (min-max); ratios per round; phase 1 (bare read and local ingest) "
        "with nothing else running, phase 2 (Dask arms and local_N again) with a Prefect server and the Dask "
        "clusters up, started once before its rounds (start_up); one warm-up round per phase not counted; shared "
        "machine: compare ratios only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("archive", "files_per_s_median", "ratios")}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def _dask_phase(
    args, work: Path, aside: SetAside, source: Path, local_n, check, start_up: dict
) -> dict[str, list[float]]:
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.ingest import IngestParameters, ingest_flow
    from pipelines.runners import on_dask
    from pipelines.server import local_prefect_server

    n = args.workers

    def as_flow(flow, workers: int):
        return lambda out: flow(IngestParameters(sources=[source], out=out, workers=workers,
                                                 allow_development_key=True))  # fmt: skip

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(local_prefect_server(work / "prefect-home"))
        os.environ["PREFECT_API_URL"] = url  # Dask worker processes read it from the environment
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        arms = {f"local_{n}_beside_dask": local_n, f"flow_{n}": as_flow(ingest_flow, n)}
        for workers in sorted({1, n}):
            start = time.perf_counter()
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))  # fmt: skip
            start_up[f"dask_{workers}_cluster_s"] = round(time.perf_counter() - start, 2)
            arms[f"dask_{workers}"] = as_flow(on_dask(ingest_flow, address=cluster.scheduler_address), workers)
        return _rounds(arms, args, work, aside, check)


if __name__ == "__main__":
    main()
