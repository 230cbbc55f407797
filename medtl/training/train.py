"""`medtl train`: dataset + config -> a sealed, verifiable model artifact (the library entry point)."""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtl.contracts.lineage import Lineage
from medtl.contracts.training import Splits
from medtl.errors import ConfigError
from medtl.hashing import sha256_json
from medtl.outputs import staged_folder
from medtl.progress import Progress
from medtl.timing import time_and_budget
from medtl.training.concurrent import fold_width, train_concurrently
from medtl.training.config import SPEED_ONLY, TrainConfig
from medtl.training.cv import (
    MAIN_ARM,
    FoldOutcome,
    arm_specs,
    build,
    fold_finished,
    refit,
    run_cv,
    run_fold,
    seed_everything,
    transfer_indicators,
)
from medtl.training.data import TaskData, load_task
from medtl.training.fractions import run_label_efficiency
from medtl.training.lineage import check_lineage, lineage_of
from medtl.training.package import run_record, signing_key_for, write_artifact
from medtl.training.splits import resolve_splits

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    artifact: Path
    manifest_hash: str
    indicators: list[dict[str, Any]]
    run: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"artifact: {self.artifact} (manifest sha256 {self.manifest_hash[:16]}...)"]
        if self.run:
            wall, budget = time_and_budget(self.run["wall_seconds"], self.run.get("budget_seconds"))
            verdict = (f" of a {budget} budget: " + ("met" if self.run["met_budget"] else "EXCEEDED")) if budget else ""
            lines.append(f"wall time {wall}{verdict}")
        for entry in self.indicators:
            value = entry["oof_auc"]
            lines.append(
                f"  {entry['arm']:<13} out-of-fold AUROC {value:.3f}"
                if value is not None
                else f"  {entry['arm']}: no AUROC"
            )
        return "\n".join(lines)


def choose_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available", fix="use device: auto or cpu")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


@dataclass
class TrainingPlan:
    """Everything decided before the first epoch: the task, the split, the arms, where work in progress goes."""

    dataset: Path
    config: TrainConfig
    out: Path
    task: TaskData
    splits: Splits
    device: torch.device
    workdir: Path
    started: datetime
    lineage: Lineage
    fold_width: int = 1  # folds trained side by side (config.concurrent_folds, `auto` resolved for this machine)

    @property
    def units(self) -> list[tuple[str, int]]:
        """(arm, fold) pairs, the unit a Prefect task trains."""
        return [(arm.name, fold.index) for arm in arm_specs(self.config) for fold in self.splits.folds]


def check_preconditions(config: TrainConfig, out: Path) -> None:
    """What can be checked before reading any data (and before planning, which may itself take minutes)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"the artifact folder {out.name} already exists and is not empty", fix="choose a new --out")
    signing_key_for(config.allow_unsigned)


def prepare_training(dataset: Path, config: TrainConfig, out: Path) -> TrainingPlan:
    """Validate inputs, select the task, resolve (or create and persist) the split; no training yet."""
    out = Path(out)
    check_preconditions(config, out)  # every precondition before any work: a free --out, the key that will seal ...
    started = datetime.now(UTC)
    seed_everything(config.seed)
    torch.use_deterministic_algorithms(config.deterministic, warn_only=False)
    device = choose_device(config.device)
    task = load_task(dataset, config.task, config.preprocessing)
    built = build(task, arm_specs(config)[0], config.seed)  # ... and the pretrained weights, found and checked now
    splits, _ = resolve_splits(
        task.scans,
        dataset=dataset,
        n_folds=config.cv.n_folds,
        tune_fraction=config.cv.tune_fraction,
        seed=config.seed,
        manifest_hash=task.manifest_hash,
        splits_file=config.cv.splits_file,
        kind=task.kind,
    )
    lineage = lineage_of(config.model)  # what the starting weights learnt from: never a locked-test patient
    check_lineage(lineage, splits.locked_test, who="the model to be trained")
    workdir = out.with_name(out.name + ".work")
    claim_workdir(workdir, sha256_json({"manifest": task.manifest_hash, "splits": splits.model_dump(mode="json"),
                                         "config": config.model_dump(mode="json", exclude=SPEED_ONLY)}))  # fmt: skip
    width = _fold_width(config, device, task, sum(p.numel() for p in built.model.parameters()))
    return TrainingPlan(Path(dataset), config, out, task, splits, device, workdir, started, lineage, width)


def _fold_width(config: TrainConfig, device: torch.device, task: TaskData, parameters: int) -> int:
    image = task.in_channels * math.prod(task.spec.target_shape)
    return fold_width(config.concurrent_folds, device, parameters=parameters, data_bytes=4 * image * len(task.scans),
                      batch_voxels=image * config.batch_size, cores=os.cpu_count() or 1)  # fmt: skip


def claim_workdir(workdir: Path, identity: str) -> None:
    """Completed folds are resumed only for the same data, split and config: a work folder left by a run on other
    inputs is discarded (it holds checkpoints only; nothing sealed), never silently mixed into this run. A folder of
    that name that a training run did not make (no stamp) is someone else's: refused, never deleted."""
    stamp = workdir / "plan.sha256"
    if workdir.exists() and not stamp.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise ConfigError(
            f"{workdir.name} exists and was not made by a medtl training run; training keeps its checkpoints there",
            where=str(workdir),
            fix="move that folder away (medtl never deletes what it did not make), or choose another --out",
        )
    if stamp.exists() and stamp.read_text(encoding="utf-8").strip() != identity:
        log.warning("discarding %s: it was left by a training run on other data, split or config", workdir.name)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(identity + "\n", encoding="utf-8")


