"""A scan's voxel intensities reduced to a summary that merges: dataset statistics without the dataset's voxels.

Why a summary and not the voxel sample: the fingerprint pools intensities over every scan of a group, and an
incremental re-run of a large archive must not re-read (or keep, load and re-sort) thousands of voxel samples to add
a few new scans. Each scan keeps its sample's count, mean and sum of squared deviations (pooled mean and standard
deviation are exact from these, by the parallel variance formula) and its sample's values at SKETCH_POINTS evenly
spaced mid ranks. Pooled percentiles are read off the weighted mixture of those quantile sketches: a percentile is
off by at most about 1 / SKETCH_POINTS in rank. The caller pools the scans in scan-id order (floating-point sums
depend on order), so an incremental run and a full re-ingest agree to the bit.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.contracts.base import atomic_write_bytes
from medtl.contracts.ingest import IntensityStats
from medtl.ingest.cache import read_npy_header

SAMPLE_VOXELS = 4096  # a fixed, strided subsample of each scan's voxels
SKETCH_POINTS = 128
_MID_RANKS = (np.arange(SKETCH_POINTS) + 0.5) / SKETCH_POINTS


@dataclass(frozen=True)
class IntensitySummary:
    count: int  # voxels in the scan's sample
    mean: float
    m2: float  # sum of squared deviations from the mean
    sketch: np.ndarray  # float64, SKETCH_POINTS values: the sample's quantiles at the mid ranks


def summarize(array: np.ndarray) -> IntensitySummary:
    """The summary of a strided sample of the scan's voxels (deterministic; the array is not kept)."""
    flat = array.ravel(order="K")
    step = max(1, flat.size // SAMPLE_VOXELS)
    sample = np.asarray(flat[::step][:SAMPLE_VOXELS], dtype=np.float64)
    if sample.size == 0:
        return IntensitySummary(0, 0.0, 0.0, np.zeros(SKETCH_POINTS))
    mean = float(sample.mean())
    m2 = float(np.square(sample - mean).sum())
    return IntensitySummary(int(sample.size), mean, m2, _quantiles_at_mid_ranks(sample))


def _quantiles_at_mid_ranks(sample: np.ndarray) -> np.ndarray:
    """`np.quantile(sample, _MID_RANKS)` (its default, linear method) from one sort: numpy partitions once per
    requested point, and 128 points made this ~0.3 ms a scan, the largest fixed cost of a small scan's decode."""
    ordered = np.sort(sample)
    position = _MID_RANKS * (ordered.size - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, ordered.size - 1)
    low = ordered[below]
    return low + (ordered[above] - low) * (position - below)


def pooled_stats(summaries: Iterable[IntensitySummary]) -> IntensityStats:
    """Statistics of all scans' samples pooled, from their summaries. Sort the input by a stable key (the scan id)
    for results that do not depend on the order in which scans were ingested."""
    kept = [summary for summary in summaries if summary.count > 0]
    if not kept:
        return IntensityStats(p01=0.0, p50=0.0, p99=0.0, mean=0.0, std=0.0)
    counts = np.array([summary.count for summary in kept], dtype=np.float64)
    means = np.array([summary.mean for summary in kept])
    total = counts.sum()
    mean = float((counts * means).sum() / total)
    m2 = float(np.array([summary.m2 for summary in kept]).sum() + (counts * np.square(means - mean)).sum())
    values = np.concatenate([summary.sketch for summary in kept])
    if np.all(counts == counts[0]):
        p01, p50, p99 = _equal_weight_percentiles(values, counts[0] / SKETCH_POINTS, total)
    else:
        weights = np.repeat(counts / SKETCH_POINTS, SKETCH_POINTS)
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        centres = (np.cumsum(weights) - weights / 2) / total  # each sketch point stands for its share of the sample
        p01, p50, p99 = np.interp(_POOLED, centres, values)
    return IntensityStats(p01=float(p01), p50=float(p50), p99=float(p99), mean=mean, std=float(np.sqrt(m2 / total)))


_POOLED = (0.01, 0.5, 0.99)


def _equal_weight_percentiles(values: np.ndarray, weight: float, total: float) -> list[float]:
    """The pooled percentiles when every sketch point weighs the same (every scan's sample is as large: any scan
    above SAMPLE_VOXELS voxels), to the bit what the weighted sort gives.

    Why not sort: only the two order statistics around each percentile matter, and a partition finds them in
    linear time; sorting an archive's sketches (2,000 scans: 256,000 points) was most of its fingerprint's cost on
    every re-run. The centres are the weighted sort's running sums: a weight is a count over a power of two, so
    `(i + 1) * weight` equals the running sum exactly, and ties among values change no order statistic.
    """
    n = values.size  # SKETCH_POINTS or more
    centres = (np.arange(1, n + 1, dtype=np.float64) * weight - weight / 2) / total
    # the first centre above each percentile (1 .. n - 1: np.interp clamps outside the centres, and so does this)
    right = np.clip(np.searchsorted(centres, _POOLED, side="right"), 1, n - 1)
    ordered = np.partition(values, sorted({int(rank) for r in right for rank in (r - 1, r)}))
    return [
        float(np.interp(q, centres[r - 1 : r + 1], ordered[r - 1 : r + 1])) for q, r in zip(_POOLED, right, strict=True)
    ]


def save_summaries(path: Path, summaries: dict[str, IntensitySummary]) -> None:
    ids = sorted(summaries)
    listed = [summaries[scan_id] for scan_id in ids]
    buffer = io.BytesIO()
    np.savez(
        buffer,
        ids=np.array(ids, dtype=str),
        counts=np.array([s.count for s in listed], dtype=np.int64),
        moments=np.array([(s.mean, s.m2) for s in listed], dtype=np.float64).reshape(-1, 2),
        sketches=np.array([s.sketch for s in listed], dtype=np.float64).reshape(-1, SKETCH_POINTS),
    )
    atomic_write_bytes(path, buffer.getvalue())


def _fits_its_file(path: Path) -> bool:
    """Whether every member is stored uncompressed and declares no more data than it holds, checked before numpy
    allocates what a member's header declares (the file lives in a dataset folder, written by anyone)."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.compress_type != zipfile.ZIP_STORED:
                return False
            with archive.open(member) as handle:
                if read_npy_header(handle)[3] > member.file_size:
                    return False
    return True


def load_summaries(path: Path, wanted: Sequence[str]) -> dict[str, IntensitySummary]:
    """The stored summaries of the `wanted` scans that the file holds; empty when it is missing or does not hold
    together (the caller computes what is missing from the cache)."""
    try:
        if not _fits_its_file(path):
            return {}
        with np.load(path, allow_pickle=False) as data:
            ids, counts, moments, sketches = data["ids"], data["counts"], data["moments"], data["sketches"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return {}
    n = len(ids)
    if (
        ids.ndim != 1
        or counts.shape != (n,)
        or moments.shape != (n, 2)
        or sketches.shape != (n, SKETCH_POINTS)
        or counts.dtype.kind != "i"
        or moments.dtype.kind != "f"
        or sketches.dtype.kind != "f"
        or np.any(counts < 0)
    ):
        return {}
    position = {str(scan_id): i for i, scan_id in enumerate(ids)}
    found = {}
    for scan_id in wanted:
        i = position.get(scan_id)
        if i is not None:
            found[scan_id] = IntensitySummary(int(counts[i]), float(moments[i, 0]), float(moments[i, 1]), sketches[i])
    return found
