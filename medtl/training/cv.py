"""Cross-validation over arms: the configured recipe and its comparison arms, fold by fold, on one split.

Out-of-fold predictions (every labelled patient predicted by the one model that never saw it) feed the report;
the per-epoch tuning curves of the arms answer the transfer questions: can the pretrained features alone do the
task (linear probe)? how much faster does transfer reach the from-scratch arm's best? is it as good or better?
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from medtl.contracts.handoff import SUBGROUP_ATTRIBUTES
from medtl.contracts.task import output_units
from medtl.contracts.training import Splits
from medtl.models.config import ModelConfig, parse_weights
from medtl.models.factory import create_model_from_config
from medtl.models.records import BuiltModel
from medtl.models.strategies import StrategyConfig, resolve_schedule, schedule_record
from medtl.training.config import TrainConfig
from medtl.training.data import TaskData, TensorSet, rows_of
from medtl.training.loop import FitResult, fit, predict, schedule_length

log = logging.getLogger(__name__)
MAIN_ARM = "main"
LINEAR_PROBE_LR_FACTOR = 10.0  # a probe trains only the head, which tolerates (and needs) a larger step


@dataclass(frozen=True)
class ArmSpec:
    name: str
    model: ModelConfig
    strategy: StrategyConfig | None  # None: no network training (the `features` arm, training/features_arm.py)


@dataclass
class FoldOutcome:
    fold: int
    best_epoch: int
    best_tune_auc: float | None
    seconds: float
    stopped_early: bool
    selection: str
    curve: list[dict[str, Any]]
    features: dict[str, Any] | None = None  # the features arm: chosen C, extraction and fitting seconds


@dataclass
class ArmResult:
    arm: ArmSpec
    folds: list[FoldOutcome] = field(default_factory=list)
    states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # kept for the main arm only
    schedule: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] = field(default_factory=dict)


def arm_specs(config: TrainConfig) -> list[ArmSpec]:
    """The configured recipe first, then the comparison arms that differ from it."""
    main = ArmSpec(MAIN_ARM, config.model, config.strategy)
    arms = [main]
    pretrained = config.model.weights.source != "none"
    if "linear_probe" in config.arms and pretrained and config.strategy.name != "linear_probe":
        probe = StrategyConfig(
            name="linear_probe",
            lr=config.strategy.lr * LINEAR_PROBE_LR_FACTOR,
            weight_decay=config.strategy.weight_decay,
        )
        arms.append(ArmSpec("linear_probe", config.model, probe))
    if "scratch" in config.arms and pretrained:
        scratch_model = config.model.model_copy(update={"weights": parse_weights("none")})
        scratch = StrategyConfig(name="full", lr=config.strategy.lr, weight_decay=config.strategy.weight_decay)
        arms.append(ArmSpec("scratch", scratch_model, scratch))
    if "features" in config.arms:
        if pretrained:
            arms.append(ArmSpec("features", config.model, None))
        else:
            log.info("the features arm is skipped: weights are none, so there are no pretrained features to read")
    return arms


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(task: TaskData, arm: ArmSpec, seed: int) -> BuiltModel:
    seed_everything(seed)  # the new head (and a from-scratch body) start from the seed's weights
    return create_model_from_config(
        arm.model,
        in_channels=task.in_channels,
        num_classes=output_units(task.kind, len(task.classes)),
        spatial_dims=task.spatial_dims,
    )


def positive_index(task: TaskData) -> int | None:
    return task.classes.index(task.positive_class) if task.positive_class else None


def run_fold(
    task: TaskData,
    splits: Splits,
    arm: ArmSpec,
    fold_index: int,
    config: TrainConfig,
    *,
    device: torch.device,
    workdir: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[FoldOutcome, pd.DataFrame, dict[str, torch.Tensor], BuiltModel]:
    """Fit one arm on one fold and predict its held-out patients; a finished fold is read back, not retrained."""
    if arm.strategy is None:
        from medtl.training.features_arm import run_features_fold

        return run_features_fold(task, splits, arm, fold_index, config, device=device, workdir=workdir)
    fold = splits.folds[fold_index]
    seed = config.seed + 1000 * fold_index + 1
    folder = fold_folder(workdir, arm.name, fold_index)
    built = build(task, arm, seed)
    done = folder / "result.json"
    if done.exists():
        outcome = finished_outcome(workdir, arm.name, fold_index)
        state = load_file(folder / "best.safetensors")
    else:
        train = TensorSet(task, rows_of(task, fold.train))
        plans = resolve_schedule(arm.strategy, schedule_length(config, len(train))[0], built.stage_names)
        tune = TensorSet(task, rows_of(task, fold.tune))
        started = time.perf_counter()
        result: FitResult = fit(
            built, plans, train, tune, config, device=device, positive=positive_index(task), seed=seed,
            workdir=folder, on_epoch=on_epoch,
        )  # fmt: skip
        outcome = FoldOutcome(
            fold=fold_index,
            best_epoch=result.best_epoch,
            best_tune_auc=result.best_tune_auc,
            seconds=round(time.perf_counter() - started, 3),
            stopped_early=result.stopped_early,
            selection=result.selection,
            curve=result.curve,
        )
        state = result.state
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "best.safetensors")
        done.write_text(json.dumps(outcome.__dict__))
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    built.model.load_state_dict(state)
    heldout = TensorSet(task, rows_of(task, fold.heldout))
    probabilities = predict(
        built.model.to(device), heldout, device=device, batch_size=config.batch_size,
        flip_axes=config.prediction_flip_axes(task.spatial_dims),
    )  # fmt: skip
    return outcome, prediction_frame(task, heldout.rows, probabilities, fold=fold_index, arm=arm.name), state, built


def fold_folder(workdir: Path, arm_name: str, fold_index: int) -> Path:
    """Where one arm's fold keeps its checkpoint and, once finished, its result (read back, not retrained)."""
    return workdir / arm_name / f"fold{fold_index}"


