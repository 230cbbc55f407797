"""First-pass headers of plain files without building a pydicom Dataset.

Why: the header pass touches every file, and pydicom's dcmread (file meta parsed into a dataset, every element
wrapped in an object) costs as much as the whole bare read of the file. For a file with a preamble, a plain file
meta group and a little-endian body, the elements before the pixel data are only walked here (tag, VR, length),
kept as raw bytes, and read by the same `_Values` conversions that read pydicom's raw elements
(headers.py), so the DicomHeader is the same one. Anything this walk does not expect (no preamble, a deflated,
big-endian or unknown transfer syntax, an unknown VR, a value running past the bytes read, a header longer than
them, a person name in another character set) answers None and pydicom reads the file as before, with its
checks and its warnings counted.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.uid import AllTransferSyntaxes

from medtl.io.dicom.headers import DicomHeader, RawValues, build_header

HEAD_BYTES = 64 * 1024
_LONG = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
     b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)  # fmt: skip
_PIXELS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, FloatPixelData, DoubleFloatPixelData
_PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 8
_PATIENT_NAME, _CHARSET, _MODALITY_LUT = 0x00100010, 0x00080005, 0x00283000
_PLAIN_CHARSETS = frozenset({b"", b"ISO_IR 6", b"ISO_IR 100"})  # what pydicom decodes as latin-1
# The standard little-endian, not deflated transfer syntaxes -> explicit VR? (a file's own bytes never become a UID
# object here: pydicom warns about a malformed UID by quoting it)
_SYNTAXES = {
    str(uid).encode("ascii"): not uid.is_implicit_VR
    for uid in AllTransferSyntaxes
    if uid.is_little_endian and not uid.is_deflated
}


_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_IMPLICIT = struct.Struct("<HHI")
_LONG_LENGTH = struct.Struct("<I").unpack_from


class _Unexpected(Exception):
    """The walk met something it leaves to pydicom."""


def fast_header(path: Path, size: int, head: bytes) -> DicomHeader | None:
    """The header of a plain file from its first bytes (`head`, the whole file when it is short), or None."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    try:
        meta, offset, _ = _walk(head, 132, explicit=True, meta=True)
        explicit = _explicit(meta.get(0x00020010))
        if explicit is None:
            return None
        body, end, pixel_offset = _walk(head, offset, explicit=explicit, meta=False)
    except (_Unexpected, struct.error):
        return None
    if pixel_offset is None and end < size:  # stopped by the end of `head`, not of the file
        return None
    name = _patient_name(body)
    if name is None:
        return None
    return build_header(
        RawValues(body),
        RawValues(meta),
        path=path,
        size=size,
        patient_name=name,
        has_modality_lut=_MODALITY_LUT in body,
        pixel_data_offset=pixel_offset,
    )


def _explicit(syntax: bytes | None) -> bool | None:
    """Explicit VR (True) or implicit (False) for a plain transfer syntax; None for any other or none."""
    if syntax is None:
        return None
    return _SYNTAXES.get(syntax.rstrip(b"\x00 "))


def _walk(buf: bytes, offset: int, *, explicit: bool, meta: bool) -> tuple[dict[int, bytes], int, int | None]:
    """Elements (tag -> raw value) from `offset` up to the pixel data, the end of group 2 (meta) or of `buf`.

    The loop reads each element's header with one struct call (the tag, and the VR and short length or the long
    length): it runs about 45 times per file, over every file of an archive."""
    elements: dict[int, bytes] = {}
    size = len(buf)
    head = _EXPLICIT.unpack_from if explicit else _implicit_head  # (group, element, VR or None, length)
    while offset + 8 <= size:
        group, element, vr, length = head(buf, offset)
        tag = group << 16 | element
        if meta and group != 0x0002:
            return elements, offset, None
        if not meta and group == 0x0002:
            raise _Unexpected  # a meta element in the body: pydicom's business
        if tag in _PIXELS:  # pydicom stops here too, once the element's header (tag, VR, length) is complete
            _element(buf, offset, explicit)
            return elements, offset, offset if tag == _PIXEL_DATA else None
        start = offset + 8
        if vr is not None and vr not in _SHORT:
            if vr not in _LONG or length != 0:  # a long VR's two reserved bytes are zero
                raise _Unexpected
            (length,) = _LONG_LENGTH(buf, offset + 8)
            start = offset + 12
        if length == _UNDEFINED:
            if vr is not None and vr != b"SQ":  # UN of undefined length holds implicit VR: pydicom
                raise _Unexpected
            elements[tag] = b""  # present; sequences' contents are not needed here
            offset = _skip_sequence(buf, start, explicit, 1)
            continue
        end = start + length
        if end > size:
            raise _Unexpected
        elements[tag] = buf[start:end]
        offset = end
    if offset != size:
        raise _Unexpected  # a few stray bytes, or an element header cut by the end of `buf`
    return elements, offset, None


def _implicit_head(buf: bytes, offset: int) -> tuple[int, int, None, int]:
    """(group, element, no VR, 32-bit length) of an implicit-VR element."""
    group, element, length = _IMPLICIT.unpack_from(buf, offset)
    return group, element, None, length


def _element(buf: bytes, offset: int, explicit: bool) -> tuple[int, int, bytes | None]:
    """(value start, value length, VR or None) of the element at `offset`."""
    if not explicit:
        return offset + 8, struct.unpack_from("<I", buf, offset + 4)[0], None
    vr = buf[offset + 4 : offset + 6]
    if vr in _SHORT:
        return offset + 8, struct.unpack_from("<H", buf, offset + 6)[0], vr
    if vr in _LONG:
        if buf[offset + 6 : offset + 8] != b"\x00\x00":
            raise _Unexpected
        return offset + 12, struct.unpack_from("<I", buf, offset + 8)[0], vr
    raise _Unexpected


def _skip_sequence(buf: bytes, offset: int, explicit: bool, depth: int) -> int:
    """Offset just past the sequence delimiter of an undefined-length sequence whose first item is at `offset`."""
    if depth > _MAX_DEPTH:
        raise _Unexpected
    while True:
        tag, length = _tag_and_length(buf, offset)
        offset += 8
        if tag == _SEQUENCE_END:
            return offset
        if tag != _ITEM:
            raise _Unexpected
        if length != _UNDEFINED:
            offset += length
            continue
        while True:  # an undefined-length item: its elements up to the item delimiter
            tag, _ = _tag_and_length(buf, offset)
            if tag == _ITEM_END:
                offset += 8
                break
            start, length, vr = _element(buf, offset, explicit)
            if length == _UNDEFINED:
                if vr is not None and vr != b"SQ":
                    raise _Unexpected
                offset = _skip_sequence(buf, start, explicit, depth + 1)
            else:
                offset = start + length
        if offset > len(buf):
            raise _Unexpected


def _tag_and_length(buf: bytes, offset: int) -> tuple[int, int]:
    if offset + 8 > len(buf):
        raise _Unexpected
    group, element, length = struct.unpack_from("<HHI", buf, offset)
    return group << 16 | element, length


def _patient_name(body: dict[int, bytes]) -> str | None:
    """As pydicom gives str(PatientName) for a single latin-1 name; None (ask pydicom) for anything else."""
    charset = body.get(_CHARSET, b"").strip(b"\x00 ")
    raw = body.get(_PATIENT_NAME)
    if raw is None:
        return ""
    if charset not in _PLAIN_CHARSETS or b"\\" in raw or b"\x1b" in raw:
        return None
    return raw.rstrip(b"\x00 ").decode("latin-1").strip()
