"""Training throughput with batched augmentation on the model's device vs. per-sample augmentation in CPU workers.

Three arms train the same model (torchvision resnet18, weights=None, 1 input channel, 2 classes; with --3d a
torchvision r3d_18 with a 1-channel, stride-2 MedicalNet-style stem) with the same batch size, input size, loader
(2 workers, pinned memory) and in-memory synthetic data:

  (a) gpu_batched           the loader yields preprocessed tensors; `BatchAugmenter` augments each whole batch on the
                            model's device inside the training step (what medtl's training loop does);
  (b) cpu_per_sample        the SAME augmenter, called on a batch of one inside `Dataset.__getitem__`, in the loader's
                            CPU workers (the usual torchvision / MONAI-dictionary-transform pipeline);
  (c) no_augmentation       reference: what the model and loader alone can do.

Warm-up steps (which also drain the loaders' prefetched batches) are excluded; a fixed number of steps is timed.
It also times the augmentation alone (a batch on the device vs. one sample at a time on one CPU thread, as in a
worker). Issue target: (a) >= 3x (b) on a GPU. With no CUDA it picks small sizes, so that it runs on a laptop CPU in
about a minute (the ratio there means little: model, augmentation and workers share the same cores).

It needs only torch, torchvision, numpy, pydantic and kornia: from medtl it imports `medtl.training.augment` alone.

    python benchmarks/bench_gpu_augmentation.py                   # 2D
    python benchmarks/bench_gpu_augmentation.py --3d              # 3D volumes
    python benchmarks/bench_gpu_augmentation.py --all --out X.json  # both, one JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing medtl
    sys.path.insert(0, str(REPO))

from medtl.training.augment import AugmentConfig, BatchAugmenter  # noqa: E402

TARGET_RATIO = 3.0
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_augmentation.json"

# sizes per (device kind, mode): n images, spatial size, batch, warm-up steps, timed steps
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cuda", "2d"): {"n": 512, "size": 224, "batch_size": 64, "warmup": 10, "steps": 40},
    ("cuda", "3d"): {"n": 128, "size": 64, "batch_size": 16, "warmup": 10, "steps": 30},
    ("cpu", "2d"): {"n": 64, "size": 64, "batch_size": 16, "warmup": 2, "steps": 6},
    ("cpu", "3d"): {"n": 16, "size": 32, "batch_size": 4, "warmup": 2, "steps": 4},
}


class InMemoryImages(Dataset):
    """Preprocessed tensors held in memory; optionally augmented one sample at a time (arm b)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augmenter: BatchAugmenter | None) -> None:
        self.images = images
        self.labels = labels
        self.augmenter = augmenter

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augmenter is not None:
            image = self.augmenter(image.unsqueeze(0)).squeeze(0)
        return image, self.labels[index]


def build_model(spatial_dims: int) -> nn.Module:
    import torchvision

    if spatial_dims == 2:
        model = torchvision.models.resnet18(weights=None, num_classes=2)
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model = torchvision.models.video.r3d_18(weights=None, num_classes=2)
        model.stem[0] = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_arm(
    arm: str,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    spatial_dims: int,
    augmenter: BatchAugmenter,
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
    workers: int,
    amp: bool,
    seed: int,
) -> float:
    """Images per second over `steps` training steps, after `warmup` steps."""
    torch.manual_seed(seed)
    in_worker = augmenter if arm == "cpu_per_sample" else None
    on_device = augmenter if arm == "gpu_batched" else None
    dataset = InMemoryImages(images, labels, in_worker)
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * (warmup + steps + 2))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    model = build_model(spatial_dims).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    batches = iter(loader)  # one epoch long enough for warm-up + timed steps: no epoch-boundary stalls

    def step() -> None:
        inputs, targets = next(batches)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if on_device is not None:
            inputs = on_device(inputs)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    return steps * batch_size / elapsed