def fold_finished(workdir: Path, arm_name: str, fold_index: int) -> bool:
    return (fold_folder(workdir, arm_name, fold_index) / "result.json").exists()


def finished_outcome(workdir: Path, arm_name: str, fold_index: int) -> FoldOutcome:
    return FoldOutcome(**json.loads((fold_folder(workdir, arm_name, fold_index) / "result.json").read_text()))


def prediction_frame(task: TaskData, rows: np.ndarray, probabilities: np.ndarray, **extra: Any) -> pd.DataFrame:
    """Keyed by pseudonymous ids only; one probability column per class or finding (p_<name>), plus `probability` for
    binary; multi-label frames also carry each finding's truth (y_<finding>, 0/1)."""
    scans = task.scans.iloc[rows]
    frame = pd.DataFrame(
        {
            "scan_id": scans["scan_id"].to_numpy(),
            "patient_id": scans["patient_id"].to_numpy(),
            "study_id": scans["study_id"].to_numpy(),
            "label": scans["label"].to_numpy(),
            "target": scans["target"].to_numpy(),
            **{key: value for key, value in extra.items()},
        }
    )
    for attribute in SUBGROUP_ATTRIBUTES:  # non-identifying facts the report breaks results down by
        if attribute in scans:
            frame[attribute] = scans[attribute].to_numpy()
    for index, name in enumerate(task.classes):
        frame[f"p_{name}"] = probabilities[:, index] if len(rows) else []
    if task.findings is not None:
        for index, name in enumerate(task.classes):
            frame[f"y_{name}"] = task.findings[rows, index].astype(int)
    positive = positive_index(task)
    if positive is not None:
        frame["probability"] = frame[f"p_{task.classes[positive]}"]
    return frame


def run_cv(
    task: TaskData,
    splits: Splits,
    config: TrainConfig,
    *,
    device: torch.device,
    workdir: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[ArmResult], pd.DataFrame]:
    """Every arm on every fold, the main arm first; returns the arms' results and all out-of-fold predictions."""
    arms = arm_specs(config)
    results: list[ArmResult] = []
    frames: list[pd.DataFrame] = []
    total = len(arms) * len(splits.folds)
    for arm_number, arm in enumerate(arms):
        arm_result = ArmResult(arm)
        for fold in splits.folds:
            if progress is not None:
                progress(
                    f"{arm.name} fold {fold.index + 1}/{len(splits.folds)}",
                    arm_number * len(splits.folds) + fold.index,
                    total,
                )
            outcome, frame, state, built = run_fold(
                task, splits, arm, fold.index, config, device=device, workdir=workdir
            )
            arm_result.folds.append(outcome)
            frames.append(frame)
            if arm.name == MAIN_ARM:
                arm_result.states[fold.index] = state
            arm_result.pretrained = built.provenance()
            arm_result.schedule = _schedule(arm, config, task, splits, built)
            log.info(
                "%s fold %d: best epoch %d, %s",
                arm.name,
                fold.index,
                outcome.best_epoch,
                _chosen_by(outcome),
            )
        results.append(arm_result)
    if progress is not None:
        progress("cross-validation done", total, total)
    return results, pd.concat(frames, ignore_index=True)


def _schedule(arm: ArmSpec, config: TrainConfig, task: TaskData, splits: Splits, built: BuiltModel) -> dict[str, Any]:
    if arm.strategy is None:
        from medtl.training.features_arm import schedule_record as features_schedule

        return features_schedule()
    epochs = schedule_length(config, len(rows_of(task, splits.folds[0].train)))[0]
    return schedule_record(arm.strategy, resolve_schedule(arm.strategy, epochs, built.stage_names))


