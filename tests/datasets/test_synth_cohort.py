"""Cohort-level promises: determinism, labels, parameters, refusal to overwrite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medtl.contracts import LabelRow, validate_rows
from medtl.datasets.synth import make_cohort
from medtl.datasets.synth.phantom import lesion_size_and_contrast
from medtl.datasets.synth.plan import plan_cohort
from medtl.errors import ConfigError


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_same_seed_writes_byte_identical_files_and_another_seed_differs(cohort, cohort_args, tmp_path):
    again = make_cohort(tmp_path / "again", **cohort_args)
    first, second = _tree(cohort.out), _tree(again.out)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    assert any(name.endswith("DICOMDIR") for name in first) and any(name.endswith(".nii.gz") for name in first)

    other = _tree(make_cohort(tmp_path / "other", **{**cohort_args, "seed": cohort_args["seed"] + 1}).out)
    assert other["labels.csv"] != first["labels.csv"]
    assert other["cohort.json"] != first["cohort.json"]
    assert set(other) != set(first)  # UIDs, hence paths, depend on the seed


def test_labels_csv_follows_the_contract_one_row_per_study(cohort, cohort_args, truth):
    with open(cohort.out / "labels.csv", newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = validate_rows(LabelRow, records, where="labels.csv")
    studies = {(p["patient_id"], st["study_uid"]): str(p["label"]) for p in truth["patients"] for st in p["studies"]}
    assert {(row.patient_id, row.study_id): row.label for row in rows} == studies
    assert len(rows) == len(studies)
    # PHI-looking columns a real spreadsheet has; the contract allows and ignores them.
    assert {"patient_name", "birth_date", "accession_number"} <= set(records[0])
    assert all("," in record["patient_name"] for record in records)
    # The label belongs to the patient: identical across a patient's studies.
    per_patient: dict[str, set[str]] = {}
    for row in rows:
        per_patient.setdefault(row.patient_id, set()).add(row.label)
    assert all(len(labels) == 1 for labels in per_patient.values())
    assert any(len(p["studies"]) == 2 for p in truth["patients"])
    positives = sum(p["label"] for p in truth["patients"])
    assert positives == round(0.5 * cohort_args["patients"]) == cohort.positives


@pytest.mark.parametrize(("patients", "prevalence"), [(20, 0.25), (9, 0.5), (10, 0.0), (7, 1.0), (40, 0.3)])
def test_prevalence_is_followed_exactly(patients, prevalence):
    plans = plan_cohort(patients=patients, seed=3, prevalence=prevalence, difficulty=0.3)
    assert sum(p.label for p in plans) == int(prevalence * patients + 0.5)
    assert all((p.phantom.lesion is not None) == bool(p.label) for p in plans)
    assert len({p.patient_id for p in plans}) == patients


def test_difficulty_shrinks_the_lesion(truth):
    radius_easy, contrast_easy = lesion_size_and_contrast(0.0)
    radius_hard, contrast_hard = lesion_size_and_contrast(1.0)
    assert radius_easy > radius_hard > 1.5 and contrast_easy > contrast_hard > 20
    nominal = truth["lesion_model"]
    for patient in truth["patients"]:
        lesion = patient["phantom"]["lesion"]
        if lesion is not None:
            assert 0.84 <= lesion["radius_mm"] / nominal["nominal_radius_mm"] <= 1.16
            assert 0.84 <= abs(lesion["contrast_hu"]) / nominal["nominal_abs_contrast_hu"] <= 1.16
    signs = {patient["phantom"]["lesion"]["contrast_hu"] > 0 for patient in truth["patients"] if patient["label"]}
    assert signs  # brighter and/or darker findings are recorded


def test_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        make_cohort(out, patients=2, seed=0)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients": 1, "seed": 0}, "at least 2"),
        ({"patients": 4, "seed": -1}, "seed"),
        ({"patients": 4, "seed": 0, "prevalence": 1.5}, "prevalence"),
        ({"patients": 4, "seed": 0, "difficulty": -0.1}, "difficulty"),
        ({"patients": 2, "seed": 0, "with_problems": True}, "at least 3 patients"),
    ],
)
def test_rejects_bad_parameters_before_writing(tmp_path, kwargs, message):
    out = tmp_path / "cohort"
    with pytest.raises(ConfigError, match=message):
        make_cohort(out, **kwargs)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_cohort_without_problems_has_only_clean_standard_series(tmp_path):
    summary = make_cohort(tmp_path / "clean", patients=2, seed=5, prevalence=0.5)
    assert summary.truth["problems"] == [] and summary.problems == []
    assert {p["layout"] for p in summary.truth["patients"]} == {"standard"}
    files = [p for p in (summary.out / "dicom").rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".dcm" for p in files)
    assert summary.positives == 1
    assert "patients: 2 (1 with the finding" in summary.describe()
