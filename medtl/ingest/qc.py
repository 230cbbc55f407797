"""Per-scan quality checks on decoded values: what a radiographer would notice at a glance.

Checks that make a scan unusable raise ReadError (the scan is quarantined); the rest add flags, which travel in
the manifest so that training can filter on them and the QC summary can count them.
"""

from __future__ import annotations

import numpy as np

from medtl.errors import ReadError
from medtl.io.scan import Scan

CT_PLAUSIBLE_HU = (-1100.0, 4000.0)
MIN_IN_PLANE = 8
MAX_ANISOTROPY = 6.0
# Voxel sizes no scanner records (whole-slide microscopy, the finest, is ~2.5e-4 mm): a volume outside them cannot be
# resampled to a dataset's spacing, and a value below 1e-5 mm rounds to zero in the manifest's affine.
PLAUSIBLE_SPACING_MM = (1e-5, 1e5)
_MAX_STAT_VOXELS = 250_000  # percentiles of a strided sample: stable to a fraction of a percent, 10x cheaper
_HISTOGRAM_BINS = 1 << 16  # whole numbers are counted while their range is within this (or the sample's size)


def intensity_stats(array: np.ndarray) -> dict[str, float]:
    """Exact min/max; mean, std and percentiles on a strided subsample for large scans (fast, deterministic).

    Whole numbers (most decoded CT, MR and X-ray) are counted into a histogram, and every statistic comes from it:
    on a 64 x 64 x 16 stack that takes 0.17 ms against numpy's 2.3 ms (its percentile partitions a float copy).
    """
    flat = array.ravel(order="K")  # memory order: a view, never a copy
    step = max(1, flat.size // _MAX_STAT_VOXELS)
    sample = flat[::step]
    low, high = array.min(), array.max()
    if sample.dtype.kind in "iu" and int(high) - int(low) < max(_HISTOGRAM_BINS, sample.size):
        mean, std, (p01, p99) = _integer_moments(sample, int(low), (1.0, 99.0))
    else:
        as_float = sample.astype(np.float64)
        mean, std = float(as_float.mean()), float(as_float.std())
        p01, p99 = np.percentile(as_float, [1, 99])
    return {
        "intensity_min": float(low),
        "intensity_max": float(high),
        "intensity_mean": mean,
        "intensity_std": std,
        "intensity_p01": float(p01),
        "intensity_p99": float(p99),
    }


def _integer_moments(values: np.ndarray, low: int, percents: tuple[float, ...]) -> tuple[float, float, list[float]]:
    """Mean, standard deviation and percentiles of whole numbers, from a histogram of the values.

    The mean is exact (an integer sum divided once); the std equals numpy's to float rounding; the percentiles equal
    np.percentile's default (linear, Hyndman & Fan method 7) bit for bit: the same two neighbouring order
    statistics, interpolated with numpy's formula.
    """
    counts = np.bincount(np.subtract(values, low, dtype=np.int64))
    levels = np.arange(counts.size, dtype=np.int64)
    n = values.size
    mean = (low * n + int(counts @ levels)) / n
    offsets = levels + (low - mean)
    std = float(np.sqrt(counts @ (offsets * offsets) / n))
    ends = np.cumsum(counts)  # ends[v] = how many values are <= low + v
    last = n - 1
    percentiles = []
    for percent in percents:
        position = last * (percent / 100.0)
        below = int(np.floor(position))
        above = min(below + 1, last)
        a, b = (float(low + int(np.searchsorted(ends, rank, side="right"))) for rank in (below, above))
        gamma = position - below
        # numpy's lerp: from the nearer end, so that the result is exact at both ends
        percentiles.append(b - (b - a) * (1.0 - gamma) if gamma >= 0.5 else a + (b - a) * gamma)
    return float(mean), std, percentiles


def check_scan(scan: Scan, stats: dict[str, float]) -> None:
    if not np.isfinite(stats["intensity_min"]) or not np.isfinite(stats["intensity_max"]):
        raise ReadError("the decoded image contains NaN or infinite values")
    if stats["intensity_max"] == stats["intensity_min"]:
        scan.flag("constant_image")
    if scan.meta.get("modality") == "CT":
        low, high = CT_PLAUSIBLE_HU
        if stats["intensity_p01"] < low or stats["intensity_p99"] > high:
            scan.flag("ct_values_out_of_range")
    # The smallest axis of a volume may legitimately be thin (few slices); the other axes may not.
    sizes = sorted(scan.array.shape)
    if min(sizes[1:] if scan.array.ndim == 3 else sizes) < MIN_IN_PLANE:
        scan.flag("small_matrix")
    low, high = PLAUSIBLE_SPACING_MM
    spacing = scan.spacing
    if not all(low <= value <= high for value in spacing):  # NaN fails too
        if scan.image_kind == "volume":  # preprocessing resamples a volume by its spacing: quarantined
            raise ReadError(
                f"a voxel spacing outside {low:g}..{high:g} mm: the volume cannot be resampled to the dataset's "
                "spacing (check PixelSpacing and the slice positions)"
            )
        scan.flag("implausible_spacing")  # a 2D image is resized by its pixel grid: kept, flagged
        return  # nor is it anisotropic: its spacing says nothing
    if max(spacing) / min(spacing) > MAX_ANISOTROPY:
        scan.flag("anisotropic")
