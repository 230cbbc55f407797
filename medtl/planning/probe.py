"""Seconds per optimiser step and per predicted image, measured on this machine for one network and input size.

Why measure rather than model: the cost of a step depends on kernels, threads and memory bandwidth that no table
predicts; a few steps on random tensors of the real shape take seconds and make the budget an estimate, not a
guess. The first steps (allocation, kernel selection) are discarded; the median of the rest is kept.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from medtl.contracts.planning import Probe
from medtl.models.factory import create_model_from_config
from medtl.training.augment import AugmentConfig, BatchAugmenter
from medtl.training.loop import adamw

WARMUP_STEPS, MEASURED_STEPS = 2, 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def probe(
    model: dict[str, Any],
    *,
    augmentation: dict[str, Any],
    shape: list[int],
    channels: int,
    n_classes: int,
    batch_size: int,
    device: torch.device,
) -> Probe:
    """Time training steps (batch augmentation included, as in the loop) and a prediction pass of `model` (a
    ModelConfig mapping) on random inputs of `shape`."""
    built = create_model_from_config(
        {**model, "weights": "none"},  # timing needs the architecture only; weights were checked already
        in_channels=channels,
        num_classes=n_classes,
        spatial_dims=len(shape),
    )
    net = built.model.to(device)
    optimiser = adamw(net.parameters(), lr=1e-4)  # the training loop's own optimiser
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand((batch_size, channels, *shape), generator=generator).to(device)
    targets = torch.randint(0, n_classes, (batch_size,), generator=generator).to(device)
    augmenter = BatchAugmenter(AugmentConfig.model_validate(augmentation), spatial_dims=len(shape)).to(device)
    net.train()
    timings = []
    for step in range(WARMUP_STEPS + MEASURED_STEPS):
        _sync(device)
        started = time.perf_counter()
        loss = nn.functional.cross_entropy(net(augmenter(inputs)), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        _sync(device)
        if step >= WARMUP_STEPS:
            timings.append(time.perf_counter() - started)
    net.eval()
    with torch.no_grad():
        _sync(device)
        started = time.perf_counter()
        net(inputs)
        _sync(device)
        predict = (time.perf_counter() - started) / batch_size
    return Probe(
        input_shape=list(shape),
        batch_size=batch_size,
        seconds_per_step=max(statistics.median(timings), 1e-6),
        seconds_per_image_predict=max(predict, 1e-7),
    )
