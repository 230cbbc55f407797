"""Fast path for the most common pixels: uncompressed, single-frame, greyscale, little-endian.

The header pass already knows where the pixel data starts and how it is laid out, so the decode pass only has to
read the file, hash it and view the bytes as an array; re-parsing the whole dataset with pydicom would cost more
than the pixels themselves. Anything unusual returns None and goes through pydicom's full decoder instead.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from medtl.io.dicom.headers import DicomHeader

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}


def decode_native(header: DicomHeader, data: bytes) -> np.ndarray | None:
    """Stored values (rows, columns) from the raw file bytes, or None when the fast path does not apply."""
    if not eligible(header):
        return None
    offset = header.pixel_data_offset
    assert offset is not None  # guaranteed by eligible
    if data[offset : offset + 4] != b"\xe0\x7f\x10\x00":
        return None
    if header.transfer_syntax_uid == EXPLICIT_LE:
        vr = data[offset + 4 : offset + 6]
        if vr not in _LONG_VRS:
            return None
        (length,) = struct.unpack_from("<I", data, offset + 8)
        start = offset + 12
    else:
        (length,) = struct.unpack_from("<I", data, offset + 4)
        start = offset + 8
    bits = header.bits_allocated or 0
    count = (header.rows or 0) * (header.columns or 0)
    needed = count * bits // 8
    if length == 0xFFFFFFFF or length < needed or start + needed > len(data):
        return None
    signed = header.pixel_representation == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    stored = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(header.rows, header.columns)
    used = header.bits_stored or bits
    if used < bits:
        if signed:  # sign-extend from the highest stored bit
            shift = bits - used
            stored = (stored << shift) >> shift
        else:
            stored = stored & dtype.type((1 << used) - 1)
    return stored


def eligible(header: DicomHeader) -> bool:
    """Whether the fast path may read this header's pixels (it still checks the bytes themselves)."""
    return (
        header.transfer_syntax_uid in (IMPLICIT_LE, EXPLICIT_LE)
        and header.pixel_data_offset is not None
        and header.samples_per_pixel == 1
        and header.number_of_frames == 1
        and header.bits_allocated in (8, 16, 32)
        and header.pixel_representation in (0, 1)
        and not header.has_modality_lut
        and header.rows is not None
        and header.columns is not None
        and (header.photometric or "").upper() in ("MONOCHROME1", "MONOCHROME2")
    )


def read_and_hash(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()
