"""Malformed attribute values as real exports carry them: written as raw bytes, past pydicom's own checks."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

# One invalid value per VR the SR copies; each text is distinctive, so a test can look for it in logs and outputs.
INVALID = {
    "PatientBirthDate": "1946-02-04",  # DA with dashes
    "StudyTime": "10:11:12",  # TM with colons
    "PatientAge": "45 years",  # AS in words
    "PatientName": "QWXBAD^ONE\\QWXBAD^TWO",  # PN with two values where one is allowed
    "ReferringPhysicianName": "A=B=C=QWXREF",  # PN with four component groups
    "StudyDate": "2024/01/02",  # DA with slashes
    "PatientSex": "QWXSEX",  # CS, but not M / F / O
}


def plant_raw(ds: Dataset, keyword: str, text: str) -> None:
    """Put TEXT into KEYWORD as raw bytes, unchecked: how a scanner writes a value pydicom would refuse to set."""
    tag = BaseTag(tag_for_keyword(keyword))
    raw = text.encode("latin-1")
    raw += b" " * (len(raw) % 2)
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)


def rewrite_with(path: Path, values: dict[str, str]) -> None:
    """Rewrite the DICOM file at PATH with VALUES planted raw (pixels and everything else unchanged)."""
    ds = pydicom.dcmread(path)
    for keyword, text in values.items():
        plant_raw(ds, keyword, text)
    ds.save_as(path, enforce_file_format=True)
