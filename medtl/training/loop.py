"""One model, one fold: the training loop with early stopping on the fold's own tuning patients.

What it guarantees: the returned weights are a copy taken at the best tuning epoch (not the last epoch); the
held-out patients are never seen here; every epoch's tuning AUC and elapsed seconds are recorded (the transfer
curves); an interrupted run resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, WeightedRandomSampler

from medtl.contracts.task import TaskKind
from medtl.errors import ConfigError
from medtl.models.heads import probabilities
from medtl.models.mirrored import mirrored_mean
from medtl.models.records import BuiltModel
from medtl.models.strategies import EpochPlan, set_bn_modes
from medtl.ranking import fast_auroc, macro_auroc, mean_finding_auroc
from medtl.training.config import TrainConfig
from medtl.training.data import TensorSet
from medtl.training.losses import class_weights, tuning_loss
from medtl.training.step import TrainStep, autocast_for

CHECKPOINT = "checkpoint.pt"


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]  # best weights, on the CPU
    best_epoch: int  # 1-based
    best_tune_auc: float | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    selection: str = "tune_auc"


def auc(
    targets: np.ndarray, probabilities: np.ndarray, positive: int | None, kind: TaskKind | None = None
) -> float | None:
    """The tuning and summary AUROC of any task type. Binary: AUROC of the positive class; multiclass and ordinal:
    macro one-vs-rest; multi-label: the mean of the per-finding AUROCs (findings with one value left out). None when
    it is undefined (one class only). The same functions as evaluation's (medtl.ranking)."""
    if kind == "multilabel" or (targets.ndim == 2 and kind is None):
        return mean_finding_auroc(targets, probabilities)
    if len(np.unique(targets)) < 2:
        return None
    if probabilities.shape[1] == 2:
        index = 1 if positive is None else positive
        return fast_auroc(targets == index, probabilities[:, index])
    present = np.unique(targets)
    if len(present) < probabilities.shape[1]:  # a small tuning set may miss a class: macro over those present
        return float(np.mean([fast_auroc(targets == k, probabilities[:, k]) for k in present]))
    return macro_auroc(targets, probabilities)


