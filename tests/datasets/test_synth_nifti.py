"""The NIfTI copies: same voxels as the DICOM series in (i, j, k) order, RAS affine, scaling to HU; MONAI reads both."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtl.datasets.synth import expected_values, iter_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_nifti_voxels_equal_the_dicom_hu_volume_in_ijk_order(cohort, truth, read_series):
    checked = 0
    for patient, _, series in iter_series(truth, "ct"):
        image = nib.load(cohort.out / series["nifti"]["file"])
        data = image.get_fdata()
        assert list(data.shape) == series["geometry"]["shape_ijk"]
        intended = expected_values(patient, series)  # (k, j, i), all slices
        np.testing.assert_array_equal(data, intended.transpose(2, 1, 0))
        if not series["missing_positions"]:
            dicom_hu, _ = read_series(cohort.out, series)
            np.testing.assert_array_equal(data, dicom_hu.transpose(2, 1, 0))
            checked += 1
        # The stored integers are the DICOM stored values: the scaling lives in scl_slope / scl_inter.
        assert image.get_data_dtype() == (np.int16 if series["pixel_representation"] else np.uint16)
        assert image.dataobj.slope == series["rescale_slope"]
        assert image.dataobj.inter == series["rescale_intercept"]
    assert checked >= 3


def test_nifti_affine_maps_voxel_zero_to_the_ras_of_the_first_ipp(cohort, truth, read_series):
    for _, _, series in iter_series(truth, "ct"):
        image = nib.load(cohort.out / series["nifti"]["file"])
        _, datasets = read_series(cohort.out, series)
        first_ipp = np.asarray(datasets[0].ImagePositionPatient, dtype=float)
        ras_of_ipp = LPS_TO_RAS[:3, :3] @ first_ipp
        np.testing.assert_allclose(image.affine @ [0, 0, 0, 1], [*ras_of_ipp, 1], atol=1e-3)
        # One voxel step along i moves along the DICOM row direction (IOP[0:3]) by the column spacing, in RAS.
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
        spacing = float(datasets[0].PixelSpacing[1])
        np.testing.assert_allclose(image.affine[:3, 0], LPS_TO_RAS[:3, :3] @ iop[:3] * spacing, atol=1e-4)
        np.testing.assert_allclose(image.affine, series["geometry"]["affine_ras"], atol=1e-4)
        sform, sform_code = image.header.get_sform(coded=True)
        qform, qform_code = image.header.get_qform(coded=True)
        assert (int(sform_code), int(qform_code)) == (1, 1)
        if series["nifti"]["qform_matches_sform"]:
            np.testing.assert_allclose(qform, sform, atol=1e-4)


def test_nifti_sidecar_has_dcm2niix_keys(cohort, truth):
    for patient, _, series in iter_series(truth, "ct"):
        sidecar = json.loads((cohort.out / series["nifti"]["sidecar"]).read_text())
        assert sidecar["Modality"] == "CT"
        assert sidecar["BodyPartExamined"] == "CHEST"
        site = next(s for s in truth["sites"] if s["institution"] == patient["site"])
        assert sidecar["Manufacturer"] == site["manufacturer"]


def _clean_series_folder(root: Path, truth) -> tuple[Path, dict]:
    """A standard-layout, uncompressed CT series whose folder holds exactly its own files."""
    for _, _, series in iter_series(truth, "ct"):
        files = series["files"]
        folder = (root / files[0]).parent
        if (
            series["transfer_syntax"] == "1.2.840.10008.1.2.1"
            and None not in files
            and files[0].endswith(".dcm")
            and sorted(p.name for p in folder.iterdir()) == sorted(Path(f).name for f in files)
        ):
            return folder, series
    raise AssertionError("no clean series in the cohort")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_monai_loads_the_dicom_series_folder_and_the_nifti(cohort, truth):
    from monai.transforms import LoadImage

    folder, series = _clean_series_folder(cohort.out, truth)
    shape, spacing = series["geometry"]["shape_ijk"], series["geometry"]["spacing_ijk"]
    dicom_image = LoadImage(reader="PydicomReader", image_only=True)(str(folder))
    assert list(dicom_image.shape) == shape
    np.testing.assert_allclose(dicom_image.pixdim.tolist(), spacing, atol=1e-3)
    nifti_image = LoadImage(image_only=True)(str(cohort.out / series["nifti"]["file"]))
    assert list(nifti_image.shape) == shape
    np.testing.assert_allclose(nifti_image.pixdim.tolist(), spacing, atol=1e-3)
    np.testing.assert_allclose(nifti_image.affine.numpy(), series["geometry"]["affine_ras"], atol=1e-3)
