"""The empirical stage: a few candidate recipes compared by inner cross-validation on development patients.

Why on development patients only: the locked test side never chooses anything. Why short schedules and two folds:
the comparison must fit a share of the budget; it ranks recipes, it does not estimate their final performance
(the outer cross-validation and the locked test do that). The rule-based recipe wins ties and near-ties (within
`TIE_MARGIN`), so the search moves away from the rules only on a clear difference.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medtl.contracts.planning import Candidate
from medtl.training.config import TrainConfig
from medtl.training.cv import MAIN_ARM, ArmSpec, frame_targets, positive_index, run_fold
from medtl.training.data import TaskData
from medtl.training.loop import auc
from medtl.training.splits import make_splits

log = logging.getLogger(__name__)
INNER_FOLDS = 2
INNER_SEED_OFFSET = 7919  # inner folds differ from the outer ones drawn with the run's seed
TIE_MARGIN = 0.005


@dataclass
class Trial:
    name: str
    changes: dict[str, str]
    config: TrainConfig
    task: TaskData  # the task under the candidate's preprocessing (input size)


def inner_cv(trial: Trial, *, device: torch.device, workdir: Path) -> tuple[list[float | None], float]:
    """Held-out AUROC of each inner fold, and the seconds it took."""
    config, task = trial.config, trial.task
    splits = make_splits(
        task.scans,
        n_folds=INNER_FOLDS,
        tune_fraction=config.cv.tune_fraction,
        seed=config.seed + INNER_SEED_OFFSET,
        manifest_hash=task.manifest_hash,
        kind=task.kind,
    )
    arm = ArmSpec(MAIN_ARM, config.model, config.strategy)
    positive = positive_index(task)
    started = time.perf_counter()
    aucs: list[float | None] = []
    for fold in splits.folds:
        _, frame, _, _ = run_fold(task, splits, arm, fold.index, config, device=device, workdir=workdir)
        probabilities = frame[[f"p_{name}" for name in task.classes]].to_numpy()
        aucs.append(auc(frame_targets(task, frame), probabilities, positive, task.kind))
    return aucs, time.perf_counter() - started


def compare(trials: list[Trial], *, device: torch.device, deadline: float | None = None) -> list[Candidate]:
    """Every trial through the same inner folds; the first trial is the rules' recipe and wins near-ties.

    `deadline` (time.monotonic()): no further candidate starts after it, so a slower machine than the probe measured
    (or a busy one) shortens the comparison instead of eating the training's budget."""
    results: list[Candidate] = []
    for trial in trials:
        if results and deadline is not None and time.monotonic() > deadline:
            log.info("candidate %r not tried: the empirical stage used its share of the budget", trial.name)
            continue
        workdir = Path(tempfile.mkdtemp(prefix="medtl-plan-"))
        try:
            aucs, seconds = inner_cv(trial, device=device, workdir=workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        scored = [value for value in aucs if value is not None]
        log.info("candidate %r: inner AUROCs %s in %.0f s", trial.name, aucs, seconds)
        results.append(
            Candidate(
                name=trial.name,
                changes=trial.changes,
                inner_aucs=aucs,
                mean_auc=float(np.mean(scored)) if scored else None,
                seconds=round(seconds, 1),
                chosen=False,
            )
        )
    best = 0
    for index, candidate in enumerate(results):
        baseline = results[best].mean_auc
        if candidate.mean_auc is not None and (baseline is None or candidate.mean_auc > baseline + TIE_MARGIN):
            best = index
    results[best] = results[best].model_copy(update={"chosen": True})
    return results
