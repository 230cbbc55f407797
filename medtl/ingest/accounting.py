"""Accounting for a run: which scan each work item makes and under which pseudonyms, its rows as results arrive,
and every input file's record (read, skipped, quarantined) so that no file goes unaccounted for.

Identifiers become pseudonyms here (and in `private/`, which keeps what a site needs to find a file again).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.contracts.ingest import FileRecord, FileRecords, FileRecordValues
from medtl.contracts.ingest_state import ScanState
from medtl.errors import IngestError
from medtl.identity import Pseudonymizer
from medtl.ingest.discover import InputFile
from medtl.ingest.incremental import unit_of
from medtl.ingest.intensity import IntensitySummary
from medtl.ingest.privacy import PrivateRecords
from medtl.ingest.worker import WorkItem, WorkResult
from medtl.io.dicom.grouping import FileFate, ScanPlan
from medtl.io.limits import IngestLimits

_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


@dataclass
class Identity:
    """A work item's identifiers as found (raw, PHI): they become pseudonyms in `Collected.add` and are kept in
    `private/` only."""

    patient: str
    study: str | None  # as a labels file names it: StudyInstanceUID, or a NIfTI study folder's name
    accession: str | None
    series: str
    scan_prefix: str
    study_scope: str | None = None  # the study pseudonym's source where `study` is unique only within a patient

    @property
    def study_key(self) -> str | None:
        return self.study_scope or self.study


def work_items(
    files: list[InputFile], plans: list[ScanPlan], out: Path, limits: IngestLimits
) -> tuple[list[WorkItem], dict[int, Identity]]:
    """One work item per planned DICOM scan and per readable NIfTI file, numbered in that order, with each item's
    identity by item id (the order of the outputs follows these numbers, not the order of work)."""
    items: list[WorkItem] = []
    identities: dict[int, Identity] = {}
    for plan in plans:
        first = plan.headers[0]
        item = WorkItem(len(items), out, plan=plan, limits=limits)
        series = first.series_uid or f"instance:{first.sop_instance_uid}"
        identities[item.item_id] = Identity(
            patient=first.patient_id,
            study=first.study_uid,
            accession=first.accession_number or None,
            series=series,
            scan_prefix=f"{series}|{plan.handling}|{plan.volume_index}",
        )
        items.append(item)
    for file in files:
        if file.kind == "nifti" and file.status is None:
            item = WorkItem(len(items), out, nifti_path=file.path, limits=limits)
            identities[item.item_id] = _nifti_identity(file)
            items.append(item)
    return items, identities


def _nifti_identity(file: InputFile) -> Identity:
    """Patient = first folder under the source root (or the file stem), study = second folder (within that
    patient), series = the file.

    A file stem that is a DICOM UID is used as the SeriesInstanceUID (a study folder named by a UID, as the
    StudyInstanceUID), so NIfTI exported from DICOM (one file per series, named by its UID) gets the same
    pseudonyms as the DICOM it came from. A dcm2niix-style sidecar with
    PatientID / StudyInstanceUID / SeriesInstanceUID overrides all of this.
    """
    from medtl.io.nifti import sidecar_for

    parts = file.relative.split("/")
    name = parts[-1]
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
    sidecar = sidecar_for(file.path)
    patient = str(sidecar.get("PatientID") or (parts[0] if len(parts) > 1 else stem))
    study_uid = sidecar.get("StudyInstanceUID")
    folder = parts[1] if len(parts) > 2 else None
    # A folder name such as "study1" is unique only within its patient: the pseudonym is derived from both, or
    # patA/study1 and patB/study1 would become one study. A folder named by a StudyInstanceUID is unique as it is
    # and keeps the DICOM study's pseudonym.
    scoped = folder is not None and not study_uid and not _UID.match(folder)
    scope = f"nifti-study:{patient}/{folder}" if scoped else None
    series = sidecar.get("SeriesInstanceUID") or (stem if _UID.match(stem) else f"nifti:{file.relative}")
    study = str(study_uid) if study_uid else folder
    return Identity(patient, study, None, str(series), f"{series}|nifti", study_scope=scope)


class Collected:
    """Manifest rows (labels joined later, over all rows), intensity summaries and each scan's group and join keys,
    gathered result by result as the series are decoded, and given in item order (the order of work never shows).

    Why as they arrive: the ingest process waits for the workers meanwhile, so accounting for a series there
    costs no time, where after the last series it would hold up the run's end."""

    def __init__(self, items: list[WorkItem], identities: dict[int, Identity], pseudo: Pseudonymizer) -> None:
        self.items, self.identities, self.pseudo = items, identities, pseudo
        self._by_item: dict[int, tuple[list[dict[str, Any]], list[IntensitySummary], list[ScanState]]] = {}

    def add(self, result: WorkResult, by_location: dict[str, InputFile]) -> tuple[str, list[str]]:
        """The result's rows; returns its series pseudonym and scan ids (for its files' records)."""
        pseudo, identity, item = self.pseudo, self.identities[result.item_id], self.items[result.item_id]
        first = item.plan.headers[0].path if item.plan else item.nifti_path
        unit = unit_of(by_location[str(first)], pseudo)
        series_id = pseudo.series(identity.series)
        rows, scans, scan_ids = [], [], []
        for scan in result.scans:
            scan_id = pseudo.pseudonym("scan", f"{identity.scan_prefix}|{scan['volume_index']}")
            scan_ids.append(scan_id)
            scans.append(
                ScanState(
                    scan_id=scan_id,
                    unit=unit,
                    patient_key=pseudo.patient(identity.patient),
                    study_key=pseudo.study(identity.study) if identity.study else None,
                    accession_key=pseudo.study(identity.accession) if identity.accession else None,
                    series_key=pseudo.series(identity.series),
                )
            )
            rows.append(
                {
                    **scan,
                    "scan_id": scan_id,
                    "patient_id": pseudo.patient(identity.patient),
                    "study_id": pseudo.study(identity.study_key) if identity.study_key else None,
                    "series_id": series_id,
                    "source_format": "nifti" if item.nifti_path else "dicom",
                    "site": None,
                    "label": None,
                    "split": None,
                }
            )
        self._by_item[result.item_id] = (rows, list(result.intensities), scans)
        return series_id, scan_ids

    def in_item_order(self) -> tuple[list[dict[str, Any]], dict[str, IntensitySummary], list[ScanState]]:
        rows: list[dict[str, Any]] = []
        intensities: dict[str, IntensitySummary] = {}
        scans: list[ScanState] = []
        for item_id in sorted(self._by_item):
            item_rows, item_intensities, item_scans = self._by_item[item_id]
            rows += item_rows
            scans += item_scans
            intensities.update(zip((row["scan_id"] for row in item_rows), item_intensities, strict=True))
        return rows, intensities, scans


