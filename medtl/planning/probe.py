"""Seconds per optimiser step and per predicted image, measured on this machine for one recipe and input size.

Why measure rather than model: the cost of a step depends on kernels, threads and memory bandwidth that no table
predicts; a few steps on random tensors of the real shape take seconds and make the budget an estimate, not a
guess. The step timed is the training loop's own (training.step.TrainStep: the recipe's augmentation, loss,
clipping, parameter groups and weight average), so what is measured is what a fold runs. The first steps
(allocation, kernel selection) are discarded; the median of the rest is kept.
"""

from __future__ import annotations

import statistics
import time

import torch

from medtl.contracts.planning import Probe
from medtl.contracts.task import TaskKind, output_units
from medtl.models.factory import create_model_from_config
from medtl.models.strategies import resolve_schedule, set_bn_modes
from medtl.training.config import TrainConfig
from medtl.training.step import TrainStep, autocast_for

WARMUP_STEPS, MEASURED_STEPS = 2, 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_targets(kind: TaskKind, n_classes: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Targets of the shape and type the task's loss takes: findings (0/1 per class) or one class index."""
    if kind == "multilabel":
        return torch.randint(0, 2, (batch_size, n_classes), generator=generator).float()
    return torch.randint(0, n_classes, (batch_size,), generator=generator)


def probe(
    config: TrainConfig,
    *,
    shape: list[int],
    channels: int,
    n_classes: int,
    kind: TaskKind,
    device: torch.device,
) -> Probe:
    """Time training steps and a prediction pass of `config`'s model, strategy and batch size on random inputs of
    `shape`."""
    built = create_model_from_config(
        {**config.model.model_dump(mode="json"), "weights": "none"},  # timing needs the architecture only
        in_channels=channels,
        num_classes=output_units(kind, n_classes),
        spatial_dims=len(shape),
    )
    batch_size = config.batch_size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand((batch_size, channels, *shape), generator=generator).to(device)
    targets = random_targets(kind, n_classes, batch_size, generator).to(device)
    plan = resolve_schedule(config.strategy, 1, built.stage_names)[0]
    step = TrainStep.build(
        built, plan, config, kind=kind, targets=targets, n_classes=n_classes, spatial_dims=len(shape), device=device
    )
    step.model.train()
    set_bn_modes(built, plan)
    timings = []
    for index in range(WARMUP_STEPS + MEASURED_STEPS):
        _sync(device)
        started = time.perf_counter()
        float(step(inputs, targets, plan, 1.0))  # the loop reads each loss, which waits for the step
        if index >= WARMUP_STEPS:
            timings.append(time.perf_counter() - started)
    step.model.eval()
    with torch.no_grad(), autocast_for(device, step.amp):
        _sync(device)
        started = time.perf_counter()
        step.model(inputs)
        _sync(device)
        predict = (time.perf_counter() - started) / batch_size
    return Probe(
        input_shape=list(shape),
        batch_size=batch_size,
        seconds_per_step=max(statistics.median(timings), 1e-6),
        seconds_per_image_predict=max(predict, 1e-7),
    )