def lr_scale(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of every group's planned lr at optimizer step `step` (frozen groups stay at 0)."""
    if kind == "constant":
        return 1.0 if step >= warmup or warmup == 0 else (step + 1) / warmup
    if kind == "onecycle":
        peak = max(1, int(0.3 * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak
        progress = (step - peak) / max(1, total - peak)
        return 0.5 * (1 + math.cos(math.pi * progress)) + 1e-4
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one pass over `n_train` samples (the loader drops a last partial batch)."""
    return max(1, n_train // batch_size if n_train > batch_size else 1)


def schedule_length(config: TrainConfig, n_train: int) -> tuple[int, int]:
    """(epochs, optimiser steps) of one fit. A schedule given in steps keeps its step count on any hardware and
    for any fold size; the epoch count follows from it (the last epoch may stop part-way)."""
    per_epoch = steps_per_epoch(n_train, config.batch_size)
    if config.steps is None:
        return config.epochs, per_epoch * config.epochs
    return math.ceil(config.steps / per_epoch), config.steps


def tuning_interval(per_epoch: int, min_steps: int) -> int:
    """Epochs between predictions of the tuning patients: every epoch once an epoch has at least `min_steps`
    optimiser steps (the config's min_steps_between_tuning), else every few, and always after the last.

    Why: on a tiny set an epoch is 2-3 steps, and predicting the tuning patients after each took ~30% of the run.
    The curve has a record per prediction (its train_loss the mean since the one before); patience and min_epochs
    still count epochs, and a run stops early only on an epoch it predicted."""
    return max(1, math.ceil(min_steps / per_epoch))


def make_loader(data: TensorSet, config: TrainConfig, *, shuffle: bool, balance: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if balance:
        if data.targets.ndim == 2:
            raise ConfigError(
                "class_balance: sampler cannot balance a multi-label task (a scan carries several findings)",
                fix="use class_balance: weighted_loss (each finding weighted by its prevalence) or none",
            )
        weights = class_weights(data.targets, int(data.targets.max()) + 1)[data.targets]
        sampler = WeightedRandomSampler(weights.double(), num_samples=len(data), replacement=True, generator=generator)
    return DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=config.num_workers,
        drop_last=shuffle and len(data) > config.batch_size,
        pin_memory=torch.cuda.is_available() and not data.resident,
    )


def predict(
    model: nn.Module, data: TensorSet, *, device: torch.device, batch_size: int, flip_axes: Sequence[int] = ()
) -> np.ndarray:
    """Class (or finding) probabilities (N, K) in the dataset's row order, averaged over the mirror views of
    `flip_axes` (the artifact's prediction_flip_axes)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    batches = (inputs for inputs, _, _ in loader)
    return predict_batches(model, batches, data.task.kind, device=device, flip_axes=flip_axes)


@torch.no_grad()
def predict_batches(
    model: nn.Module, batches: Iterable[torch.Tensor], kind: TaskKind, *, device: torch.device,
    flip_axes: Sequence[int] = (),
) -> np.ndarray:  # fmt: skip
    """`predict` over batches of inputs; the planner's probe times this, the path every prediction takes."""
    model.eval()
    outputs = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with autocast_for(device):
            return probabilities(model(inputs), kind)

    for inputs in batches:
        outputs.append(mirrored_mean(forward, inputs.to(device, non_blocking=True), flip_axes).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0))


def begin_epoch(built: BuiltModel, step: TrainStep, plan: EpochPlan) -> None:
    """Training mode for the epoch's plan (BatchNorm of frozen stages stays in eval mode); the probe times it with
    each step, as on a tiny set every epoch is one step."""
    step.model.train()
    step.augmenter.train()
    set_bn_modes(built, plan)


def fit(
    built: BuiltModel,
    plans: list[EpochPlan],
    train: TensorSet,
    tune: TensorSet | None,
    config: TrainConfig,
    *,
    device: torch.device,
    positive: int | None,
    seed: int,
    workdir: Path | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train for up to `epochs` (default: the config's schedule); select the epoch with the best tuning AUC.

    Without a tuning set (the final refit) the last epoch is kept and no early stopping happens.
    """
    kind = train.task.kind
    step_once = TrainStep.build(
        built, plans[0], config, kind=kind, targets=train.targets, n_classes=len(train.task.classes),
        spatial_dims=train.task.spatial_dims, device=device,
    )  # fmt: skip
    model, optimizer, averaged = step_once.model, step_once.optimizer, step_once.averaged
    flip_axes = config.prediction_flip_axes(train.task.spatial_dims)
    for data in (train, tune):
        if data is not None:
            data.keep_on(device)
    loader = make_loader(train, config, shuffle=True, balance=config.class_balance == "sampler", seed=seed)
    per_epoch = max(1, len(loader))
    if epochs is None:
        epochs, total_steps = schedule_length(config, len(train))
    else:
        total_steps = per_epoch * epochs
    warmup = int(config.schedule.warmup_epochs * per_epoch)
    judged = averaged.module if averaged is not None else model  # what is tuned, predicted and returned
    state = _resume(workdir, model, optimizer, averaged) if workdir is not None else None
    start_epoch = state["epoch"] if state else 0
    best = state["best"] if state else {"auc": None, "loss": math.inf, "epoch": 0, "weights": None}
    curve: list[dict[str, Any]] = state["curve"] if state else []
    elapsed = curve[-1]["seconds"] if curve else 0.0
    stepping = (curve[-1].get("step_seconds") or 0.0) if curve else 0.0  # of `elapsed`, in optimiser steps
    stale = state["stale"] if state else 0
    if state:
        torch.set_rng_state(state["rng"])
    last_checkpoint = time.monotonic()
    tuned = tune is not None and len(tune) > 0
    every = tuning_interval(per_epoch, config.min_steps_between_tuning)
    losses: list[torch.Tensor] = []  # since the last record, on the device: read once per record, not per step
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        # Each epoch's shuffling depends on (seed, epoch) only, so a resumed run replays exactly the same batches.
        loader.generator.manual_seed(seed * 100_003 + epoch)
        plan = plans[min(epoch, len(plans) - 1)]
        begin_epoch(built, step_once, plan)
        for step, (inputs, targets, _) in enumerate(loader):
            global_step = epoch * per_epoch + step
            if global_step >= total_steps:  # a schedule in steps may end part-way through its last epoch
                break
            loss = step_once(inputs, targets, plan, lr_scale(global_step, total_steps, warmup, config.schedule.kind))
            losses.append(loss)  # reading it here would make the host wait for the GPU at every step
        wait_for_device(device)  # once an epoch: the steps' time is theirs, not the next prediction's
        stepping += time.perf_counter() - started
        if tuned and (epoch + 1) % every and epoch + 1 < epochs:  # no tuning prediction after this epoch
            elapsed += time.perf_counter() - started
            stale += 1  # epochs since the best, as patience counts them
            continue
        train_loss = float(torch.stack(losses).double().mean()) if losses else None
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss}
        losses = []
        if tuned:
            predicted = predict(judged, tune, device=device, batch_size=config.batch_size, flip_axes=flip_axes)
            record["tune_auc"] = auc(tune.targets.numpy(), predicted, positive, kind)
            record["tune_loss"] = tuning_loss(kind, torch.as_tensor(predicted), tune.targets)
        elapsed += time.perf_counter() - started
        record["seconds"] = round(elapsed, 3)
        record["step_seconds"] = round(stepping, 3)
        curve.append(record)
        improved = _improves(record, best, config.early_stopping.metric)
        if improved or tune is None:
            best = {
                "auc": record.get("tune_auc"),
                "loss": record.get("tune_loss", math.inf),
                "epoch": epoch + 1,
                "weights": {k: v.detach().to("cpu", copy=True) for k, v in judged.state_dict().items()},
            }
            stale = 0
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(record)
        finished = epoch + 1 == epochs or (
            tune is not None
            and epoch + 1 >= config.early_stopping.min_epochs
            and stale >= config.early_stopping.patience
        )
        if workdir is not None and (finished or time.monotonic() - last_checkpoint >= config.checkpoint_every_s):
            _checkpoint(workdir, model, optimizer, epoch + 1, best, curve, stale, averaged)
            last_checkpoint = time.monotonic()
        if finished:
            break
    if best["weights"] is None:  # no epoch ran (resumed after the end): the checkpointed model is the result
        best["weights"] = copy.deepcopy({k: v.cpu() for k, v in judged.state_dict().items()})
    return FitResult(
        state=best["weights"],
        best_epoch=best["epoch"],
        best_tune_auc=best["auc"],
        curve=curve,
        seconds=elapsed,
        stopped_early=bool(curve) and curve[-1]["epoch"] < epochs,
        selection=_selection(config, best, tune is not None),
    )


def _selection(config: TrainConfig, best: dict[str, Any], tuned: bool) -> str:
    if not tuned:
        return "last_epoch"
    return "tune_auc" if config.early_stopping.metric == "auc" and best["auc"] is not None else "tune_loss"


def _improves(record: dict[str, Any], best: dict[str, Any], metric: str = "auc") -> bool:
    """Higher tuning AUC wins; ties (and folds whose tuning set has one class) fall back to lower tuning loss."""
    if metric == "loss":
        return record.get("tune_loss", math.inf) < best["loss"]
    auc_now, auc_best = record.get("tune_auc"), best["auc"]
    if auc_now is not None and (auc_best is None or auc_now > auc_best + 1e-9):
        return True
    if auc_now is not None and auc_best is not None and abs(auc_now - auc_best) <= 1e-9:
        return record.get("tune_loss", math.inf) < best["loss"]
    if auc_now is None and auc_best is None:
        return record.get("tune_loss", math.inf) < best["loss"]
    return False


def _checkpoint(
    workdir: Path, model: nn.Module, optimizer, epoch: int, best, curve, stale: int, averaged: AveragedModel | None
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": best,
        "curve": curve,
        "stale": stale,
        "rng": torch.get_rng_state(),
        **({"averaged": averaged.state_dict()} if averaged is not None else {}),
    }
    tmp = workdir / (CHECKPOINT + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(workdir / CHECKPOINT)


def _resume(workdir: Path, model: nn.Module, optimizer, averaged: AveragedModel | None) -> dict[str, Any] | None:
    path = workdir / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)  # our own file, still never unpickled code
    if (averaged is not None) != ("averaged" in state):  # written under another recipe: start the fold again
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if averaged is not None:
        averaged.load_state_dict(state["averaged"])
    return state


def wait_for_device(device: torch.device) -> None:
    """Until the work queued on a GPU is done (CUDA runs asynchronously: a host clock read earlier times the
    queueing, not the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
