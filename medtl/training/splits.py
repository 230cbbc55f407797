"""Patient-grouped, label-stratified cross-validation splits: made once, persisted, reused, checked for leakage.

Each fold has three disjoint patient sets: `train` (fitted on), `tune` (early stopping and model selection; carved
from the training side, grouped by patient) and `heldout` (predicted out-of-fold; never used to choose anything).
Patients of the locked test set (label split "test") appear in no fold. A split is a file: every arm and every
re-run sees the same patients, and a person can write one by hand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedGroupKFold

from medtl.contracts import read_json, write_json
from medtl.contracts.task import TaskKind, findings_of
from medtl.contracts.training import Fold, Splits
from medtl.errors import ConfigError, LeakageError

log = logging.getLogger(__name__)


def patient_labels(scans: pd.DataFrame) -> dict[str, str]:
    """One stratification label per patient: the most frequent label among its scans (ties: the larger label)."""
    labels: dict[str, str] = {}
    for patient, group in scans.groupby("patient_id"):
        counts = group["label"].value_counts()
        labels[str(patient)] = str(max(counts[counts == counts.max()].index))
    return labels


def patient_findings(scans: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: (patients, their 0/1 matrix of every finding any of their scans carries)."""
    by_patient: dict[str, set[str]] = defaultdict(set)
    for patient, label in zip(scans["patient_id"], scans["label"], strict=True):
        by_patient[str(patient)].update(findings_of(str(label)))
    names = sorted(set().union(*by_patient.values())) if by_patient else []
    patients = np.array(sorted(by_patient))
    matrix = np.array([[name in by_patient[p] for name in names] for p in patients], dtype=int).reshape(
        len(patients), len(names)
    )
    return patients, matrix


def make_splits(
    scans: pd.DataFrame,
    *,
    n_folds: int,
    tune_fraction: float,
    seed: int,
    manifest_hash: str,
    kind: TaskKind = "binary",
) -> Splits:
    """Patient folds stratified for the task type, and again inside each training side for `tune`.

    Single-label tasks: StratifiedGroupKFold on each patient's label. Multi-label: iterative stratification
    (iterative-stratification's MultilabelStratifiedKFold) on each patient's set of findings, so every finding is
    spread over the folds as evenly as its count allows; a patient is one unit, so no patient is on two sides."""
    locked = sorted(set(scans.loc[scans["split"] == "test", "patient_id"]))
    pool = scans[~scans["patient_id"].isin(locked)]
    if kind == "multilabel":
        patients, strata = patient_findings(pool)
        _check_enough_findings(strata, n_folds)
        outer = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        method = "multilabel_iterative_stratification"
    else:
        by_patient = patient_labels(pool)
        patients = np.array(sorted(by_patient))
        strata = np.array([by_patient[p] for p in patients])
        _check_enough(strata, n_folds)
        outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        method = "stratified_group_kfold"
    folds = []
    for index, (rest, heldout) in enumerate(outer.split(patients, strata, groups=patients)):
        train, tune = _carve_tune(patients[rest], strata[rest], tune_fraction, seed + 1 + index)
        folds.append(Fold(index=index, train=sorted(train), tune=sorted(tune), heldout=sorted(patients[heldout])))
    splits = Splits(
        method=method,
        seed=seed,
        n_folds=n_folds,
        manifest_hash=manifest_hash,
        folds=folds,
        locked_test=locked,
    )
    check_leakage(splits, eligible=patients)
    return splits


def _carve_tune(patients: np.ndarray, strata: np.ndarray, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    n_inner = max(2, round(1 / fraction))
    if strata.ndim == 2:  # multi-label: iterative stratification spreads what it can; no class count to respect
        inner = MultilabelStratifiedKFold(n_splits=n_inner, shuffle=True, random_state=seed)
        keep, tune = next(inner.split(patients, strata))
        return list(patients[keep]), list(patients[tune])
    smallest = min(np.unique(strata, return_counts=True)[1])
    if smallest < n_inner:  # too few patients of a class to stratify that finely: fall back to what is possible
        n_inner = max(2, int(smallest))
    inner = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=seed)
    keep, tune = next(inner.split(patients, strata, groups=patients))
    return list(patients[keep]), list(patients[tune])


def _check_enough(labels: np.ndarray, n_folds: int) -> None:
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise ConfigError(
            f"only one class among the labelled patients ({values.tolist()})",
            fix="a classifier needs at least two classes; check labels.csv and the task filters",
        )
    if counts.min() < 2 * n_folds:
        rare = str(values[counts.argmin()])
        raise ConfigError(
            f"class {rare!r} has only {counts.min()} patients: too few for {n_folds} folds with a tuning split",
            fix=f"use fewer folds (cv.n_folds), or label at least {2 * n_folds} patients per class",
        )


