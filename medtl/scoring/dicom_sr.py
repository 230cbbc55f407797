"""One DICOM Structured Report per scored series, so the result goes back to PACS and appears beside the images.

Why an SR and why this shape: PACS and viewers file a Comprehensive 3D SR into the source study (same Study Instance
UID) and show it without medtl; TID 1500 "Measurement Report" is the template viewers and highdicom both know, and
its coded tree stays machine-readable for audit. The patient/study module is copied from one source file of the series;
those site-local identifiers live only in the SR that goes back to the site, never in medtl's PHI-free outputs.
A copied attribute whose value is invalid is emptied first (sr_header.py): the SR is still written, and the caller
learns which attribute keywords were left out (`omitted_attributes`), never their values.

Codes. Standard codes where one says exactly what we mean: SCT 10828004 "Positive" / 260385009 "Negative" (CID 250)
as the decision value, UCUM "1" (no units) for a probability, SCT 363679005 "Imaging procedure" as the procedure
reported, and the DCM codes highdicom writes for TID 4019 (algorithm) and TID 1004 (device observer). Concepts with
no standard code (an AI model's probability and decision, abstention, approval status, QC flags) use the local scheme
"99MEDTL" (PS3.16: designators beginning "99" are private), declared in the Coding Scheme Identification Sequence.

Task types. A binary model's SR holds one measurement group (the positive class). Multi-class, ordinal and multi-label
models get one group per endpoint (contracts/task.py): per class (vs the rest; Positive for the most probable class),
per grade cut "grade >= k", per finding; each group carries its own probability, threshold (in the algorithm
parameters) and coded decision, so a viewer that shows one group shows a complete statement.


    PROB       Probability of finding       NUM, unit "1": the model's probability of the positive class (of the
                                            group's class, grade cut or finding, for the other task types)
    DECISION   Model decision               CODE: SCT Positive / SCT Negative / 99MEDTL ABSTAINED / UNDECIDED
    ABSTAINED  Abstained                    the decision was withheld (QC / out-of-distribution / no probability)
    UNDECIDED  Undecided                    no operating point applies (an unapproved model never evaluated)
    FINDING    Finding (positive class)     TEXT: the class the probability is about ("grade >= 2", "finding
                                            effusion", "class b (vs rest)" for the other task types)
    PREDCLASS  Predicted class              TEXT: the class the model decided on
    APPROVAL   Artifact approval status     TEXT: APPROVED, or UNAPPROVED with what that means
    FLAG       Quality or OOD flag          TEXT: one item per QC / out-of-distribution flag
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import pydicom
import pydicom.errors
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import medtl
from medtl.errors import ReadError
from medtl.scoring.sr_header import REQUIRED_UIDS, clean_header

SCHEME = "99MEDTL"
PROBABILITY = Code("PROB", SCHEME, "Probability of finding")
DECISION = Code("DECISION", SCHEME, "Model decision")
ABSTAINED = Code("ABSTAINED", SCHEME, "Abstained")
UNDECIDED = Code("UNDECIDED", SCHEME, "Undecided")
FINDING = Code("FINDING", SCHEME, "Finding (positive class)")
PREDICTED_CLASS = Code("PREDCLASS", SCHEME, "Predicted class")
APPROVAL = Code("APPROVAL", SCHEME, "Artifact approval status")
FLAG = Code("FLAG", SCHEME, "Quality or out-of-distribution flag")
POSITIVE = Code("10828004", "SCT", "Positive")
NEGATIVE = Code("260385009", "SCT", "Negative")
UNIT_ONE = Code("1", "UCUM", "no units")
UNAPPROVED_TEXT = "UNAPPROVED: no clinician approval is recorded for this model artifact; research use only"
UNTRUSTED_TEXT = "UNTRUSTED: the model artifact was not checked against a trust anchor; development use only"
_UID_NAMESPACE = uuid.UUID("6f3c1f0e-5d1a-5b7e-9c1e-6d65646c7372")  # fixed: seeded UIDs must never change
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Type 2 patient/study attributes highdicom reads directly; a source without them still gets an SR (empty values).
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


@dataclass(frozen=True)
class SourceSeries:
    """The scored series as the SR must reference it: one of its files (site-local, never written to medtl outputs)."""

    path: Path
    header: pydicom.Dataset = field(repr=False, compare=False)
    invalid: tuple[str, ...] = ()  # keywords of attributes emptied because their values were invalid

    @property
    def study_instance_uid(self) -> str:
        return str(self.header.StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.header.SeriesInstanceUID)


@dataclass(frozen=True)
class AlgorithmInfo:
    """Which sealed model produced the result; an unapproved artifact is named so in the SR itself."""

    model_id: str
    model_version: str
    artifact_sha256: str
    approved: bool
    trusted: bool = True  # False: the artifact's signer was not checked against a trust anchor (development)
    manufacturer: str = "medtl"
    software_version: str = medtl.__version__

    def __post_init__(self) -> None:
        if not _SHA256.match(self.artifact_sha256):
            raise ValueError("artifact_sha256 must be 64 lowercase hex digits (the artifact manifest's sha256)")

    @property
    def name(self) -> str:
        """The name a radiologist reads in the viewer: the UNAPPROVED marker cannot be missed."""
        return (
            f"medtl {self.model_id}"
            + ("" if self.approved else " (UNAPPROVED)")
            + ("" if self.trusted else " (UNTRUSTED)")
        )


@dataclass(frozen=True)
class EndpointFinding:
    """One binary question of a multi-class, ordinal or multi-label result (a ScoreRow endpoint), as the SR says it."""

    id: str  # the endpoint id: class, ge_<grade> or finding
    display: str  # what the reader sees: "grade >= 2", "finding effusion", "class b (vs rest)"
    probability: float | None
    threshold: float | None
    decision: bool | None  # None: abstained, or no operating point applies


def source_reference(path: Path) -> SourceSeries:
    """Read one source file's header (no pixels) and check it has what an SR reference needs."""
    where = "the source DICOM file of the scored series"
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise ReadError(
            f"cannot read the source DICOM file for the SR ({type(error).__name__})",
            where=where,
            fix="pass one readable DICOM file of the scored series",
        ) from error
    missing = [k for k in REQUIRED_UIDS if k not in header]
    if missing:
        raise ReadError(
            f"the source file lacks {', '.join(missing)}", where=where, fix="pass an image file of the series"
        )
    invalid = clean_header(header)
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    return SourceSeries(Path(path), header, invalid)