def refit(
    task: TaskData,
    splits: Splits,
    arm: ArmSpec,
    config: TrainConfig,
    *,
    epochs: int,
    device: torch.device,
    workdir: Path,
) -> tuple[dict[str, torch.Tensor], BuiltModel]:
    """One model on every non-test patient, for the median best epoch of the folds (no tuning set left to stop on)."""
    patients = sorted({p for fold in splits.folds for p in (*fold.train, *fold.tune, *fold.heldout)})
    built = build(task, arm, config.seed)
    folder = workdir / arm.name / "refit"
    if (folder / "best.safetensors").exists():
        state = load_file(folder / "best.safetensors")
    else:
        plans = resolve_schedule(arm.strategy, epochs, built.stage_names)
        data = TensorSet(task, rows_of(task, patients))
        result = fit(built, plans, data, None, config, device=device, positive=positive_index(task), seed=config.seed,
                     workdir=folder, epochs=epochs)  # fmt: skip
        state = result.state
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "best.safetensors")
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    built.model.load_state_dict(state)
    return state, built


POOLING_GAP = 0.05  # median per-fold AUROC above the pooled one by more than this: the folds' scales differ


def transfer_indicators(results: list[ArmResult], oof: pd.DataFrame, task: TaskData) -> list[dict[str, Any]]:
    """Per arm: pooled OOF AUC beside each fold's own held-out AUC, and per fold the epochs / seconds to reach the
    scratch arm's best tuning AUC.

    Why both AUCs: pooling ranks every fold's predictions together, so fold models whose scores sit on different
    scales (under-trained, or calibrated differently) lower the pooled AUC although each fold ranks its own patients
    well; the pooled predictions also choose the operating point. A gap over POOLING_GAP is flagged."""
    from medtl.training.loop import auc

    by_name = {result.arm.name: result for result in results}
    scratch = by_name.get("scratch")
    positive = positive_index(task)
    summary = []
    for result in results:
        arm_oof = oof[oof["arm"] == result.arm.name]
        probabilities = arm_oof[[f"p_{c}" for c in task.classes]].to_numpy()
        entry: dict[str, Any] = {
            "arm": result.arm.name,
            "strategy": result.arm.strategy.name if result.arm.strategy else "logistic_regression",
            "pretrained": result.pretrained,
            "oof_auc": auc(frame_targets(task, arm_oof), probabilities, positive, task.kind),
            "folds": [],
        }
        for outcome in result.folds:
            target = None
            if scratch is not None:
                reference = next(f for f in scratch.folds if f.fold == outcome.fold)
                target = reference.best_tune_auc
            reached = _first_reaching(outcome.curve, target)
            heldout = arm_oof[arm_oof["fold"] == outcome.fold]
            entry["folds"].append(
                {
                    "fold": outcome.fold,
                    "heldout_auc": auc(
                        frame_targets(task, heldout),
                        heldout[[f"p_{c}" for c in task.classes]].to_numpy(),
                        positive,
                        task.kind,
                    ),
                    "best_epoch": outcome.best_epoch,
                    "best_tune_auc": outcome.best_tune_auc,
                    "scratch_best_tune_auc": target,
                    "epochs_to_scratch_best": reached[0],
                    "seconds_to_scratch_best": reached[1],
                    "curve": outcome.curve,
                    "seconds": outcome.seconds,
                    "features": outcome.features,
                }
            )
        reached_epochs = [f["epochs_to_scratch_best"] for f in entry["folds"] if f["epochs_to_scratch_best"]]
        entry["median_epochs_to_scratch_best"] = float(np.median(reached_epochs)) if reached_epochs else None
        entry["folds_reaching_scratch_best"] = len(reached_epochs)
        fold_aucs = [f["heldout_auc"] for f in entry["folds"] if f["heldout_auc"] is not None]
        entry["median_fold_auc"] = float(np.median(fold_aucs)) if fold_aucs else None
        entry["seconds_per_fold"] = float(np.median([f.seconds for f in result.folds])) if result.folds else None
        gap = entry["median_fold_auc"] - entry["oof_auc"] if fold_aucs and entry["oof_auc"] is not None else None
        entry["pooling_gap"] = gap
        entry["pooling_gap_flagged"] = gap is not None and gap > POOLING_GAP
        summary.append(entry)
    return summary


def frame_targets(task: TaskData, frame: pd.DataFrame) -> np.ndarray:
    """The truth of a prediction frame's rows: class indices, or the (N, K) finding matrix."""
    if task.kind == "multilabel":
        return frame[[f"y_{name}" for name in task.classes]].to_numpy()
    return frame["target"].to_numpy()


def _first_reaching(curve: list[dict[str, Any]], target: float | None) -> tuple[int | None, float | None]:
    if target is None:
        return None, None
    for record in curve:
        value = record.get("tune_auc")
        if value is not None and value >= target - 1e-9:
            return int(record["epoch"]), float(record["seconds"])
    return None, None


def _chosen_by(outcome: FoldOutcome) -> str:
    """How a fold's epoch was chosen, for the log: a small tuning set can hold a single class (no AUROC)."""
    if outcome.best_tune_auc is not None:
        return f"tuning AUC {outcome.best_tune_auc:.3f}"
    if outcome.selection == "last_epoch":
        return "no tuning set: the last epoch"
    return "tuning AUC undefined (a single class in the tuning set): the lowest tuning loss"
