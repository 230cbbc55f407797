"""Pixel decoding on real files from pydicom-data: compressed = uncompressed, rescale, MONOCHROME1, truncation."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medtl.errors import ReadError
from medtl.io.dicom.decode import decode_object


def _path(name: str):
    return get_testdata_file(name)


def _decode(name: str):
    from pathlib import Path

    return decode_object(Path(_path(name)))


@pytest.mark.parametrize(
    ("reference", "variant", "decoder"),
    [
        ("MR_small.dcm", "MR_small_RLE.dcm", "pylibjpeg"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm", "pylibjpeg"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "pylibjpeg"),
        ("MR_small.dcm", "MR_small_bigendian.dcm", "pydicom-native"),
        ("MR_small.dcm", "MR_small_implicit.dcm", "pydicom-native"),
        ("emri_small.dcm", "emri_small_RLE.dcm", "pylibjpeg"),
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "pylibjpeg"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm", "pylibjpeg"),
    ],
)
def test_lossless_syntaxes_decode_to_the_uncompressed_values(reference, variant, decoder):
    expected = _decode(reference)
    decoded = _decode(variant)
    assert decoded.decoder == decoder
    assert expected.decoder == "pydicom-native"
    assert decoded.frames.dtype == np.float32
    assert decoded.frames.shape == expected.frames.shape
    np.testing.assert_array_equal(decoded.frames, expected.frames)


def test_rescale_slope_and_intercept_give_physical_values():
    ds = pydicom.dcmread(_path("CT_small.dcm"))
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    decoded = _decode("CT_small.dcm")
    assert float(ds.RescaleIntercept) != 0.0
    np.testing.assert_allclose(decoded.frames[0], expected, atol=1e-3)


def test_monochrome1_is_inverted_over_the_stored_range():
    ds = pydicom.dcmread(_path("RG1_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    bits = int(ds.BitsStored)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    rescaled = ds.pixel_array.astype(np.float64) * slope + intercept
    expected = (0 + (2**bits - 1)) * slope + 2 * intercept - rescaled
    decoded = _decode("RG1_UNCR.dcm")
    assert "monochrome1_inverted" in decoded.flags
    np.testing.assert_allclose(decoded.frames[0], expected, atol=1e-2)
    # the brightest stored value (bone in MONOCHROME1 is dark) becomes the darkest after inversion
    assert decoded.frames[0].argmin() == ds.pixel_array.argmax()


def test_enhanced_ct_applies_each_frames_own_rescale():
    ds = pydicom.dcmread(_path("eCT_Supplemental.dcm"))
    decoded = _decode("eCT_Supplemental.dcm")
    stored = ds.pixel_array
    assert decoded.frames.shape[0] == int(ds.NumberOfFrames) == stored.shape[0]
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        transform = group.get("PixelValueTransformationSequence") or ds.SharedFunctionalGroupsSequence[0].get(
            "PixelValueTransformationSequence"
        )
        slope, intercept = float(transform[0].RescaleSlope), float(transform[0].RescaleIntercept)
        np.testing.assert_allclose(decoded.frames[index], stored[index] * slope + intercept, atol=1e-3)


def test_a_truncated_file_is_refused_with_a_reason():
    with pytest.raises(ReadError) as caught:
        _decode("MR_truncated.dcm")
    assert "decod" in caught.value.what or "unreadable" in caught.value.what


def test_colour_is_reduced_to_luminance_and_flagged():
    ds = pydicom.dcmread(_path("SC_rgb.dcm"))
    decoded = _decode("SC_rgb.dcm")
    rgb = ds.pixel_array.astype(np.float32)
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert "rgb_to_grey" in decoded.flags
    np.testing.assert_allclose(decoded.frames[0], expected, atol=1e-3)


@pytest.mark.parametrize(
    ("name", "fast"),
    [
        ("CT_small.dcm", True),
        ("MR_small.dcm", True),
        ("MR_small_implicit.dcm", True),
        ("RG1_UNCR.dcm", True),  # MONOCHROME1
        ("693_UNCI.dcm", True),
        ("MR2_UNCR.dcm", True),
        ("JPEG2000_UNC.dcm", True),
        ("OBXXXX1A.dcm", False),  # palette colour
        ("liver_1frame.dcm", False),  # 1-bit pixels
        ("MR_small_bigendian.dcm", False),
    ],
)
def test_native_fast_path_equals_pydicom(name, fast):
    from pathlib import Path

    from medtl.io.dicom.headers import read_header

    path = Path(_path(name))
    fast_object = decode_object(path, read_header(path))
    full = decode_object(path)
    assert (fast_object.decoder == "medtl-native") is fast
    assert fast_object.flags == full.flags
    assert fast_object.sha256 == full.sha256
    np.testing.assert_array_equal(fast_object.frames, full.frames)


@pytest.mark.parametrize(
    ("name", "fast"),
    [
        ("MR_small_RLE.dcm", True),
        ("MR_small_jp2klossless.dcm", True),  # encapsulated data written as OW
        ("MR_small_jpeg_ls_lossless.dcm", True),
        ("JPEG2000.dcm", True),
        ("693_J2KR.dcm", True),
        ("RG1_J2KR.dcm", True),  # MONOCHROME1, 15 of 16 bits stored
        ("MR2_J2KR.dcm", True),  # 12 of 16 bits stored
        ("J2K_pixelrep_mismatch.dcm", True),  # the codestream's signedness differs from the header's
        ("JPEG-LL.dcm", True),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", True),  # 8 bits
        ("emri_small_RLE.dcm", False),  # multi-frame
        ("SC_rgb_rle.dcm", False),  # colour
        ("US1_J2KR.dcm", False),  # YBR colour
    ],
)
def test_compressed_fast_path_equals_pydicom(name, fast):
    from pathlib import Path

    from medtl.io.dicom.headers import read_header

    path = Path(_path(name))
    quick = decode_object(path, read_header(path))
    full = decode_object(path, read_header(path), fast=False)
    assert (quick.dataset is None) is fast  # the fast path builds no pydicom dataset
    assert full.dataset is not None
    assert (quick.decoder, quick.transfer_syntax, quick.flags, quick.integral) == (
        full.decoder,
        full.transfer_syntax,
        full.flags,
        full.integral,
    )
    assert quick.sha256 == full.sha256 and quick.frames.dtype == full.frames.dtype == np.float32
    np.testing.assert_array_equal(quick.frames, full.frames)


@pytest.mark.parametrize(("height", "width"), [(4096, 4096), (80, 64), (64, 65)])
def test_a_frame_declaring_more_than_its_header_never_reaches_a_codec_on_the_fast_path(
    tmp_path, monkeypatch, height, width
):
    """The header says 64 x 64 at 8 bits: a frame declaring even one column more is refused before decoding."""
    from medtl.errors import LimitExceededError
    from medtl.io.dicom import decode
    from medtl.io.dicom.headers import read_header
    from support.hostile_files import jpeg_size_lie_dicom

    path = jpeg_size_lie_dicom(tmp_path / "jpeg.dcm", height=height, width=width)
    header = read_header(path)

    def no_codec(*args, **kwargs):
        raise AssertionError("a codec ran on a frame over its header's size")

    monkeypatch.setattr(decode, "_decode", no_codec)
    with pytest.raises(LimitExceededError) as caught:  # the fast path steps aside; the full path refuses it
        decode_object(path, header)
    assert caught.value.reason_code == "decompression_limit"


def test_a_single_frame_enhanced_object_is_read_with_its_functional_groups(tmp_path):
    """A one-frame Enhanced CT has plain pixels the fast path could read, but its geometry and rescale are in
    the functional groups, which only the full parse holds."""
    from medtl.io.dicom.grouping import group_headers
    from medtl.io.dicom.headers import read_header
    from medtl.io.dicom.reader import read_plan

    ds = pydicom.dcmread(_path("eCT_Supplemental.dcm"))
    frame = ds.pixel_array[0]
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:1]
    ds.NumberOfFrames = 1
    ds.PixelData = frame.tobytes()
    path = tmp_path / "one_frame.dcm"
    ds.save_as(path, enforce_file_format=True)
    transform = ds.PerFrameFunctionalGroupsSequence[0].get("PixelValueTransformationSequence") or (
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    )
    slope, intercept = float(transform[0].RescaleSlope), float(transform[0].RescaleIntercept)
    header = read_header(path)
    (plan,) = group_headers([header]).plans
    assert plan.handling == "enhanced"
    result = read_plan(plan)
    (scan,) = result.scans
    assert scan.array.shape[2] == 1
    np.testing.assert_allclose(np.sort(scan.array.ravel()), np.sort(frame.ravel() * slope + intercept), atol=1e-3)