def train_unit(plan: TrainingPlan, arm_name: str, fold_index: int) -> FoldOutcome:
    """Train one arm on one fold (or read it back when it finished before); the result stays in the work folder."""
    arm = next(a for a in arm_specs(plan.config) if a.name == arm_name)
    outcome, _, _, _ = run_fold(
        plan.task, plan.splits, arm, fold_index, plan.config, device=plan.device, workdir=plan.workdir
    )
    return outcome


def _units_left(plan: TrainingPlan) -> list[tuple[str, int]]:
    """The network folds not finished yet (the features arm fits in seconds, once per run: it stays in run_cv)."""
    networks = {arm.name for arm in arm_specs(plan.config) if arm.strategy is not None}
    return [(arm, fold) for arm, fold in plan.units if arm in networks and not fold_finished(plan.workdir, arm, fold)]


def finish_training(plan: TrainingPlan, *, flow_run_id: str | None = None, progress: bool = False) -> TrainResult:
    """Every fold not trained yet, then the final model, the artifact and its seal; the work folder goes last."""
    config, task, splits = plan.config, plan.task, plan.splits
    with Progress(progress) as bar:
        if plan.fold_width > 1:  # trained side by side first; run_cv then reads them back
            train_concurrently(train_unit, plan, _units_left(plan), plan.fold_width, bar.update)
        results, oof = run_cv(task, splits, config, device=plan.device, workdir=plan.workdir, progress=bar.update)
        efficiency = run_label_efficiency(
            task, splits, config, oof, device=plan.device, workdir=plan.workdir,
            progress=partial(bar.update, key="label efficiency"),
        )  # fmt: skip
    indicators = transfer_indicators(results, oof, task)
    main = next(r for r in results if r.arm.name == MAIN_ARM)
    main_arm = arm_specs(config)[0]
    final_state, final_epochs = None, None
    if config.final_model == "refit":
        final_epochs = max(1, int(np.median([f.best_epoch for f in main.folds])))
        final_state, final_built = refit(
            task, splits, main_arm, config, epochs=final_epochs, device=plan.device, workdir=plan.workdir
        )
    else:
        final_built = build(task, main_arm, config.seed)
    run = run_record(config, plan.started, plan.device)
    with staged_folder(plan.out, what="the artifact folder") as staging:  # appears only when sealed
        manifest_hash = write_artifact(
            staging,
            config=config,
            task=task,
            splits=splits,
            results=results,
            oof=oof,
            label_efficiency=efficiency,
            indicators=indicators,
            final_state=final_state,
            final_built=final_built,
            final_epochs=final_epochs,
            started_at=plan.started,
            device=plan.device,
            run=run,
            flow_run_id=flow_run_id,
            lineage=plan.lineage,
        )
    shutil.rmtree(plan.workdir, ignore_errors=True)
    return TrainResult(plan.out, manifest_hash, indicators, run)


def train(
    dataset: Path,
    config: TrainConfig,
    out: Path,
    *,
    flow_run_id: str | None = None,
    progress: bool = False,
) -> TrainResult:
    """Split by patient, train every arm on every fold, refit or ensemble, write and seal the artifact.

    Work in progress lives beside the artifact in `<out>.work/` (one checkpoint per arm and fold): a run that is
    interrupted picks up where it stopped when started again with the same arguments; it is removed after sealing.
    """
    plan = prepare_training(dataset, config, out)
    return finish_training(plan, flow_run_id=flow_run_id, progress=progress)
