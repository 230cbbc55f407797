"""Whole-number series kept as integers from the file to the cache.

Why: most CT and MR series store 16-bit integers with a whole-number rescale (slope 1, intercept -1024 for CT),
and the cache keeps such scans as 16-bit integers anyway (ingest/worker.py, compact_lossless). Converting every
slice to float32 only to convert the volume back costs four passes over twice the bytes: rescale, assembly, the
min/max scan and the compaction. Here the stored integers go straight into an integer volume, the rescale is one
vectorised operation on the whole volume, and the values are exactly those the float path gives: a series this
path cannot represent exactly (another slope per slice, a fractional rescale, a range beyond 16 bits, MONOCHROME1)
takes the float path, and so does one whose bytes were not kept in memory. Compressed slices come too: the codec's
stored values go into the integer volume as uncompressed ones do (decode.fast_stored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medtl.io.dicom.encapsulated import eligible as encapsulated_eligible
from medtl.io.dicom.headers import DicomHeader
from medtl.io.dicom.native import eligible as native_eligible

_FITS = (np.int16, np.uint16)


def integer_dtype(headers: Sequence[DicomHeader], data: Mapping[Path, tuple[bytes | None, str]]) -> np.dtype | None:
    """The stored dtype when every slice can stay an integer all the way, else None (use the float path)."""
    first = headers[0]
    transform = (first.rescale_slope, first.rescale_intercept)
    slope, intercept = _slope(first), _intercept(first)
    if not (float(slope).is_integer() and float(intercept).is_integer()):
        return None
    for header in headers:
        if not (native_eligible(header) or encapsulated_eligible(header)):
            return None
        if (header.photometric or "").upper() != "MONOCHROME2":
            return None
        if header.bits_allocated not in (8, 16) or (header.rescale_slope, header.rescale_intercept) != transform:
            return None
        if (header.bits_allocated, header.pixel_representation) != (first.bits_allocated, first.pixel_representation):
            return None
        if data.get(header.path, (None, ""))[0] is None:
            return None
    signed = first.pixel_representation == 1
    return np.dtype(f"<{'i' if signed else 'u'}{(first.bits_allocated or 16) // 8}")


def physical_integers(stored: np.ndarray, header: DicomHeader) -> np.ndarray | None:
    """stored * slope + intercept as int16 or uint16 (the volume itself where it can be updated in place), or
    None when the values leave both ranges (the caller converts to float32 then, as the float path does)."""
    slope, intercept = int(_slope(header)), int(_intercept(header))
    if stored.size == 0:
        return None
    low, high = int(stored.min()), int(stored.max())
    ends = (low * slope + intercept, high * slope + intercept)
    low, high = min(ends), max(ends)
    for dtype in _FITS:
        info = np.iinfo(dtype)
        if not (info.min <= low and high <= info.max):
            continue
        if stored.dtype == dtype and slope == 1 and info.min <= intercept <= info.max:
            if intercept:
                stored += dtype(intercept)  # the results fit, so no element wraps
            return stored
        out = stored.astype(np.int32, order="K")
        if slope != 1:
            out *= slope
        if intercept:
            out += intercept
        return out.astype(dtype, order="K")
    return None


def _slope(header: DicomHeader) -> float:
    return header.rescale_slope if header.rescale_slope is not None else 1.0


def _intercept(header: DicomHeader) -> float:
    return header.rescale_intercept if header.rescale_intercept is not None else 0.0
