"""Tiny, explicit DICOM writers for tests that need one precise edge case (not a realistic cohort: see synth)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


def base_dataset(sop_class: str, *, patient_id: str = "PAT001", series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "DOE^JANE"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20240102"
    ds.AccessionNumber = "ACC123"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "CT"
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, *, signed: bool) -> None:
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()


def ct_slice(
    path: Path,
    stored: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: Sequence[float] = (0.8, 0.7),
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str,
    instance: int = 1,
    patient_id: str = "PAT001",
    **extra: object,
) -> Dataset:
    ds = base_dataset(CTImageStorage, patient_id=patient_id, series_uid=series_uid)
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.InstanceNumber = instance
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    set_pixels(ds, stored, signed=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def ct_series(
    folder: Path,
    volume_stored: np.ndarray,
    *,
    spacing: Sequence[float] = (0.8, 0.7),
    slice_step: Sequence[float] = (0.0, 0.0, 2.5),
    origin: Sequence[float] = (-30.0, -20.0, 10.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_uid: str | None = None,
    names: Sequence[str] | None = None,
    **extra: object,
) -> list[Path]:
    """Write volume_stored[k] (rows x columns per slice) as slice k at origin + k * slice_step."""
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(volume_stored.shape[0]):
        position = np.asarray(origin, dtype=float) + k * np.asarray(slice_step, dtype=float)
        name = names[k] if names is not None else f"{k:03d}.dcm"
        path = folder / name
        ct_slice(
            path,
            volume_stored[k],
            position=position,
            orientation=orientation,
            spacing=spacing,
            series_uid=series_uid,
            instance=k + 1,
            **extra,
        )
        paths.append(path)
    return paths


def dx_image(path: Path, stored: np.ndarray, *, monochrome1: bool = False, patient_id: str = "PAT001") -> Dataset:
    ds = base_dataset(DigitalXRayImageStorageForPresentation, patient_id=patient_id)
    ds.Modality = "DX"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PatientOrientation = ["L", "F"]
    set_pixels(ds, stored, signed=False)
    ds.BitsStored = 12
    ds.HighBit = 11
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds
