"""First pass over DICOM files: read headers only and keep the few facts grouping and geometry need.

Why a slim record instead of the pydicom Dataset: thousands of headers are held at once while series are grouped,
and records travel to worker processes; a frozen dataclass of plain values is small and picklable. The raw
identifiers (PatientID, UIDs, names) stay inside the ingest process: outputs get pseudonyms only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medtl.errors import ReadError


@dataclass(frozen=True)
class DicomHeader:
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

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_mosaic(self) -> bool:
        return "MOSAIC" in self.image_type


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        numbers = tuple(float(item) for item in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _spacing(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    """A spacing of zero or less is as good as none (some exports write 0\\0)."""
    values = _floats(ds, keyword, 2)
    return values if values is not None and min(values) > 0 else None  # type: ignore[return-value]


def _multi(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip().upper() for part in value.split("\\") if part.strip())
    return tuple(str(part).strip().upper() for part in value)


def header_from_dataset(ds: Dataset, path: Path, size: int) -> DicomHeader:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    sop_class = _text(ds, "SOPClassUID")
    if sop_class is None and meta is not None:
        sop_class = _text(meta, "MediaStorageSOPClassUID")
    return DicomHeader(
        path=path,
        size=size,
        sop_class_uid=sop_class,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        transfer_syntax_uid=transfer_syntax,
        patient_id=_text(ds, "PatientID") or "",
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        accession_number=_text(ds, "AccessionNumber") or "",
        patient_name=_text(ds, "PatientName") or "",
        birth_date=_text(ds, "PatientBirthDate") or "",
        modality=(_text(ds, "Modality") or "OT").upper(),
        manufacturer=_text(ds, "Manufacturer"),
        manufacturer_model=_text(ds, "ManufacturerModelName"),
        body_part=_text(ds, "BodyPartExamined"),
        sex=_text(ds, "PatientSex"),
        patient_age=_text(ds, "PatientAge"),
        study_date=_text(ds, "StudyDate"),
        image_type=_multi(ds, "ImageType"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames") or 1,
        photometric=_text(ds, "PhotometricInterpretation"),
        position=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        orientation=_floats(ds, "ImageOrientationPatient", 6),  # type: ignore[arg-type]
        pixel_spacing=_spacing(ds, "PixelSpacing"),
        imager_pixel_spacing=_spacing(ds, "ImagerPixelSpacing"),
        patient_orientation=_multi(ds, "PatientOrientation"),
        instance_number=_int(ds, "InstanceNumber"),
        acquisition_number=_int(ds, "AcquisitionNumber"),
        echo_number=_int(ds, "EchoNumbers"),
        temporal_position=_int(ds, "TemporalPositionIdentifier"),
        trigger_time=_float(ds, "TriggerTime"),
        acquisition_time=_text(ds, "AcquisitionTime"),
        gantry_tilt=_float(ds, "GantryDetectorTilt"),
    )


def read_header(path: Path, *, force: bool = False) -> DicomHeader:
    """Parse everything before the pixel data; raise ReadError when the file is not a readable DICOM object."""
    try:
        size = path.stat().st_size
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except InvalidDicomError:
        raise ReadError("not a DICOM file (no DICM preamble)") from None
    except Exception as error:  # any parser failure on one file quarantines that file, never the run
        raise ReadError(f"unreadable DICOM header ({type(error).__name__})") from None
    if force and "SOPClassUID" not in ds:
        raise ReadError("no DICOM preamble and no SOP Class UID: not a DICOM object")
    return header_from_dataset(ds, path, size)
