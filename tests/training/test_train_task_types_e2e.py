"""Graded and multi-finding cohorts from synth to artifact: the declaration given at ingest is the only place the task
type is stated, and training, the artifact's metadata and the out-of-fold predictions follow it (checked against the
cohort's known truth); the split never puts a patient on two sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.artifacts.layout import METADATA, OOF_PREDICTIONS, SPLITS
from medtl.contracts import read_json
from medtl.contracts.training import Splits
from medtl.datasets.synth import make_cohort
from medtl.ingest.declaration import declare_task
from medtl.ingest.pipeline import ingest_sources
from medtl.training.data import read_declaration
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ingested(root: Path, kind: str, **cohort: object) -> tuple[Path, dict]:
    """A synthetic cohort ingested with the declaration that the cohort itself records (as `medtl synth` prints)."""
    summary = make_cohort(root / kind, patients=16, seed=21, task=kind, **cohort)  # type: ignore[arg-type]
    declared = summary.truth["task"]
    ingest_sources(
        [summary.out / "dicom"], out=root / f"{kind}-data", labels=summary.out / "labels.csv", spec=TINY_SPEC,
        pseudonymizer=DEV_PSEUDONYMIZER, workers=1,
        task=declare_task(declared["kind"], declared["classes"], decision_cut=declared.get("decision_cut")),
    )  # fmt: skip
    return root / f"{kind}-data", summary.truth


def _trained(root: Path, dataset: Path) -> Path:
    with signing_key(root / "signing.pem"):
        train(dataset, tiny_config(), out=root / "artifact")  # no task: section, so task.json decides
    return root / "artifact"


def _assert_no_patient_on_two_sides(artifact: Path, oof: pd.DataFrame) -> None:
    splits = read_json(Splits, artifact / SPLITS)
    heldout_everywhere: list[str] = []
    for fold in splits.folds:
        train_side, tune, heldout = set(fold.train), set(fold.tune), set(fold.heldout)
        assert not (train_side & tune or train_side & heldout or tune & heldout), f"fold {fold.index} leaks"
        assert not (train_side | tune | heldout) & set(splits.locked_test)
        heldout_everywhere += fold.heldout
    assert len(heldout_everywhere) == len(set(heldout_everywhere))  # each patient held out once
    assert oof.groupby("patient_id")["fold"].nunique().max() == 1  # all of a patient's scans in one fold


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("graded-e2e")
    dataset, truth = _ingested(root, "ordinal", grades=3, prevalence=0.7)
    return dataset, truth, _trained(root, dataset)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi-e2e")
    dataset, truth = _ingested(root, "multilabel", findings=3)
    return dataset, truth, _trained(root, dataset)


def test_a_graded_cohort_trains_as_an_ordinal_task(graded):
    dataset, truth, artifact = graded
    assert read_declaration(dataset).kind == "ordinal"
    task = json.loads((artifact / METADATA).read_text())["task"]
    assert task["kind"] == "ordinal" and task["classes"] == ["0", "1", "2"] and task["decision_cut"] == "1"
    oof = pd.read_parquet(artifact / OOF_PREDICTIONS)
    oof = oof[oof["arm"] == oof["arm"].iloc[0]]
    p = oof[["p_0", "p_1", "p_2"]].to_numpy()
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)  # class probabilities from the cuts
    grades = {DEV_PSEUDONYMIZER.patient(row["patient_id"]): row["label"] for row in truth["patients"]}
    assert [grades[patient] for patient in oof["patient_id"]] == oof["target"].tolist()  # index = grade
    assert set(oof["target"]) == {0, 1, 2}
    _assert_no_patient_on_two_sides(artifact, oof)


def test_a_multi_finding_cohort_trains_as_a_multilabel_task(multi):
    dataset, truth, artifact = multi
    names = ["nodule", "cyst", "calcification"]
    assert read_declaration(dataset).classes == names
    task = json.loads((artifact / METADATA).read_text())["task"]
    assert task["kind"] == "multilabel" and task["classes"] == names and task.get("decision_cut") is None
    oof = pd.read_parquet(artifact / OOF_PREDICTIONS)
    oof = oof[oof["arm"] == oof["arm"].iloc[0]]
    known = {DEV_PSEUDONYMIZER.patient(row["patient_id"]): set(row["findings"]) for row in truth["patients"]}
    for name in names:
        expected = [int(name in known[patient]) for patient in oof["patient_id"]]
        assert oof[f"y_{name}"].tolist() == expected, name
        assert oof[f"p_{name}"].between(0, 1).all()
    assert (oof["target"] == -1).all()
    assert oof[[f"y_{name}" for name in names]].sum(axis=1).max() >= 2  # several findings on one scan
    assert len(oof) == sum(len(row["studies"]) for row in truth["patients"])  # every CT volume predicted once
    _assert_no_patient_on_two_sides(artifact, oof)
