"""Training-step time with and without the one-position convolution shortcut (medtl/models/single_position.py).

The same network built by medtl (ResNet-18, random init), the same batch and the same fused AdamW, trained once
with medtl's convolutions (the shortcut) and once with the stock PyTorch convolutions (the baseline, everything
else equal). Arms alternate within each round, each going first in every other round, so machine noise hits both
alike; each round times `--steps` steps per arm after warm-up steps. Reported: the median seconds per step over
rounds with min and max, and the per-round ratio baseline / shortcut (speed-up). Shapes: the sizes where a
ResNet's last stage has one position (28 px 2D, 28^3 3D) and one where it has not (64 px: 2 x 2, where nothing
should change).

    python benchmarks/bench_single_position.py --out benchmarks/results/single_position.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest_scale import _spread

from medtl.models.factory import create_model
from medtl.models.single_position import without_single_position_shortcut
from medtl.training.step import adamw

CASES = {  # name: (spatial dims, side, batch) as the planner sets them for such data
    "2d_28px_batch16": (2, 28, 16),
    "3d_28cube_batch8": (3, 28, 8),
    "2d_64px_batch32": (2, 64, 32),
}


def _seconds_per_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int) -> float:
    optimiser = adamw(model.parameters(), lr=1e-4)
    loss = nn.CrossEntropyLoss()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        optimiser.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/single_position.json"))
    args = parser.parse_args()
    results = {}
    for name, (dims, side, batch) in CASES.items():
        torch.manual_seed(0)
        built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=dims)
        arms = {
            "shortcut": built.model.train(),
            "stock_convolution": without_single_position_shortcut(built.model).train(),
        }
        x = torch.randn(batch, 1, *(side,) * dims)
        y = torch.arange(batch) % 2
        with torch.no_grad():
            same = torch.allclose(arms["shortcut"](x), arms["stock_convolution"](x), atol=1e-4)
        seconds: dict[str, list[float]] = {arm: [] for arm in arms}
        for round_number in range(args.rounds):
            order = list(arms) if round_number % 2 == 0 else list(reversed(arms))  # neither arm always goes first
            for arm in order:
                seconds[arm].append(_seconds_per_step(arms[arm], x, y, args.steps, args.warmup))
        speedup = [b / a for a, b in zip(seconds["shortcut"], seconds["stock_convolution"], strict=True)]
        results[name] = {
            "spatial_dims": dims, "side": side, "batch": batch, "same_outputs": bool(same),
            "seconds_per_step": {arm: _spread(values) for arm, values in seconds.items()},
            "speedup_stock_over_shortcut": _spread(speedup),
        }  # fmt: skip
        print(json.dumps({name: {"speedup": results[name]["speedup_stock_over_shortcut"]["median"]}}), flush=True)
    report = {
        "benchmark": "single_position",
        "machine": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "settings": {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "backbone": "resnet18"},
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
