"""Folds side by side (`concurrent_folds: N`) against one at a time, through `medtl.training.train`, on a MedMNIST
set: the same config, data and seed, so the same folds; the wall time of each run and the out-of-fold predictions of
both (they must agree: speed only).

    python benchmarks/bench_concurrent_folds.py breastmnist --concurrent 2 --folds 2 --steps 60     # a 2-core CPU
    python benchmarks/bench_concurrent_folds.py pneumoniamnist --concurrent 4 --folds 5 --steps 400 # one GPU

The baseline is medtl's own sequential run (what every run did before): the runs alternate, one pair per round, and
the ratio is reported per round (median and spread), since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_medmnist_quality import fold_time, prepare, run_header, signing_key

from medtl.training.config import TrainConfig
from medtl.training.train import train


def config(args: argparse.Namespace, concurrent: int) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"backbone": args.backbone, "weights": "none"},
            "strategy": {"name": "full", "lr": 1e-3},
            "arms": [],
            "steps": args.steps,
            "batch_size": args.batch,
            "cv": {"n_folds": args.folds},
            "early_stopping": {"patience": 10_000, "min_epochs": 1},  # every fold runs its whole schedule
            "seed": args.seed,
            "concurrent_folds": concurrent,
        }
    )


def timed_run(dataset: Path, out: Path, cfg: TrainConfig) -> tuple[float, pd.DataFrame, dict]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = train(dataset, cfg, out)
    seconds = time.perf_counter() - started
    oof = pd.read_parquet(out / "predictions" / "oof.parquet").sort_values(["fold", "scan_id"])
    main = next(entry for entry in result.indicators if entry["arm"] == "main")
    return seconds, oof.reset_index(drop=True), main


def summary(args: argparse.Namespace, rounds: list[dict]) -> dict:
    speedups = [entry["speedup"] for entry in rounds]
    threads = torch.get_num_threads()
    same_arithmetic = torch.cuda.is_available() or max(1, threads // args.concurrent) == threads
    return {
        **run_header("concurrent_folds", args),
        "rounds": rounds,
        "speedup": {"median": statistics.median(speedups), "min": min(speedups), "max": max(speedups)},
        "cpu_threads": {"sequential": threads, "each_concurrent_fold": max(1, threads // args.concurrent)},
        # On a CPU with fewer threads per process the sums run in another order, and training amplifies that: the
        # predictions are then not expected to agree (tests/training/test_concurrent_folds.py checks equality at
        # equal thread counts). On a GPU the kernels are the same either way.
        "same_predictions": (
            max(entry["max_oof_probability_difference"] for entry in rounds) < 1e-3 if same_arithmetic else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--concurrent", type=int, default=2, help="folds side by side")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per fold")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--limit", type=int, default=None, help="images per split")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/concurrent_folds.json"))
    args = parser.parse_args()
    args.source = None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medtl-concurrent-"))
    workdir.mkdir(parents=True, exist_ok=True)
    signing_key(workdir)
    dataset = prepare(args.dataset, workdir, args.size, args.limit)
    rounds = []
    for number in range(args.rounds):
        order = [1, args.concurrent] if number % 2 == 0 else [args.concurrent, 1]
        runs = {width: timed_run(dataset, workdir / f"run-{width}", config(args, width)) for width in order}
        (sequential, first, one), (side_by_side, second, many) = runs[1], runs[args.concurrent]
        rounds.append({
            "order": order, "sequential_seconds": round(sequential, 2), "concurrent_seconds": round(side_by_side, 2),
            "speedup": sequential / side_by_side, "oof_auc": [one["oof_auc"], many["oof_auc"]],
            "fold_time": [fold_time(one["folds"]), fold_time(many["folds"])],  # steps vs whole epochs, per run
            "max_oof_probability_difference": float(np.abs(first.probability - second.probability).max()),
        })  # fmt: skip
        print(json.dumps(rounds[-1]), flush=True)
        report = summary(args, rounds)
        report["rounds_planned"] = args.rounds  # written after every round: a time limit keeps the rounds done
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("speedup", "same_predictions")}, indent=2))


if __name__ == "__main__":
    main()