def record_decoded(
    result: WorkResult,
    outcome: tuple[str, list[str]],
    by_location: dict[str, InputFile],
    records: dict[str, FileRecordValues],
    private: PrivateRecords,
) -> None:
    """The records of one decoded series' files (by their path's text, as decoding results name them)."""
    series_id, scan_ids = outcome
    for file_result in result.files:
        location = file_result.location
        file = by_location[location]
        if file_result.error is not None or not scan_ids:
            reason = file_result.error or result.error or "no scan could be formed from this file"
            fallback = "decode_failed" if file_result.error and not result.error else "scan_rejected"
            code = file_result.code or result.error_code or fallback
            records[location] = private.record(file, "quarantined", code, reason, sha256=file_result.sha256)
        else:
            records[location] = private.record(
                file, "ingested", None, None, sha256=file_result.sha256, series_id=series_id, scan_ids=scan_ids
            )


def file_records(
    files: list[InputFile],
    fates: Sequence[FileFate],
    by_location: dict[str, InputFile],
    records: dict[str, FileRecordValues],
    private: PrivateRecords,
) -> None:
    """Every read file registered, and the records of those whose fate discovery or grouping decided (the
    decoded ones are recorded as their series come back, `record_decoded`). Records are kept by the path's text:
    a `Path` hashes its parts the first time, and a run records every file it reads."""
    for file in files:
        private.register(file)
        if file.status is not None:
            records[str(file.path)] = private.record(file, file.status, file.reason_code, file.reason)
    for fate in fates:
        location = str(fate.header.path)
        records[location] = private.record(by_location[location], fate.status, fate.reason_code, fate.reason)


def without_failed(
    failed: dict[str, str],
    rows: list[dict[str, Any]],
    scans: list[ScanState],
    intensities: dict[str, IntensitySummary],
    records: dict[str, FileRecordValues],
    kept_records: FileRecords,
    private: PrivateRecords,
) -> tuple[list[dict[str, Any]], list[ScanState], FileRecords]:
    """Leave out the scans whose preprocessing raised. A file none of whose scans is left is quarantined with the
    reason (`preprocess_failed`); a file that still has scans keeps them."""
    for scan_id in failed:
        intensities.pop(scan_id, None)

    def amendment(record: FileRecord | FileRecordValues) -> dict[str, Any] | None:
        lost = [scan_id for scan_id in record.scan_ids if scan_id in failed]
        if not lost:
            return None
        left = [scan_id for scan_id in record.scan_ids if scan_id not in failed]
        if left:
            return {"scan_ids": left}
        private.restatus(record.file_id, "quarantined")
        return {"status": "quarantined", "reason_code": "preprocess_failed", "reason": failed[lost[0]],
                "series_id": None, "scan_ids": []}  # fmt: skip

    for location, record in records.items():  # this run's records (tuples)
        if (update := amendment(record)) is not None:
            records[location] = record._replace(**update)
    kept = []  # carried over from the last run (models)
    for carried in kept_records:
        update = amendment(carried)
        kept.append(carried if update is None else carried.model_copy(update=update))
    return (
        [row for row in rows if row["scan_id"] not in failed],
        [scan for scan in scans if scan.scan_id not in failed],
        FileRecords.of(kept),
    )


def ensure_all_accounted(files: list[InputFile], records: dict[str, FileRecordValues]) -> None:
    missing = [f for f in files if str(f.path) not in records]
    if missing:
        raise IngestError(
            f"{len(missing)} input file(s) have no recorded fate; this is a bug in medtl",
            fix="please report it with the ingest log; no output was written for this run",
        )
