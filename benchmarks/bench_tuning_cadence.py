"""Tuning predictions on a tiny set: every few epochs (`min_steps_between_tuning`, default 16) against every epoch.

An epoch of 35 images at batch 16 is 2-3 optimiser steps; predicting the tuning patients (and its mirror view)
after each was a large share of a small run. Both arms run medtl's fit() on the same in-memory tensors with the
same schedule in steps, the default augmentation and flip-averaged predictions; only the key differs (1 = the
behaviour before it existed). Early stopping is off (patience past the schedule) so both train every step. Rounds
alternate which arm goes first; medians of the per-round time ratios with their range.

    python benchmarks/bench_tuning_cadence.py --out benchmarks/results/tuning_cadence.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_training_overhead import make_task


def timed_fit(task, train_rows, tune_rows, *, steps: int, batch: int, min_steps: int) -> tuple[float, int]:
    from medtl.models.factory import create_model
    from medtl.models.strategies import resolve_schedule
    from medtl.training.config import TrainConfig
    from medtl.training.data import TensorSet
    from medtl.training.loop import fit

    config = TrainConfig.model_validate(
        {"model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full", "lr": 1e-3}, "arms": [],
         "steps": steps, "batch_size": batch, "test_time_flips": True, "min_steps_between_tuning": min_steps,
         "early_stopping": {"patience": 10 * steps, "min_epochs": 1}}
    )  # fmt: skip
    torch.manual_seed(0)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2)
    plans = resolve_schedule(config.strategy, steps, built.stage_names)
    train, tune = TensorSet(task, train_rows), TensorSet(task, tune_rows)
    start = time.perf_counter()
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    return time.perf_counter() - start, len(result.curve)


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=35, help="training images")
    parser.add_argument("--tune", type=int, default=9, help="tuning images")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tuning_cadence.json"))
    args = parser.parse_args()

    task = make_task(Path(tempfile.mkdtemp(prefix="medtl-bench-cadence-")), args.train + args.tune, args.size)
    rows = np.arange(args.train + args.tune)
    train_rows, tune_rows = rows[: args.train], rows[args.train :]
    arms = {"every_epoch": 1, "cadence": 16}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    predictions: dict[str, int] = {}
    timed_fit(task, train_rows, tune_rows, steps=10, batch=args.batch_size, min_steps=1)  # warm-up, not counted
    for round_number in range(args.rounds):
        order = list(arms) if round_number % 2 == 0 else list(reversed(arms))
        for name in order:
            elapsed, records = timed_fit(
                task, train_rows, tune_rows, steps=args.steps, batch=args.batch_size, min_steps=arms[name]
            )
            seconds[name].append(elapsed)
            predictions[name] = records
        print(json.dumps({"round": round_number, **{k: round(v[-1], 2) for k, v in seconds.items()}}), flush=True)
    ratios = [c / e for c, e in zip(seconds["cadence"], seconds["every_epoch"], strict=True)]
    report = {
        "benchmark": "tuning_cadence",
        "settings": {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tuning_predictions": predictions,
        "seconds": {name: _spread(values) for name, values in seconds.items()},
        "ratio_cadence_vs_every_epoch": _spread(ratios),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "note": "medians over alternating rounds; compare the ratio, not absolute times (shared machines)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"predictions": predictions, "ratio": report["ratio_cadence_vs_every_epoch"]}))


if __name__ == "__main__":
    main()
