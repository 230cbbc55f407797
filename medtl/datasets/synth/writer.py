"""Writes the planned series: DICOM files in the patient's layout, and a NIfTI copy of every axial CT volume.

Layouts (PatientPlan.layout):
- standard: dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<InstanceNumber>.dcm
- flat:     dicom/unsorted/<16 hex digits>, no suffix, names unrelated to order or series (a careless export)
- fileset:  a DICOM File-set written by pydicom (dicom/media/DICOMDIR + PT000000/ST000000/SE000000/IM000000 ...),
            as on a CD from a PACS
NIfTI copies are made from the complete volumes, before problems are injected into the DICOM files (a slice removed
from the DICOM series is still in its NIfTI copy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from medtl.datasets.synth.dicom_series import ct_slice, dx_image, encode_hu
from medtl.datasets.synth.phantom import render_hu, render_projection
from medtl.datasets.synth.plan import PatientPlan, SeriesPlan, StudyPlan
from medtl.datasets.writing import derived_uid, save_dicom, write_json, write_nifti

FILESET_ROOT = "dicom/media"
QFORM_SHIFT_MM = 20.0  # how far the deliberately wrong qform is moved along x


def instance_path(seed: int, patient: PatientPlan, study: StudyPlan, series: SeriesPlan, name: str) -> str:
    """Relative path of one DICOM file of a standard- or flat-layout patient; `name` is e.g. the InstanceNumber."""
    if patient.layout == "flat":
        digest = hashlib.sha256(f"{seed}|{series.series_uid}|{name}".encode()).hexdigest()
        return f"dicom/unsorted/{digest[:16]}"
    return f"dicom/{patient.patient_id}/{study.study_uid}/{series.series_uid}/{name}.dcm"


def render_series(patient: PatientPlan, series: SeriesPlan) -> np.ndarray:
    """Intended values: HU (k, j, i) for ct/localizer, the MONOCHROME2 image (rows, columns) for dx."""
    if series.kind == "dx":
        assert series.projection is not None
        return render_projection(
            patient.phantom, series.projection, noise_sd=series.noise_sd, noise_seed=series.noise_seed
        )
    assert series.stack is not None
    return render_hu(patient.phantom, series.stack, noise_sd=series.noise_sd, noise_seed=series.noise_seed)


def _datasets(
    patient: PatientPlan, study: StudyPlan, series: SeriesPlan, values: np.ndarray
) -> Iterator[tuple[int, Dataset]]:
    if series.kind == "dx":
        yield 0, dx_image(patient, study, series, values)
        return
    for k in range(values.shape[0]):
        if k not in series.missing_positions:
            yield k, ct_slice(patient, study, series, k, values[k])


def write_patient(out: Path, seed: int, patient: PatientPlan) -> None:
    """Write every series of one patient (DICOM + NIfTI copies) and record the files in the plan."""
    fileset = FileSet() if patient.layout == "fileset" else None
    staged: dict[str, tuple[SeriesPlan, int]] = {}
    for study in patient.studies:
        for series in study.series:
            values = render_series(patient, series)
            series.value_range = (int(values.min()), int(values.max()))
            for k, ds in _datasets(patient, study, series, values):
                if fileset is not None:
                    fileset.add(ds)
                    staged[ds.SOPInstanceUID] = (series, k)
                else:
                    relative = instance_path(seed, patient, study, series, str(series.instance_numbers[k]))
                    save_dicom(ds, out / relative)
                    series.files[k] = relative
            if series.kind == "ct":
                _write_nifti_copy(out, patient, study, series, values)
    if fileset is not None:
        fileset.UID = derived_uid(seed, patient.patient_id, "file-set")
        fileset.ID = "MEDTLSYNTH"
        root = (out / FILESET_ROOT).resolve()
        fileset.write(root)
        for instance in fileset:
            series, k = staged[instance.SOPInstanceUID]
            series.files[k] = f"{FILESET_ROOT}/{Path(instance.path).relative_to(root).as_posix()}"


def _write_nifti_copy(out: Path, patient: PatientPlan, study: StudyPlan, series: SeriesPlan, hu: np.ndarray) -> None:
    assert series.stack is not None
    stem = f"nifti/{patient.patient_id}/{study.study_uid}/{series.series_uid}"
    affine = series.stack.affine_ras()
    qform = None
    if series.nifti_qform_mismatch:
        qform = affine.copy()
        qform[0, 3] += QFORM_SHIFT_MM
    encoding = series.encoding
    stored = encode_hu(hu, encoding).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    write_nifti(out / f"{stem}.nii.gz", stored, affine, qform=qform, slope=encoding.slope, inter=encoding.intercept)
    write_json(
        out / f"{stem}.json",
        {
            "Modality": "CT",
            "Manufacturer": patient.site.manufacturer,
            "ManufacturersModelName": patient.site.model,
            "BodyPartExamined": "CHEST",
            "SeriesDescription": series.description,
            "SeriesNumber": series.series_number,
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "SliceThickness": series.slice_thickness,
            "ConversionSoftware": "medtl-synth",
        },
    )
    series.nifti_file = f"{stem}.nii.gz"
