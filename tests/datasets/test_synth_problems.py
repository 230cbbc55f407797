"""Each planted problem exists as recorded in cohort.json, and every file of the cohort is accounted for."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import JPEG2000Lossless, MediaStorageDirectoryStorage, RLELossless

from medtl.datasets.synth import expected_values, iter_series
from medtl.datasets.synth.dicom_series import encode_hu
from medtl.datasets.synth.plan import Encoding

FATES = {"quarantined", "skipped", "flagged", "ingested"}


def test_every_file_is_a_series_file_or_a_recorded_problem(cohort, truth):
    on_disk = {p.relative_to(cohort.out).as_posix() for p in cohort.out.rglob("*") if p.is_file()}
    series_files = {f for _, _, s in iter_series(truth) for f in s["files"] if f}
    nifti = {s["nifti"][key] for _, _, s in iter_series(truth, "ct") for key in ("file", "sidecar")}
    problem_files = {f for p in truth["problems"] for f in p["files"]}
    assert on_disk == series_files | nifti | problem_files | {"labels.csv", "cohort.json"}
    for record in truth["problems"]:
        assert record["fate"] in FATES and record["files"] and record["reason"]
        assert (record["fate"] == "flagged") == ("flag" in record)
    kinds = {p["kind"] for p in truth["problems"]}
    assert kinds == {
        "truncated_dicom",
        "non_dicom",
        "dicomdir",
        "structured_report",
        "duplicate_instance",
        "slice_gap",
        "compressed_rle_lossless",
        "compressed_jpeg2000_lossless",
        "unsorted_flat_folder",
        "nifti_qform_sform_mismatch",
    }


def test_truncated_file_cannot_be_decoded(cohort, problem):
    record = problem("truncated_dicom")
    assert record["fate"] == "quarantined"
    path = cohort.out / record["files"][0]
    # pydicom parses what is there (it is lenient about truncation), but the pixel data is incomplete.
    ds = pydicom.dcmread(path)
    assert len(ds.PixelData) < ds.Rows * ds.Columns * 2
    with pytest.raises(ValueError, match="less than expected"):
        _ = ds.pixel_array
    # The series next to it is complete: the truncated file is an extra slice past its end.
    series = next(s for _, _, s in iter_series(cohort.truth) if s["series_uid"] == record["series_uid"])
    assert None not in series["files"] and ds.InstanceNumber == len(series["files"]) + 1


def test_non_dicom_files_are_not_dicom(cohort, problem):
    record = problem("non_dicom")
    assert record["fate"] == "skipped"
    suffixes = sorted(Path(f).suffix for f in record["files"])
    assert suffixes == [".png", ".txt"]
    for relative in record["files"]:
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(cohort.out / relative)
    png = next(f for f in record["files"] if f.endswith(".png"))
    assert (cohort.out / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_dicomdir_indexes_the_file_set_patient(cohort, truth, problem):
    record = problem("dicomdir")
    assert record["fate"] == "skipped"
    path = cohort.out / record["files"][0]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.MediaStorageSOPClassUID == MediaStorageDirectoryStorage
    indexed = {Path(instance.path).resolve() for instance in FileSet(ds)}
    patient = next(p for p in truth["patients"] if p["layout"] == "fileset")
    files = {(cohort.out / f).resolve() for st in patient["studies"] for s in st["series"] for f in s["files"] if f}
    assert indexed == files
    assert all(
        Path(f).parts[:2] == ("dicom", "media") for f in map(str, [p.relative_to(cohort.out.resolve()) for p in files])
    )


def test_structured_report_is_a_text_sr_without_pixels(cohort, problem):
    record = problem("structured_report")
    ds = pydicom.dcmread(cohort.out / record["files"][0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33" == record["sop_class_uid"]
    assert ds.Modality == "SR" and "PixelData" not in ds
    assert ds.ContentSequence[0].ValueType == "TEXT" and ds.ContentSequence[0].TextValue
    assert record["fate"] == "skipped"


def test_duplicate_is_an_exact_copy_that_sorts_after_the_original(cohort, problem):
    record = problem("duplicate_instance")
    kept, skipped = record["kept_file"], record["skipped_file"]
    assert sorted([kept, skipped]) == [kept, skipped] == record["files"]
    assert (cohort.out / kept).read_bytes() == (cohort.out / skipped).read_bytes()
    assert pydicom.dcmread(cohort.out / skipped).SOPInstanceUID == pydicom.dcmread(cohort.out / kept).SOPInstanceUID
    assert record["fate"] == "skipped"


def test_slice_gap_removes_one_middle_slice(cohort, truth, problem, read_series):
    record = problem("slice_gap")
    assert (record["fate"], record["flag"]) == ("flagged", "slice_gap")
    series = next(s for _, _, s in iter_series(truth) if s["series_uid"] == record["series_uid"])
    (missing,) = record["missing_positions"]
    n = series["geometry"]["shape_ijk"][2]
    assert n // 3 <= missing < 2 * n // 3 and series["files"][missing] is None
    _, datasets = read_series(cohort.out, series)
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    steps = np.diff([np.dot(normal, np.asarray(ds.ImagePositionPatient, float)) for ds in datasets])
    spacing = series["geometry"]["spacing_ijk"][2]
    assert len(datasets) == n - 1
    np.testing.assert_allclose(sorted(steps)[-1], 2 * spacing, atol=1e-3)
    np.testing.assert_allclose(sorted(steps)[:-1], spacing, atol=1e-3)


@pytest.mark.parametrize(
    ("kind", "syntax"), [("compressed_rle_lossless", RLELossless), ("compressed_jpeg2000_lossless", JPEG2000Lossless)]
)
def test_compressed_series_decode_to_the_uncompressed_values(cohort, truth, problem, kind, syntax):
    record = problem(kind)
    assert record["fate"] == "ingested" and record["transfer_syntax"] == syntax
    patient, series = next((p, s) for p, _, s in iter_series(truth) if s["series_uid"] == record["series_uid"])
    encoding = Encoding(
        series["encoding"],
        series["pixel_representation"],
        series["bits_stored"],
        series["rescale_slope"],
        series["rescale_intercept"],
    )
    uncompressed = encode_hu(expected_values(patient, series), encoding)  # what an uncompressed file would store
    for k, relative in enumerate(series["files"]):
        if relative is None:
            continue
        ds = pydicom.dcmread(cohort.out / relative)
        assert ds.file_meta.TransferSyntaxUID == syntax and ds.file_meta.TransferSyntaxUID.is_compressed
        np.testing.assert_array_equal(ds.pixel_array, uncompressed[k])


def test_unsorted_folder_holds_one_patient_without_suffixes(cohort, truth, problem):
    record = problem("unsorted_flat_folder")
    patient = next(p for p in truth["patients"] if p["layout"] == "flat")
    series = [s for st in patient["studies"] for s in st["series"]]
    expected = sorted(f for s in series if s["kind"] != "localizer" for f in s["files"] if f)
    assert record["files"] == expected and record["fate"] == "ingested"  # its localizers are skipped as usual
    assert any(s["kind"] == "localizer" for s in series)
    for relative in record["files"]:
        assert re.fullmatch(r"dicom/unsorted/[0-9a-f]{16}", relative)
        assert pydicom.dcmread(cohort.out / relative, stop_before_pixels=True).PatientID == patient["patient_id"]


def test_nifti_with_disagreeing_qform_and_sform(cohort, problem):
    record = problem("nifti_qform_sform_mismatch")
    assert (record["fate"], record["flag"]) == ("flagged", "qform_sform_mismatch")
    header = nib.load(cohort.out / record["files"][0]).header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 1)
    np.testing.assert_allclose(qform[:3, :3], sform[:3, :3], atol=1e-4)
    np.testing.assert_allclose(qform[:3, 3] - sform[:3, 3], [20.0, 0.0, 0.0], atol=1e-3)
