"""The file-state record of an ingest (`ingest_state.json`): what a dataset folder last read, so a re-run reads
only what is new or changed.

Why keyed ids and not paths: paths and DICOM identifiers can carry names. Files are named by the same keyed id as in
ingest_report.json, the series or file group they belong to by a pseudonym, and a scan's label-join keys (patient,
study, accession, series) by keyed hashes, which match a labels file hashed with the same key exactly as the raw
values would. The record therefore lives beside the manifest, not in private/.

Why columns (version 2): a re-run over an archive reads and writes this record whole while reading only the few new
files, so its cost is the re-run's floor. One list per field parses and validates in a fifth of the time of one
object per file, and the file is half the size. Version 1 files (one object per file) are refused: the next ingest
reads every file once and writes the current version.

Why each scan's row digest (version 3): the manifest hash is a hash of the rows' digests, and a re-run carrying most
rows over takes their digests from here instead of serialising an archive's rows again. A version 2 file means one
full re-read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Annotated, ClassVar, NamedTuple, TypeVar

from pydantic import Field

from medtl.contracts.base import ContractModel
from medtl.contracts.ingest import SHA256, Columns, Pseudonym, Sha256

T = TypeVar("T", bound=tuple)


class FileState(NamedTuple):
    """One input file as it was when last read: the stat that decides 'unchanged' and the hash that confirms it."""

    file_id: str
    size_bytes: int
    mtime_ns: int
    sha256: str | None  # None for files never read whole (e.g. not an image)
    unit: str  # the group the file is assembled with: its series (DICOM), its NIfTI file and sidecar, or itself


class ScanState(NamedTuple):
    """A scan's group and its label-join keys, so a re-run can join a changed labels file without reading it."""

    scan_id: str
    unit: str
    patient_key: str
    study_key: str | None = None
    accession_key: str | None = None
    series_key: str | None = None


class FileColumns(Columns):
    """Every file listed by the last ingest, entry i of each list describing the same file."""

    file_id: list[Pseudonym] = Field(description="keyed id of source number + relative path (as in the report)")
    size_bytes: list[Annotated[int, Field(ge=0)]]
    mtime_ns: list[int] = Field(description="modification time, nanoseconds since the epoch")
    sha256: list[Sha256 | None] = Field(description="content hash; null for files never read whole")
    unit: list[Pseudonym] = Field(
        description="the group the file is assembled with: its series (DICOM), its NIfTI file and sidecar, or itself"
    )


class ScanColumns(Columns):
    """Every scan of the last ingest, entry i of each list describing the same scan."""

    scan_id: list[Pseudonym]
    unit: list[Pseudonym]
    patient_key: list[Pseudonym]
    study_key: list[Pseudonym | None]
    accession_key: list[Pseudonym | None]
    series_key: list[Pseudonym | None]
    row_sha256: list[Sha256] = Field(
        description="sha256 of the scan's manifest row as written (canonical JSON): a re-run that carries the row "
        "over unchanged takes this digest for the manifest hash instead of serialising the row again"
    )


class IngestState(ContractModel):
    contract_name: ClassVar[str] = "ingest_state"
    contract_version: ClassVar[int] = 3
    contract_title: ClassVar[str] = "ingest_state.json: every input file's size, time and hash at the last ingest"

    medtl_version: str
    settings_hash: str = Field(
        pattern=SHA256,
        description="hash of what makes earlier results invalid when it changes: the sources, the pseudonym key, the "
        "ingest limits and the decoder version; a different value means a full re-read",
    )
    started_ns: int = Field(description="when the run that wrote this began listing files (racy-change guard)")
    files: FileColumns
    scans: ScanColumns

    @classmethod
    def of(
        cls,
        *,
        medtl_version: str,
        settings_hash: str,
        started_ns: int,
        files: Sequence[FileState],
        scans: Sequence[ScanState],
        row_digests: Mapping[str, str],
    ) -> IngestState:
        """The record of `files` and `scans`, each sorted by its id (the order of the run never shows);
        `row_digests`: each scan's manifest row digest, by scan id."""
        ordered_files = sorted(files, key=itemgetter(0))  # by file id
        ordered_scans = sorted(scans, key=itemgetter(0))  # by scan id
        return cls(
            medtl_version=medtl_version,
            settings_hash=settings_hash,
            started_ns=started_ns,
            files=FileColumns(**_columns(FileState._fields, ordered_files)),
            scans=ScanColumns(
                **_columns(ScanState._fields, ordered_scans),
                row_sha256=[row_digests[scan.scan_id] for scan in ordered_scans],
            ),
        )

    def file_states(self) -> list[FileState]:
        return _entries(FileState, self.files)

    def scan_states(self) -> list[ScanState]:
        return _entries(ScanState, self.scans)

    def row_digests(self) -> dict[str, str]:
        return dict(zip(self.scans.scan_id, self.scans.row_sha256, strict=True))


def as_tuples(kind: type[T], entries: Iterable[tuple]) -> list[T]:
    """Named tuples of `kind` from plain ones, without a Python-level call per entry (a named tuple's own
    constructor is one: 3 us each, a tenth of a re-run's floor on an archive)."""
    return list(map(tuple.__new__, repeat(kind), entries))  # type: ignore[arg-type]


def _columns(fields: Sequence[str], entries: Sequence[tuple]) -> dict[str, list]:
    return {name: [entry[i] for entry in entries] for i, name in enumerate(fields)}


def _entries(kind: type[T], columns: Columns) -> list[T]:
    """The inverse of _columns: one named tuple per entry, its fields taken from the columns of the same names."""
    return as_tuples(kind, zip(*(getattr(columns, name) for name in kind._fields), strict=True))  # type: ignore[attr-defined]
