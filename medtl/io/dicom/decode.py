"""Second pass: decode pixels into float32 physical values, recording which decoder ran.

Rescale (or a Modality LUT) is applied per slice and, for Enhanced multi-frame objects, per frame, because slope
and intercept may differ between them. MONOCHROME1 images are inverted so that larger values are always brighter.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import UID, RLELossless

from medtl.errors import ReadError
from medtl.io.dicom.budget import check_dataset, header_pixel_bytes
from medtl.io.dicom.deflate import inflated_source, mark_deflated
from medtl.io.dicom.encapsulated import encapsulated_pixels, stored_array
from medtl.io.dicom.encapsulated import options as encapsulated_options
from medtl.io.dicom.headers import DicomHeader
from medtl.io.dicom.native import decode_native, read_and_hash
from medtl.io.dicom.sop import uid_of
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.timing import timed

# Compressed syntaxes are decoded by the first available plugin in this order; the one that ran is recorded.
PLUGIN_PREFERENCE = ("pylibjpeg", "pyjpegls", "pydicom", "pillow", "gdcm")
# Plugins that expand compressed data before checking its size (pydicom's own RLE decoder grows a buffer segment
# by segment, up to 64 times the input): used only when no plugin that decodes into the header's buffer is there.
_UNBOUNDED = {(RLELossless, "pydicom")}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NATIVE_DECODER = "medtl-native"  # uncompressed pixels read by native.py, recorded as the decoder
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class DecodedObject:
    frames: np.ndarray  # float32 (n_frames, rows, columns)
    decoder: str
    transfer_syntax: str
    sha256: str
    dataset: Dataset | None  # None when the native fast path decoded the pixels
    flags: list[str] = field(default_factory=list)
    integral: bool = False  # every value is a whole number (lets the cache store it losslessly as integers)


def decode_object(
    path: Path,
    header: DicomHeader | None = None,
    *,
    data: bytes | None = None,
    sha256: str | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
    fast: bool = True,
) -> DecodedObject:
    """Decode a file's frames from its bytes (read and hashed here unless the caller already holds both).

    With the header from the first pass (and `fast`), plain uncompressed greyscale pixels take the fast path in
    native.py and compressed single-frame greyscale ones that in encapsulated.py; everything else is parsed and
    decoded by pydicom, as is every object when the caller needs its whole dataset (`fast=False`). The hash
    proves which bytes were decoded. Declared sizes are checked against `limits` before any pixel buffer exists
    (budget.py); any failure raises ReadError, except MemoryError, which the caller records as such.
    """
    if data is None or sha256 is None:
        try:
            limits.check_file(path.stat().st_size)
            data, sha256 = read_and_hash(path)
        except OSError as error:
            raise ReadError(f"cannot read file ({type(error).__name__})") from None
    digest = sha256
    if header is not None and fast:
        header_pixel_bytes(header, limits)
        found = fast_stored(header, data, limits)
        if found is not None:
            return _fast_object(header, *found, digest)
    try:
        stream = io.BytesIO(data)
        inflated = inflated_source(stream, budget=limits.decompression_budget)
        with timed("decode"):
            ds = pydicom.dcmread(inflated if inflated is not None else stream)
        if inflated is not None:
            mark_deflated(ds)
    except ReadError:
        raise
    except Exception as error:  # a damaged file quarantines itself, not the run
        raise ReadError(f"unreadable DICOM object ({type(error).__name__})") from None
    try:
        return _decode_dataset(ds, digest, limits)
    except (ReadError, MemoryError):
        raise
    except Exception as error:  # values pydicom or a plugin could not make sense of
        raise ReadError(f"pixel data could not be decoded ({type(error).__name__})") from None


def fast_stored(header: DicomHeader, data: bytes, limits: IngestLimits) -> tuple[np.ndarray, str] | None:
    """A single-frame greyscale object's stored values (rows, columns) by a fast path, with the decoder's name:
    uncompressed pixels viewed in place (native.py), or a compressed frame handed to its plugin straight from the
    file's bytes (encapsulated.py). None when neither applies, or a plugin failed: the full path then decides."""
    with timed("decode"):
        stored = decode_native(header, data)
    if stored is not None:
        return stored, NATIVE_DECODER
    found = encapsulated_pixels(header, data, limits)
    if found is None:
        return None
    value, syntax = found
    try:
        with timed("decode"):
            pixels, plugin = _decode(value, syntax, **encapsulated_options(header))
    except ReadError:
        return None
    stored = stored_array(header, pixels)
    return (stored, plugin) if stored is not None else None