def _check_enough_findings(matrix: np.ndarray, n_folds: int) -> None:
    if matrix.shape[1] == 0 or not matrix.any():
        raise ConfigError(
            "no labelled patient carries any finding",
            fix="a multi-label task needs findings in labels.csv (findings separated by |, none for no finding)",
        )
    if len(matrix) < 2 * n_folds:
        raise ConfigError(
            f"only {len(matrix)} labelled patients: too few for {n_folds} folds with a tuning split",
            fix=f"use fewer folds (cv.n_folds), or label at least {2 * n_folds} patients",
        )
    rare = [int(count) for count in matrix.sum(axis=0) if count < n_folds]
    if rare:
        log.warning(
            "%d finding(s) have fewer patients than folds (%s): some folds will hold none of them, and their "
            "per-finding results rest on very few patients",
            len(rare),
            ", ".join(map(str, rare)),
        )


def check_leakage(splits: Splits, *, eligible: Iterable[str] | None = None) -> None:
    """Raise LeakageError when a patient sits on two sides of any fold, or in a fold and the locked test set."""
    locked = set(splits.locked_test)
    heldout_count: dict[str, int] = defaultdict(int)
    for fold in splits.folds:
        sides = {"train": set(fold.train), "tune": set(fold.tune), "heldout": set(fold.heldout)}
        for a, b in (("train", "tune"), ("train", "heldout"), ("tune", "heldout")):
            shared = sides[a] & sides[b]
            if shared:
                raise LeakageError(
                    f"{len(shared)} patient(s) on both the {a} and the {b} side of fold {fold.index}",
                    where=f"patients {sorted(shared)[:5]}",
                    fix="fix or delete the splits file; each patient belongs to exactly one side of each fold",
                )
        in_test = locked & set().union(*sides.values())
        if in_test:
            raise LeakageError(
                f"{len(in_test)} locked-test patient(s) appear in fold {fold.index}",
                where=f"patients {sorted(in_test)[:5]}",
                fix="the locked test set is scored once, after model selection; remove its patients from every fold",
            )
        for patient in fold.heldout:
            heldout_count[patient] += 1
    twice = sorted(p for p, n in heldout_count.items() if n > 1)
    if twice:
        raise LeakageError(f"{len(twice)} patient(s) are held out in more than one fold", where=f"patients {twice[:5]}")
    if eligible is not None:
        missing = sorted(set(eligible) - set(heldout_count))
        if missing:
            raise ConfigError(
                f"{len(missing)} labelled patient(s) are held out in no fold: their out-of-fold predictions would "
                "be missing",
                where=f"patients {missing[:5]}",
                fix="regenerate the splits for this dataset (delete the splits file) or add them to a fold",
            )


def splits_path(
    dataset: Path, *, n_folds: int, seed: int, tune_fraction: float, manifest_hash: str, kind: TaskKind = "binary"
) -> Path:
    """Where a split is persisted: named by everything it depends on, so a different dataset never reuses it (and a
    multi-label split, stratified differently, never stands in for a single-label one)."""
    tune = f"{tune_fraction:.3f}".rstrip("0")
    stratified = "-multilabel" if kind == "multilabel" else ""
    return Path(dataset) / "splits" / f"cv{n_folds}-tune{tune}-seed{seed}{stratified}-{manifest_hash[:12]}.json"


def resolve_splits(
    scans: pd.DataFrame,
    *,
    dataset: Path,
    n_folds: int,
    tune_fraction: float,
    seed: int,
    manifest_hash: str,
    splits_file: Path | None = None,
    kind: TaskKind = "binary",
) -> tuple[Splits, Path]:
    """A hand-written file if given, else the persisted split for these settings, else a new one (then saved)."""
    eligible = sorted(set(scans.loc[scans["split"] != "test", "patient_id"]))
    if splits_file is not None:
        splits = read_json(Splits, splits_file)
        check_leakage(splits, eligible=eligible)
        return splits, Path(splits_file)
    path = splits_path(
        dataset, n_folds=n_folds, seed=seed, tune_fraction=tune_fraction, manifest_hash=manifest_hash, kind=kind
    )
    if path.exists():
        splits = read_json(Splits, path)
        check_leakage(splits, eligible=eligible)
        return splits, path
    splits = make_splits(
        scans, n_folds=n_folds, tune_fraction=tune_fraction, seed=seed, manifest_hash=manifest_hash, kind=kind
    )
    write_json(splits, path)
    return splits, path
