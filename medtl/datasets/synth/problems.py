"""Problem files that a real PACS export contains, and what ingest is expected to do with each.

Why planted on purpose: "every input file ends ingested, skipped or quarantined" can only be tested against files
whose fate is known. Each problem is recorded in cohort.json with its kind, the files involved and the expected fate:
"quarantined" (unusable image data), "skipped" (not an image to ingest, or a duplicate), "flagged" (ingested with a
QC flag, named in `flag`) or "ingested" (unusual but valid).

Placement keeps the finding learnable: whole series are never destroyed; a truncated file and a duplicate are extra
files next to a complete series; the slice gap removes one slice away from the lesion's plane. Needs >= 3 patients:
the last patient is written in the flat layout, the one before it as a DICOM File-set (with a DICOMDIR), and the
patients before those carry the per-file problems.

Decisions:
- duplicate: the copy is named `<InstanceNumber>_dup.dcm`, which sorts after the original; ingest keeps the first
  file in sorted relative-path order and skips the other as `duplicate_instance`.
- NIfTI with qform != sform: ingested with the `qform_sform_mismatch` flag; the sform is used (nibabel's rule)
  and recorded, and the flag makes a person look at it.
- truncated file: pydicom's `dcmread` is lenient and parses the header of a file cut inside its pixel data, so the
  file is quarantined (`decode_failed`) when its pixel data cannot be decoded (fewer bytes than Rows x Columns).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from medtl.datasets.synth.dicom_series import ct_slice, text_report
from medtl.datasets.synth.phantom import render_hu
from medtl.datasets.synth.plan import PatientPlan, SeriesPlan, StudyPlan
from medtl.datasets.synth.writer import FILESET_ROOT, QFORM_SHIFT_MM, instance_path
from medtl.datasets.writing import derived_uid, dicom_bytes, save_dicom
from medtl.errors import ConfigError

MIN_PATIENTS = 3
TRUNCATE_FRACTION = 0.6


def _ct(patients: list[PatientPlan]) -> list[tuple[PatientPlan, StudyPlan, SeriesPlan]]:
    return [(p, st, se) for p in patients for st in p.studies for se in st.series if se.kind == "ct"]


def assign(plans: list[PatientPlan]) -> None:
    """Mark the layouts and series-level problems in the plan, before anything is written."""
    if len(plans) < MIN_PATIENTS:
        raise ConfigError(
            f"--with-problems needs at least {MIN_PATIENTS} patients, got {len(plans)}",
            where="synth --patients",
            fix=f"ask for {MIN_PATIENTS} or more patients, or leave out --with-problems",
        )
    plans[-1].layout = "flat"
    plans[-2].layout = "fileset"
    candidates = _ct(plans[:-2]) + _ct(plans[-1:])  # standard layout first; never inside the File-set
    candidates[0][2].transfer_syntax = RLELossless
    candidates[1 % len(candidates)][2].transfer_syntax = JPEG2000Lossless
    gap_patient, _, gap = candidates[2 % len(candidates)]
    gap.missing_positions = [_gap_position(gap_patient, gap)]
    _ct(plans[-2:-1])[0][2].nifti_qform_mismatch = True


def _gap_position(patient: PatientPlan, series: SeriesPlan) -> int:
    """A slice in the middle third of the stack, the one farthest from the focus (lesion) plane."""
    assert series.stack is not None
    n = series.stack.slices
    focus = np.asarray(patient.phantom.focus)
    middle = range(n // 3, max(n // 3 + 1, 2 * n // 3))
    return max(middle, key=lambda k: abs(float(np.dot(series.stack.ipp(k) - focus, series.stack.normal))))


def _record(kind: str, files: list[str], fate: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "files": files, "fate": fate, "reason": reason, **extra}


def _files(series: SeriesPlan) -> list[str]:
    return [series.files[k] for k in sorted(series.files)]


def inject(out: Path, seed: int, plans: list[PatientPlan]) -> list[dict[str, Any]]:
    """Write the extra problem files and describe every problem (planned ones included) with its expected fate."""
    records: list[dict[str, Any]] = []
    for _, _, series in _ct(plans):
        if series.transfer_syntax in (RLELossless, JPEG2000Lossless):
            name = "rle_lossless" if series.transfer_syntax == RLELossless else "jpeg2000_lossless"
            records.append(
                _record(
                    f"compressed_{name}",
                    _files(series),
                    "ingested",
                    "compressed pixel data: decode through pydicom's plugins and record the decoder",
                    series_uid=series.series_uid,
                    transfer_syntax=series.transfer_syntax,
                )
            )
        if series.missing_positions:
            records.append(
                _record(
                    "slice_gap",
                    _files(series),
                    "flagged",
                    "one slice missing in the middle",
                    flag="slice_gap",
                    series_uid=series.series_uid,
                    missing_positions=series.missing_positions,
                )
            )
        if series.nifti_qform_mismatch:
            records.append(
                _record(
                    "nifti_qform_sform_mismatch",
                    [series.nifti_file or ""],
                    "flagged",
                    f"qform is shifted {QFORM_SHIFT_MM} mm along x from the sform",
                    flag="qform_sform_mismatch",
                    series_uid=series.series_uid,
                )
            )
    flat = [
        f
        for p in plans
        if p.layout == "flat"
        for st in p.studies
        for se in st.series
        for f in _files(se)
        if se.kind != "localizer"
    ]  # localizers are skipped wherever they are
    records.append(
        _record(
            "unsorted_flat_folder",
            sorted(flat),
            "ingested",
            "one patient's files in one folder, no .dcm suffix, random names",
        )
    )
    records.append(
        _record(
            "dicomdir",
            [f"{FILESET_ROOT}/DICOMDIR"],
            "skipped",
            "Media Storage Directory Storage: an index, not an image (its instances are ingested)",
            reason_code="dicomdir",
        )
    )
    standard = _ct([p for p in plans if p.layout == "standard"])
    plain = [t for t in standard if t[2].transfer_syntax == ExplicitVRLittleEndian and not t[2].missing_positions]
    plain = plain or standard
    records.append(_truncated(out, seed, *plain[0]))
    records.append(_duplicate(out, seed, *plain[-1]))
    records.extend(_non_images(out, *standard[0][:2]))
    return records


def _truncated(out: Path, seed: int, patient: PatientPlan, study: StudyPlan, series: SeriesPlan) -> dict[str, Any]:
    """An extra slice just past the end of a complete series, cut inside its pixel data."""
    assert series.stack is not None
    n = series.stack.slices
    extended = replace(
        series,
        stack=replace(series.stack, slices=n + 1),
        sop_uids=[*series.sop_uids, derived_uid(series.series_uid, "truncated")],
        instance_numbers=[*series.instance_numbers, n + 1],
    )
    hu = render_hu(patient.phantom, extended.stack, noise_sd=series.noise_sd, noise_seed=series.noise_seed + 1)  # type: ignore[arg-type]
    data = dicom_bytes(ct_slice(patient, study, extended, n, hu[n]))
    relative = instance_path(seed, patient, study, series, str(n + 1))
    (out / relative).write_bytes(data[: int(len(data) * TRUNCATE_FRACTION)])
    return _record(
        "truncated_dicom",
        [relative],
        "quarantined",
        "file cut inside its pixel data",
        reason_code="decode_failed",
        series_uid=series.series_uid,
    )


def _duplicate(out: Path, seed: int, patient: PatientPlan, study: StudyPlan, series: SeriesPlan) -> dict[str, Any]:
    k = min(series.files)
    original = series.files[k]
    copy = instance_path(seed, patient, study, series, f"{series.instance_numbers[k]}_dup")
    (out / copy).write_bytes((out / original).read_bytes())
    return _record(
        "duplicate_instance",
        [original, copy],
        "skipped",
        "exact copy of another file (same SOPInstanceUID); the later path in sorted order is skipped",
        reason_code="duplicate_instance",
        skipped_file=copy,
        kept_file=original,
        series_uid=series.series_uid,
    )


def _non_images(out: Path, patient: PatientPlan, study: StudyPlan) -> list[dict[str, Any]]:
    folder = f"dicom/{patient.patient_id}"
    note = f"{folder}/export_notes.txt"
    (out / note).write_text("Exported from PACS for research. Contact the imaging desk for questions.\n")
    screenshot = f"{folder}/screenshot.png"
    (out / screenshot).write_bytes(_png(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))))
    series_uid = derived_uid(study.study_uid, "sr-series")
    report = f"dicom/{patient.patient_id}/{study.study_uid}/{series_uid}/1.dcm"
    save_dicom(
        text_report(
            patient,
            study,
            series_uid,
            derived_uid(series_uid, "sr"),
            "Reader note: see the clinical report. This object contains no pixel data.",
        ),
        out / report,
    )
    return [
        _record(
            "non_dicom",
            [note, screenshot],
            "skipped",
            "not DICOM (a text note and a PNG screenshot)",
            reason_code="not_an_image",
        ),
        _record(
            "structured_report",
            [report],
            "skipped",
            "Comprehensive SR: a document, not an image",
            reason_code="structured_report",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
        ),
    ]


def _png(image: np.ndarray) -> bytes:
    """A minimal 8-bit greyscale PNG (no Pillow needed; no timestamp, so the bytes are reproducible)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    height, width = image.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in image)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
