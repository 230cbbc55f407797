"""Apply a PreprocessingSpec, and choose a sensible default spec from the data.

The same function runs at training and at scoring time with the spec stored in the artifact, so the two can never
drift apart. Order: intensity scaling on the native grid (percentiles then describe the real scan), resampling to
the target spacing, then resize (2D) or centre pad/crop (3D, which keeps the physical scale of every scan equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from medtl.contracts import PreprocessingSpec, validate_document
from medtl.contracts.preprocessing import PercentileIntensity, WindowIntensity
from medtl.errors import ConfigError
from medtl.hashing import sha256_json

# Soft-tissue window: the usual starting point for body CT; set another window in the spec for lung or bone.
CT_DEFAULT_WINDOW = WindowIntensity(center=40.0, width=400.0)
MAX_DEFAULT_SIZE_3D = 128
DEFAULT_SIZE_2D_BOUNDS = (64, 224)


def spec_hash(spec: PreprocessingSpec) -> str:
    return sha256_json(spec.model_dump(mode="json"))


def load_spec(path: Path) -> PreprocessingSpec:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the preprocessing spec ({type(error).__name__})", where=str(path)) from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("contract", "contract_version")}
    return validate_document(PreprocessingSpec, data, where=Path(path).name)


def default_spec(
    *, image_kind: str, modality: str, median_spacing: Sequence[float], median_shape: Sequence[int]
) -> PreprocessingSpec:
    """A spec for the dominant kind of scan in a dataset (nnU-Net-style: median spacing, median extent)."""
    intensity = CT_DEFAULT_WINDOW if modality == "CT" else PercentileIntensity()
    if image_kind == "volume":
        shape = [min(MAX_DEFAULT_SIZE_3D, _round_up(int(size), 8)) for size in median_shape]
        spacing = [round(float(value), 3) for value in median_spacing]
        return PreprocessingSpec(spatial_dims=3, target_spacing=spacing, target_shape=shape, intensity=intensity)
    low, high = DEFAULT_SIZE_2D_BOUNDS
    size = int(np.clip(_round_up(int(max(median_shape)), 32), low, high))
    return PreprocessingSpec(spatial_dims=2, target_spacing=None, target_shape=[size, size], intensity=intensity)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, ((value + multiple - 1) // multiple) * multiple)


def applies_to(spec: PreprocessingSpec, image_kind: str) -> bool:
    return (spec.spatial_dims == 3) == (image_kind == "volume")


def preprocess_array(array: np.ndarray, affine: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Decoded scan -> float32 (channels, *target_shape) in [0, 1].

    numpy + scipy.ndimage only: ingest and scoring workers must not pay for importing torch. Arrays are in
    canonical order, so resampling to a target spacing is a zoom along each array axis.
    """
    if array.ndim != spec.spatial_dims:
        raise ConfigError(
            f"the preprocessing spec is {spec.spatial_dims}D but the scan is {array.ndim}D",
            fix="use a spec whose spatial_dims matches the scans (2 for projection images, 3 for volumes)",
        )
    factors = None
    if spec.target_spacing is not None:
        spacing = [float(np.linalg.norm(affine[:3, axis])) for axis in range(array.ndim)]
        factors = [current / target for current, target in zip(spacing, spec.target_spacing, strict=True)]
    if spec.spatial_dims == 3 and spec.intensity.kind in ("window", "range") and not _resamples(factors):
        # A pointwise intensity map and no resampling: crop first, so that only the voxels kept are converted and
        # scaled (the same values as scaling first: each voxel is mapped on its own, padding stays 0).
        source, dest = _crop_slices(array.shape, spec.target_shape)
        out = np.zeros(tuple(spec.target_shape), dtype=np.float32)
        out[dest] = _scale_intensity(np.asarray(array[source], dtype=np.float32), spec)
        return _finish(out, spec)
    scaled = _scale_intensity(np.asarray(array, dtype=np.float32), spec)
    if factors is not None:
        scaled = _zoom(scaled, factors, keep=spec.target_shape if spec.spatial_dims == 3 else None)
    if spec.spatial_dims == 3:
        out = _centre_pad_crop(scaled, spec.target_shape)
    else:
        out = _zoom(
            scaled, [t / s for t, s in zip(spec.target_shape, scaled.shape, strict=True)], exact=spec.target_shape
        )
    return _finish(out, spec)


