"""Fuzzed DICOM header fields never raise out of ingest: every file ends ingested, skipped or quarantined.

Values are written as raw bytes, so a field can hold what no validator would allow (text in a number, NaN, a
position with two coordinates). A short run by design (about 40 examples): it guards the contract, not coverage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from support.dicom_factory import ct_series
from support.hostile_files import rle_frame

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
US_FIELDS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel")
ODD_NUMBERS = st.sampled_from(["1", "0", "-1", "1e308", "-1e308", "nan", "inf", "abc", "", "1\\2", " 7 ", "1e-300"])
ODD_TRIPLES = st.sampled_from(["0\\0\\0", "nan\\0\\0", "1e308\\1e308\\1e308", "a\\b\\c", "1\\2", "0\\0\\0\\0", ""])
ODD_ORIENTATIONS = st.sampled_from(
    ["1\\0\\0\\0\\1\\0", "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0", "1\\0\\0", "x\\y\\z\\1\\2\\3"]
)
ODD_SPACINGS = st.sampled_from(["0.7\\0.7", "0\\0", "-1\\1", "1e-30\\1e30", "1e30\\1e30", "abc", "1", "nan\\nan"])
SYNTAXES = st.sampled_from(
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
     RLELossless, JPEGBaseline8Bit, JPEG2000Lossless, "1.2.826.0.1.3680043.8.498.424242"]
)  # fmt: skip

US_TYPICAL = st.sampled_from([1, 8, 16, 32, 64, 512])
PHOTOMETRIC = st.sampled_from(["MONOCHROME2", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "", "??"])
HEADERS = st.fixed_dictionaries(
    {
        **{name: st.one_of(st.none(), st.integers(0, 65535), US_TYPICAL) for name in US_FIELDS},
        "NumberOfFrames": st.one_of(st.none(), ODD_NUMBERS, st.sampled_from(["2", "100000", "4294967296"])),
        "PhotometricInterpretation": PHOTOMETRIC,
        "syntax": SYNTAXES,
        "pixel_bytes": st.integers(0, 3000),
        "RescaleSlope": ODD_NUMBERS,
        "RescaleIntercept": ODD_NUMBERS,
        "ImagePositionPatient": ODD_TRIPLES,
        "ImageOrientationPatient": ODD_ORIENTATIONS,
        "PixelSpacing": ODD_SPACINGS,
    }
)  # fmt: skip
_VR = {"NumberOfFrames": "IS", "PhotometricInterpretation": "CS", "RescaleSlope": "DS", "RescaleIntercept": "DS",
       "ImagePositionPatient": "DS", "ImageOrientationPatient": "DS", "PixelSpacing": "DS"}  # fmt: skip


def _write(folder: Path, fields: dict) -> Path:
    """A valid 3-slice CT series; the first slice (whose geometry the stack uses) gets the fuzzed raw fields."""
    paths = ct_series(folder, np.zeros((3, 8, 8), np.uint16))
    ds = pydicom.dcmread(paths[0])
    for name in US_FIELDS:
        value = fields[name]
        if value is None:
            del ds[name]
        else:
            ds[name] = RawDataElement(Tag(name), "US", 2, int(value).to_bytes(2, "little"), 0, False, True)
    for name, vr in _VR.items():
        value = fields[name]
        if value is None:
            ds.pop(name, None)
            continue
        raw = value.encode("latin-1")
        raw += b" " * (len(raw) % 2)
        ds[name] = RawDataElement(Tag(name), vr, len(raw), raw, 0, False, True)
    syntax = fields["syntax"]
    payload = bytes(range(256)) * (fields["pixel_bytes"] // 256 + 1)
    payload = payload[: fields["pixel_bytes"]]
    if syntax in (RLELossless, JPEGBaseline8Bit, JPEG2000Lossless):
        frame = rle_frame(len(payload) + 64) if syntax == RLELossless else payload
        ds.PixelData = encapsulate([frame or b"\x00\x00"])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = payload + b"\x00" * (len(payload) % 2)
    ds.file_meta.TransferSyntaxUID = syntax
    with pydicom.config.disable_value_validation():
        ds.save_as(paths[0], enforce_file_format=syntax not in ("1.2.826.0.1.3680043.8.498.424242",))
    return paths[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(fields=HEADERS)
@example(
    fields={"Rows": 65535, "Columns": 65535, "BitsAllocated": 16, "BitsStored": 16, "PixelRepresentation": 0,
            "SamplesPerPixel": 1, "NumberOfFrames": "1", "PhotometricInterpretation": "MONOCHROME2",
            "syntax": ExplicitVRLittleEndian, "pixel_bytes": 128, "RescaleSlope": "1", "RescaleIntercept": "0",
            "ImagePositionPatient": "0\\0\\2.5", "ImageOrientationPatient": "1\\0\\0\\0\\1\\0",
            "PixelSpacing": "1e30\\1e30"}
)  # fmt: skip
def test_fuzzed_headers_never_stop_ingest(fields):
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        _write(root / "src" / "series", fields)
        result = ingest_sources([root / "src"], out=root / "out", pseudonymizer=PSEUDO, workers=1)
        statuses = [record.status for record in result.report.files]
        assert len(statuses) == 3
        assert set(statuses) <= {"ingested", "skipped", "quarantined"}
        assert sum(result.report.counts.values()) == 3
        assert (root / "out" / "ingest_report.json").is_file() and (root / "out" / "manifest.parquet").is_file()
