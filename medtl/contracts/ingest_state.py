"""The file-state record of an ingest (`ingest_state.json`): what a dataset folder last read, so a re-run reads
only what is new or changed.

Why keyed ids and not paths: paths and DICOM identifiers can carry names. Files are named by the same keyed id as in
ingest_report.json, the series or file group they belong to by a pseudonym, and a scan's label-join keys (patient,
study, accession, series) by keyed hashes, which match a labels file hashed with the same key exactly as the raw
values would. The record therefore lives beside the manifest, not in private/.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256


class FileState(Strict):
    """One input file as it was when last read: the stat that decides 'unchanged' and the hash that confirms it."""

    file_id: str = Field(pattern=PSEUDONYM, description="keyed id of source number + relative path (as in the report)")
    size_bytes: int = Field(ge=0)
    mtime_ns: int = Field(description="modification time, nanoseconds since the epoch")
    sha256: str | None = Field(None, pattern=SHA256, description="content hash; null for files never read whole")
    unit: str = Field(
        pattern=PSEUDONYM,
        description="the group the file is assembled with: its series (DICOM), its NIfTI file and sidecar, or itself",
    )


class ScanState(Strict):
    """A scan's group and its label-join keys, so a re-run can join a changed labels file without reading it."""

    scan_id: str = Field(pattern=PSEUDONYM)
    unit: str = Field(pattern=PSEUDONYM)
    patient_key: str = Field(pattern=PSEUDONYM)
    study_key: str | None = Field(None, pattern=PSEUDONYM)
    accession_key: str | None = Field(None, pattern=PSEUDONYM)
    series_key: str | None = Field(None, pattern=PSEUDONYM)


class IngestState(ContractModel):
    contract_name: ClassVar[str] = "ingest_state"
    contract_title: ClassVar[str] = "ingest_state.json: every input file's size, time and hash at the last ingest"

    medtl_version: str
    settings_hash: str = Field(
        pattern=SHA256,
        description="hash of what makes earlier results invalid when it changes: the sources, the pseudonym key, the "
        "ingest limits and the decoder version; a different value means a full re-read",
    )
    started_ns: int = Field(description="when the run that wrote this began listing files (racy-change guard)")
    files: list[FileState]
    scans: list[ScanState]