def _finish(out: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    out = np.clip(out, 0.0, 1.0, out=out)[np.newaxis]
    if spec.channels > 1:
        out = np.repeat(out, spec.channels, axis=0)
    return np.ascontiguousarray(out, dtype=np.float32)


def _scale_intensity(array: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Map the spec's intensity range to [0, 1], clipping outside it (window, fixed range or percentiles)."""
    intensity = spec.intensity
    if intensity.kind == "window":
        low, high = intensity.center - intensity.width / 2, intensity.center + intensity.width / 2
    elif intensity.kind == "range":
        low, high = intensity.low, intensity.high
    else:
        low, high = (float(v) for v in np.percentile(array, [intensity.lower, intensity.upper]))
    if high <= low:  # a constant image: everything maps to 0
        return np.zeros_like(array)
    out = (array - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out)


def _zoom(
    array: np.ndarray, factors: Sequence[float], exact: Sequence[int] | None = None, keep: Sequence[int] | None = None
) -> np.ndarray:
    """Linear resampling by `factors`; shrinking is low-pass filtered first so that it does not alias.

    The values of scipy's `ndimage.zoom(order=1, mode="nearest", grid_mode=True)` (to float32 rounding, 1e-6):
    output voxel i samples the input at (i + 0.5) * step - 0.5, clamped to the edge. Linear interpolation is
    separable, so it runs one axis at a time as two gathers and a weighted sum; that is 4x faster than ndimage's
    general spline code on a 64 x 64 x 16 stack, and resampling was most of the preprocessing pass.

    `keep`: the shape the caller will centre-crop the result to (3D). Only that centre region is computed, on the
    same sample positions as a whole zoom, so a scan much larger than the target costs the voxels kept.
    """
    if not _resamples(factors) and (exact is None or tuple(exact) == array.shape):
        return array
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) if f < 1.0 else 0.0 for f in factors]
    if any(sigma):
        from scipy import ndimage  # here, not at the top: importing it costs each worker 0.2 s, often for nothing

        array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
    output_shape = (
        tuple(exact)
        if exact is not None
        else tuple(max(1, round(n * f)) for n, f in zip(array.shape, factors, strict=True))
    )
    windows = []  # per axis: (first output index kept, how many)
    for axis, size in enumerate(output_shape):
        kept = min(size, keep[axis]) if keep is not None else size
        windows.append(((size - kept) // 2, kept))
    out = np.asarray(array, dtype=np.float32)
    # the axis that shrinks the array most goes first, so the copies made along the others are small
    order = sorted(range(out.ndim), key=lambda axis: windows[axis][1] / out.shape[axis])
    for axis in order:
        start, kept = windows[axis]
        out = _resample_axis(out, axis, output_shape[axis], start, kept)
    return out


def _resample_axis(array: np.ndarray, axis: int, size: int, start: int, kept: int) -> np.ndarray:
    """Outputs start..start+kept of a linear resampling of `array` to `size` samples along `axis`."""
    length = array.shape[axis]
    if size == length and kept == length:
        return array  # every sample falls on an input voxel
    positions = (np.arange(start, start + kept, dtype=np.float64) + 0.5) * (length / size) - 0.5
    positions = np.clip(positions, 0.0, length - 1)
    below = positions.astype(np.intp)  # floor: the positions are not negative
    above = np.minimum(below + 1, length - 1)
    weight = (positions - below).astype(np.float32).reshape([kept if a == axis else 1 for a in range(array.ndim)])
    low = np.take(array, below, axis=axis)
    difference = np.take(array, above, axis=axis)
    difference -= low
    difference *= weight
    low += difference
    return low


def _resamples(factors: Sequence[float] | None) -> bool:
    return factors is not None and not all(abs(f - 1.0) < 1e-6 for f in factors)


def _centre_pad_crop(array: np.ndarray, target: Sequence[int]) -> np.ndarray:
    """Keep the physical scale: pad with 0 (the bottom of the intensity range) or crop, centred on each axis."""
    out = np.zeros(tuple(target), dtype=np.float32)
    source, dest = _crop_slices(array.shape, target)
    out[dest] = array[source]
    return out


def _crop_slices(shape: Sequence[int], target: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(source, destination) slices of a centred crop or pad from `shape` to `target`."""
    source, dest = [], []
    for size, want in zip(shape, target, strict=True):
        if size >= want:
            start = (size - want) // 2
            source.append(slice(start, start + want))
            dest.append(slice(0, want))
        else:
            start = (want - size) // 2
            source.append(slice(0, size))
            dest.append(slice(start, start + size))
    return tuple(source), tuple(dest)
