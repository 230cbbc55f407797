"""Patient-grouped, stratified splits: disjoint sides, locked test untouched, persisted and reused, leakage caught."""

from __future__ import annotations

import pandas as pd
import pytest

from medtl.contracts import read_json
from medtl.contracts.training import Fold, Splits
from medtl.errors import ConfigError, LeakageError
from medtl.training.splits import check_leakage, make_splits, resolve_splits

HASH = "a" * 64


def scans_frame(n_patients: int = 40, scans_per_patient: int = 3, test_patients: int = 6) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        label = "1" if p % 3 == 0 else "0"  # imbalanced: one third positive
        split = "test" if p < test_patients else None
        for s in range(scans_per_patient):
            rows.append({"scan_id": f"X-{p:04d}{s:012d}", "patient_id": f"P-{p:016x}", "label": label, "split": split})
    return pd.DataFrame(rows)


def test_folds_group_by_patient_stratify_and_skip_the_locked_test():
    scans = scans_frame()
    splits = make_splits(scans, n_folds=4, tune_fraction=0.25, seed=3, manifest_hash=HASH)
    test = {f"P-{p:016x}" for p in range(6)}
    assert set(splits.locked_test) == test
    heldout = [p for fold in splits.folds for p in fold.heldout]
    assert sorted(heldout) == sorted(set(scans.patient_id) - test)  # every other patient held out exactly once
    labels = scans.drop_duplicates("patient_id").set_index("patient_id").label
    for fold in splits.folds:
        sides = [set(fold.train), set(fold.tune), set(fold.heldout)]
        assert sum(len(side) for side in sides) == 34 and not set().union(*sides) & test
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        for side in sides:  # each side keeps roughly the one-third prevalence
            share = (labels[list(side)] == "1").mean()
            assert 0.1 <= share <= 0.6


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    scans = scans_frame()
    a = make_splits(scans, n_folds=3, tune_fraction=0.2, seed=1, manifest_hash=HASH)
    b = make_splits(scans, n_folds=3, tune_fraction=0.2, seed=1, manifest_hash=HASH)
    c = make_splits(scans, n_folds=3, tune_fraction=0.2, seed=2, manifest_hash=HASH)
    assert a == b and a != c


def test_split_is_persisted_and_reused(tmp_path):
    scans = scans_frame()
    first, path = resolve_splits(scans, dataset=tmp_path, n_folds=3, tune_fraction=0.2, seed=0, manifest_hash=HASH)
    assert path.exists() and read_json(Splits, path) == first
    # a persisted file wins over recomputation (a person may have edited it, within the rules)
    edited = first.model_copy(update={"method": "manual"})
    from medtl.contracts import write_json

    write_json(edited, path)
    again, _ = resolve_splits(scans, dataset=tmp_path, n_folds=3, tune_fraction=0.2, seed=0, manifest_hash=HASH)
    assert again.method == "manual"
    other, other_path = resolve_splits(
        scans, dataset=tmp_path, n_folds=3, tune_fraction=0.2, seed=0, manifest_hash="b" * 64
    )
    assert other_path != path and other.method == "stratified_group_kfold"


def test_leakage_between_sides_or_into_the_locked_test_raises():
    good = Fold(index=0, train=["P-1", "P-2"], tune=["P-3"], heldout=["P-4"])
    check_leakage(Splits(method="manual", seed=0, n_folds=2, manifest_hash=HASH, folds=[good], locked_test=["P-9"]))
    leaky = Fold(index=0, train=["P-1", "P-2"], tune=["P-3"], heldout=["P-2"])
    with pytest.raises(LeakageError, match="train and the heldout side of fold 0"):
        check_leakage(Splits(method="manual", seed=0, n_folds=2, manifest_hash=HASH, folds=[leaky]))
    with pytest.raises(LeakageError, match="locked-test"):
        check_leakage(Splits(method="manual", seed=0, n_folds=2, manifest_hash=HASH, folds=[good], locked_test=["P-3"]))
    twice = [good, Fold(index=1, train=["P-1"], tune=["P-2"], heldout=["P-4"])]
    with pytest.raises(LeakageError, match="more than one fold"):
        check_leakage(Splits(method="manual", seed=0, n_folds=2, manifest_hash=HASH, folds=twice))


def test_a_hand_written_split_that_forgets_patients_is_refused(tmp_path):
    scans = scans_frame(n_patients=12, test_patients=0)
    folds = [
        Fold(index=0, train=[f"P-{p:016x}" for p in range(4)], tune=[], heldout=[f"P-{p:016x}" for p in range(4, 8)])
    ]
    path = tmp_path / "manual.json"
    from medtl.contracts import write_json

    write_json(Splits(method="manual", seed=0, n_folds=2, manifest_hash=HASH, folds=folds), path)
    with pytest.raises(ConfigError, match="held out in no fold"):
        resolve_splits(
            scans, dataset=tmp_path, n_folds=2, tune_fraction=0.2, seed=0, manifest_hash=HASH, splits_file=path
        )


def test_too_few_patients_per_class_is_a_clear_error():
    scans = scans_frame(n_patients=9, test_patients=0)  # 3 positives
    with pytest.raises(ConfigError, match="too few for 5 folds"):
        make_splits(scans, n_folds=5, tune_fraction=0.2, seed=0, manifest_hash=HASH)
