"""Contracts written by ingest: the manifest (one row per scan), the fingerprint and the ingest report.

None of them may contain PHI: identifiers are pseudonyms (see medtl.identity), files are named by a keyed id and a
content hash, never by their original path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, overload

from pydantic import Field, GetCoreSchemaHandler, StringConstraints, model_validator
from pydantic_core import core_schema

from medtl.contracts.base import ContractModel, Strict, check_columns

PSEUDONYM = r"^[PSRXF]-[0-9a-f]{16}$"
SHA256 = r"^[0-9a-f]{64}$"
REASON_CODE = r"^[a-z][a-z0-9_]*$"
Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256)]
FileStatus = Literal["ingested", "skipped", "quarantined"]

ImageKind = Literal["volume", "image2d"]


class ManifestRow(ContractModel):
    """One scan: a 3D volume or a 2D image, decoded, checked and cached."""

    contract_name: ClassVar[str] = "manifest"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "manifest.parquet: one ingested scan per row"

    scan_id: str = Field(pattern=PSEUDONYM, description="pseudonym of the scan (series + volume index)")
    patient_id: str = Field(pattern=PSEUDONYM)
    study_id: str | None = Field(None, pattern=PSEUDONYM)
    series_id: str = Field(pattern=PSEUDONYM)
    volume_index: int = Field(ge=0, description="position of this volume within its series (4D, echoes, ...)")
    volumes_in_series: int = Field(ge=1)
    source_format: Literal["dicom", "nifti"]
    modality: str
    sop_class: str | None = Field(None, description="DICOM SOP class name; null for NIfTI")
    image_kind: ImageKind
    n_files: int = Field(ge=1)
    shape: list[int] = Field(min_length=2, max_length=3)
    spacing: list[float] = Field(min_length=2, max_length=3, description="mm per array axis")
    affine: list[float] = Field(min_length=16, max_length=16, description="4x4 voxel-to-RAS (mm) matrix, row-major")
    orientation: str = Field(description="axis codes of the stored array, e.g. RAS")
    transfer_syntax: str | None = None
    decoder: str | None = Field(None, description="pixel decoder that ran, e.g. pydicom, pylibjpeg, nibabel")
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    body_part: str | None = None
    sex: Literal["F", "M", "O"] | None = None
    age_band: str | None = Field(None, description="decade band such as 40-49; 90+ for 90 and above")
    site: str | None = None
    label: str | None = Field(None, description="null = unlabelled (kept for scoring, never trained on)")
    split: Literal["train", "val", "test"] | None = None
    pixel_hash: str = Field(
        pattern=SHA256,
        description="sha256 of the decoded array as cached: int16/uint16 when every value is a whole number in "
        "range (lossless), else float32; dtype and shape included (medtl.hashing.sha256_array)",
    )
    source_hash: str = Field(pattern=SHA256, description="sha256 over the content of the scan's input files")
    cache_path: str = Field(description="decoded array (.npy, physical values) relative to the dataset folder")
    intensity_min: float
    intensity_max: float
    intensity_mean: float
    intensity_std: float
    intensity_p01: float
    intensity_p99: float
    qc_flags: list[str] = Field(default_factory=list, description="warnings that did not stop ingest")


class AxisStats(Strict):
    p05: float
    median: float
    p95: float


class IntensityStats(Strict):
    p01: float
    p50: float
    p99: float
    mean: float
    std: float


class GroupStats(Strict):
    """Statistics for the scans of one image kind and modality; later stages compare new scans against them."""

    image_kind: ImageKind
    modality: str
    n_scans: int = Field(ge=1)
    spacing: list[AxisStats]
    shape: list[AxisStats]
    intensity: IntensityStats


class Fingerprint(ContractModel):
    """Dataset statistics: choose preprocessing defaults and flag out-of-distribution scans at scoring."""

    contract_name: ClassVar[str] = "fingerprint"
    contract_title: ClassVar[str] = "fingerprint.json: dataset statistics"

    medtl_version: str
    pseudonym_key_id: str = Field(description="identifies the pseudonym key (not the key); 'development' = public")
    manifest_hash: str = Field(
        pattern=SHA256,
        description="sha256 of the manifest rows' digests (each the sha256 of the row's canonical JSON) in scan-id "
        "order, one per line",
    )
    n_scans: int = Field(ge=0)
    n_patients: int = Field(ge=0)
    n_studies: int = Field(ge=0)
    modalities: dict[str, int]
    labels: dict[str, int] = Field(description="scans per label; unlabelled scans are not counted")
    patients_per_label: dict[str, int]
    groups: list[GroupStats]
    preprocessing_hash: str | None = Field(None, pattern=SHA256)


class FileRecord(Strict):
    """What became of one input file."""

    file_id: str = Field(pattern=PSEUDONYM, description="keyed id of the file's relative path")
    source_index: int = Field(ge=0, description="which SRC argument the file came from")
    size_bytes: int = Field(ge=0)
    sha256: str | None = Field(None, pattern=SHA256)
    status: FileStatus
    reason_code: str | None = Field(None, pattern=REASON_CODE)
    reason: str | None = None
    series_id: str | None = Field(None, pattern=PSEUDONYM)
    scan_ids: list[str] = Field(default_factory=list)


class FileRecordValues(NamedTuple):
    """A FileRecord's fields, in its order, not validated: what a run makes for each file it reads (an archive's
    worth, in the ingest process, whose per-file work bounds how many workers it keeps busy; a model instance costs
    several times a tuple to make). `FileRecords.checked` validates a run's records together."""

    file_id: str
    source_index: int
    size_bytes: int
    sha256: str | None
    status: str
    reason_code: str | None
    reason: str | None
    series_id: str | None
    scan_ids: list[str]


