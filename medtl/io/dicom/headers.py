"""First pass over DICOM files: read headers only and keep the few facts grouping, geometry and decoding need.

Why a slim record instead of the pydicom Dataset: thousands of headers are held at once while series are grouped,
and records travel to worker processes; a named tuple of plain values is small, immutable and picklable. The raw
identifiers (PatientID, UIDs, names) stay inside the ingest process: outputs get pseudonyms only.

Values are read from pydicom's raw elements (bytes) rather than through its attribute access: for the ~40 tags
needed here that is ten times cheaper, and this pass touches every file. Person names still go through pydicom,
which knows the character set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from medtl.errors import ReadError
from medtl.io.dicom.deflate import inflated_source, mark_deflated
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.io.quiet import muted_library_messages

_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_TAGS: dict[str, int] = {}  # keyword -> tag, filled on first use (pydicom's lookup is slow per call)


class DicomHeader(NamedTuple):
    path: Path
    size: int
    sop_class_uid: str | None
    sop_instance_uid: str | None
    transfer_syntax_uid: str | None
    patient_id: str
    study_uid: str | None
    series_uid: str | None
    accession_number: str
    patient_name: str
    birth_date: str
    modality: str
    manufacturer: str | None
    manufacturer_model: str | None
    body_part: str | None
    sex: str | None
    patient_age: str | None
    study_date: str | None
    image_type: tuple[str, ...]
    rows: int | None
    columns: int | None
    number_of_frames: int
    photometric: str | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    imager_pixel_spacing: tuple[float, float] | None
    patient_orientation: tuple[str, ...]
    instance_number: int | None
    acquisition_number: int | None
    echo_number: int | None
    temporal_position: int | None
    trigger_time: float | None
    acquisition_time: str | None
    gantry_tilt: float | None
    # What the native-pixel fast path needs (decode.py); None when unknown.
    samples_per_pixel: int = 1
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    has_modality_lut: bool = False
    pixel_data_offset: int | None = None
    value_warnings: int = 0  # messages pydicom raised about nonconforming values (their text is never kept)

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_mosaic(self) -> bool:
        return "MOSAIC" in self.image_type

    def __reduce__(self) -> tuple:
        """Pickled as its path's text and a tuple of its other values: headers travel to and from worker processes
        by the thousand, and a pickled `Path` is rebuilt from its parts (most of a header's unpickling time)."""
        return _unpickled, (str(self.path), values_of(self))


_FIELDS = DicomHeader._fields


def values_of(header: DicomHeader) -> tuple:
    """A header's values but its path, as a tuple, in field order."""
    return header[1:]


def header_at(path: Path, values: tuple) -> DicomHeader:
    """The header `values_of` gave, at `path`.

    Why: headers cross from the worker processes to the ingest process, which holds each file's path already, and
    one is made per file of an archive there. A named tuple is made from its values in one call and takes a quarter
    of a dataclass's memory (~410 against ~1,650 bytes with its attribute dict, 44 fields), which the ingest process
    keeps for every file of the run.
    """
    if len(values) != len(_FIELDS) - 1:
        raise ValueError(f"a header has {len(_FIELDS) - 1} values besides its path; got {len(values)}")
    return tuple.__new__(DicomHeader, (path, *values))


def _unpickled(path: str, values: tuple) -> DicomHeader:
    return header_at(Path(path), values)


class _Values:
    """Cheap typed access to a dataset's elements, from raw bytes where pydicom has not converted them yet."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        encoding = getattr(ds, "original_encoding", None)
        self.little = True if not encoding or encoding[1] is None else bool(encoding[1])

    def _raw(self, keyword: str):
        element = self.ds.get_item(_tag(keyword))  # None when absent; no membership test (it re-parses the tag)
        return None if element is None else element.value

    def text(self, keyword: str) -> str | None:
        value = self._raw(keyword)
        if value is None:
            return None
        text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        text = text.strip("\x00 ").strip()
        return text or None

    def texts(self, keyword: str) -> tuple[str, ...]:
        value = self._raw(keyword)
        if value is None:
            return ()
        if isinstance(value, (bytes, bytearray)):
            parts: list[str] = value.decode("latin-1").split("\\")
        elif isinstance(value, str):
            parts = value.split("\\")
        else:
            parts = [str(item) for item in value]
        return tuple(part.strip("\x00 ").strip().upper() for part in parts if part.strip("\x00 ").strip())

    def number(self, keyword: str) -> float | None:
        values = self.numbers(keyword)
        return values[0] if values else None

    def numbers(self, keyword: str) -> tuple[float, ...] | None:
        value = self._raw(keyword)
        if value is None:
            return None
        try:
            if isinstance(value, (bytes, bytearray)):
                items = [item for item in value.decode("latin-1").strip("\x00 ").split("\\") if item.strip()]
                numbers = tuple(float(item) for item in items)
            elif isinstance(value, (int, float)):
                numbers = (float(value),)
            else:
                numbers = tuple(float(item) for item in value)
        except (TypeError, ValueError, OverflowError):
            return None
        # NaN and infinity parse as floats but are no geometry or count: treated as absent
        return numbers if numbers and all(math.isfinite(number) for number in numbers) else None

    def integer(self, keyword: str) -> int | None:
        value = self.number(keyword)
        return int(value) if value is not None else None

    def unsigned_short(self, keyword: str) -> int | None:
        """US values are binary; converted by hand with the dataset's byte order."""
        value = self._raw(keyword)
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray)):
            if len(value) < 2:
                return None
            return int.from_bytes(value[:2], "little" if self.little else "big")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return int(value) if value is not None else None