def _fast_object(header: DicomHeader, stored: np.ndarray, decoder: str, digest: str) -> DecodedObject:
    obj = fast_description(header, digest, decoder)
    slope = header.rescale_slope if header.rescale_slope is not None else 1.0
    intercept = header.rescale_intercept if header.rescale_intercept is not None else 0.0
    low, high = _range_for(header.bits_stored or header.bits_allocated or 16, header.pixel_representation == 1)
    monochrome1 = (header.photometric or "").upper() == "MONOCHROME1"
    with timed("rescale"):
        frame = _linear(stored, slope, intercept, low, high, monochrome1)
    obj.frames = frame[np.newaxis]
    if not obj.integral and decoder != NATIVE_DECODER:  # decided from the values, as the full path these
        obj.integral = bool(np.all(np.equal(np.mod(obj.frames, 1), 0)))  # compressed objects took before does
    return obj


def fast_description(header: DicomHeader, digest: str, decoder: str) -> DecodedObject:
    """What a fast path records about one object (decoder, syntax, flags), with no frames yet: the integer
    path (integral.py) fills a whole volume instead of per-object frames."""
    flags: list[str] = []
    if header.rescale_slope is None and header.rescale_intercept is None and header.modality in ("CT", "PT"):
        flags.append("no_rescale_tags")
    if (header.photometric or "").upper() == "MONOCHROME1":
        flags.append("monochrome1_inverted")
    slope = header.rescale_slope if header.rescale_slope is not None else 1.0
    intercept = header.rescale_intercept if header.rescale_intercept is not None else 0.0
    syntax = syntax_name(uid_of(header.transfer_syntax_uid or ""))
    integral = float(slope).is_integer() and float(intercept).is_integer()
    empty = np.empty((0, header.rows or 0, header.columns or 0), dtype=np.float32)
    return DecodedObject(empty, decoder, syntax, digest, None, flags, integral=integral)


def _linear(
    stored: np.ndarray, slope: float, intercept: float, low: float, high: float, monochrome1: bool
) -> np.ndarray:
    """stored * slope + intercept as float32; MONOCHROME1 mirrored over the rescaled stored range.

    Integer slope and intercept (the usual CT case) are exact in float32 below 2**24; anything else is computed in
    float64 first, so the result matches pydicom's Modality LUT to the last bit.
    """
    exact = float(slope).is_integer() and float(intercept).is_integer()
    exact = exact and max(abs(low * slope + intercept), abs(high * slope + intercept)) < 2**24
    out = stored.astype(np.float32 if exact else np.float64)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    if monochrome1:
        out = ((low + high) * slope + 2 * intercept) - out
    return out.astype(np.float32, copy=False)


def _decode_dataset(ds: Dataset, digest: str, limits: IngestLimits) -> DecodedObject:
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ReadError("the object has no pixel data")
    syntax = UID(str(ds.file_meta.TransferSyntaxUID)) if "TransferSyntaxUID" in ds.file_meta else None
    if syntax is None:
        raise ReadError("no Transfer Syntax UID in the file meta information")
    check_dataset(ds, limits, syntax)
    with timed("decode"):
        pixels, plugin = _decode(ds, syntax)
    flags: list[str] = []
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)  # indices mean nothing without their palette
        flags.append("palette_applied")
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:  # pydicom drops the frame axis of single-frame objects
        pixels = pixels[np.newaxis]
    if pixels.ndim == 4:  # colour frames: keep luminance, and say so
        frames = (pixels[..., :3].astype(np.float32) @ _LUMA).astype(np.float32)
        flags.append("rgb_to_grey")
        return DecodedObject(frames, plugin, syntax_name(syntax), digest, ds, flags)
    with timed("rescale"):
        frames = _to_physical(pixels, ds, flags)
    integral = bool(np.all(np.equal(np.mod(frames, 1), 0)))
    return DecodedObject(frames, plugin, syntax_name(syntax), digest, ds, flags, integral=integral)