class Columns(Strict):
    """A table stored as one list per field: entry i of each list describes the same item."""

    @model_validator(mode="after")
    def _equal_lengths(self) -> Columns:
        lengths = {name: len(getattr(self, name)) for name in type(self).model_fields}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"every column must list the same number of entries; found {lengths}")
        return self


class FileRecordColumns(Columns):
    """Every input file's fate (FileRecord's fields), entry i of each list describing the same file."""

    file_id: list[Pseudonym] = Field(description="keyed id of the file's relative path")
    source_index: list[Annotated[int, Field(ge=0)]] = Field(description="which SRC argument the file came from")
    size_bytes: list[Annotated[int, Field(ge=0)]]
    sha256: list[Sha256 | None]
    status: list[FileStatus]
    reason_code: list[Annotated[str, StringConstraints(pattern=REASON_CODE)] | None]
    reason: list[str | None]
    series_id: list[Pseudonym | None]
    scan_ids: list[list[str]]


_RECORD_FIELDS = tuple(FileRecord.model_fields)


class FileRecords(Sequence[FileRecord]):
    """The file records of a report, held as columns (FileRecordColumns) and read as FileRecord objects.

    Why columns: a re-run over an archive carries over thousands of records of files it did not read. As columns
    they are loaded, selected, merged and written without a Python object per file (as objects, about a sixth of
    such a re-run's time in the ingest process); readers that iterate still get FileRecord objects, made as they
    are read.
    """

    __slots__ = ("columns",)

    def __init__(self, columns: FileRecordColumns) -> None:
        self.columns = columns

    @classmethod
    def of(cls, records: Iterable[FileRecord | FileRecordValues]) -> FileRecords:
        """Records as columns, without validating them (again): FileRecord objects, or a run's FileRecordValues
        that `checked` then validates."""
        listed = list(records)
        return cls._made(lambda name: [getattr(record, name) for record in listed])

    @classmethod
    def checked(cls, records: Iterable[FileRecord | FileRecordValues]) -> FileRecords:
        """Records made without validation (one per file a run read) as columns, each cell checked against
        FileRecord in one pass over the columns: validating one model per file cost a full ingest about as much as
        grouping its headers."""
        made = cls.of(records)
        check_columns(FileRecord, dict(made._named_columns()), where="ingest_report.json", contract=IngestReport)
        return made

    @classmethod
    def concat(cls, *parts: FileRecords) -> FileRecords:
        return cls._made(lambda name: [value for part in parts for value in getattr(part.columns, name)])

    def take(self, positions: Sequence[int]) -> FileRecords:
        """The records at `positions`, in that order."""
        return self._made(lambda name: list(map(getattr(self.columns, name).__getitem__, positions)))

    @classmethod
    def _made(cls, column: Callable[[str], list[Any]]) -> FileRecords:
        """From columns made of validated values (`column(name)` for each field): not validated again."""
        return cls(FileRecordColumns.model_construct(**{name: column(name) for name in _RECORD_FIELDS}))

    def ordered(self) -> FileRecords:
        """Sorted by source, then file id: the order a report lists them in, whatever the run's order."""
        keys = list(zip(self.columns.source_index, self.columns.file_id, strict=True))
        order = sorted(range(len(keys)), key=keys.__getitem__)  # a run's records are mostly in order already
        return self if order == list(range(len(order))) else self.take(order)

    def positions(self) -> dict[str, int]:
        """Each file id's position."""
        return {file_id: i for i, file_id in enumerate(self.columns.file_id)}

    def _named_columns(self) -> list[tuple[str, list[Any]]]:
        return [(name, getattr(self.columns, name)) for name in _RECORD_FIELDS]

    def __len__(self) -> int:
        return len(self.columns.file_id)

    @overload
    def __getitem__(self, index: int) -> FileRecord: ...
    @overload
    def __getitem__(self, index: slice) -> FileRecords: ...
    def __getitem__(self, index: int | slice) -> FileRecord | FileRecords:
        if isinstance(index, slice):
            return self.take(range(len(self))[index])
        return FileRecord.model_construct(**{name: column[index] for name, column in self._named_columns()})

    def __iter__(self) -> Iterator[FileRecord]:
        construct = FileRecord.model_construct
        for values in zip(*(column for _, column in self._named_columns()), strict=True):
            yield construct(**dict(zip(_RECORD_FIELDS, values, strict=True)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FileRecords):
            return self.columns == other.columns
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FileRecords({len(self)} files)"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """JSON holds the columns; in Python, columns, a list of records or FileRecords itself are accepted."""
        columns = handler.generate_schema(FileRecordColumns)
        from_columns = core_schema.no_info_after_validator_function(cls, columns)
        from_records = core_schema.no_info_after_validator_function(cls.of, handler.generate_schema(list[FileRecord]))
        to_columns = core_schema.plain_serializer_function_ser_schema(attrgetter("columns"), return_schema=columns)
        return core_schema.json_or_python_schema(
            json_schema=from_columns,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_columns, from_records]),
            serialization=to_columns,
        )


class LabelsSummary(Strict):
    n_rows: int = Field(ge=0)
    n_rows_matched: int = Field(ge=0)
    unmatched_rows: list[int] = Field(default_factory=list, description="1-based CSV rows that matched no scan")
    duplicate_rows: list[int] = Field(default_factory=list)
    conflicting_rows: list[int] = Field(default_factory=list, description="rows that disagree on one scan's label")
    unlabelled_scans: list[str] = Field(default_factory=list)
    ignored_columns: list[str] = Field(default_factory=list)


class IngestChanges(Strict):
    """What a run read compared with the dataset's last ingest (ingest_state.json)."""

    mode: Literal["full", "incremental"]
    full_reason: str | None = Field(None, description="why every file was read: no earlier state, settings, asked")
    files_new: int = Field(ge=0)
    files_changed: int = Field(ge=0, description="same path, other size, time or content: re-hashed, re-ingested")
    files_unchanged: int = Field(ge=0, description="same size and time: not read unless their group is")
    files_vanished: list[str] = Field(
        default_factory=list, description="file ids of the last ingest that are gone; their scans left the manifest"
    )
    files_read: int = Field(ge=0, description="files whose header or content this run read")
    groups_reassembled: int = Field(ge=0, description="series (or NIfTI files) assembled again because a file changed")


class IngestTimings(Strict):
    """Where a run's time went: the wall time of each pass in the ingest process (consecutive, so they add up to
    `wall_seconds`), and the seconds each step took inside the worker processes, summed over them (with several
    workers these run side by side, so their sum may exceed the wall time of the pass they belong to)."""

    workers: int = Field(ge=1, description="worker processes (1: everything ran in the ingest process)")
    wall_seconds: float = Field(ge=0, description="from the start of ingest to the report being assembled")
    passes: dict[str, float] = Field(
        description="wall seconds per pass, in run order: start_workers, discovery_and_headers, grouping, decode, "
        "collect, preprocess, stop_workers, write_outputs"
    )
    worker_steps: dict[str, float] = Field(
        default_factory=dict,
        description="seconds per step inside the workers, summed over them: read, hash, decode, rescale, assemble, "
        "checks, compact, pixel_hash, cache_write, preprocess_load, preprocess, preprocess_write",
    )


class IngestReport(ContractModel):
    """Every input file accounted for: ingested, skipped (with reason) or quarantined (with reason)."""

    contract_name: ClassVar[str] = "ingest_report"
    contract_version: ClassVar[int] = 2
    contract_title: ClassVar[str] = "ingest_report.json: the fate of every input file"

    medtl_version: str
    pseudonym_key_id: str
    n_sources: int = Field(ge=1)
    counts: dict[FileStatus, int]
    reasons: dict[str, int]
    n_scans: int = Field(ge=0)
    files: FileRecords = Field(description="one list per field of a file record, in source then file id order")
    labels: LabelsSummary | None = None
    changes: IngestChanges | None = Field(None, description="what this run read compared with the last ingest")
    timings: IngestTimings | None = Field(None, description="seconds per pass and per worker step of this run")
