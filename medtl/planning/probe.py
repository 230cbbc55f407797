"""Seconds per optimiser step and per predicted image and batch, measured on this machine for one recipe and input
size.

Why measure rather than model: the cost of a step depends on kernels, threads and memory bandwidth that no table
predicts; a few steps on random tensors of the real shape take seconds and make the budget an estimate, not a
guess. What is timed is the training loop's own code: each step starts an epoch (training.loop.begin_epoch), draws
a collated batch and runs training.step.TrainStep (the recipe's augmentation, loss, clipping, parameter groups and
weight average), so on a tiny set, where every epoch is one step, the step costs what a fold's epoch costs.
Predictions go through training.loop.predict_batches, timed on one image and on a full batch to split a batch's
fixed cost from an image's. The first steps (allocation, kernel selection) are discarded; medians are kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from medtl.contracts.planning import Probe
from medtl.contracts.task import TaskKind, output_units
from medtl.models.factory import create_model_from_config
from medtl.models.strategies import resolve_schedule
from medtl.training.config import TrainConfig
from medtl.training.loop import begin_epoch, predict_batches, wait_for_device
from medtl.training.step import TrainStep

WARMUP_STEPS, MEASURED_STEPS = 2, 5
PREDICT_REPEATS = 3


def _median_seconds(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 0) -> float:
    timings = []
    for index in range(warmup + repeats):
        wait_for_device(device)
        started = time.perf_counter()
        run()
        wait_for_device(device)
        if index >= warmup:
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


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
    """Time training steps and predictions of `config`'s model, strategy and batch size on random inputs of
    `shape`."""
    built = create_model_from_config(
        {**config.model.model_dump(mode="json"), "weights": "none"},  # timing needs the architecture only
        in_channels=channels,
        num_classes=output_units(kind, n_classes),
        spatial_dims=len(shape),
    )
    batch_size = config.batch_size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand((batch_size, channels, *shape), generator=generator)
    targets = random_targets(kind, n_classes, batch_size, generator)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True, generator=generator)
    plan = resolve_schedule(config.strategy, 1, built.stage_names)[0]
    step = TrainStep.build(
        built, plan, config, kind=kind, targets=targets, n_classes=n_classes, spatial_dims=len(shape), device=device
    )

    def one_epoch_of_one_step() -> None:
        begin_epoch(built, step, plan)
        batch_inputs, batch_targets = next(iter(loader))
        float(step(batch_inputs, batch_targets, plan, 1.0))  # reading the loss waits for the step to finish

    seconds_per_step = _median_seconds(one_epoch_of_one_step, device, MEASURED_STEPS, warmup=WARMUP_STEPS)

    def predict(n: int) -> float:
        return _median_seconds(lambda: predict_batches(step.model, [inputs[:n]], kind, device=device), device,
                               PREDICT_REPEATS, warmup=1)  # fmt: skip

    full = predict(batch_size)
    one = predict(1) if batch_size > 1 else full
    per_image = (full - one) / (batch_size - 1) if batch_size > 1 else full
    per_image = max(per_image, full / batch_size / 4, 1e-7)  # noise can make the difference small or negative
    return Probe(
        input_shape=list(shape),
        batch_size=batch_size,
        seconds_per_step=max(seconds_per_step, 1e-6),
        seconds_per_image_predict=per_image,
        seconds_per_predict_batch=max(one - per_image, 0.0),
    )
