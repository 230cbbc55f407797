"""Graded and multi-finding synthetic cohorts: labels, known ground truth, visible findings, the declaration to ingest
with, and a binary cohort that stays byte for byte what it was."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from medtl.cli import app
from medtl.contracts import LabelRow, validate_rows
from medtl.contracts.task import TaskDeclaration, findings_of
from medtl.datasets.synth import expected_values, iter_series, make_cohort
from medtl.datasets.synth.geometry import SliceStack
from medtl.datasets.synth.phantom import Phantom, lesion_size_and_contrast
from medtl.errors import ConfigError

# cohort.json and labels.csv of make_cohort(patients=6, seed=7, with_problems=True), written before graded and
# multi-finding cohorts existed: a binary cohort must not change at all.
BINARY_DIGESTS = {
    "cohort.json": "3245021f1c537d58ead7bd474c9817187afc2cf1d341d99c4aee66f5cf742b7e",
    "labels.csv": "811541940c86ddf1fe22fbeadf0a6bd796676e7afacef391f6c07ee172991ff6",
}


def _labels(folder) -> list[LabelRow]:
    with open(folder / "labels.csv", newline="") as handle:
        return validate_rows(LabelRow, list(csv.DictReader(handle)), where="labels.csv")


def test_a_binary_cohort_is_unchanged(tmp_path):
    summary = make_cohort(tmp_path / "binary", patients=6, seed=7, with_problems=True)
    digests = {name: hashlib.sha256((summary.out / name).read_bytes()).hexdigest() for name in BINARY_DIGESTS}
    assert digests == BINARY_DIGESTS
    assert "task" not in summary.truth and "task" not in summary.truth["parameters"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("graded") / "c", patients=14, seed=4, task="ordinal", grades=4)


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("multi") / "c", patients=20, seed=5, task="multilabel", findings=4)


def test_graded_labels_are_grades_spread_evenly_over_the_binary_positives(graded, tmp_path):
    truth = graded.truth
    rows = _labels(graded.out)
    per_patient = {p["patient_id"]: p["label"] for p in truth["patients"]}
    assert {row.patient_id: row.label for row in rows} == {pid: str(grade) for pid, grade in per_patient.items()}
    assert Counter(per_patient.values()) == {0: 7, 1: 3, 2: 2, 3: 2}  # 7 with a lesion, over grades 1-3
    assert graded.positives == 7 and graded.label_counts() == {"0": 7, "1": 3, "2": 2, "3": 2}
    binary = make_cohort(tmp_path / "binary", patients=14, seed=4)
    assert {p["patient_id"]: bool(p["label"]) for p in binary.truth["patients"]} == {
        pid: grade > 0 for pid, grade in per_patient.items()
    }


def test_the_lesion_grows_and_brightens_with_the_grade(graded):
    model = graded.truth["lesion_model"]["grades"]
    radii = [row["nominal_radius_mm"] for row in model]
    contrasts = [row["nominal_abs_contrast_hu"] for row in model]
    assert radii == sorted(radii) and len(set(radii)) == 3 and contrasts == sorted(contrasts)
    top_radius, top_contrast = lesion_size_and_contrast(0.3)
    assert radii[-1] == pytest.approx(top_radius) and contrasts[-1] == pytest.approx(top_contrast)
    for patient in graded.truth["patients"]:
        lesion = patient["phantom"]["lesion"]
        if patient["label"] == 0:
            assert lesion is None
            continue
        nominal = model[patient["label"] - 1]
        assert 0.84 <= lesion["radius_mm"] / nominal["nominal_radius_mm"] <= 1.16
        assert 0.84 <= abs(lesion["contrast_hu"]) / nominal["nominal_abs_contrast_hu"] <= 1.16


def test_graded_cohort_records_the_declaration_and_the_ingest_command(graded):
    declared = {key: value for key, value in graded.truth["task"].items() if key != "ingest_options"}
    assert TaskDeclaration.model_validate(declared) == TaskDeclaration(
        kind="ordinal", classes=["0", "1", "2", "3"], decision_cut="2"
    )
    options = graded.truth["task"]["ingest_options"]
    assert options == ["--task-kind", "ordinal", "--classes", "0,1,2,3", "--decision-cut", "2"]
    assert " ".join(options) in graded.ingest_command() and " ".join(options) in graded.describe()
    assert graded.truth["parameters"]["task"] == "ordinal" and graded.truth["parameters"]["grades"] == 4


def test_findings_are_independent_with_exact_prevalences(findings):
    truth = findings.truth
    rows = _labels(findings.out)
    expected = {p["patient_id"]: p["findings"] for p in truth["patients"]}
    assert {row.patient_id: findings_of(row.label) for row in rows} == expected
    assert {row.label for row in rows if not findings_of(row.label)} <= {"none"}
    counts = Counter(name for names in expected.values() for name in names)
    assert dict(counts) == {"nodule": 10, "cyst": 8, "calcification": 6, "mass": 4}  # 0.5, 0.4, 0.3, 0.2 of 20
    assert truth["parameters"]["finding_prevalences"] == [0.5, 0.4, 0.3, 0.2]
    several = [names for names in expected.values() if len(names) >= 2]
    assert several and any(not names for names in expected.values())
    # a cell lists findings in the declared order
    order = truth["task"]["classes"]
    assert all(list(names) == sorted(names, key=order.index) for names in expected.values())
    assert truth["task"]["ingest_options"] == ["--task-kind", "multilabel", "--classes", ",".join(order)]


def test_every_finding_is_where_cohort_json_says_and_visible_on_ct(findings):
    checked = Counter()
    for patient, _, series in iter_series(findings.truth, "ct"):
        phantom = Phantom.from_truth(patient["phantom"])
        assert phantom.lesion is None and [name for name, _ in phantom.findings] == patient["findings"]
        hu = expected_values(patient, series)
        x, y, z = SliceStack.from_truth(series["geometry"]).voxel_positions()
        for name, finding in phantom.findings:
            c = finding.centre
            inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= finding.radius_mm**2
            assert inside.sum() >= 3, f"{name} is not in the CT field of view"
            # the noisy values inside the sphere centre on tissue + the finding's contrast
            assert np.median(hu[inside]) == pytest.approx(phantom.tissue_hu + finding.contrast_hu, abs=30)
            checked[name] += 1
    assert set(checked) == {"nodule", "cyst", "calcification", "mass"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "graded"}, "--task must be one of"),
        ({"task": "ordinal", "grades": 2}, "--grades must be between 3"),
        ({"task": "multilabel", "findings": 9}, "--findings must be between 2 and 4"),
    ],
)
def test_rejects_bad_task_options_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_cohort(tmp_path / "c", patients=4, seed=0, **kwargs)
    assert not (tmp_path / "c").exists()


def test_cli_writes_a_graded_cohort_and_prints_how_to_ingest_it(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "-n", "4", "--task", "ordinal", "--grades", "3"])
    assert result.exit_code == 0, result.output
    assert "--task-kind ordinal --classes 0,1,2 --decision-cut 1" in " ".join(result.output.split())
    assert {row.label for row in _labels(tmp_path / "c")} <= {"0", "1", "2"}
