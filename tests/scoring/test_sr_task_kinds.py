"""The DICOM SR of a multi-class, ordinal or multi-label result: one measurement group per class, grade cut or finding,
each with its probability and its coded decision, read back from the written file with highdicom."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from pydicom.uid import generate_uid

from medtl.scoring.dicom_sr import (
    ABSTAINED,
    DECISION,
    FINDING,
    FLAG,
    NEGATIVE,
    POSITIVE,
    PROBABILITY,
    UNDECIDED,
    AlgorithmInfo,
    build_sr,
    write_sr,
)
from medtl.scoring.policy import Policy
from medtl.scoring.sr_output import endpoint_findings
from support.dicom_factory import ct_slice

SHA = "cd" * 32
GRADES = ["0", "1", "2", "3"]
FINDINGS = ["mass", "calc", "effusion"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "ct.dcm"
    ct_slice(path, np.full((8, 8), 1000, np.uint16), position=(0, 0, 0), series_uid=generate_uid())
    return path


def _sr(source: Path, tmp_path: Path, policy: Policy, probabilities, *, abstained: bool = False, flags=()) -> Path:
    """Policy -> the ScoreRow columns -> a row as pandas gives it back -> the SR file, as scoring writes it."""
    columns = policy.columns(None if probabilities is None else np.array(probabilities), abstained=abstained)
    row = SimpleNamespace(**columns, abstained=abstained)
    dataset = build_sr(
        source, probability=row.probability, decision=row.decision, threshold=row.threshold, flags=list(flags),
        algorithm=AlgorithmInfo(model_id="grader", model_version="2.0", artifact_sha256=SHA, approved=True),
        positive_class="", seed_uid="9.8.7", task_kind=policy.kind, findings=endpoint_findings(row, None),
        abstained=abstained,
    )  # fmt: skip
    return write_sr(dataset, tmp_path / "sr")


def _groups(path: Path) -> list[dict]:
    """Per measurement group: the finding text, the probability (or None) and the decision code value."""
    read = []
    for template in hd.sr.srread(path).content.get_image_measurement_groups():
        group = template[0]  # the group's CONTAINER content item
        (finding,) = find_content_items(group, name=FINDING)
        (decision,) = find_content_items(group, name=DECISION)
        probabilities = find_content_items(group, name=PROBABILITY)
        flags = [item.TextValue for item in find_content_items(group, name=FLAG)]
        read.append(
            {
                "finding": finding.TextValue,
                "probability": float(probabilities[0].MeasuredValueSequence[0].NumericValue) if probabilities else None,
                "decision": decision.ConceptCodeSequence[0].CodeValue,
                "flags": flags,
            }
        )
    return read


def test_ordinal_has_one_finding_per_cut_with_its_probability_and_decision(source: Path, tmp_path: Path) -> None:
    policy = Policy("ordinal", GRADES, cut="2", thresholds={"ge_1": 0.5, "ge_2": 0.75, "ge_3": 0.3})
    path = _sr(source, tmp_path, policy, [0.1, 0.2, 0.3, 0.4])
    groups = _groups(path)
    assert [g["finding"] for g in groups] == ["grade >= 1", "grade >= 2", "grade >= 3"]
    assert [g["probability"] for g in groups] == pytest.approx([0.9, 0.7, 0.4])
    assert [g["decision"] for g in groups] == [POSITIVE.value, NEGATIVE.value, POSITIVE.value]
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    parameters = [i.TextValue for i in find_content_items(dataset, name=hd.sr.CodedConcept("111002", "DCM", "x"),
                                                           recursive=True)]  # fmt: skip
    assert "decision threshold: 0.75" in parameters and "endpoint: grade >= 2" in parameters


def test_multiclass_has_one_finding_per_class_and_the_most_probable_is_positive(source: Path, tmp_path: Path) -> None:
    groups = _groups(_sr(source, tmp_path, Policy("multiclass", ["a", "b", "c"]), [0.2, 0.5, 0.3]))
    assert [g["finding"] for g in groups] == ["class a (vs rest)", "class b (vs rest)", "class c (vs rest)"]
    assert [g["probability"] for g in groups] == pytest.approx([0.2, 0.5, 0.3])
    assert [g["decision"] for g in groups] == [NEGATIVE.value, POSITIVE.value, NEGATIVE.value]


def test_multilabel_has_one_finding_per_label_and_an_unthresholded_one_is_undecided(
    source: Path, tmp_path: Path
) -> None:
    policy = Policy("multilabel", FINDINGS, thresholds={"mass": 0.5, "calc": 0.2})
    groups = _groups(_sr(source, tmp_path, policy, [0.8, 0.1, 0.9], flags=["slice_gap"]))
    assert [g["finding"] for g in groups] == ["finding mass", "finding calc", "finding effusion"]
    assert [g["probability"] for g in groups] == pytest.approx([0.8, 0.1, 0.9])
    assert [g["decision"] for g in groups] == [POSITIVE.value, NEGATIVE.value, UNDECIDED.value]
    assert all(g["flags"] == ["slice_gap"] for g in groups)  # every group carries the caveats


def test_an_abstained_or_unscored_result_codes_every_finding_abstained(source: Path, tmp_path: Path) -> None:
    policy = Policy("multilabel", FINDINGS, thresholds=dict.fromkeys(FINDINGS, 0.3))
    kept = _groups(_sr(source, tmp_path / "kept", policy, [0.8, 0.1, 0.9], abstained=True))
    assert [g["decision"] for g in kept] == [ABSTAINED.value] * 3
    assert [g["probability"] for g in kept] == pytest.approx([0.8, 0.1, 0.9])
    unscored = _groups(_sr(source, tmp_path / "none", policy, None, abstained=True))
    assert [g["decision"] for g in unscored] == [ABSTAINED.value] * 3 and {g["probability"] for g in unscored} == {None}


def test_a_result_without_findings_or_with_an_impossible_probability_is_refused(source: Path) -> None:
    algorithm = AlgorithmInfo(model_id="m", model_version="1", artifact_sha256=SHA, approved=True)
    common = dict(probability=None, decision=None, threshold=None, flags=[], algorithm=algorithm, positive_class="")
    with pytest.raises(ValueError, match="one finding per endpoint"):
        build_sr(source, task_kind="ordinal", **common)
    from medtl.scoring.dicom_sr import EndpointFinding

    with pytest.raises(ValueError, match="probability"):
        build_sr(source, task_kind="multilabel", findings=[EndpointFinding("a", "finding a", 1.2, 0.5, True)], **common)