def _decode(src: Dataset | bytes, syntax: UID, **description: int | str) -> tuple[np.ndarray, str]:
    """Pixels by the first plugin that decodes them; `src` is a dataset, or encapsulated pixel data with its
    pixel `description` (encapsulated.py)."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ReadError(f"no decoder for {syntax_name(syntax)}") from None
    if not syntax.is_compressed:
        candidates = [""]
    else:
        candidates = [name for name in PLUGIN_PREFERENCE if name in decoder.available_plugins]
        bounded = [name for name in candidates if (syntax, name) not in _UNBOUNDED]
        candidates = bounded or candidates
        if not candidates:
            raise ReadError(
                f"no installed plugin decodes {syntax_name(syntax)}",
                fix="install the pylibjpeg plugins: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                "pylibjpeg-rle",
            )
    failures = []
    for plugin in candidates:
        try:
            array, _ = decoder.as_array(src, decoding_plugin=plugin, as_rgb=True, **description)
            return array, plugin or "pydicom-native"
        except MemoryError:
            raise
        except Exception as error:  # try the next plugin; all failures are reported together, by type only
            failures.append(f"{plugin or 'native'}: {type(error).__name__}")
    raise ReadError(f"pixel data could not be decoded ({syntax_name(syntax)}; {'; '.join(failures)})")


def syntax_name(syntax: UID) -> str:
    """The standard name of a transfer syntax; an unknown UID is header content and is not repeated."""
    return syntax.name if syntax.name != str(syntax) else "an unrecognised transfer syntax"


def _to_physical(pixels: np.ndarray, ds: Dataset, flags: list[str]) -> np.ndarray:
    """Stored values -> physical values, frame by frame; MONOCHROME1 inverted."""
    frames = np.empty(pixels.shape, dtype=np.float32)
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    low, high = _stored_range(ds)
    monochrome1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    for index in range(pixels.shape[0]):
        transform = _frame_transform(groups, shared, index)
        if transform is not None:
            slope, intercept = transform
            frames[index] = _linear(pixels[index], slope, intercept, low, high, monochrome1)
            continue
        if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
            frames[index] = np.asarray(apply_modality_lut(pixels[index], ds), dtype=np.float32)
            out_low, out_high = _lut_range(ds, low, high)
        else:
            frames[index] = pixels[index].astype(np.float32)
            out_low, out_high = low, high
            if ds.get("Modality") in ("CT", "PT"):
                _add(flags, "no_rescale_tags")
        if monochrome1:
            frames[index] = np.float32(out_low + out_high) - frames[index]
    if monochrome1:
        flags.append("monochrome1_inverted")
    return frames


def _add(flags: list[str], flag: str) -> None:
    if flag not in flags:
        flags.append(flag)


def _frame_transform(groups, shared, index: int) -> tuple[float, float] | None:
    """Slope/intercept from the Enhanced functional groups (per-frame first, then shared), if any."""
    for source in ((groups[index] if groups is not None and index < len(groups) else None), _first(shared)):
        if source is None:
            continue
        transform = _first(source.get("PixelValueTransformationSequence"))
        if transform is not None and "RescaleSlope" in transform:
            return float(transform.RescaleSlope), float(transform.get("RescaleIntercept", 0.0))
    return None


def _first(sequence):
    return sequence[0] if sequence else None


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    return _range_for(bits, int(ds.get("PixelRepresentation", 0) or 0) == 1)


def _range_for(bits: int, signed: bool) -> tuple[float, float]:
    if signed:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _lut_range(ds: Dataset, low: float, high: float) -> tuple[float, float]:
    if "ModalityLUTSequence" in ds:
        table = np.asarray(apply_modality_lut(np.array([low, high]).astype(np.int64), ds), dtype=float)
        return float(table.min()), float(table.max())
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return low * slope + intercept, high * slope + intercept
