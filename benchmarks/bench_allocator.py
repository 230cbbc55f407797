"""Array work in a process whose allocator a Dask nanny tuned (`MALLOC_TRIM_THRESHOLD_=65536`), with and without
`medtl.io.allocator.heap_for_arrays`, against the same work in an untuned process.

Three workloads, each in child processes started with and without the variable (interleaved rounds):
  preprocess   medtl's preprocessing of 64 x 64 x 20 CT-like stacks to a 32 x 32 x 16 tensor (what a decode
               batch does per series after decoding)
  train_steps  ResNet-18 training steps on the CPU, batch 64 of 28 x 28 images (a fold on a CPU Dask worker)
Reported per workload: seconds tuned / untuned, and tuned inside heap_for_arrays / untuned (median of rounds with
min and max). Run:

    python benchmarks/bench_allocator.py --out benchmarks/results/allocator.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from medtl.io.allocator import heap_for_arrays

    workload, inside = sys.argv[1], sys.argv[2] == "heap"

    def preprocess():
        from medtl.contracts import PreprocessingSpec
        from medtl.ingest.preprocess import preprocess_array
        spec = PreprocessingSpec(spatial_dims=3, target_shape=[32, 32, 16], target_spacing=[2.0, 2.0, 2.5])
        rng = np.random.default_rng(0)
        stacks = [rng.integers(-1000, 2000, size=(64, 64, 20)).astype(np.float32) for _ in range(8)]
        affine = np.diag([1.0, 1.0, 2.5, 1.0])
        def run():
            for _ in range(25):
                for stack in stacks:
                    preprocess_array(stack, affine, spec)
        return run

    def train_steps():
        import torch, torchvision
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=2)
        model.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 2, (64,))
        def run():
            for _ in range(8):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimiser.step()
        return run

    run = {"preprocess": preprocess, "train_steps": train_steps}[workload]()
    run()  # warm-up: imports, first allocations
    start = time.perf_counter()
    if inside:
        with heap_for_arrays():
            run()
    else:
        run()
    print(json.dumps({"seconds": time.perf_counter() - start}))
    """
)


def _child(workload: str, *, tuned: bool, inside: bool) -> float:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    if tuned:
        environment["MALLOC_TRIM_THRESHOLD_"] = "65536"  # a Dask nanny's default for its workers
    done = subprocess.run(  # this interpreter, a fixed script
        [sys.executable, "-c", _CHILD, workload, "heap" if inside else "plain"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def _spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/allocator.json"))
    args = parser.parse_args()
    arms = {"untuned": (False, False), "tuned": (True, False), "tuned_heap_for_arrays": (True, True)}
    results = {}
    for workload in ("preprocess", "train_steps"):
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):  # interleaved: a noisy minute hits every arm alike
            for name, (tuned, inside) in arms.items():
                seconds[name].append(_child(workload, tuned=tuned, inside=inside))
        base = np.array(seconds["untuned"])
        results[workload] = {
            "seconds": {name: _spread(values) for name, values in seconds.items()},
            "tuned_vs_untuned": _spread(list(np.array(seconds["tuned"]) / base)),
            "tuned_heap_for_arrays_vs_untuned": _spread(list(np.array(seconds["tuned_heap_for_arrays"]) / base)),
        }
        print(workload, {k: round(v["median"], 2) for k, v in results[workload].items() if k != "seconds"})
    report = {
        "benchmark": "allocator",
        "tuning": "MALLOC_TRIM_THRESHOLD_=65536 (a Dask nanny's default)",
        "workloads": results,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": "child processes per arm and round, interleaved; medians with min-max; compare ratios only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
