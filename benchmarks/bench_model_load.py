"""Loading a trained network: medtl's build around the weights against the plain PyTorch route.

Scoring, evaluation and comparison load every fold network of an artifact. The plain route builds the network
(allocating and randomly initialising every parameter) and then copies the weights in with load_state_dict;
medtl's `rebuild_with_weights` builds it on the meta device and assigns the weights (medtl/models/factory.py).
The two networks must give the same outputs (checked every round); the ratio is the median over alternating
rounds, with min and max. Building on the meta device costs a little per operation, skipping the initialisation
saves in proportion to the parameters: networks of many small layers (DenseNet, EfficientNet) gain nothing or
lose a few hundredths of a second; the peak memory of a load is halved either way (no throwaway copy).

    python benchmarks/bench_model_load.py --rounds 7 --out benchmarks/results/model_load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reporting import machine, spread, write_report

from medtl.models.factory import create_model, rebuild_model, rebuild_with_weights

CASES = {
    "resnet18_3d": ("resnet18", 3, 16),
    "resnet18_2d": ("resnet18", 2, 32),
    "monai_resnet10_3d": ("monai_resnet10", 3, 16),
    "resnet50_2d": ("resnet50", 2, 32),
    "convnext_tiny_2d": ("convnext_tiny", 2, 32),
    "densenet121_2d": ("densenet121", 2, 32),
    "densenet121_3d": ("densenet121", 3, 32),
    "efficientnet_b0_2d": ("efficientnet_b0", 2, 32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_load.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for case, (backbone, dims, side) in CASES.items():
        trained = create_model(backbone, weights="none", in_channels=1, num_classes=2, spatial_dims=dims)
        spec = json.loads(json.dumps(trained.spec))
        weights = {name: tensor.clone() for name, tensor in trained.model.state_dict().items()}
        x = torch.randn(1, 1, *[side] * dims)
        seconds: dict[str, list[float]] = {"medtl": [], "plain": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            plain = rebuild_model(spec).model
            plain.load_state_dict(weights, strict=True)
            seconds["plain"].append(time.perf_counter() - started)
            started = time.perf_counter()
            ours = rebuild_with_weights(spec, weights)
            seconds["medtl"].append(time.perf_counter() - started)
            with torch.no_grad():
                if not torch.equal(plain.eval()(x), ours.eval()(x)):
                    raise SystemExit(f"{case}: the networks' outputs differ")
        ratios = [p / m for p, m in zip(seconds["plain"], seconds["medtl"], strict=True)]
        results[case] = {
            "parameters": sum(t.numel() for t in weights.values()),
            "seconds": {k: spread(v) for k, v in seconds.items()},
            "plain_over_medtl": spread(ratios),
        }
        shown = f"{statistics.median(ratios):.1f} ({min(ratios):.1f}-{max(ratios):.1f})"
        print(f"{case}: plain / medtl time {shown}, same outputs")
    report = {
        "benchmark": "model_load",
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "cases": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
