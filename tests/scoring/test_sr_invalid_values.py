"""Malformed optional values in the source file: the SR is still written, without them, and nothing quotes them."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medtl.errors import ReadError
from medtl.scoring.dicom_sr import AlgorithmInfo, build_sr, omitted_attributes, source_reference, write_sr
from support.dicom_factory import ct_slice
from support.raw_values import INVALID, rewrite_with

ALGORITHM = AlgorithmInfo(model_id="chest-ct", model_version="1.0.0", artifact_sha256="cd" * 32, approved=True)


def _source(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "src" / "ct.dcm"
    ct_slice(path, np.full((8, 8), 1000, np.uint16), position=(0, 0, 0), series_uid=generate_uid())
    rewrite_with(path, values)
    return path


def _write(path: Path, folder: Path) -> tuple[pydicom.Dataset, tuple[str, ...]]:
    series = source_reference(path)
    report = build_sr(series, probability=0.8, decision="nodule", threshold=0.5, flags=[], algorithm=ALGORITHM,
                      positive_class="nodule", seed_uid="1.2.3")  # fmt: skip
    return pydicom.dcmread(write_sr(report, folder)), omitted_attributes(series, report)


@pytest.mark.parametrize("keyword", sorted(INVALID))
def test_an_invalid_value_is_left_out_and_named_by_keyword(keyword, tmp_path, caplog, capfd):
    path = _source(tmp_path, {keyword: INVALID[keyword]})
    original = pydicom.dcmread(path, stop_before_pixels=True)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written, omitted = _write(path, tmp_path / "sr")

    assert omitted == (keyword,)
    assert written[keyword].value in (None, "")  # present (Type 2 attributes must be) but without the bad value
    assert written.StudyInstanceUID == original.StudyInstanceUID  # the SR still lands in the study
    assert written.PatientID == original.PatientID  # and keeps the valid identifiers
    said = caplog.text + "".join(str(w.message) for w in caught) + "".join(capfd.readouterr())
    assert INVALID[keyword].split("\\")[0] not in said
    assert INVALID[keyword] not in str(written)


def test_all_at_once_and_valid_values_stay(tmp_path):
    path = _source(tmp_path, {**INVALID, "StudyDescription": "CHEST QWXOK"})
    written, omitted = _write(path, tmp_path / "sr")
    assert omitted == tuple(sorted(INVALID))
    assert written.StudyDescription == "CHEST QWXOK"
    assert all(written[keyword].value in (None, "") for keyword in INVALID)


def test_a_one_part_name_keeps_its_value_without_a_warning_that_quotes_it(tmp_path, caplog):
    path = _source(tmp_path, {"PatientName": "QWXSINGLE"})
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # highdicom warns with the name itself when it has no caret
        written, omitted = _write(path, tmp_path / "sr")
    assert omitted == ()
    assert str(written.PatientName) == "QWXSINGLE^"  # the same name in DICOM: trailing carets may be left out
    assert "QWXSINGLE" not in caplog.text


def test_an_invalid_reference_uid_stops_this_sr_without_quoting_it(tmp_path):
    path = _source(tmp_path, {"SOPInstanceUID": "1.2.QWXUID"})
    with pytest.raises(ReadError, match="SOPInstanceUID is not a valid UID") as raised:
        source_reference(path)
    assert "QWXUID" not in str(raised.value)
