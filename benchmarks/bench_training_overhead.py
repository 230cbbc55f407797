"""Training-loop overhead: medtl's fit() against a bare torchvision loop, same model, batch and inputs, one run.

Both train ResNet-18 (1 input channel, 2 classes, random init) on the same in-memory tensors without
augmentation; medtl keeps its defaults otherwise (parameter groups and the lr schedule applied every step, gradient
clipping, class-weighted loss, the per-epoch bookkeeping). Epochs alternate between the two loops so that machine
noise hits both alike; the fastest epoch of each is compared.

    python benchmarks/bench_training_overhead.py --out benchmarks/results/training_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_task(root: Path, n: int, size: int):
    from medtl.contracts import PreprocessingSpec
    from medtl.training.data import TaskData

    rng = np.random.default_rng(0)
    rows = []
    (root / "t").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / "t" / f"{i}.npy", rng.random((1, size, size), dtype=np.float32))
        rows.append({"scan_id": f"X-{i:016x}", "patient_id": f"P-{i:016x}", "study_id": None, "label": str(i % 2),
                     "target": i % 2, "split": None, "modality": "DX", "tensor_path": f"t/{i}.npy"})  # fmt: skip
    spec = PreprocessingSpec(spatial_dims=2, target_shape=[size, size])
    return TaskData(root, pd.DataFrame(rows), ["0", "1"], "1", spec, "c" * 64, "d" * 64, "e" * 64)


def medtl_epoch(task, rows, device, batch: int) -> float:
    from medtl.models.factory import create_model
    from medtl.models.strategies import StrategyConfig, resolve_schedule
    from medtl.training.config import TrainConfig
    from medtl.training.data import TensorSet
    from medtl.training.loop import fit

    config = TrainConfig.model_validate(
        {"model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full"}, "arms": [], "epochs": 1,
         "batch_size": batch, "augmentation": {"enabled": False}, "early_stopping": {"min_epochs": 1}}
    )  # fmt: skip
    torch.manual_seed(0)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2)
    plans = resolve_schedule(StrategyConfig(name="full"), 1, built.stage_names)
    data = TensorSet(task, rows)
    start = time.perf_counter()
    fit(built, plans, data, None, config, device=device, positive=1, seed=0)
    return time.perf_counter() - start


def bare_epoch(task, rows, device, batch: int) -> float:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.to(device).train()
    tensors = torch.stack([torch.from_numpy(np.load(task.dataset / task.scans.tensor_path[i])) for i in rows])
    targets = torch.as_tensor(task.scans.target.to_numpy()[rows])
    loader = DataLoader(TensorDataset(tensors, targets), batch_size=batch, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for inputs, labels in loader:
        loss = nn.functional.cross_entropy(model(inputs.to(device)), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_overhead.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        task = make_task(Path(tmp), args.images, args.size)
        rows = np.arange(args.images)
        medtl_times, bare_times = [], []
        for _ in range(args.repeats):
            bare_times.append(bare_epoch(task, rows, device, args.batch_size))
            medtl_times.append(medtl_epoch(task, rows, device, args.batch_size))
    steps_images = (args.images // args.batch_size) * args.batch_size
    medtl_rate, bare_rate = steps_images / min(medtl_times), steps_images / min(bare_times)
    report = {
        "benchmark": "training_overhead",
        "machine": {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "settings": {
            "images": args.images,
            "input": [1, args.size, args.size],
            "batch_size": args.batch_size,
            "model": "resnet18, 1 channel, 2 classes",
            "repeats": args.repeats,
        },
        "images_per_s": {"medtl_fit": medtl_rate, "bare_torchvision_loop": bare_rate},
        "epoch_seconds": {"medtl_fit": medtl_times, "bare_torchvision_loop": bare_times},
        "ratio_medtl_vs_bare": medtl_rate / bare_rate,
        "target": ">= 0.9",
        "met": medtl_rate / bare_rate >= 0.9,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("images_per_s", "ratio_medtl_vs_bare", "met")}, indent=2))


if __name__ == "__main__":
    main()
