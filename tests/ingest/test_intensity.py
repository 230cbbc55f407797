"""Pooled intensity statistics from per-scan summaries: exact moments, percentiles within the sketch's rank error,
independent of scan order, and a stored summary file that a hostile writer cannot turn into a crash."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from medtl.ingest.intensity import (
    SAMPLE_VOXELS,
    SKETCH_POINTS,
    load_summaries,
    pooled_stats,
    save_summaries,
    summarize,
)


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.ravel()
    return flat[:: max(1, flat.size // SAMPLE_VOXELS)][:SAMPLE_VOXELS].astype(np.float64)


def _scans(rng: np.random.Generator) -> list[np.ndarray]:
    """Scans of different sizes (so sample counts differ) and shapes of distribution: CT-like with a point mass
    of air, skewed MR-like, and small 2D images whose whole image is the sample."""
    scans = []
    for _ in range(6):
        ct = rng.normal(40, 300, size=(12, 40, 40))
        ct[:, :8] = -1024  # air: a point mass at the low end
        scans.append(np.round(ct))
    scans += [rng.gamma(2.0, 150.0, size=(10, 32, 32)) for _ in range(5)]
    scans += [rng.uniform(0, 255, size=(28, 28)) for _ in range(9)]
    return scans


def _rank_error(pooled: np.ndarray, value: float, p: float) -> float:
    """How far `value` is, in rank, from being the p-quantile of `pooled` (0 inside a point mass that covers p)."""
    below = np.mean(pooled < value)
    at_or_below = np.mean(pooled <= value)
    return max(0.0, below - p, p - at_or_below)


def test_pooled_moments_are_exact_and_percentiles_within_the_sketch_rank_error():
    rng = np.random.default_rng(0)
    scans = _scans(rng)
    pooled = np.concatenate([_sample(scan) for scan in scans])
    stats = pooled_stats(summarize(scan) for scan in scans)
    assert stats.mean == pytest.approx(pooled.mean(), rel=1e-12, abs=1e-9)
    assert stats.std == pytest.approx(pooled.std(), rel=1e-12)
    for p, value in ((0.01, stats.p01), (0.5, stats.p50), (0.99, stats.p99)):
        assert _rank_error(pooled, value, p) <= 1.0 / SKETCH_POINTS
    # the CT scans' air fills more than 1% of the pooled voxels: p01 is that value, not an interpolation
    assert stats.p01 == -1024.0


def test_unequal_sample_counts_weigh_each_scan_by_its_sample():
    # one large scan of zeros against many small images of ones: the median follows the voxels, not the scans
    big = np.zeros((16, 64, 64))
    small = [np.ones((8, 8)) for _ in range(10)]
    stats = pooled_stats([summarize(big), *(summarize(image) for image in small)])
    assert SAMPLE_VOXELS > 10 * 64  # the zeros are the majority of the pooled sample
    assert stats.p50 == 0.0
    assert stats.mean == pytest.approx(640 / (640 + SAMPLE_VOXELS))


def test_the_order_of_scans_does_not_change_a_bit():
    rng = np.random.default_rng(1)
    summaries = [summarize(scan) for scan in _scans(rng)]
    forward = pooled_stats(summaries)
    backward = pooled_stats(reversed(summaries))
    assert forward == backward


def test_equal_sample_counts_give_the_same_bits_as_the_weighted_sort():
    # CT-like scans, all above the sample size, with many tied values (rounded, a point mass of air): the plain sort
    # taken for equal weights must agree with the stable weighted order to the bit, in either scan order
    rng = np.random.default_rng(4)
    summaries = [summarize(scan) for scan in _scans(rng)[:6]]
    assert len({summary.count for summary in summaries}) == 1
    values = np.concatenate([summary.sketch for summary in summaries])
    assert len(np.unique(values)) < values.size  # ties are present
    weights = np.full(values.size, summaries[0].count / SKETCH_POINTS)
    order = np.argsort(values, kind="stable")
    total = summaries[0].count * len(summaries)
    centres = (np.cumsum(weights[order]) - weights[order] / 2) / total
    expected = np.interp([0.01, 0.5, 0.99], centres, values[order])
    for ordered in (summaries, summaries[::-1]):
        stats = pooled_stats(ordered)
        assert (stats.p01, stats.p50, stats.p99) == tuple(float(value) for value in expected)


@pytest.mark.parametrize("n_scans", [1, 2, 3, 57, 400])
def test_equal_weights_pick_the_same_order_statistics_as_a_full_sort(n_scans):
    # the equal-weight path partitions instead of sorting: with one to hundreds of scans (percentiles before the
    # first centre, between centres, on a point mass), every bit must equal interpolating over the full sort
    rng = np.random.default_rng(n_scans)
    scans = [rng.normal(rng.normal(0, 80), 200, size=(2, 64, 64)) for _ in range(n_scans)]
    for scan in scans[::3]:
        scan[0] = -1024  # a point mass shared by several scans
    summaries = [summarize(scan) for scan in scans]
    values = np.sort(np.concatenate([summary.sketch for summary in summaries]))
    weights = np.full(values.size, summaries[0].count / SKETCH_POINTS)
    centres = (np.cumsum(weights) - weights / 2) / (summaries[0].count * n_scans)
    expected = tuple(float(value) for value in np.interp([0.01, 0.5, 0.99], centres, values))
    stats = pooled_stats(summaries)
    assert (stats.p01, stats.p50, stats.p99) == expected


def test_a_single_scan_percentiles_match_its_own_sample():
    rng = np.random.default_rng(2)
    scan = rng.normal(0, 1, size=(4, 64, 64))
    stats = pooled_stats([summarize(scan)])
    sample = _sample(scan)
    assert stats.p50 == pytest.approx(np.median(sample), abs=0.02)
    for p, value in ((0.01, stats.p01), (0.99, stats.p99)):
        assert _rank_error(sample, value, p) <= 1.0 / SKETCH_POINTS


def test_no_scans_give_zeros():
    stats = pooled_stats([])
    assert (stats.p01, stats.p50, stats.p99, stats.mean, stats.std) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_summaries_round_trip_and_only_the_wanted_come_back(tmp_path):
    rng = np.random.default_rng(3)
    summaries = {f"scan{i}": summarize(scan) for i, scan in enumerate(_scans(rng))}
    save_summaries(tmp_path / "s.npz", summaries)
    loaded = load_summaries(tmp_path / "s.npz", ["scan3", "scan0", "absent"])
    assert sorted(loaded) == ["scan0", "scan3"]
    for key in loaded:
        assert loaded[key].count == summaries[key].count
        assert loaded[key].m2 == summaries[key].m2
        np.testing.assert_array_equal(loaded[key].sketch, summaries[key].sketch)


def _npz(members: dict[str, np.ndarray], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, array in members.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


def _members(n: int = 2) -> dict[str, np.ndarray]:
    return {
        "ids": np.array([f"s{i}" for i in range(n)]),
        "counts": np.full(n, 10, dtype=np.int64),
        "moments": np.zeros((n, 2)),
        "sketches": np.zeros((n, SKETCH_POINTS)),
    }


def test_a_hostile_summary_file_is_ignored_not_trusted(tmp_path):
    path = tmp_path / "s.npz"
    assert len(load_summaries(path, ["s0"])) == 0  # missing
    path.write_bytes(_npz(_members()))
    assert sorted(load_summaries(path, ["s0", "s1"])) == ["s0", "s1"]  # the well-formed control
    path.write_bytes(b"not a zip file at all")
    assert load_summaries(path, ["s0"]) == {}
    path.write_bytes(_npz(_members(), compression=zipfile.ZIP_DEFLATED))  # a member could inflate to anything
    assert load_summaries(path, ["s0"]) == {}
    wrong_width = {**_members(), "sketches": np.zeros((2, SKETCH_POINTS - 1))}
    path.write_bytes(_npz(wrong_width))
    assert load_summaries(path, ["s0"]) == {}
    negative = {**_members(), "counts": np.array([10, -1], dtype=np.int64)}
    path.write_bytes(_npz(negative))
    assert load_summaries(path, ["s0"]) == {}
    # a member whose header declares far more data than it holds: refused before numpy allocates it
    members = _members()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in members.items():
            member = io.BytesIO()
            if name == "sketches":
                header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, SKETCH_POINTS)}
                np.lib.format.write_array_header_1_0(member, header)
                member.write(array.tobytes())
            else:
                np.lib.format.write_array(member, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", member.getvalue())
    path.write_bytes(buffer.getvalue())
    assert load_summaries(path, ["s0"]) == {}


def test_the_sketch_is_numpys_quantiles_at_the_mid_ranks():
    from medtl.ingest.intensity import _MID_RANKS, _quantiles_at_mid_ranks

    rng = np.random.default_rng(3)
    for sample in (rng.normal(size=4096), rng.integers(-1024, 3000, 999).astype(float), np.full(7, 2.5),
                   np.array([4.0]), np.array([1.0, 1.0, 9.0])):  # fmt: skip
        np.testing.assert_allclose(_quantiles_at_mid_ranks(sample), np.quantile(sample, _MID_RANKS), rtol=1e-12,
                                   atol=1e-12)  # fmt: skip
