"""DICOM datasets of the synthetic cohort: CT slices, localizers, projection X-rays and a text SR.

Why these headers: ingest must meet what a PACS export really has — PHI in patient/study tags, several vendors and
sites, signed and unsigned HU encodings, MONOCHROME1 X-rays — so each dataset carries the modules its IOD needs
(patient, study, series, equipment, frame of reference, image plane, image pixel, modality LUT / VOI LUT).
Numbers that DICOM stores as decimal strings are formatted here (at most 6 decimals, within the 16-character limit).
"""

from __future__ import annotations

import logging

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ComprehensiveSRStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from medtl.datasets.synth.phantom import DX_MAX
from medtl.datasets.synth.plan import Encoding, PatientPlan, SeriesPlan, StudyPlan, age_at
from medtl.datasets.writing import new_dicom

SOFTWARE = "medtl-synth 1"


def ds_number(value: float) -> str:
    """A DICOM DS string: fixed point, at most 6 decimals (removes float noise), no trailing zeros."""
    text = f"{round(float(value), 6):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def encode_hu(hu: np.ndarray, encoding: Encoding) -> np.ndarray:
    """Stored values such that stored * slope + intercept == hu exactly (hu are integers)."""
    stored = np.rint((hu.astype(np.float64) - encoding.intercept) / encoding.slope)
    dtype = "<i2" if encoding.pixel_representation else "<u2"
    low, high = (
        (-(2 ** (encoding.bits_stored - 1)), 2 ** (encoding.bits_stored - 1) - 1)
        if encoding.pixel_representation
        else (0, 2**encoding.bits_stored - 1)
    )
    if stored.min() < low or stored.max() > high:
        raise ValueError(f"HU range does not fit encoding {encoding.name}")  # a generator bug, not user input
    return stored.astype(dtype)


def _common(
    ds: Dataset, patient: PatientPlan, study: StudyPlan, modality: str, series_uid: str, number: int, description: str
) -> None:
    date = study.date.strftime("%Y%m%d")
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{age_at(patient.birth_date, study.date):03d}Y"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = date
    ds.StudyTime = study.time
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.ReferringPhysicianName = patient.site.referring
    ds.StudyDescription = study.description
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = date
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.InstitutionName = patient.site.institution
    ds.Manufacturer = patient.site.manufacturer
    ds.ManufacturerModelName = patient.site.model
    ds.SoftwareVersions = SOFTWARE
    ds.ContentDate = date
    ds.ContentTime = study.time


def _pixels(ds: Dataset, stored: np.ndarray, *, bits_stored: int, signed: bool, photometric: str) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()


def _compress(ds: Dataset, transfer_syntax: str) -> Dataset:
    if transfer_syntax != ExplicitVRLittleEndian:
        # The openjpeg plugin logs one INFO line per encoded tile; keep the CLI output readable.
        encoder_log = logging.getLogger("openjpeg")
        level = encoder_log.level
        encoder_log.setLevel(max(level, logging.WARNING))
        try:
            ds.compress(UID(transfer_syntax), generate_instance_uid=False)  # lossless: the same instance
        finally:
            encoder_log.setLevel(level)
    return ds


def ct_slice(patient: PatientPlan, study: StudyPlan, series: SeriesPlan, k: int, hu_slice: np.ndarray) -> Dataset:
    """One CT Image Storage instance (axial slice or localizer) at position k of the series' stack."""
    stack = series.stack
    assert stack is not None and series.frame_of_reference_uid is not None
    ds = new_dicom(CTImageStorage, series.sop_uids[k])
    _common(ds, patient, study, "CT", series.series_uid, series.series_number, series.description)
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if series.kind == "localizer" else "AXIAL"]
    ds.InstanceNumber = series.instance_numbers[k]
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    position = stack.ipp(k)
    ds.ImagePositionPatient = [ds_number(v) for v in position]
    ds.ImageOrientationPatient = [ds_number(v) for v in stack.iop]
    ds.PixelSpacing = [ds_number(stack.pixel_spacing)] * 2
    ds.SliceThickness = ds_number(series.slice_thickness or stack.slice_spacing)
    ds.SliceLocation = ds_number(float(np.dot(position, stack.normal)))
    encoding = series.encoding
    ds.RescaleIntercept = ds_number(encoding.intercept)
    ds.RescaleSlope = ds_number(encoding.slope)
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = ("40", "400") if series.kind == "ct" else ("-200", "1600")
    _pixels(
        ds,
        encode_hu(hu_slice, encoding),
        bits_stored=encoding.bits_stored,
        signed=bool(encoding.pixel_representation),
        photometric="MONOCHROME2",
    )
    return _compress(ds, series.transfer_syntax)


def dx_image(patient: PatientPlan, study: StudyPlan, series: SeriesPlan, image: np.ndarray) -> Dataset:
    """A DX For Presentation image; MONOCHROME1 stores 4095 - value so that inverting gives the MONOCHROME2 image."""
    projection = series.projection
    assert projection is not None
    ds = new_dicom(DigitalXRayImageStorageForPresentation, series.sop_uids[0])
    _common(ds, patient, study, "DX", series.series_uid, series.series_number, series.description)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.InstanceNumber = 1
    ds.ViewPosition = "AP"
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [ds_number(projection.pixel_spacing)] * 2
    ds.PixelSpacing = [ds_number(projection.pixel_spacing)] * 2
    ds.KVP = "80"
    ds.DetectorType = "SCINTILLATOR"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = "LOG"
    monochrome1 = series.photometric == "MONOCHROME1"
    # +1: larger values mean more X-ray intensity at the detector, i.e. less attenuation (the inverted storage).
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    stored = (DX_MAX - image.astype(np.int32)).astype("<u2") if monochrome1 else image.astype("<u2")
    _pixels(ds, stored, bits_stored=12, signed=False, photometric=series.photometric)
    return _compress(ds, series.transfer_syntax)


def text_report(patient: PatientPlan, study: StudyPlan, series_uid: str, sop_uid: str, text: str) -> Dataset:
    """A Comprehensive SR with one TEXT item: a non-image object that ingest must skip, not decode."""
    ds = new_dicom(ComprehensiveSRStorage, sop_uid)
    _common(ds, patient, study, "SR", series_uid, 99, "READER NOTE")
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18782-3", "LN", "Radiology Study observation (narrative)")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = Sequence([])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    item.TextValue = text
    ds.ContentSequence = Sequence([item])
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code