def augment_only(
    augmenter: BatchAugmenter, images: torch.Tensor, device: torch.device, batch_size: int, repeats: int
) -> dict[str, float]:
    """Augmentation alone: a whole batch on the device vs. one sample at a time on one CPU thread (a worker's lot)."""
    batch = images[:batch_size].to(device)
    for _ in range(2):
        augmenter(batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        augmenter(batch)
    sync(device)
    batched = repeats * batch_size / (time.perf_counter() - start)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        samples = images[:batch_size]
        augmenter(samples[:1])
        start = time.perf_counter()
        for image in samples:
            augmenter(image.unsqueeze(0))
        per_sample = batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {"batched_on_device": batched, "per_sample_one_cpu_thread": per_sample}


def run_mode(mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    spatial_dims = 3 if mode == "3d" else 2
    sizes = dict(DEFAULTS[("cuda" if device.type == "cuda" else "cpu", mode)])
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    shape = (1,) + (sizes["size"],) * spatial_dims
    amp = device.type == "cuda" if args.amp is None else args.amp

    generator = torch.Generator().manual_seed(args.seed)
    images = torch.rand((sizes["n"], *shape), generator=generator)
    labels = torch.randint(0, 2, (sizes["n"],), generator=generator)
    config = AugmentConfig()
    augmenter = BatchAugmenter(config, spatial_dims=spatial_dims).train()
    common = {
        "images": images,
        "labels": labels,
        "spatial_dims": spatial_dims,
        "augmenter": augmenter,
        "device": device,
        "batch_size": sizes["batch_size"],
        "warmup": sizes["warmup"],
        "steps": sizes["steps"],
        "workers": args.workers,
        "amp": amp,
        "seed": args.seed,
    }
    throughput: dict[str, float] = {}
    for arm in ("no_augmentation", "gpu_batched", "cpu_per_sample"):
        throughput[arm] = run_arm(arm, **common)
        print(f"[{mode}] {arm:>16}: {throughput[arm]:8.1f} images/s", flush=True)
    alone = augment_only(augmenter, images, device, sizes["batch_size"], repeats=5)
    ratio = throughput["gpu_batched"] / throughput["cpu_per_sample"]
    print(
        f"[{mode}] ratio gpu_batched / cpu_per_sample = {ratio:.2f}x (target >= {TARGET_RATIO}x on a GPU); "
        f"augmentation alone: {alone['batched_on_device']:.0f} images/s batched on {device.type}, "
        f"{alone['per_sample_one_cpu_thread']:.0f} images/s per sample on one CPU thread",
        flush=True,
    )
    return {
        "mode": mode,
        "model": "resnet18 (1 channel, 2 classes)" if spatial_dims == 2 else "r3d_18 (1 channel, stride-2 stem)",
        "input_shape": list(shape),
        "n_images": sizes["n"],
        "batch_size": sizes["batch_size"],
        "warmup_steps": sizes["warmup"],
        "timed_steps": sizes["steps"],
        "loader_workers": args.workers,
        "amp_bf16": amp,
        "augment_config": config.model_dump(mode="json"),
        "images_per_s": throughput,
        "ratio_gpu_batched_vs_cpu_per_sample": ratio,
        "ratio_gpu_batched_vs_no_augmentation": throughput["gpu_batched"] / throughput["no_augmentation"],
        "augmentation_alone_images_per_s": alone,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }


def machine(device: torch.device) -> dict[str, Any]:
    import kornia
    import torchvision

    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kornia": kornia.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--3d", dest="three_d", action="store_true", help="volumes (1xSxSxS) with r3d_18")
    which.add_argument("--all", action="store_true", help="2D then 3D, both in one JSON")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--n", type=int, default=None, help="images held in memory")
    parser.add_argument("--size", type=int, default=None, help="spatial size per axis (224 / 64 on a GPU)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (also drain prefetched batches)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for every arm")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = ["2d", "3d"] if args.all else ["3d"] if args.three_d else ["2d"]
    result = {
        "benchmark": "gpu_augmentation",
        "machine": machine(device),
        "runs": [run_mode(mode, args, device) for mode in modes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
