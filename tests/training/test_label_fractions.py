"""Label efficiency on the training side: nested, patient-grouped, stratified subsets of each fold's training
patients, the config's `label_fractions`, and a tiny end-to-end train that writes metrics/label_efficiency.parquet
without changing what the artifact's models and out-of-fold predictions are."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.layout import LABEL_EFFICIENCY
from medtl.contracts.base import validate_frame
from medtl.contracts.handoff import LabelEfficiencyRow
from medtl.errors import ConfigError
from medtl.training.config import load_config
from medtl.training.cv import run_cv
from medtl.training.fractions import labelling_order, nested_subsets, run_label_efficiency, subset_size
from medtl.training.splits import make_splits
from medtl.training.train import train
from support.trained import ingested_cohort, pretrained_file, signing_key, tiny_config

FRACTIONS = [0.1, 0.25, 0.5]


def _task(counts: dict[str, int], scans_per_patient: int = 1, kind: str = "multiclass") -> SimpleNamespace:
    """Just what the subset builder reads: scans with patient ids and labels, and the task type."""
    rows = []
    for label, count in counts.items():
        for index in range(count):
            patient = f"P-{label}-{index:03d}"
            rows += [{"patient_id": patient, "label": label}] * scans_per_patient
    return SimpleNamespace(scans=pd.DataFrame(rows), kind=kind)


def _patients(task: SimpleNamespace) -> list[str]:
    return sorted(set(task.scans["patient_id"]))


@pytest.mark.parametrize("seed", range(25))
def test_subsets_are_nested_stratified_and_keep_every_class(seed: int) -> None:
    counts = {"a": 40, "b": 12, "c": 3}
    task = _task(counts, scans_per_patient=2)
    patients = _patients(task)
    subsets = nested_subsets(task, patients, [*FRACTIONS, 1.0], seed)
    label = {p: p.split("-")[1] for p in patients}
    previous: set[str] = set()
    for fraction in [*FRACTIONS, 1.0]:
        chosen = subsets[fraction]
        assert len(chosen) == len(set(chosen)) and set(chosen) <= set(patients)
        assert previous <= set(chosen)  # nested: the smaller share is inside the larger one
        previous = set(chosen)
        assert len(chosen) == max(3, math.ceil(fraction * len(patients) - 1e-9))
        found = Counter(label[p] for p in chosen)
        assert set(found) == set(counts)  # every class, even the 3-patient one at 10%
        for name, total in counts.items():  # each class close to its share (the lead adds at most one patient)
            assert abs(found[name] - len(chosen) * total / len(patients)) <= 2.0, (fraction, name, found)
    assert subsets[1.0] == patients


def test_the_order_is_seeded_and_differs_between_seeds() -> None:
    task = _task({"a": 20, "b": 20})
    patients = _patients(task)
    assert nested_subsets(task, patients, FRACTIONS, 3) == nested_subsets(task, patients, FRACTIONS, 3)
    assert nested_subsets(task, patients, [0.25], 3) != nested_subsets(task, patients, [0.25], 4)


def test_subsets_are_patient_grouped_whatever_the_scan_count() -> None:
    """Subsets are lists of patients: rows_of then takes every scan of each, and the count is of patients."""
    task = _task({"a": 10, "b": 10}, scans_per_patient=3)
    subsets = nested_subsets(task, _patients(task), [0.5], 0)
    assert len(subsets[0.5]) == 10
    scans = task.scans[task.scans["patient_id"].isin(subsets[0.5])]
    assert len(scans) == 30 and scans.groupby("patient_id").size().eq(3).all()


@pytest.mark.parametrize("seed", range(10))
def test_multilabel_subsets_have_every_finding_present_and_absent(seed: int) -> None:
    findings = ["effusion", "nodule", "effusion|nodule", "", "", "", "", "", "pneumothorax"] * 4 + ["rare"]
    rows = [{"patient_id": f"P-{i:03d}", "label": label} for i, label in enumerate(findings)]
    task = SimpleNamespace(scans=pd.DataFrame(rows), kind="multilabel")
    patients = sorted(set(task.scans["patient_id"]))
    subsets = nested_subsets(task, patients, [0.1, 0.5], seed)
    carries = {r["patient_id"]: set(filter(None, r["label"].split("|"))) for r in rows}
    assert set(subsets[0.1]) <= set(subsets[0.5])
    for chosen in subsets.values():
        for name in ("effusion", "nodule", "pneumothorax", "rare"):
            assert any(name in carries[p] for p in chosen) and any(name not in carries[p] for p in chosen)


def test_the_lead_never_exceeds_one_patient_per_class_and_sizes_respect_it() -> None:
    memberships = {f"P-{i}": frozenset({str(i % 4)}) for i in range(40)}
    order, lead = labelling_order(memberships, 0, multilabel=False)
    assert lead == 4 and {next(iter(memberships[p])) for p in order[:lead]} == {"0", "1", "2", "3"}
    assert subset_size(0.01, 40, lead) == 4 and subset_size(0.5, 40, lead) == 20 and subset_size(1.0, 40, lead) == 40


def test_label_fractions_config_is_sorted_unique_and_always_has_one() -> None:
    assert tiny_config(label_fractions=[0.5, 0.1]).label_fractions == [0.1, 0.5, 1.0]
    assert tiny_config(label_fractions=[1.0]).label_fractions == [1.0]
    assert tiny_config().label_fractions is None
    for bad, message in (([0.0, 0.5], r"\(0, 1\]"), ([1.5], r"\(0, 1\]"), ([0.5, 0.5], "repeat")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, {"label_fractions": bad})


# ---- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_a_train_with_fractions_writes_the_curve_and_keeps_the_full_models(tmp_path: Path) -> None:
    with signing_key(tmp_path / "signing.pem"):
        dataset = ingested_cohort(tmp_path, "cohort", patients=16, seed=5, difficulty=0.0)
        weights = pretrained_file(tmp_path)
        settings = {"model": {"backbone": "resnet18", "weights": weights}, "arms": ["scratch"]}
        train(dataset, tiny_config(**settings), tmp_path / "plain")
        train(dataset, tiny_config(**settings, label_fractions=[0.5, 1.0]), tmp_path / "fractions")
        plain = ArtifactContents(open_verified(tmp_path / "plain"))
        with_fractions = ArtifactContents(open_verified(tmp_path / "fractions"))

    assert plain.label_efficiency is None
    pd.testing.assert_frame_equal(plain.oof, with_fractions.oof)  # the same seed gives the same full runs
    for name in ("weights/fold0.safetensors", "weights/fold1.safetensors"):
        assert plain.verified.read_bytes(name) == with_fractions.verified.read_bytes(name)
    assert LABEL_EFFICIENCY in with_fractions.verified.files
    table = with_fractions.label_efficiency
    assert set(table["arm"]) == {"main", "scratch"} and sorted(set(table["fraction"])) == [0.5, 1.0]
    splits = with_fractions.splits
    full = table[table["fraction"] == 1.0].drop(columns=["fraction", "n_labelled_patients"])
    pd.testing.assert_frame_equal(full.reset_index(drop=True), with_fractions.oof)
    for fold in splits.folds:
        heldout = set(fold.heldout)
        for arm in ("main", "scratch"):
            for fraction, expected in ((1.0, len(fold.train)), (0.5, math.ceil(len(fold.train) / 2))):
                rows = table[(table["arm"] == arm) & (table["fold"] == fold.index) & (table["fraction"] == fraction)]
                assert set(rows["patient_id"]) == heldout  # the same held-out patients at every share
                assert set(rows["n_labelled_patients"]) == {expected}
    half = table[(table["fraction"] == 0.5) & (table["arm"] == "main")]
    full_main = with_fractions.oof[with_fractions.oof["arm"] == "main"]
    assert not half["p_1"].reset_index(drop=True).equals(full_main["p_1"].reset_index(drop=True))


def _retyped(task, kind: str):
    """The tiny 2D task of tests/training/conftest.py relabelled as an ordinal or a multi-label task."""
    scans = task.scans.copy()
    index = np.arange(len(scans))
    if kind == "ordinal":
        scans["target"] = index % 3
        scans["label"] = scans["target"].astype(str)
        return replace(task, scans=scans, kind="ordinal", classes=["0", "1", "2"], positive_class=None)
    findings = np.stack([index % 2 == 0, index % 3 == 0], axis=1).astype(np.float32)
    scans["label"] = ["|".join(n for n, f in zip("ab", row, strict=True) if f) or "none" for row in findings]
    scans["target"] = -1
    return replace(task, scans=scans, kind="multilabel", classes=["a", "b"], positive_class=None, findings=findings)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ordinal", "multilabel"])
def test_label_efficiency_runs_for_ordinal_and_multilabel_tasks(tiny_task, tmp_path: Path, kind: str) -> None:
    task = _retyped(tiny_task, kind)
    splits = make_splits(task.scans, n_folds=2, tune_fraction=0.2, seed=0, manifest_hash="d" * 64, kind=kind)
    config = tiny_config(label_fractions=[0.5])
    device = torch.device("cpu")
    _, oof = run_cv(task, splits, config, device=device, workdir=tmp_path)
    table = run_label_efficiency(task, splits, config, oof, device=device, workdir=tmp_path)
    assert table is not None and sorted(set(table["fraction"])) == [0.5, 1.0]
    validate_frame(LabelEfficiencyRow, table)
    for fold in splits.folds:
        rows = table[(table["fold"] == fold.index) & (table["fraction"] == 0.5)]
        assert set(rows["patient_id"]) == set(fold.heldout)
        assert set(rows["n_labelled_patients"]) == {math.ceil(len(fold.train) / 2)}
        assert (tmp_path / "frac0.5" / "main" / f"fold{fold.index}" / "result.json").exists()  # resumable
    if kind == "multilabel":
        assert {"y_a", "y_b", "p_a", "p_b"} <= set(table.columns)