def omitted_attributes(series: SourceSeries, report: pydicom.Dataset) -> tuple[str, ...]:
    """The source attributes the SR copied without their value (it was invalid): keywords only, safe to log."""
    return tuple(keyword for keyword in series.invalid if keyword in report)


def _uid(seed_uid: str | None, role: str, source: SourceSeries) -> str:
    """Seeded: a UUID-derived UID (2.25) from seed, role and source series, so a re-run overwrites, never duplicates."""
    if seed_uid is None:
        return f"2.25.{uuid.uuid4().int}"
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{role}|{seed_uid}|{source.series_instance_uid}').int}"


def _decision_items(
    probability: float | None, decision: str | None, positive_class: str
) -> tuple[list[hd.sr.Measurement], hd.sr.QualitativeEvaluation, list[hd.sr.TextContentItem]]:
    """The probability (absent when there is none), the coded decision, and the texts that explain them."""
    measurements = []
    if probability is not None:
        measurements.append(hd.sr.Measurement(name=PROBABILITY, value=float(probability), unit=UNIT_ONE))
    texts = [_text(FINDING, positive_class)]
    if decision is None:
        value = ABSTAINED
        texts.append(_text(ABSTAINED, "abstained: no decision was made for this series; see the flags"))
    else:
        value = POSITIVE if decision == positive_class else NEGATIVE
        texts.append(_text(PREDICTED_CLASS, decision))
    return measurements, hd.sr.QualitativeEvaluation(DECISION, value), texts


