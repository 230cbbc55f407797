"""The `features` comparison arm: the pretrained network, frozen, as a feature extractor for a regularised logistic
regression fitted per fold.

Why this arm: it costs seconds where fine-tuning costs minutes or hours, and it answers the first transfer question
without any optimisation of the network: are the pretrained features (ImageNet, MedicalNet, or a site's own
`medtl pretrain` artifact) already linearly separable for this task? Unlike the `linear_probe` arm, which trains the
new head by SGD on the fold's schedule, the regression here is solved to convergence for every candidate L2
strength, so the answer does not depend on a learning rate or an epoch count.

Choices, and why:
- Features are the network's pooled representation, the input of its classification layer (that layer is replaced
  by identity; a 2.5D model's representation is averaged over slice groups, like its logits are). The network is in
  eval mode (BatchNorm uses its pretrained statistics) and sees no augmentation: a fixed function of the scan.
- The extractor is the same for every fold (frozen weights, no label seen), so every fold patient's features are
  computed once per run and cached in the work folder; the extraction seconds are reported once, apart from each
  fold's fitting seconds. Locked-test patients are never extracted here.
- Per fold, the standardiser is fitted on the fold's training patients only; C is chosen from C_GRID by the tuning
  patients' AUROC (ties: lower tuning loss, then the smaller C); the held-out patients are predicted once, after the
  choice, and influence nothing.
- No refit on training + tuning patients: the other arms learn from the training patients only and use the tuning
  patients to choose (an epoch), so this arm does the same, and the arms are compared on the same labelled data.
- Binary and multiclass: one (multinomial) logistic regression. Ordinal: the grades are treated as unordered classes
  (scikit-learn has no ordinal logistic regression; the probabilities are in grade order, so every ordinal metric and
  the decision cut read them as usual). Multi-label: one logistic regression per finding (one-vs-rest).
- Class weights are balanced unless the config says `class_balance: none`, as the fine-tuned arms weight their loss.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader

from medtl.contracts.task import TaskKind
from medtl.contracts.training import Splits
from medtl.errors import ConfigError
from medtl.models.heads import headless
from medtl.models.records import BuiltModel
from medtl.training.config import TrainConfig
from medtl.training.cv import ArmSpec, FoldOutcome, build, positive_index, prediction_frame
from medtl.training.data import TaskData, TensorSet, rows_of
from medtl.training.loop import auc
from medtl.training.losses import tuning_loss

log = logging.getLogger(__name__)

FEATURES_ARM = "features"
STRATEGY = "logistic_regression"
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # inverse L2 strength on standardised features
MAX_ITER = 5000
CACHE = "features.safetensors"


@dataclass
class LogisticFit:
    """One fold's regression: the chosen C, every candidate's tuning AUROC and loss, and the held-out predictions."""

    c: float
    tune_auc: float | None
    selection: str
    grid: list[dict[str, float | None]]
    heldout: np.ndarray
    seconds: float


@dataclass
class FeatureTable:
    """Pooled features of task rows (every fold patient's scans), and the seconds the one extraction took."""

    rows: np.ndarray
    values: np.ndarray
    seconds: float
    index: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {int(row): position for position, row in enumerate(self.rows)}

    def of(self, rows: np.ndarray) -> np.ndarray:
        return self.values[[self.index[int(row)] for row in rows]]


def schedule_record() -> dict[str, Any]:
    """What the artifact's resolved config says this arm ran (it has no epochs and no optimiser)."""
    return {"kind": STRATEGY, "c_grid": list(C_GRID), "standardised": True, "fitted_on": "train patients"}


@torch.no_grad()
def extract(network: nn.Module, data: TensorSet, *, device: torch.device, batch_size: int) -> np.ndarray:
    """(N, D) features of a set's scans in its row order, in float32 (no autocast: the regression sees exact values)."""
    network = network.to(device).eval()
    outputs = [
        network(inputs.to(device)).flatten(1).float().cpu()
        for inputs, _, _ in DataLoader(data, batch_size=batch_size, shuffle=False)
    ]
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


def feature_table(
    task: TaskData, splits: Splits, built: BuiltModel, config: TrainConfig, *, device: torch.device, folder: Path
) -> FeatureTable:
    """Every fold patient's features, extracted once per run and read back afterwards (also by parallel folds).

    `built` is the arm's network; its head is removed here."""
    path = folder / CACHE
    if path.exists():
        stored = load_file(path)
        return FeatureTable(stored["rows"].numpy(), stored["values"].numpy(), float(stored["seconds"]))
    patients = sorted({p for fold in splits.folds for p in (*fold.train, *fold.tune, *fold.heldout)})
    data = TensorSet(task, rows_of(task, patients))
    started = time.perf_counter()
    network = headless(built)
    values = extract(network, data, device=device, batch_size=config.batch_size)
    seconds = round(time.perf_counter() - started, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # a parallel fold may write it too
    os.close(handle)
    tensors = {
        "rows": torch.as_tensor(data.rows),
        "values": torch.from_numpy(values),
        "seconds": torch.tensor(seconds, dtype=torch.float64),
    }
    save_file(tensors, temporary)
    Path(temporary).replace(path)
    log.info("features arm: %d scans, %d features each, extracted in %.1f s", *values.shape, seconds)
    return FeatureTable(data.rows, values, seconds)


def classifier(kind: TaskKind, c: float, *, balanced: bool) -> LogisticRegression | OneVsRestClassifier:
    """L2-regularised logistic regression (scikit-learn's default penalty) for the task type."""
    model = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=MAX_ITER)
    return OneVsRestClassifier(model) if kind == "multilabel" else model


def class_probabilities(model: Any, features: np.ndarray, kind: TaskKind, n_classes: int) -> np.ndarray:
    """(N, K) probabilities in the task's class order; a class absent from the fold's training side gets 0."""
    predicted = model.predict_proba(features)
    if kind == "multilabel":
        return predicted
    full = np.zeros((len(features), n_classes))
    full[:, model.classes_.astype(int)] = predicted
    return full


def fit_logistic(
    kind: TaskKind,
    n_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    tune: tuple[np.ndarray, np.ndarray],
    heldout: np.ndarray,
    *,
    positive: int | None,
    balanced: bool = True,
    grid: tuple[float, ...] = C_GRID,
) -> LogisticFit:
    """Standardise on the training rows, choose C on the tuning rows, predict the held-out rows with that model."""
    (train_x, train_y), (tune_x, tune_y) = train, tune
    if kind != "multilabel" and len(np.unique(train_y)) < 2:
        raise ConfigError(
            "a fold's training patients all have one class, so the features arm has nothing to separate",
            where="splits",
            fix="use fewer folds (cv.n_folds) or remove `features` from arms",
        )
    started = time.perf_counter()
    scaler = StandardScaler().fit(train_x)
    train_x, tune_x, heldout_x = (scaler.transform(x) for x in (train_x, tune_x, heldout))
    best: tuple[float, float] | None = None
    chosen: Any = None
    candidates: list[dict[str, float | None]] = []
    for c in grid:
        model = classifier(kind, c, balanced=balanced).fit(train_x, train_y)
        predicted = class_probabilities(model, tune_x, kind, n_classes)
        value = auc(tune_y, predicted, positive, kind) if len(tune_y) else None
        loss = tuning_loss(kind, torch.as_tensor(predicted), torch.as_tensor(tune_y)) if len(tune_y) else math.inf
        candidates.append({"c": c, "tune_auc": value, "tune_loss": loss if math.isfinite(loss) else None})
        key = (-math.inf if value is None else value, -loss)
        if best is None or key > best:  # strictly better only: on a tie the smaller C (stronger penalty) stays
            best, chosen = key, (c, value, model)
    c, value, model = chosen
    return LogisticFit(
        c=c,
        tune_auc=value,
        selection="tune_auc" if value is not None else "tune_loss",
        grid=candidates,
        heldout=class_probabilities(model, heldout_x, kind, n_classes),
        seconds=round(time.perf_counter() - started, 3),
    )


def run_features_fold(
    task: TaskData,
    splits: Splits,
    arm: ArmSpec,
    fold_index: int,
    config: TrainConfig,
    *,
    device: torch.device,
    workdir: Path,
) -> tuple[FoldOutcome, pd.DataFrame, dict[str, torch.Tensor], BuiltModel]:
    """One fold of the arm, shaped like `cv.run_fold`'s result (no weights to keep); a finished fold is read back."""
    fold = splits.folds[fold_index]
    folder = workdir / arm.name / f"fold{fold_index}"
    built = build(task, arm, config.seed)  # its provenance is the arm's; the network itself is not trained
    heldout_rows = rows_of(task, fold.heldout)
    done, predictions = folder / "result.json", folder / "heldout.safetensors"
    if done.exists() and predictions.exists():
        outcome = FoldOutcome(**json.loads(done.read_text()))
        probabilities = load_file(predictions)["probabilities"].numpy()
    else:
        table = feature_table(task, splits, built, config, device=device, folder=workdir / arm.name)
        train_rows, tune_rows = rows_of(task, fold.train), rows_of(task, fold.tune)
        fitted = fit_logistic(
            task.kind,
            len(task.classes),
            (table.of(train_rows), task.targets(train_rows)),
            (table.of(tune_rows), task.targets(tune_rows)),
            table.of(heldout_rows),
            positive=positive_index(task),
            balanced=config.class_balance != "none",
        )
        outcome = FoldOutcome(
            fold=fold_index,
            best_epoch=0,
            best_tune_auc=fitted.tune_auc,
            seconds=fitted.seconds,
            stopped_early=False,
            selection=fitted.selection,
            curve=[],
            features={
                "c": fitted.c,
                "grid": fitted.grid,
                "feature_seconds": table.seconds,
                "fit_seconds": fitted.seconds,
                "n_features": int(table.values.shape[1]),
            },
        )
        probabilities = fitted.heldout
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"probabilities": torch.from_numpy(np.ascontiguousarray(probabilities))}, predictions)
        done.write_text(json.dumps(outcome.__dict__))
    frame = prediction_frame(task, heldout_rows, probabilities, fold=fold_index, arm=arm.name)
    return outcome, frame, {}, built
