"""Nightly scoring over a growing inbox: a re-run after 1% new patients against scoring those patients alone.

`medtl score` stages its inbox through ingest; with change detection the staging reads only new files, and rows
already in scores.parquet are not scored again. A tiny model is trained on a synthetic cohort (the model's cost is
not what is measured), an inbox of synthetic patients is scored once, and each round restores that output folder,
adds 1% new patients and times, in this process:

- `incremental`: `score` over the whole inbox into the restored folder;
- `new_alone`: `score` over the new patients alone into an empty folder;
- `full_reread`: the whole inbox into a restored folder whose staging state was removed (the behaviour before
  change detection: every inbox file read and hashed again; the scored rows are still skipped).

    python benchmarks/bench_incremental_scoring.py --patients 100 --out benchmarks/results/incremental_scoring.json
    python benchmarks/bench_incremental_scoring.py --sr --out benchmarks/results/incremental_scoring_sr.json

With `--sr` every arm also writes the DICOM SRs; a re-run builds only those of new or changed scans.

Target (issue "Incremental"): incremental <= 3x new_alone. Medians over rounds with min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tiny training settings the tests use
sys.path.insert(0, str(Path(__file__).parent))

from aside import SetAside  # noqa: E402
from bench_incremental import _age, _spread  # noqa: E402

from medtl.datasets.synth import make_cohort  # noqa: E402
from medtl.scoring.score import STAGING, score  # noqa: E402
from medtl.training.train import train  # noqa: E402
from support.trained import DEV_PSEUDONYMIZER, ingested_cohort, signing_key, tiny_config  # noqa: E402


def _timed(artifact: Path, sources: list[Path], out: Path, *, sr: bool) -> tuple[float, int]:
    start = time.perf_counter()
    result = score(artifact, sources, out=out, pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True, sr=sr)
    return time.perf_counter() - start, result.scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/incremental_scoring.json"))
    parser.add_argument("--patients", type=int, default=100, help="patients in the inbox")
    parser.add_argument("--new-percent", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sr", action="store_true", help="also write a DICOM SR per scored series (each arm)")
    parser.add_argument(
        "--delete-outputs",
        action="store_true",
        help="delete each run's output before the next run instead of setting it aside (benchmarks/aside.py)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medtl-bench-incremental-scoring-"))
    try:
        # each run's folder set aside, not deleted, until the rounds are over (aside.py)
        with signing_key(work / "key.pem"), SetAside(work, delete=args.delete_outputs) as aside:
            dataset = ingested_cohort(work, "dev", patients=8, seed=41, difficulty=0.0)
            train(dataset, tiny_config(epochs=1, early_stopping={"patience": 1, "min_epochs": 1}), work / "artifact")
            make_cohort(work / "night", patients=args.patients, seed=42)
            inbox, snapshot = work / "inbox", work / "snapshot"
            shutil.copytree(work / "night" / "dicom", inbox / "base")
            _age(inbox)
            n_files = sum(1 for path in inbox.rglob("*") if path.is_file())
            first_seconds, first_scored = _timed(work / "artifact", [inbox], snapshot, sr=args.sr)
            print(f"inbox: {args.patients} patients, {n_files} files; first run {first_seconds:.1f} s")
            n_new = max(1, round(args.patients * args.new_percent / 100))
            times: dict[str, list[float]] = {"incremental": [], "new_alone": [], "full_reread": []}
            rounds = []
            for repeat in range(args.repeats):
                make_cohort(work / f"new-{repeat}", patients=max(2, n_new), seed=100 + repeat)  # 2 at least
                incoming = inbox / f"new-{repeat}"
                for folder in sorted((work / f"new-{repeat}" / "dicom").iterdir())[:n_new]:
                    shutil.copytree(folder, incoming / folder.name)
                runs = {}
                for name in ("incremental", "new_alone", "full_reread"):
                    target = work / f"{name}-{repeat}"
                    shutil.rmtree(target, ignore_errors=True)
                    if name == "new_alone":
                        seconds, scored = _timed(work / "artifact", [incoming], target, sr=args.sr)
                    else:
                        shutil.copytree(snapshot, target)
                        if name == "full_reread":
                            (target / STAGING / "ingest_state.json").unlink()
                        seconds, scored = _timed(work / "artifact", [inbox], target, sr=args.sr)
                    times[name].append(seconds)
                    runs[name] = {"seconds": seconds, "scored": scored}
                    aside.put(target)
                rounds.append(runs)
                print(f"round {repeat + 1}: " + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in runs.items()))
                aside.put(incoming)  # out of the inbox: the next round adds its own new patients
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = [i / n for i, n in zip(times["incremental"], times["new_alone"], strict=True)]
    before = [f / i for f, i in zip(times["full_reread"], times["incremental"], strict=True)]
    report = {
        "benchmark": "incremental_scoring",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "inbox": {"patients": args.patients, "files": n_files, "scans_first_run": first_scored},
        "new": {"patients": n_new, "percent": args.new_percent},
        "sr": args.sr,
        "outputs_between_runs": "deleted" if args.delete_outputs else "set aside (benchmarks/aside.py)",
        "first_run_seconds": first_seconds,
        "seconds": {name: _spread(values) for name, values in times.items()},
        "rounds": rounds,
        "ratios": {"incremental_vs_new_alone": _spread(ratio), "full_reread_vs_incremental": _spread(before)},
        "target": {"incremental_vs_new_alone": "<= 3.0"},
        "met": {"incremental_vs_new_alone": float(np.median(ratio)) <= 3.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": {k: v["median"] for k, v in report["ratios"].items()}, "met": report["met"]}))


if __name__ == "__main__":
    main()
