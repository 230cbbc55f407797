"""Which DICOM objects are images medtl can learn from, and why everything else is skipped.

An allow-list, not a deny-list: a new or unusual SOP class is skipped with a reason until someone decides how to
read it, instead of being stacked into a volume by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID

_STORAGE = "1.2.840.10008.5.1.4.1.1."

# Single-frame classes whose slices stack into a volume by position.
_STACKED_VOLUME = {"2": "CT", "4": "MR", "128": "PT"}
# Multi-frame classes carrying a whole volume with per-frame functional groups.
_ENHANCED_VOLUME = {"2.1": "CT", "2.2": "CT", "4.1": "MR", "4.4": "MR", "128.1": "PT", "130": "PT"}
# Projection and other planar images: 2D, never one-slice volumes.
_PLANAR = {
    "1": "CR",
    "1.1": "DX",
    "1.1.1": "DX",
    "1.2": "MG",
    "1.2.1": "MG",
    "1.3": "IO",
    "1.3.1": "IO",
    "6": "US",
    "6.1": "US",
    "7": "OT",
    "12.1": "XA",
    "12.2": "RF",
    "13.1.4": "MG",
    "13.1.5": "MG",
}
# Multi-frame planar classes: cine loops, not one image.
_CINE = {"3", "3.1", "7.1", "7.2", "7.3", "7.4", "12.1.1", "12.2.1", "12.3"}

_SKIP_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("88.59", "key_object_selection", "a Key Object Selection document, not an image"),
    ("88.", "structured_report", "a Structured Report, not an image"),
    ("11.", "presentation_state", "a Presentation State, not an image"),
    ("66.4", "segmentation", "a Segmentation object: masks are not training images"),
    ("481.3", "rt_structure_set", "an RT Structure Set, not an image"),
    ("481.", "radiotherapy_object", "a radiotherapy object, not a diagnostic image"),
    ("104.", "encapsulated_document", "an encapsulated document (PDF, CDA, STL ...), not an image"),
    ("9.", "waveform", "a waveform, not an image"),
    ("66", "raw_data", "raw or registration data, not an image"),
)

Handling = Literal["stack", "enhanced", "planar", "skip"]


@dataclass(frozen=True)
class SopDecision:
    handling: Handling
    modality_hint: str | None
    reason_code: str | None = None
    reason: str | None = None


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def classify_sop(sop_class_uid: str | None, *, number_of_frames: int = 1) -> SopDecision:
    """Decide how (and whether) to read an object of this SOP class."""
    if not sop_class_uid:
        return SopDecision("skip", None, "missing_sop_class", "no SOP Class UID: cannot tell what the object is")
    if sop_class_uid == MEDIA_STORAGE_DIRECTORY:
        return SopDecision("skip", None, "dicomdir", "a DICOMDIR index file, not an image")
    if not sop_class_uid.startswith(_STORAGE):
        return SopDecision(
            "skip", None, "unsupported_sop_class", f"not an image storage class ({sop_class_name(sop_class_uid)})"
        )
    suffix = sop_class_uid[len(_STORAGE) :]
    # the images read come first, without looking up the class's name: only a reason to skip names it, and this
    # runs for every file of an archive, in the ingest process, while its workers wait
    if suffix in _STACKED_VOLUME:
        return SopDecision("stack", _STACKED_VOLUME[suffix])
    if suffix in _ENHANCED_VOLUME:
        return SopDecision("enhanced", _ENHANCED_VOLUME[suffix])
    if suffix in _PLANAR and number_of_frames <= 1:
        return SopDecision("planar", _PLANAR[suffix])
    name = sop_class_name(sop_class_uid)
    if suffix in _PLANAR:
        return SopDecision(
            "skip", _PLANAR[suffix], "cine_unsupported", f"a multi-frame {name}: cine loops are not supported"
        )
    if suffix in _CINE:
        return SopDecision("skip", None, "cine_unsupported", f"{name}: cine loops are not supported")
    for prefix, code, text in _SKIP_PREFIXES:
        if suffix == prefix.rstrip(".") or suffix.startswith(prefix):
            return SopDecision("skip", None, code, f"{text} ({name})")
    return SopDecision("skip", None, "unsupported_sop_class", f"{name} is not on medtl's image allow-list")


def uid_of(value: str) -> UID:
    """pydicom's UID for a header's string. The standard's own UIDs (every transfer syntax and SOP class) come from
    a table made once: an archive names the same few in every file, and making a UID object checks its string.
    Any other string is made anew each time, so that pydicom's remarks on it are counted for every file."""
    known = _standard_uids().get(value)
    return known if known is not None else UID(value)


@cache
def _standard_uids() -> dict[str, UID]:
    return {value: UID(value) for value in UID_dictionary}


def sop_class_name(sop_class_uid: str) -> str:
    """The standard's name for a SOP class; a UID the standard does not know is header content, never repeated."""
    name = uid_of(sop_class_uid).name
    return name if name != sop_class_uid else "an unrecognised SOP class"


def readable_image_classes() -> list[str]:
    """The full SOP class UIDs that ingest reads: what a PACS retrieval has to accept (C-GET contexts)."""
    suffixes = [*_STACKED_VOLUME, *_ENHANCED_VOLUME, *_PLANAR]
    return [_STORAGE + suffix for suffix in dict.fromkeys(suffixes)]
