"""Check what a DICOM object declares against the ingest limits, before any pixel buffer is allocated.

Two places can lie. The header (Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated) decides the
buffer every decoder allocates; it is checked once in the header pass and again on the dataset actually decoded
(the file may have changed in between). Inside encapsulated pixel data each JPEG / JPEG-LS / JPEG 2000 frame
carries its own size, which the JPEG libraries trust: a 64 x 64 header can wrap a codestream that declares
60000 x 60000. Those sizes are read from the codestream markers and must fit the header before a decoder runs.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, RLELossless

from medtl.errors import LimitExceededError, ReadError
from medtl.io.dicom.headers import DicomHeader
from medtl.io.limits import IngestLimits

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}
_J2K_SIZ = b"\xff\x4f\xff\x51"
_MAX_MARKER_SCAN = 1024 * 1024  # a size marker sits in the first bytes of a frame; never scan a whole frame


def header_pixel_bytes(header: DicomHeader, limits: IngestLimits) -> int:
    """Stored pixel bytes the header declares (raises LimitExceededError when over the per-image limits)."""
    return _check(
        limits, header.rows, header.columns, header.number_of_frames, header.samples_per_pixel, header.bits_allocated
    )


def check_dataset(ds: Dataset, limits: IngestLimits, syntax: UID) -> None:
    """The same check on the dataset about to be decoded, then on every compressed frame's own declared size."""
    try:
        rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
        frames = _int(ds.get("NumberOfFrames")) or 1
        samples = _int(ds.get("SamplesPerPixel")) or 1
        bits = _int(ds.get("BitsAllocated"))
    except (TypeError, ValueError, OverflowError):
        raise ReadError(
            "the pixel description (Rows, Columns, frames, samples, bits) is not a set of numbers"
        ) from None
    _check(limits, rows, columns, frames, samples, bits)
    if not syntax.is_encapsulated or syntax == RLELossless or "PixelData" not in ds:
        return  # native pixels are bounded by the file; RLE is decoded into the header's buffer (see decode.py)
    per_frame = frame_bytes(rows, columns, samples, bits)
    try:
        chunks = generate_frames(ds.PixelData, number_of_frames=frames)
        for index, frame in enumerate(chunks):
            if index >= frames:
                break
            check_codestream(frame, per_frame, limits)
    except (LimitExceededError, ReadError):
        raise
    except Exception as error:  # pydicom could not even split the fragments: the file is damaged
        raise ReadError(f"the encapsulated pixel data is malformed ({type(error).__name__})") from None


def _check(
    limits: IngestLimits, rows: int | None, columns: int | None, frames: int | None, samples: int | None, bits
) -> int:
    shape = (rows or 0, columns or 0, max(1, frames or 1), max(1, samples or 1))
    return limits.check_image(shape=shape, bytes_per_sample=_bytes_per_sample(bits), what="the DICOM object")


def frame_bytes(rows: int | None, columns: int | None, samples: int | None, bits: int | None) -> int:
    """Bytes of one decoded frame as the header describes it: what a compressed frame may declare at most."""
    return (rows or 0) * (columns or 0) * max(1, samples or 1) * _bytes_per_sample(bits)


def _bytes_per_sample(bits: int | None) -> int:
    return max(1, ((bits or 16) + 7) // 8)


def _int(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    return None if value is None else int(value)


def check_codestream(frame: bytes, per_frame: int, limits: IngestLimits) -> None:
    size = codestream_size(frame)
    if size is None:
        raise ReadError("a compressed frame has no readable size marker (SOF or SIZ)")
    height, width, components, bits = size
    if height <= 0 or width <= 0:
        raise ReadError("a compressed frame declares no height or width")
    limits.check_image(
        shape=(height, width, components), bytes_per_sample=_bytes_per_sample(bits), what="a compressed frame"
    )
    declared = height * width * components * _bytes_per_sample(bits)
    if declared > per_frame:
        raise LimitExceededError(
            f"a compressed frame declares {declared:,} bytes of pixels, more than the {per_frame:,} bytes its "
            "header allows per frame",
            reason_code="decompression_limit",
            fix="the file contradicts itself and cannot be decoded safely; re-export it from the source system",
        )


def codestream_size(frame: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, bits per sample) from a JPEG, JPEG-LS or JPEG 2000 frame; None if not found."""
    head = frame[:_MAX_MARKER_SCAN]
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    at = head.find(_J2K_SIZ)
    if at >= 0 and len(head) >= at + 4 + 38 + 3:
        base = at + 6  # after SOC, SIZ marker and Lsiz
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", head, base + 2)
        (csiz,) = struct.unpack_from(">H", head, base + 34)
        bits = (head[base + 36] & 0x7F) + 1
        return max(0, ysiz - yosiz), max(0, xsiz - xosiz), csiz, bits
    return None


def _jpeg_size(head: bytes) -> tuple[int, int, int, int] | None:
    position = 2
    while position + 4 <= len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", head, position + 2)
        if marker in _JPEG_SOF:
            if position + 10 > len(head):
                return None
            bits, height, width, components = struct.unpack_from(">BHHB", head, position + 4)
            return height, width, components, bits
        if marker == 0xDA or length < 2:  # start of scan before any frame header: not a valid JPEG
            return None
        position += 2 + length
    return None
