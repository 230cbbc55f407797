"""Readers end to end on small written files: stacking order, HU, MONOCHROME1 DX, NIfTI rules, DICOM = NIfTI."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtl.errors import ReadError
from medtl.ingest.discover import classify_file
from medtl.io.dicom.grouping import group_headers
from medtl.io.dicom.reader import read_plan
from medtl.io.geometry import LPS_TO_RAS
from medtl.io.nifti import read_nifti
from support.dicom_factory import ct_series, dx_image


def _read_folder(folder: Path):
    files = [classify_file(0, p, p.name) for p in sorted(folder.iterdir())]
    grouping = group_headers([f.header for f in files if f.header is not None])
    return files, grouping, [read_plan(plan) for plan in grouping.plans]


def _stored_volume(rng, slices=5, rows=6, cols=7):
    return rng.integers(0, 3000, size=(slices, rows, cols)).astype(np.uint16)


def test_ct_series_is_stacked_by_position_not_by_name_or_instance_number(tmp_path):
    rng = np.random.default_rng(0)
    stored = _stored_volume(rng)
    names = [f"{random.Random(i).getrandbits(40):x}" for i in range(5)]  # no suffix, meaningless order
    ct_series(tmp_path, stored, names=names, InstanceNumber=1)
    files, _, results = _read_folder(tmp_path)
    assert all(f.kind == "dicom" for f in files)
    (result,) = results
    (scan,) = result.scans
    hu = stored.astype(np.float32) - 1024.0
    # axial LPS (i=column, j=row, k=slice) -> RAS flips x and y
    expected = hu.transpose(2, 1, 0)[::-1, ::-1, :]
    assert scan.orientation == "RAS"
    np.testing.assert_array_equal(scan.array, expected)
    assert scan.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert scan.qc_flags == []


def test_reversed_slice_direction_gives_the_same_volume(tmp_path):
    rng = np.random.default_rng(1)
    stored = _stored_volume(rng)
    ct_series(tmp_path / "up", stored, slice_step=(0, 0, 2.5), origin=(-30, -20, 10))
    # same anatomy written from the top down
    ct_series(tmp_path / "down", stored[::-1], slice_step=(0, 0, -2.5), origin=(-30, -20, 20))
    (_, _, [up]), (_, _, [down]) = _read_folder(tmp_path / "up"), _read_folder(tmp_path / "down")
    np.testing.assert_array_equal(up.scans[0].array, down.scans[0].array)
    np.testing.assert_allclose(up.scans[0].affine, down.scans[0].affine)


def test_dx_monochrome1_is_a_2d_image_with_inverted_values(tmp_path):
    intended = np.random.default_rng(2).integers(0, 4096, size=(12, 10)).astype(np.uint16)
    dx_image(tmp_path / "a.dcm", intended)
    dx_image(tmp_path / "b.dcm", (4095 - intended).astype(np.uint16), monochrome1=True, patient_id="PAT002")
    _, _, results = _read_folder(tmp_path)
    arrays = sorted(((r.scans[0].qc_flags, r.scans[0].array) for r in results), key=lambda item: len(item[0]))
    assert arrays[0][1].shape == (12, 10)
    assert results[0].scans[0].image_kind == "image2d"
    assert "monochrome1_inverted" in arrays[1][0]
    np.testing.assert_array_equal(arrays[0][1], arrays[1][1])
    np.testing.assert_array_equal(arrays[0][1], intended.astype(np.float32))


def test_nifti_copy_of_a_dicom_series_reads_identically(tmp_path):
    rng = np.random.default_rng(3)
    stored = _stored_volume(rng)
    paths = ct_series(tmp_path / "dicom", stored)
    _, _, [dicom] = _read_folder(tmp_path / "dicom")
    import pydicom

    first = pydicom.dcmread(paths[0])
    lps = np.eye(4)
    lps[:3, 0] = np.array(first.ImageOrientationPatient[:3], dtype=float) * float(first.PixelSpacing[1])
    lps[:3, 1] = np.array(first.ImageOrientationPatient[3:], dtype=float) * float(first.PixelSpacing[0])
    lps[:3, 2] = [0, 0, 2.5]
    lps[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    image = nib.Nifti1Image(stored.transpose(2, 1, 0).astype(np.int16), LPS_TO_RAS @ lps)
    image.header.set_slope_inter(1.0, -1024.0)
    image.set_qform(LPS_TO_RAS @ lps, code=1)
    image.set_sform(LPS_TO_RAS @ lps, code=1)
    nib.save(image, tmp_path / "copy.nii.gz")
    (scan,), _ = read_nifti(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(scan.array, dicom.scans[0].array)
    np.testing.assert_allclose(scan.affine, dicom.scans[0].affine, atol=1e-5)


def test_nifti_is_reoriented_scaled_and_checked(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)
    las = np.diag([-2.0, 2.0, 3.0, 1.0])
    image = nib.Nifti1Image(data, las)
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "las.nii")
    (scan,), _ = read_nifti(tmp_path / "las.nii")
    assert scan.orientation == "RAS"
    np.testing.assert_allclose(scan.array, data[::-1].astype(np.float32) * 0.5 + 10.0)
    assert scan.meta["affine_source"] == "sform"
    assert scan.qc_flags == []

    shifted = las.copy()
    shifted[0, 3] = 5.0
    image.set_qform(shifted, code=1)
    image.set_sform(las, code=2)
    nib.save(image, tmp_path / "mismatch.nii")
    (scan,), _ = read_nifti(tmp_path / "mismatch.nii")
    assert "qform_sform_mismatch" in scan.qc_flags
    assert scan.meta["affine_source"] == "sform"


def test_nifti_4d_is_split_and_5d_refused(tmp_path):
    data = np.random.default_rng(4).random((4, 4, 3, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "four.nii.gz")
    scans, _ = read_nifti(tmp_path / "four.nii.gz")
    assert len(scans) == 5
    assert [s.volume_index for s in scans] == list(range(5))
    np.testing.assert_allclose(scans[3].array, data[..., 3])
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2, 2), np.float32), np.eye(4)), tmp_path / "five.nii.gz")
    with pytest.raises(ReadError, match="dimensions"):
        read_nifti(tmp_path / "five.nii.gz")


def test_unreadable_bytes_with_a_nifti_name_are_refused(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(ReadError):
        read_nifti(path)
    assert classify_file(0, path, path.name).status == "quarantined"


def test_a_classified_file_crosses_processes_without_its_path_and_comes_back_equal(tmp_path):
    import pickle

    from medtl.ingest.discover import portable, restored
    from medtl.io.dicom.headers import DicomHeader

    ct_series(tmp_path / "ct", np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5))
    dx_image(tmp_path / "dx.dcm", np.arange(12, dtype=np.uint16).reshape(3, 4), monochrome1=True)
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.eye(4)), tmp_path / "scan.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.nii").write_bytes(b"\x00" * 10)
    paths = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    originals = [classify_file(1, path, path.relative_to(tmp_path).as_posix(), tmp_path) for path in paths]
    assert {file.kind for file in originals} == {"dicom", "nifti", "other"}
    assert {file.status for file in originals} == {None, "skipped", "quarantined"}
    for path, file in zip(paths, originals, strict=True):
        sent = pickle.loads(pickle.dumps(portable(file)))
        assert not any(isinstance(value, Path) for value in (*sent, *(sent[2] or ())))  # no path travels
        back = restored(path, file.source_index, file.relative, sent)
        assert back == file
        assert back.header is None or (back.header.path is path and isinstance(back.header, DicomHeader))
