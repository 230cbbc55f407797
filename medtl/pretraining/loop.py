"""The pretraining loop: epochs over the unlabelled pool, with resume, progress and a time budget.

Resume: a checkpoint (model, objective head, optimiser, curve, schedule, elapsed time, random state) is written at
most every `checkpoint_every_s` seconds, at an epoch's end; a run started again with the same inputs continues from
the last one. Each epoch's order is drawn from (seed, epoch), so a resumed run sees the same order it would have.

Time budget: the first epoch is timed; when the configured epochs would not fit the budget, the cosine schedule is
shortened to the epochs that fit (so the learning rate still decays to its end rather than stopping mid-schedule),
and the record says so. A run also stops at an epoch's end when the next epoch would cross the budget.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medtl.contracts.pretraining import PretrainEpoch
from medtl.progress import Progress
from medtl.training.loop import lr_scale
from medtl.training.step import adamw, autocast_for

log = logging.getLogger(__name__)
CHECKPOINT = "pretrain_checkpoint.pt"


@dataclass
class LoopState:
    epochs_scheduled: int
    epochs_done: int = 0
    steps: int = 0
    elapsed: float = 0.0
    curve: list[PretrainEpoch] = field(default_factory=list)
    stopped_by: str = "epochs"


def _fit_to_budget(state: LoopState, configured: int, budget: float, seconds: float) -> None:
    """Size the schedule to the time budget from the epochs measured so far.

    The first epoch carries one-off costs (allocator growth, cuDNN autotuning, lazy initialisation: on an H200 it took
    1.8 times as long as the next), so the schedule is sized after it and sized again after the second, which may
    give back epochs the first took away; with the default warm-up of two epochs, both fall inside it, so the cosine
    schedule is set before it starts to decay. Later epochs only stop the run when the next would overrun the budget.
    """
    if state.epochs_done <= 2:
        remaining = max(0.0, budget - state.elapsed)
        fitting = min(configured, state.epochs_done + math.floor(remaining / max(seconds, 1e-9)))
        fitting = max(fitting, state.epochs_done)
        if fitting != state.epochs_scheduled:
            log.info("time budget: the schedule is %d epochs (was %d)", fitting, state.epochs_scheduled)
            state.epochs_scheduled = fitting
        state.stopped_by = "time_budget" if fitting < configured else "epochs"
    elif state.epochs_done < state.epochs_scheduled and state.elapsed + seconds > budget:
        state.epochs_scheduled = state.epochs_done
        state.stopped_by = "time_budget"


def _save(workdir: Path, method: nn.Module, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    payload = {
        "method": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epochs_scheduled": state.epochs_scheduled,
        "epochs_done": state.epochs_done,
        "steps": state.steps,
        "elapsed": state.elapsed,
        "curve": [epoch.model_dump() for epoch in state.curve],
        "rng": torch.get_rng_state(),
    }
    temporary = workdir / (CHECKPOINT + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(workdir / CHECKPOINT)


def _resume(workdir: Path, method: nn.Module, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    path = workdir / CHECKPOINT
    if not path.exists():
        return
    saved = torch.load(path, map_location="cpu", weights_only=True)  # our own file; still never unpickles code
    method.load_state_dict(saved["method"])
    optimizer.load_state_dict(saved["optimizer"])
    state.epochs_scheduled = int(saved["epochs_scheduled"])
    state.epochs_done = int(saved["epochs_done"])
    state.steps = int(saved["steps"])
    state.elapsed = float(saved["elapsed"])
    state.curve = [PretrainEpoch(**epoch) for epoch in saved["curve"]]
    torch.set_rng_state(saved["rng"])
    log.info("resuming pretraining after epoch %d of %d", state.epochs_done, state.epochs_scheduled)


def run_loop(method: nn.Module, data: Any, config: Any, *, device: torch.device, workdir: Path,
             progress: bool = False) -> LoopState:  # fmt: skip
    """Optimise `method` (its forward returns the loss of a batch) on `data`; `config` is the PretrainConfig."""
    method.to(device).train()
    trained = [p for p in method.parameters() if p.requires_grad]
    optimizer = adamw(trained, lr=config.lr, weight_decay=config.weight_decay)
    state = LoopState(epochs_scheduled=config.epochs)
    _resume(workdir, method, optimizer, state)
    batch_size = min(config.batch_size, len(data))
    per_epoch = max(1, len(data) // batch_size)
    budget = config.time_budget_minutes * 60 if config.time_budget_minutes else None
    use_amp = config.amp == "auto"
    last_saved = time.monotonic()
    with Progress(progress) as bar:
        while state.epochs_done < state.epochs_scheduled:
            epoch = state.epochs_done + 1
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
                                num_workers=config.num_workers, pin_memory=device.type == "cuda")  # fmt: skip
            total_steps = state.epochs_scheduled * per_epoch
            warmup = int(config.warmup_epochs * per_epoch)
            started, losses = time.perf_counter(), []
            for batch in loader:
                scale = lr_scale(state.steps, total_steps, warmup, "cosine")
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * scale
                with autocast_for(device, use_amp):
                    loss = method(batch.to(device, non_blocking=True))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"pretraining loss became {loss.item()} at epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                state.steps += 1
                losses.append(float(loss.detach()))
            seconds = time.perf_counter() - started
            state.elapsed += seconds
            state.epochs_done = epoch
            record = PretrainEpoch(
                epoch=epoch,
                loss=sum(losses) / len(losses),
                lr=config.lr * lr_scale(max(0, state.steps - 1), total_steps, warmup, "cosine"),
                seconds=round(seconds, 3),
                samples_per_second=round(len(losses) * batch_size / seconds, 2) if seconds > 0 else 0.0,
            )
            state.curve.append(record)
            bar.update(f"pretraining epoch {epoch}/{state.epochs_scheduled}, loss {record.loss:.4f}", epoch,
                       state.epochs_scheduled)  # fmt: skip
            if budget is not None:
                _fit_to_budget(state, config.epochs, budget, seconds)
            due = time.monotonic() - last_saved >= config.checkpoint_every_s
            if due or state.epochs_done == state.epochs_scheduled:
                _save(workdir, method, optimizer, state)
                last_saved = time.monotonic()
    if config.time_budget_minutes and state.epochs_scheduled < config.epochs:
        state.stopped_by = "time_budget"
    return state
