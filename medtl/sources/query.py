"""What to pull from a PACS: a pydantic query, and the series it finds.

The PACS filters what it can (study dates, modality, study ids); every filter is then applied again here, because
servers differ in how they match (case, wildcards, which attributes they index at series level). A query holds no
patient identifiers: an accession or study-UID list stays in its CSV file, and only the file's path is a parameter.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medtl.errors import ConfigError

ACCESSION_COLUMNS = ("accession_number", "AccessionNumber", "accession")
STUDY_UID_COLUMNS = ("study_uid", "StudyInstanceUID", "study_instance_uid", "study_id")
# Series that hold no images: reports (medtl's own SRs among them, once sent back), key objects, presentation
# states, segmentations, RT objects, documents, waveforms. Never pulled: ingest would only skip them.
NON_IMAGE_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD",
                                  "PLAN", "FID", "AU", "ECG", "HD", "RWV"})  # fmt: skip


class PacsQuery(BaseModel):
    """Series to pull. Dates are study dates; `lookback_days` makes a moving window for scheduled runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study_date_from: date | None = None
    study_date_to: date | None = None
    lookback_days: int | None = Field(None, ge=1, le=3650)
    modality: str | None = Field(None, pattern=r"^[A-Z]{2,4}$", description="an image modality: CT, MR, DX ...")
    body_part: str | None = Field(None, min_length=1, max_length=16)
    series_description: str | None = Field(None, min_length=1, max_length=64, description="glob, e.g. *AXIAL*")
    id_list: Path | None = Field(None, description="CSV with an accession_number or study_uid column")

    @model_validator(mode="after")
    def _consistent(self) -> PacsQuery:
        if self.lookback_days is not None and self.study_date_from is not None:
            raise ValueError("give study_date_from or lookback_days, not both")
        if self.study_date_from and self.study_date_to and self.study_date_from > self.study_date_to:
            raise ValueError("study_date_from is after study_date_to")
        return self

    def date_range(self, today: date | None = None) -> tuple[date | None, date | None]:
        start = self.study_date_from
        if self.lookback_days is not None:
            start = (today or date.today()) - timedelta(days=self.lookback_days)
        return start, self.study_date_to

    def dicom_date_range(self, today: date | None = None) -> str | None:
        """StudyDate range matching (PS3.4 C.2.2.2.5): 'YYYYMMDD-YYYYMMDD', open on either side."""
        start, end = self.date_range(today)
        if start is None and end is None:
            return None
        return f"{start.strftime('%Y%m%d') if start else ''}-{end.strftime('%Y%m%d') if end else ''}"

    def matches(self, series: RemoteSeries, today: date | None = None) -> bool:
        if (series.modality or "").upper() in NON_IMAGE_MODALITIES:
            return False
        start, end = self.date_range(today)
        study_date = _parse_da(series.study_date)
        if (start or end) and study_date is None:
            return False
        if (start and study_date < start) or (end and study_date > end):
            return False
        if self.modality and (series.modality or "").upper() != self.modality:
            return False
        if self.body_part and (series.body_part or "").upper() != self.body_part.upper():
            return False
        pattern = self.series_description
        return not pattern or fnmatch.fnmatch((series.description or "").upper(), pattern.upper())

    def describe(self) -> str:
        """PHI-free, for logs and the UI."""
        shown = self.model_dump(exclude_none=True, mode="json")
        if "id_list" in shown:
            shown["id_list"] = Path(shown["id_list"]).name
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "everything"


@dataclass(frozen=True)
class RemoteSeries:
    """One series as the PACS describes it. UIDs stay inside the run: records and logs use `key`."""

    study_uid: str
    series_uid: str
    modality: str | None = None
    study_date: str | None = None
    body_part: str | None = None
    description: str | None = None
    accession: str | None = None
    n_instances: int | None = None

    @property
    def key(self) -> str:
        return series_key(self.series_uid)


def series_key(series_uid: str) -> str:
    """A one-way name for a series in pull records and messages (the UID itself is an identifier)."""
    return hashlib.sha256(series_uid.encode()).hexdigest()[:24]


def study_key(study_uid: str) -> str:
    """The same for a study; prefixed so that a study and a series never share a record."""
    return "study-" + hashlib.sha256(study_uid.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class IdList:
    accessions: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()


def read_id_list(path: Path) -> IdList:
    """Accession numbers or study UIDs, one per row; blank cells are skipped, duplicates kept once."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as error:
        raise ConfigError(f"cannot read the id list: {error.strerror}", where=path.name,
                          fix="give a CSV file with an accession_number or study_uid column") from None  # fmt: skip
    accession = next((c for c in ACCESSION_COLUMNS if c in columns), None)
    study = next((c for c in STUDY_UID_COLUMNS if c in columns), None)
    if accession is None and study is None:
        raise ConfigError(
            "the id list has no accession_number or study_uid column", where=f"{path.name}: columns {columns}",
            fix="name the column accession_number (or study_uid)",
        )  # fmt: skip

    def unique(column: str | None) -> tuple[str, ...]:
        if column is None:
            return ()
        return tuple(dict.fromkeys(v.strip() for row in rows if (v := row.get(column) or "").strip()))

    ids = IdList(accessions=unique(accession), study_uids=unique(study))
    if not ids.accessions and not ids.study_uids:
        raise ConfigError("the id list is empty", where=path.name, fix="add one accession number or study UID per row")
    return ids


def _parse_da(value: str | None) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if value and len(value) >= 8 else None
    except ValueError:
        return None
