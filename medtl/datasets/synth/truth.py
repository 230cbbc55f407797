"""cohort.json: the ground truth of a synthetic cohort, and the intended pixel values rebuilt from it.

Why the truth can rebuild pixels: tests (here and in ingest) compare what a reader decodes with what the generator
meant, value for value, without storing a second copy of every volume. cohort.json holds every parameter the
renderers use (phantom, geometry, noise seed), so `expected_values` re-renders exactly the written values.

Top-level keys: format, format_version, seed, parameters, conventions, lesion_model, sites, counts, patients,
problems; graded and multi-finding cohorts add `task` (the declaration `medtl ingest` must be given, as a task.json
document, and the matching `ingest_options`). A patient: patient_id, label (0/1, the grade, or for multilabel the
labels.csv cell, with `findings` listing them), sex, site, layout, phantom, studies. A study: study_uid,
study_date, series. A series: series_uid, kind (ct | localizer | dx), modality, sop_class_uid, transfer_syntax,
pixel encoding, geometry (see medtl.datasets.synth.geometry for the conventions), value_range, noise, files
(position order; null = a slice that was deliberately not written), and for ct a NIfTI entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation

from medtl.datasets.synth.geometry import Projection, SliceStack
from medtl.datasets.synth.phantom import DX_MAX, Phantom, lesion_size_and_contrast, render_hu, render_projection
from medtl.datasets.synth.plan import SITES, PatientPlan, SeriesPlan

FORMAT = "medtl-synth-cohort"
FORMAT_VERSION = 1
CONVENTIONS = {
    "patient_coordinates": "DICOM LPS, millimetres",
    "dicom_volume_array": "(k, j, i): slice in position order (IPP projected on the slice normal, ascending), "
    "row, column; a DICOM pixel array is (j, i)",
    "shape_ijk": "(columns, rows, slices); spacing_ijk likewise, in mm",
    "voxel_to_lps": "IPP_0 + i*di*IOP[0:3] + j*dj*IOP[3:6] + k*dk*normal (= affine_lps)",
    "nifti": "array (i, j, k) of the stored DICOM values with scl_slope/scl_inter = RescaleSlope/RescaleIntercept; "
    "affine (qform and sform, code 1) = diag(-1,-1,1,1) @ affine_lps = affine_ras",
    "hu": "stored * RescaleSlope + RescaleIntercept",
    "dx_array": "(row, column); rows run to the feet, columns to the patient's left; MONOCHROME1 files store "
    f"{DX_MAX} - value, so inverting with {DX_MAX} (2**BitsStored - 1) gives the MONOCHROME2 image",
}


def series_truth(series: SeriesPlan) -> dict[str, Any]:
    encoding = series.encoding
    dx = series.kind == "dx"
    n = 1 if dx else series.stack.slices  # type: ignore[union-attr]
    entry: dict[str, Any] = {
        "series_uid": series.series_uid,
        "kind": series.kind,
        "modality": "DX" if dx else "CT",
        "sop_class_uid": DigitalXRayImageStorageForPresentation if dx else CTImageStorage,
        "series_number": series.series_number,
        "description": series.description,
        "transfer_syntax": series.transfer_syntax,
        "photometric_interpretation": series.photometric,
        "bits_allocated": 16,
        "bits_stored": encoding.bits_stored,
        "pixel_representation": encoding.pixel_representation,
        "rescale_slope": encoding.slope,
        "rescale_intercept": encoding.intercept,
        "encoding": encoding.name,
        "geometry": (series.projection if dx else series.stack).to_truth(),  # type: ignore[union-attr]
        "value_range": list(series.value_range or ()),
        "noise_sd": series.noise_sd,
        "noise_seed": series.noise_seed,
        "sop_instance_uids": series.sop_uids,
        "instance_numbers": series.instance_numbers,
        "files": [series.files.get(k) for k in range(n)],
    }
    if not dx:
        entry["frame_of_reference_uid"] = series.frame_of_reference_uid
        entry["slice_thickness"] = series.slice_thickness
        entry["instance_order"] = series.instance_order
        entry["missing_positions"] = series.missing_positions
    if series.nifti_file:
        entry["nifti"] = {
            "file": series.nifti_file,
            "sidecar": series.nifti_file.replace(".nii.gz", ".json"),
            "qform_matches_sform": not series.nifti_qform_mismatch,
        }
    return entry


def cohort_truth(
    *,
    seed: int,
    parameters: dict[str, Any],
    plans: list[PatientPlan],
    problems: list[dict[str, Any]],
    counts: dict[str, int],
    task: dict[str, Any] | None = None,
    task_lesions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`task` and `task_lesions` (graded and multi-finding cohorts only) add the declaration and the per-grade or
    per-finding lesion model; a binary cohort's cohort.json has neither."""
    radius, contrast = lesion_size_and_contrast(parameters["difficulty"])
    truth = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "parameters": parameters,
        "conventions": CONVENTIONS,
        "lesion_model": {
            "nominal_radius_mm": round(radius, 3),
            "nominal_abs_contrast_hu": round(contrast, 3),
            "jitter": "x0.85 to x1.15 per patient; sign (brighter/darker) random",
            **(task_lesions or {}),
        },
        "sites": [
            {
                "institution": s.institution,
                "manufacturer": s.manufacturer,
                "model": s.model,
                "encoding": s.encoding.name,
            }
            for s in SITES
        ],
        "counts": counts,
        "patients": [
            {
                "patient_id": p.patient_id,
                "label": p.label_cell if p.task == "multilabel" else p.label,
                **({"findings": list(p.findings)} if p.task == "multilabel" else {}),
                "sex": p.sex,
                "site": p.site.institution,
                "layout": p.layout,
                "phantom": p.phantom.to_truth(),
                "studies": [
                    {
                        "study_uid": st.study_uid,
                        "study_date": st.date.isoformat(),
                        "series": [series_truth(se) for se in st.series],
                    }
                    for st in p.studies
                ],
            }
            for p in plans
        ],
        "problems": problems,
    }
    if task is not None:
        truth["task"] = task
    return truth


def load_cohort(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "cohort.json").read_text(encoding="utf-8"))


def iter_series(truth: dict[str, Any], kind: str | None = None) -> Iterator[tuple[dict, dict, dict]]:
    """(patient, study, series) entries of cohort.json, optionally only one kind (ct, localizer, dx)."""
    for patient in truth["patients"]:
        for study in patient["studies"]:
            for series in study["series"]:
                if kind is None or series["kind"] == kind:
                    yield patient, study, series


def expected_values(patient: dict[str, Any], series: dict[str, Any]) -> np.ndarray:
    """The intended values of a series: HU (k, j, i) for ct/localizer (all planned slices, missing ones included),
    the MONOCHROME2 image (rows, columns) for dx."""
    phantom = Phantom.from_truth(patient["phantom"])
    if series["kind"] == "dx":
        return render_projection(
            phantom,
            Projection.from_truth(series["geometry"]),
            noise_sd=series["noise_sd"],
            noise_seed=series["noise_seed"],
        )
    return render_hu(
        phantom, SliceStack.from_truth(series["geometry"]), noise_sd=series["noise_sd"], noise_seed=series["noise_seed"]
    )
