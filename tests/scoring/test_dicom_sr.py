"""The DICOM SR that goes back to PACS: lands in the source study, references the series, says what the model said."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from pydicom.uid import generate_uid

from medtl.errors import ReadError
from medtl.scoring.dicom_sr import (
    ABSTAINED,
    DECISION,
    FLAG,
    NEGATIVE,
    POSITIVE,
    PROBABILITY,
    AlgorithmInfo,
    build_sr,
    source_reference,
    write_sr,
)
from support.dicom_factory import ct_slice

SHA = "ab" * 32


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "ct.dcm"
    ct_slice(path, np.full((8, 8), 1000, np.uint16), position=(0, 0, 0), series_uid=generate_uid())
    return path


def _algorithm(approved: bool) -> AlgorithmInfo:
    return AlgorithmInfo(model_id="chest-ct", model_version="3.1.0", artifact_sha256=SHA, approved=approved)


def _build(source: Path, **overrides: object) -> pydicom.Dataset:
    arguments: dict = dict(
        probability=0.734512345,
        decision="nodule",
        threshold=0.5,
        flags=["slice_gap", "feature_outlier"],
        algorithm=_algorithm(approved=False),
        positive_class="nodule",
        seed_uid="1.2.3.4",
    )
    arguments.update(overrides)
    return build_sr(source, **arguments)


def _texts(dataset: pydicom.Dataset) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in find_content_items(dataset, value_type=hd.sr.ValueTypeValues.TEXT, recursive=True):
        found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
    return found


def _decision(dataset: pydicom.Dataset) -> str:
    (item,) = find_content_items(dataset, name=DECISION, recursive=True)
    return item.ConceptCodeSequence[0].CodeValue


def test_sr_lands_in_the_source_study_and_reports_the_result(source: Path, tmp_path: Path) -> None:
    original = pydicom.dcmread(source)
    path = write_sr(_build(source), tmp_path / "sr")
    dataset = pydicom.dcmread(path)
    assert path.name == f"SR_{dataset.SOPInstanceUID}.dcm"
    assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    assert dataset.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert dataset.StudyInstanceUID == original.StudyInstanceUID
    assert (dataset.PatientID, str(dataset.PatientName)) == (original.PatientID, str(original.PatientName))
    assert dataset.SeriesInstanceUID != original.SeriesInstanceUID

    report = hd.sr.srread(path)
    assert (original.StudyInstanceUID, original.SeriesInstanceUID) in report.get_evidence_series()
    (group,) = report.content.get_image_measurement_groups()
    assert [image.referenced_sop_instance_uid for image in group.source_images] == [original.SOPInstanceUID]
    (measurement,) = group.get_measurements(name=PROBABILITY)
    assert round(measurement.value, 4) == 0.7345
    assert measurement.unit.value == "1"
    assert _decision(dataset) == POSITIVE.value

    texts = _texts(dataset)
    assert texts["Quality or out-of-distribution flag"] == ["slice_gap", "feature_outlier"]
    assert texts["Algorithm Name"] == ["medtl chest-ct (UNAPPROVED)"]
    assert texts["Algorithm Version"] == ["3.1.0"]
    assert texts["Artifact approval status"][0].startswith("UNAPPROVED")
    assert any(SHA in parameter for parameter in texts["Algorithm Parameters"])
    assert texts["Device Observer Name"] == ["medtl chest-ct (UNAPPROVED)"]  # the observation context
    assert "UNAPPROVED" in dataset.SeriesDescription


def test_approved_artifact_and_another_class_is_coded_negative(source: Path) -> None:
    dataset = _build(source, decision="normal", probability=0.12, flags=[], algorithm=_algorithm(approved=True))
    texts = _texts(dataset)
    assert _decision(dataset) == NEGATIVE.value
    assert texts["Predicted class"] == ["normal"]
    assert texts["Artifact approval status"] == ["APPROVED"]
    assert texts["Algorithm Name"] == ["medtl chest-ct"]
    assert FLAG.meaning not in texts
    assert "UNAPPROVED" not in str(dataset)


def test_same_seed_gives_the_same_uids_and_another_seed_does_not(source: Path) -> None:
    first, again = _build(source), _build(source)
    other = _build(source, seed_uid="1.2.3.5")
    unseeded = _build(source, seed_uid=None)
    key = lambda ds: (ds.SOPInstanceUID, ds.SeriesInstanceUID)  # noqa: E731
    assert key(first) == key(again)
    assert key(other)[0] != key(first)[0] and key(other)[1] != key(first)[1]
    assert key(unseeded)[0] != key(first)[0]


def test_abstained_without_probability_has_no_measurement(source: Path, tmp_path: Path) -> None:
    path = write_sr(_build(source, probability=None, decision=None, flags=["modality_mismatch"]), tmp_path / "sr")
    dataset = pydicom.dcmread(path)
    assert find_content_items(dataset, value_type=hd.sr.ValueTypeValues.NUM, recursive=True) == []
    assert _decision(dataset) == ABSTAINED.value
    texts = _texts(dataset)
    assert texts["Abstained"][0].startswith("abstained")
    assert texts["Quality or out-of-distribution flag"] == ["modality_mismatch"]
    (group,) = hd.sr.srread(path).content.get_image_measurement_groups()
    assert group.get_measurements() == []


def test_unusable_inputs_are_refused_clearly(source: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with pytest.raises(ReadError):
        source_reference(junk)
    with pytest.raises(ValueError, match="probability"):
        _build(source, probability=1.5)
    with pytest.raises(ValueError, match="sha256"):
        AlgorithmInfo(model_id="m", model_version="1", artifact_sha256="short", approved=True)
