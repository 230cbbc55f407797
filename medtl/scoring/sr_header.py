"""The source header an SR copies from, checked before highdicom sees it: invalid values are emptied, named by keyword.

Why: highdicom copies the Patient and Study modules of one source file into the SR and converts some values on the
way (dates, times, names, sex). One malformed optional value -- a birth date written 1946-02-04, a time with
colons, an age in words, a name with two values -- makes it raise, and the whole series loses its result; or pydicom
warns with the value itself, which then sits in a log. A scanner's typo must not cost the site its result, nor put a
birth date into a log. So every top-level attribute of the header is checked against its value representation
(VR) and multiplicity here, from the raw bytes (converting them is what warns), and an invalid one is replaced by an
empty value: the SR keeps the attribute with no value (DICOM allows that for the Type 2 and 3 attributes these
modules hold) and medtl reports which keywords were emptied, never what they held.
"""

from __future__ import annotations

import datetime

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VM, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import DA, DT, PN_DELIMS, TM, VALIDATORS

from medtl.errors import ReadError

# What a reference to the source needs: without valid values for these there is no SR to write for the series.
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_TEXT = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_CHARSET = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}  # decoded with the file's Specific Character Set
_SINGLE = {"LT", "ST", "UT", "UR"}  # never multi-valued: a backslash is part of the text
_BINARY = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "UV": 8, "SV": 8, "AT": 4}
_PARSED = {"DA": DA, "DT": DT, "TM": TM}  # a regex match is not enough: ranges like 0900-1000 match, yet never parse
_SEXES = ("M", "F", "O")


def clean_header(header: pydicom.Dataset) -> tuple[str, ...]:
    """Empty every invalid top-level attribute of HEADER in place; return their keywords (sorted), never values.

    Required reference UIDs are not emptied: an invalid one stops the SR for this series (ReadError, no value shown).
    PatientSex outside M/F/O counts as invalid; a one-part PatientName gets the trailing caret that DICOM allows, so
    highdicom does not warn with the name (the same name: "Bono" and "Bono^" are equal in DICOM).
    """
    encodings = _encodings(header)
    invalid = []
    for tag in list(header.keys()):
        if tag.is_private or tag.group in (0x0002, 0x7FE0):
            continue
        keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
        if not keyword or _valid(header, tag, encodings):
            continue
        if keyword in REQUIRED_UIDS:
            raise ReadError(
                f"the source file's {keyword} is not a valid UID", where="the source DICOM file of the scored series",
                fix="correct the series on the PACS or in the export: no SR can reference it as it is",
            )  # fmt: skip
        invalid.append(keyword)
        _empty(header, tag)
    if header.get("PatientSex") not in (None, "", *_SEXES):  # a valid code string, but not one DICOM defines
        invalid.append("PatientSex")
        _empty(header, BaseTag(0x00100040))
    name = str(header.get("PatientName") or "")
    if name and "^" not in name:
        groups = name.split("=")
        header.PatientName = "=".join([groups[0] + "^", *groups[1:]])
    return tuple(sorted(invalid))


def _encodings(header: pydicom.Dataset) -> list[str]:
    try:
        charset = header.get("SpecificCharacterSet")
        return convert_encodings(charset.value if charset is not None else None)
    except Exception:  # an unknown character set: decode as the default one; the text checks still run
        return convert_encodings(None)


def _valid(dataset: pydicom.Dataset, tag: BaseTag, encodings: list[str]) -> bool:
    """Whether the element at TAG has a value its VR and VM allow; any surprise while looking counts as invalid."""
    try:
        element = dataset.get_item(tag)
        vr = element.VR if element.VR and " or " not in element.VR and element.VR != "UN" else dictionary_VR(tag)
        if vr == "SQ":
            return all(_valid_dataset(item, encodings) for item in dataset[tag].value)
        value = element.value
        if vr in _BINARY:
            return not isinstance(value, bytes | bytearray) or len(value) % _BINARY[vr] == 0
        if vr not in _TEXT or value is None:
            return True
        parts = _parts(value, vr, encodings)
        if len(parts) > 1 and dictionary_VM(tag) == "1":
            return False
        return all(_valid_part(vr, part) for part in parts)
    except Exception:
        return False


def _valid_dataset(dataset: pydicom.Dataset, encodings: list[str]) -> bool:
    """A sequence item: every public element valid (its tags, not its elements: iterating would convert them)."""
    tags = dataset.keys()
    return all(_valid(dataset, tag, encodings) for tag in tags if not tag.is_private)


def _parts(value: object, vr: str, encodings: list[str]) -> list[object]:
    if isinstance(value, bytes | bytearray):
        if vr in _CHARSET:
            text = decode_bytes(bytes(value), encodings, PN_DELIMS if vr == "PN" else set())
        else:
            text = bytes(value).decode("ascii")
        parts = [text] if vr in _SINGLE else text.split("\\")
        return [part.rstrip(" \x00") for part in parts]
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)  # a converted multi-value


def _valid_part(vr: str, part: object) -> bool:
    if part is None or part == "" or isinstance(part, datetime.date | datetime.time):
        return True
    text = str(part)
    validator = VALIDATORS.get(vr)
    if validator is not None and not validator(vr, text)[0]:
        return False
    if vr in _PARSED:
        _PARSED[vr](text, validation_mode=pydicom.config.IGNORE)  # raises ValueError when it cannot be read
    return True


def _empty(dataset: pydicom.Dataset, tag: BaseTag) -> None:
    vr = dictionary_VR(tag)
    dataset[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else None)
