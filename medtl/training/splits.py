"""Patient-grouped, label-stratified cross-validation splits: made once, persisted, reused, checked for leakage.

Each fold has three disjoint patient sets: `train` (fitted on), `tune` (early stopping and model selection; carved
from the training side, grouped by patient) and `heldout` (predicted out-of-fold; never used to choose anything).
Patients of the locked test set (label split "test") appear in no fold. A split is a file: every arm and every
re-run sees the same patients, and a person can write one by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medtl.contracts import read_json, write_json
from medtl.contracts.training import Fold, Splits
from medtl.errors import ConfigError, LeakageError


def patient_labels(scans: pd.DataFrame) -> dict[str, str]:
    """One stratification label per patient: the most frequent label among its scans (ties: the larger label)."""
    labels: dict[str, str] = {}
    for patient, group in scans.groupby("patient_id"):
        counts = group["label"].value_counts()
        labels[str(patient)] = str(max(counts[counts == counts.max()].index))
    return labels


def make_splits(scans: pd.DataFrame, *, n_folds: int, tune_fraction: float, seed: int, manifest_hash: str) -> Splits:
    """StratifiedGroupKFold over patients for the folds, and again inside each training side for `tune`."""
    locked = sorted(set(scans.loc[scans["split"] == "test", "patient_id"]))
    pool = scans[~scans["patient_id"].isin(locked)]
    by_patient = patient_labels(pool)
    patients = np.array(sorted(by_patient))
    labels = np.array([by_patient[p] for p in patients])
    _check_enough(labels, n_folds)
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for index, (rest, heldout) in enumerate(outer.split(patients, labels, groups=patients)):
        train, tune = _carve_tune(patients[rest], labels[rest], tune_fraction, seed + 1 + index)
        folds.append(Fold(index=index, train=sorted(train), tune=sorted(tune), heldout=sorted(patients[heldout])))
    splits = Splits(
        method="stratified_group_kfold",
        seed=seed,
        n_folds=n_folds,
        manifest_hash=manifest_hash,
        folds=folds,
        locked_test=locked,
    )
    check_leakage(splits, eligible=patients)
    return splits


def _carve_tune(patients: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    n_inner = max(2, round(1 / fraction))
    smallest = min(np.unique(labels, return_counts=True)[1])
    if smallest < n_inner:  # too few patients of a class to stratify that finely: fall back to what is possible
        n_inner = max(2, int(smallest))
    inner = StratifiedGroupKFold(n_splits=n_inner, shuffle=True, random_state=seed)
    keep, tune = next(inner.split(patients, labels, groups=patients))
    return list(patients[keep]), list(patients[tune])


def _check_enough(labels: np.ndarray, n_folds: int) -> None:
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise ConfigError(
            f"only one class among the labelled patients ({values.tolist()})",
            fix="a classifier needs at least two classes; check labels.csv and the task filters",
        )
    if counts.min() < 2 * n_folds:
        rare = values[counts.argmin()]
        raise ConfigError(
            f"class {rare!r} has only {counts.min()} patients: too few for {n_folds} folds with a tuning split",
            fix=f"use fewer folds (cv.n_folds), or label at least {2 * n_folds} patients per class",
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


def splits_path(dataset: Path, *, n_folds: int, seed: int, tune_fraction: float, manifest_hash: str) -> Path:
    """Where a split is persisted: named by everything it depends on, so a different dataset never reuses it."""
    tune = f"{tune_fraction:.3f}".rstrip("0")
    return Path(dataset) / "splits" / f"cv{n_folds}-tune{tune}-seed{seed}-{manifest_hash[:12]}.json"


def resolve_splits(
    scans: pd.DataFrame,
    *,
    dataset: Path,
    n_folds: int,
    tune_fraction: float,
    seed: int,
    manifest_hash: str,
    splits_file: Path | None = None,
) -> tuple[Splits, Path]:
    """A hand-written file if given, else the persisted split for these settings, else a new one (then saved)."""
    eligible = sorted(set(scans.loc[scans["split"] != "test", "patient_id"]))
    if splits_file is not None:
        splits = read_json(Splits, splits_file)
        check_leakage(splits, eligible=eligible)
        return splits, Path(splits_file)
    path = splits_path(dataset, n_folds=n_folds, seed=seed, tune_fraction=tune_fraction, manifest_hash=manifest_hash)
    if path.exists():
        splits = read_json(Splits, path)
        check_leakage(splits, eligible=eligible)
        return splits, path
    splits = make_splits(scans, n_folds=n_folds, tune_fraction=tune_fraction, seed=seed, manifest_hash=manifest_hash)
    write_json(splits, path)
    return splits, path