def _spacing(values: tuple[float, ...] | None) -> tuple[float, float] | None:
    """A spacing of zero or less is as good as none (some exports write 0\\0)."""
    if values is None or len(values) != 2 or min(values) <= 0:
        return None
    return (values[0], values[1])


def _fixed(values: tuple[float, ...] | None, count: int):
    return values if values is not None and len(values) == count else None


class RawValues(_Values):
    """The same conversions over raw little-endian values collected without pydicom (fastheader.py)."""

    def __init__(self, elements: dict[int, bytes]) -> None:
        self.elements = elements
        self.little = True

    def _raw(self, keyword: str):
        return self.elements.get(_tag(keyword))


def _tag(keyword: str) -> int:
    """The tag of a keyword as a plain int (a pydicom Tag key compares in Python code, 4x slower in a lookup)."""
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = int(Tag(keyword))
    return tag


def header_from_dataset(ds: Dataset, path: Path, size: int, pixel_data_offset: int | None = None) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
    name = ds.get("PatientName") if "PatientName" in ds else None
    return build_header(
        _Values(ds),
        _Values(meta) if meta is not None else None,
        path=path,
        size=size,
        patient_name=str(name).strip() if name is not None else "",
        has_modality_lut="ModalityLUTSequence" in ds,
        pixel_data_offset=pixel_data_offset,
    )


def build_header(
    values: _Values,
    meta: _Values | None,
    *,
    path: Path,
    size: int,
    patient_name: str,
    has_modality_lut: bool,
    pixel_data_offset: int | None,
) -> DicomHeader:
    """The record from the dataset's values and its file meta's; one place, whoever parsed the bytes."""
    transfer_syntax = meta.text("TransferSyntaxUID") if meta is not None else None
    sop_class = values.text("SOPClassUID")
    if sop_class is None and meta is not None:
        sop_class = meta.text("MediaStorageSOPClassUID")
    return DicomHeader(
        path=path,
        size=size,
        sop_class_uid=sop_class,
        sop_instance_uid=values.text("SOPInstanceUID"),
        transfer_syntax_uid=transfer_syntax,
        patient_id=values.text("PatientID") or "",
        study_uid=values.text("StudyInstanceUID"),
        series_uid=values.text("SeriesInstanceUID"),
        accession_number=values.text("AccessionNumber") or "",
        patient_name=patient_name,
        birth_date=values.text("PatientBirthDate") or "",
        modality=(values.text("Modality") or "OT").upper(),
        manufacturer=values.text("Manufacturer"),
        manufacturer_model=values.text("ManufacturerModelName"),
        body_part=values.text("BodyPartExamined"),
        sex=values.text("PatientSex"),
        patient_age=values.text("PatientAge"),
        study_date=values.text("StudyDate"),
        image_type=values.texts("ImageType"),
        rows=values.unsigned_short("Rows"),
        columns=values.unsigned_short("Columns"),
        number_of_frames=values.integer("NumberOfFrames") or 1,
        photometric=values.text("PhotometricInterpretation"),
        position=_fixed(values.numbers("ImagePositionPatient"), 3),
        orientation=_fixed(values.numbers("ImageOrientationPatient"), 6),
        pixel_spacing=_spacing(values.numbers("PixelSpacing")),
        imager_pixel_spacing=_spacing(values.numbers("ImagerPixelSpacing")),
        patient_orientation=values.texts("PatientOrientation"),
        instance_number=values.integer("InstanceNumber"),
        acquisition_number=values.integer("AcquisitionNumber"),
        echo_number=values.integer("EchoNumbers"),
        temporal_position=values.integer("TemporalPositionIdentifier"),
        trigger_time=values.number("TriggerTime"),
        acquisition_time=values.text("AcquisitionTime"),
        gantry_tilt=values.number("GantryDetectorTilt"),
        samples_per_pixel=values.unsigned_short("SamplesPerPixel") or 1,
        bits_allocated=values.unsigned_short("BitsAllocated"),
        bits_stored=values.unsigned_short("BitsStored"),
        pixel_representation=values.unsigned_short("PixelRepresentation"),
        rescale_slope=values.number("RescaleSlope"),
        rescale_intercept=values.number("RescaleIntercept"),
        has_modality_lut=has_modality_lut,
        pixel_data_offset=pixel_data_offset,
    )


def read_header(path: Path, *, force: bool = False, limits: IngestLimits = DEFAULT_LIMITS) -> DicomHeader:
    """Parse everything before the pixel data; raise ReadError when the file is not a readable DICOM object.

    Library warnings are muted (they quote header values) and counted in `value_warnings`. A deflated file is
    inflated under the limits' budget first (deflate.py), since pydicom would inflate it without any limit.
    """
    deflated = False
    with muted_library_messages() as muted:
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                inflated = inflated_source(handle, budget=limits.decompression_budget)
                deflated = inflated is not None
                stream = inflated if inflated is not None else handle
                ds = pydicom.dcmread(stream, stop_before_pixels=True, force=force)
                offset = stream.tell()
                offset = offset if stream.read(4) == _PIXEL_DATA_TAG_LE and not deflated else None
        except InvalidDicomError:
            raise ReadError("not a DICOM file (no DICM preamble)") from None
        except ReadError:
            raise
        except Exception as error:  # any parser failure on one file quarantines that file, never the run
            raise ReadError(f"unreadable DICOM header ({type(error).__name__})") from None
        if force and "SOPClassUID" not in ds:
            raise ReadError("no DICOM preamble and no SOP Class UID: not a DICOM object")
        if deflated:
            mark_deflated(ds)
        try:
            header = header_from_dataset(ds, path, size, offset)
        except Exception as error:  # malformed values in one header quarantine that file
            raise ReadError(f"unreadable DICOM header values ({type(error).__name__})") from None
    return header._replace(value_warnings=muted.count) if muted.count else header