def _endpoint_items(
    finding: EndpointFinding, abstained: bool
) -> tuple[list[hd.sr.Measurement], hd.sr.QualitativeEvaluation, list[hd.sr.TextContentItem]]:
    measurements = []
    if finding.probability is not None:
        measurements.append(hd.sr.Measurement(name=PROBABILITY, value=float(finding.probability), unit=UNIT_ONE))
    texts = [_text(FINDING, finding.display)]
    if finding.decision is not None:
        value = POSITIVE if finding.decision else NEGATIVE
    elif abstained:
        value = ABSTAINED
        texts.append(_text(ABSTAINED, "abstained: no decision was made for this series; see the flags"))
    else:
        value = UNDECIDED
        texts.append(_text(UNDECIDED, "no decision: no operating point applies (unapproved and not evaluated)"))
    return measurements, hd.sr.QualitativeEvaluation(DECISION, value), texts


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def build_sr(
    source: Path | SourceSeries,
    *,
    probability: float | None,
    decision: str | None,
    threshold: float | None,
    flags: list[str],
    algorithm: AlgorithmInfo,
    positive_class: str,
    series_number: int = 9901,
    seed_uid: str | None = None,
    task_kind: str = "binary",
    findings: Sequence[EndpointFinding] = (),
    abstained: bool = False,
) -> pydicom.Dataset:
    """A Comprehensive 3D SR (TID 1500) in the source study that references the scored series.

    Binary: `decision` is the predicted class name (as in ScoreRow), coded Positive when it equals `positive_class`,
    else Negative; None means abstained. A None `probability` leaves out the numeric measurement (nothing to report).
    Other task types: one measurement group per entry of `findings` (every endpoint of the row); `abstained` says
    whether a missing decision was withheld (ABSTAINED) or had no operating point (UNDECIDED).
    """
    values = [probability] if task_kind == "binary" else [f.probability for f in findings]
    for value in values:
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"probability must be within [0, 1] or None, not {value!r}")
    if task_kind != "binary" and not findings:
        raise ValueError(f"a {task_kind} result needs one finding per endpoint (none given)")
    series = source if isinstance(source, SourceSeries) else source_reference(source)
    caveats = [_text(APPROVAL, "APPROVED" if algorithm.approved else UNAPPROVED_TEXT)]
    if not algorithm.trusted:
        caveats.append(_text(APPROVAL, UNTRUSTED_TEXT))
    caveats += [_text(FLAG, flag) for flag in flags]
    if task_kind == "binary":
        groups = [
            _group(
                series, algorithm, seed_uid, role="tracking", identifier=positive_class,
                parameters=[f"positive class: {positive_class}", f"decision threshold: {_number(threshold)}"],
                items=_decision_items(probability, decision, positive_class), caveats=caveats,
            )
        ]  # fmt: skip
    else:
        rule = ["decision: the most probable class"] if task_kind == "multiclass" else []
        groups = [
            _group(
                series, algorithm, seed_uid, role=f"tracking|{finding.id}", identifier=finding.id,
                parameters=[f"task type: {task_kind}", f"endpoint: {finding.display}", *rule,
                            f"decision threshold: {_number(finding.threshold)}"],
                items=_endpoint_items(finding, abstained), caveats=caveats,
            )
            for finding in findings
        ]  # fmt: skip
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=f"2.25.{uuid.uuid5(_UID_NAMESPACE, 'device|' + algorithm.artifact_sha256).int}",
        name=algorithm.name,
        manufacturer_name=algorithm.manufacturer,
        model_name=f"{algorithm.model_id} {algorithm.model_version}",
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.cid270.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[series.header],
        content=report[0],
        series_instance_uid=_uid(seed_uid, "series", series),
        series_number=series_number,
        sop_instance_uid=_uid(seed_uid, "sop", series),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.model_id[:64],
        software_versions=algorithm.software_version,
        series_description=f"AI result: {algorithm.name}"[:64],
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=SCHEME, name="medtl local codes", responsible_organization="medtl project"
            )
        ],
        is_complete=True,
    )


def _group(
    series: SourceSeries,
    algorithm: AlgorithmInfo,
    seed_uid: str | None,
    *,
    role: str,
    identifier: str,
    parameters: list[str],
    items: tuple[list[hd.sr.Measurement], hd.sr.QualitativeEvaluation, list[hd.sr.TextContentItem]],
    caveats: list[hd.sr.TextContentItem],
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One measurement group (TID 1501): what was measured, the decision, and the caveats that go with it."""
    measurements, evaluation, texts = items
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(seed_uid, role, series), identifier=f"{algorithm.model_id} {identifier}"[:64]
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=algorithm.name,
            version=algorithm.model_version,
            manufacturer=algorithm.manufacturer,
            parameters=[
                *parameters,
                f"artifact manifest sha256: {algorithm.artifact_sha256}",
                f"software: medtl {algorithm.software_version}",
            ],
        ),
        measurements=measurements or None,
        qualitative_evaluations=[evaluation],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(series.header)],
    )
    group[0].ContentSequence.extend([*texts, *caveats])
    return group


def _number(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


def write_sr(dataset: pydicom.Dataset, folder: Path) -> Path:
    """Save as SR_<SOPInstanceUID>.dcm (Part 10 file meta); written then renamed, so a crash leaves no half file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"SR_{dataset.SOPInstanceUID}.dcm"
    partial = target.with_suffix(".dcm.partial")
    dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, target)
    return target
