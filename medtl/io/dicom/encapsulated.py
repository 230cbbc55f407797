"""Fast path for compressed single-frame greyscale objects: the codec runs on the file's own bytes.

Why: for a JPEG-LS, JPEG 2000 or RLE slice of an archive, pydicom's full parse (`dcmread`, every element wrapped
in an object, the pixel description read back from the dataset) costs about as much as the codec itself. The
header pass already knows the pixel description and where the pixel data element starts, so here the
encapsulated value is handed to the same pydicom decoder, with the same plugin preference, as a buffer with the
header's description. Every check still runs first: the codestream's own declared size is checked against the
header and the limits (budget.py) before any codec sees it.

Anything unexpected returns None and the object goes through the full pydicom path, which gives the reason a
damaged file is refused for; so this path never decides what a bad file's error is, it only makes good files
cheaper. The values are those of the full path (tests/ingest/test_ingest_decode.py compares them).
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.uid import UID, RLELossless

from medtl.io.dicom.budget import check_codestream, frame_bytes
from medtl.io.dicom.headers import DicomHeader
from medtl.io.dicom.sop import uid_of
from medtl.io.limits import IngestLimits

_PIXEL_DATA = b"\xe0\x7f\x10\x00"
_UNDEFINED = 0xFFFFFFFF
_VRS = (b"OB\x00\x00", b"OW\x00\x00")  # OB is the standard's; older writers put OW on encapsulated data too


def encapsulated_pixels(header: DicomHeader, data: bytes, limits: IngestLimits) -> tuple[bytes, UID] | None:
    """The encapsulated Pixel Data value (item by item, as pydicom's decoders take it) and the transfer syntax,
    once its codestream passed the size checks; None when this path does not apply or the bytes are not as the
    header says (the full path then reads the file and reports what is wrong)."""
    if not eligible(header) or header.size != len(data):
        return None
    syntax = uid_of(header.transfer_syntax_uid or "")
    offset = header.pixel_data_offset
    assert offset is not None  # guaranteed by eligible
    if data[offset : offset + 4] != _PIXEL_DATA or data[offset + 4 : offset + 8] not in _VRS:
        return None
    (length,) = struct.unpack_from("<I", data, offset + 8)
    if length != _UNDEFINED:
        return None
    value = data[offset + 12 :]  # a copy of the compressed bytes only: pydicom's fragment reader wants bytes
    if syntax != RLELossless:  # RLE is decoded into the header's buffer; JPEG codecs trust their own markers
        per_frame = frame_bytes(header.rows, header.columns, 1, header.bits_allocated)
        try:
            frame = next(generate_frames(value, number_of_frames=1))
            check_codestream(frame, per_frame, limits)
        except Exception:  # over a limit or malformed: the full path refuses it, with its reason
            return None
    return value, syntax


def stored_array(header: DicomHeader, decoded: np.ndarray) -> np.ndarray | None:
    """The codec's output as the header's single frame of stored values, or None if it is anything else."""
    if decoded.shape != (header.rows, header.columns) or decoded.dtype.kind not in "iu":
        return None
    return decoded


def options(header: DicomHeader) -> dict[str, int | str]:
    """The pixel description pydicom's decoders need when they are given a buffer instead of a dataset."""
    return {
        "rows": header.rows or 0,
        "columns": header.columns or 0,
        "samples_per_pixel": 1,
        "bits_allocated": header.bits_allocated or 0,
        "bits_stored": header.bits_stored or header.bits_allocated or 0,
        "pixel_representation": header.pixel_representation or 0,
        "photometric_interpretation": (header.photometric or "").upper(),
        "number_of_frames": 1,
    }


def eligible(header: DicomHeader) -> bool:
    """Whether this path may read the object (it still checks the bytes themselves)."""
    syntax = uid_of(header.transfer_syntax_uid or "")
    return (
        syntax.is_transfer_syntax
        and syntax.is_encapsulated
        and syntax.is_little_endian
        and not syntax.is_deflated
        and header.pixel_data_offset is not None
        and header.samples_per_pixel == 1
        and header.number_of_frames == 1
        and header.bits_allocated in (8, 16)
        and header.pixel_representation in (0, 1)
        and not header.has_modality_lut
        and header.rows is not None
        and header.columns is not None
        and (header.photometric or "").upper() in ("MONOCHROME1", "MONOCHROME2")
    )
