"""The synthetic cohort's DICOM files: readable, correct values, consistent geometry, realistic headers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation

from medtl.datasets.synth import expected_values, iter_series
from medtl.datasets.synth.geometry import Projection
from medtl.datasets.synth.phantom import Phantom, render_projection


def test_every_image_file_reads_without_force_and_matches_the_truth(cohort, truth):
    n_files = 0
    for _, study, series in iter_series(truth):
        for k, relative in enumerate(series["files"]):
            if relative is None:
                continue
            ds = pydicom.dcmread(cohort.out / relative)  # no force=True: proper preamble and file meta
            n_files += 1
            assert ds.SOPClassUID == series["sop_class_uid"]
            assert ds.file_meta.MediaStorageSOPClassUID == series["sop_class_uid"]
            assert ds.file_meta.TransferSyntaxUID == series["transfer_syntax"]
            assert ds.SOPInstanceUID == series["sop_instance_uids"][k]
            assert ds.SeriesInstanceUID == series["series_uid"]
            assert ds.StudyInstanceUID == study["study_uid"]
            assert ds.InstanceNumber == series["instance_numbers"][k]
            assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid
    assert n_files == sum(1 for _, _, s in iter_series(truth) for f in s["files"] if f is not None)


def test_ct_hounsfield_units_equal_the_intended_values(cohort, truth, read_series):
    encodings, slopes = set(), set()
    for patient, _, series in iter_series(truth):
        if series["kind"] == "dx":
            continue
        volume, datasets = read_series(cohort.out, series)
        intended = np.delete(expected_values(patient, series), series["missing_positions"], axis=0)
        assert volume.shape == intended.shape
        np.testing.assert_array_equal(volume, intended)
        first = datasets[0]
        assert (first.Rows, first.Columns) == (64, 64) or series["kind"] == "localizer"
        assert first.BitsAllocated == 16
        assert first.PixelRepresentation == series["pixel_representation"]
        assert first.pixel_array.dtype == (np.int16 if series["pixel_representation"] else np.uint16)
        assert float(first.RescaleIntercept) == series["rescale_intercept"]
        encodings.add((int(first.PixelRepresentation), float(first.RescaleIntercept)))
        slopes.add(float(first.RescaleSlope))
    assert {(1, 0.0), (0, -1024.0)} <= encodings  # signed with intercept 0, and unsigned with intercept -1024
    assert slopes - {1.0}, "at least one series must have RescaleSlope != 1"


def test_phantom_contents_in_hounsfield_units(cohort, truth, read_series):
    """Air outside, soft tissue inside, bone present, and the lesion only in positives, with its recorded contrast."""
    for patient, _, series in iter_series(truth, "ct"):
        volume, datasets = read_series(cohort.out, series)
        phantom = patient["phantom"]
        assert abs(np.median(volume[:, :3, :3]) - (-1000)) < 40  # corners are air
        assert volume.max() > 600  # the spine
        # Mean HU in a small ball around the focus (the lesion centre for positives), from voxel positions.
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
        spacing = float(datasets[0].PixelSpacing[0])
        normal = np.cross(iop[:3], iop[3:])
        in_ball = []
        for ds, hu in zip(datasets, volume, strict=True):
            j, i = np.mgrid[0:64, 0:64]
            pos = np.asarray(ds.ImagePositionPatient, float)[:, None, None] + spacing * (
                iop[:3, None, None] * i + iop[3:, None, None] * j
            )
            dist = np.linalg.norm(pos - np.asarray(phantom["focus"])[:, None, None], axis=0)
            in_ball.append(hu[dist < 2.0])
        assert np.isclose(np.dot(normal, normal), 1.0)
        centre = np.concatenate(in_ball).mean()
        if patient["label"] == 1:
            expected = phantom["tissue_hu"] + phantom["lesion"]["contrast_hu"]
            assert abs(centre - expected) < 15, (centre, expected)
        else:
            assert phantom["lesion"] is None
            assert abs(centre - phantom["tissue_hu"]) < 25 or abs(centre - phantom["organ_hu"]) < 25


def test_slice_positions_follow_the_recorded_geometry(cohort, truth, read_series):
    orders, rotated = set(), 0
    for _, _, series in iter_series(truth):
        if series["kind"] == "dx":
            continue
        geometry = series["geometry"]
        _, datasets = read_series(cohort.out, series)
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
        np.testing.assert_allclose(iop, geometry["image_orientation_patient"], atol=1e-6)
        normal = np.cross(iop[:3], iop[3:])
        positions = np.array([np.dot(normal, np.asarray(ds.ImagePositionPatient, float)) for ds in datasets])
        expected_steps = np.delete(np.arange(geometry["shape_ijk"][2]), series["missing_positions"])
        np.testing.assert_allclose(positions - positions[0], expected_steps * geometry["spacing_ijk"][2], atol=1e-3)
        np.testing.assert_allclose(
            np.asarray(datasets[0].ImagePositionPatient, float), geometry["origin_lps"], atol=1e-3
        )
        np.testing.assert_allclose([float(v) for v in datasets[0].PixelSpacing], geometry["spacing_ijk"][:2])
        assert all(ds.FrameOfReferenceUID == series["frame_of_reference_uid"] for ds in datasets)
        if series["kind"] == "ct":
            numbers = [int(ds.InstanceNumber) for ds in datasets]
            orders.add("ascending" if numbers == sorted(numbers) else "other")
            rotated += abs(iop[1]) > 0.1  # row direction not along x: rotated about z
            assert float(datasets[0].SliceThickness) >= geometry["spacing_ijk"][2]
        else:
            assert "LOCALIZER" in datasets[0].ImageType
            assert abs(normal[2]) < 1e-6  # sagittal or coronal
            assert 1 <= len(datasets) <= 3
    assert orders == {"ascending", "other"}, "some series must have InstanceNumber out of positional order"
    assert rotated >= 1


def test_dx_images_are_2d_projections_with_monochrome1_inverted(cohort, truth):
    photometrics = set()
    for patient, _, series in iter_series(truth, "dx"):
        ds = pydicom.dcmread(cohort.out / series["files"][0])
        assert ds.SOPClassUID == DigitalXRayImageStorageForPresentation
        assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert (ds.Rows, ds.Columns, ds.BitsStored, ds.PixelRepresentation) == (128, 128, 12, 0)
        assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds
        assert [float(v) for v in ds.ImagerPixelSpacing] == [0.5, 0.5]
        assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.5]
        image = ds.pixel_array.astype(np.int32)
        assert image.max() <= 4095
        if ds.PhotometricInterpretation == "MONOCHROME1":
            image = 4095 - image
        intended = expected_values(patient, series)
        np.testing.assert_array_equal(image, intended)
        photometrics.add(ds.PhotometricInterpretation)
        if patient["label"] == 1:  # the lesion changes the projection well beyond the noise (sd 6)
            phantom = Phantom.from_truth(patient["phantom"])
            projection = Projection.from_truth(series["geometry"])
            with_lesion = render_projection(phantom, projection, noise_sd=0, noise_seed=0).astype(int)
            without = render_projection(
                dataclasses.replace(phantom, lesion=None), projection, noise_sd=0, noise_seed=0
            ).astype(int)
            assert np.abs(with_lesion - without).max() > 30
    assert "MONOCHROME1" in photometrics


def test_headers_look_like_a_pacs_export(cohort, truth):
    institutions, manufacturers = set(), set()
    for patient, study, series in iter_series(truth):
        ds = pydicom.dcmread(cohort.out / next(f for f in series["files"] if f), stop_before_pixels=True)
        assert ds.PatientID == patient["patient_id"] and ds.PatientID.startswith("MRN")
        family, given = str(ds.PatientName).split("^")
        assert family.isupper() and given.isupper()
        assert len(ds.PatientBirthDate) == 8 and ds.PatientBirthDate < ds.StudyDate
        assert ds.StudyDate == study["study_date"].replace("-", "")
        assert ds.PatientSex in ("F", "M") and ds.PatientAge.endswith("Y")
        for keyword in (
            "AccessionNumber",
            "ReferringPhysicianName",
            "InstitutionName",
            "Manufacturer",
            "ManufacturerModelName",
            "BodyPartExamined",
            "StudyDescription",
            "SeriesDescription",
            "SeriesNumber",
        ):
            assert str(ds.get(keyword, "")).strip(), keyword
        assert ds.file_meta.TransferSyntaxUID == series["transfer_syntax"]
        institutions.add(ds.InstitutionName)
        manufacturers.add(ds.Manufacturer)
        if series["kind"] != "dx":
            assert ds.SOPClassUID == CTImageStorage
    assert len(institutions) >= 2 and len(manufacturers) >= 2
