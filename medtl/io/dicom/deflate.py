"""Deflated Explicit VR Little Endian files, inflated under a byte budget before pydicom sees them.

Why: pydicom inflates a deflated dataset in one `zlib.decompress` call, with no limit, even when asked to stop
before the pixels; a small deflated file can therefore expand to gigabytes while only its header is being read.
Here the file meta information is read first; a deflated body is inflated chunk by chunk under the image budget
and handed to pydicom as the equivalent Explicit VR Little Endian file. Other files are left to pydicom as they are.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from pydicom.filebase import DicomFileLike
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from medtl.io.limits import inflate

_DEFLATED = DeflatedExplicitVRLittleEndian.encode("ascii")
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_HEAD_BYTES = 2048


def inflated_source(handle: BinaryIO, *, budget: int) -> io.BytesIO | None:
    """An Explicit VR LE copy of a deflated file (read from `handle`), or None (and `handle` rewound) otherwise.

    Raises LimitExceededError when the body inflates past `budget` bytes, ReadError when it is corrupt. A file
    whose first bytes already show a plain file meta group with another transfer syntax is handed back at once:
    parsing the meta group with pydicom only to find that out cost a fifth of the header pass.
    """
    start = handle.tell()
    head = handle.read(_HEAD_BYTES)
    handle.seek(start)
    if not_deflated(head):
        return None
    try:
        read_preamble(handle, True)
        meta = _read_file_meta_info(handle)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # not our concern here: pydicom reports a damaged meta group when it reads the file
        deflated = False
    if not deflated:
        handle.seek(start)
        return None
    body = inflate(handle.read(), budget=budget, wbits=-15, what="the deflated DICOM dataset")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
    out.write(body)
    out.seek(0)
    return out


def mark_deflated(ds) -> None:
    """Restore the original transfer syntax on a dataset read from an inflated copy (pixels are native either way)."""
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


def not_deflated(head: bytes) -> bool:
    """True only when the file meta group in `head` (preamble, DICM, explicit VR little endian elements of group
    0x0002) can be walked to its end and names exactly one transfer syntax, which is not the deflated one.

    Anything unusual (no preamble, an implicit or damaged meta group, one longer than `head`) answers False, and
    the caller parses the meta group with pydicom as before; so this can only skip work, never a check.
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        return False
    offset, syntaxes = 132, []
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return len(syntaxes) == 1 and syntaxes[0] != _DEFLATED
        vr = head[offset + 4 : offset + 6]
        if not (vr.isalpha() and vr.isupper()):
            return False
        if vr in _LONG_VRS:
            if offset + 12 > len(head):
                return False
            (length,) = struct.unpack_from("<I", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if length == 0xFFFFFFFF or start + length > len(head):
            return False
        if element == 0x0010:
            syntaxes.append(head[start : start + length].rstrip(b"\x00 "))
        offset = start + length
    return False
