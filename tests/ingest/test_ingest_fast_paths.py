"""The shortcuts that make ingest fast give exactly what the general code gives, and the report says what cost what.

Integer volumes (io/dicom/integral.py) against the float path, the header walk (fastheader.py) against pydicom,
crop-before-scale preprocessing against scale-then-crop, the quick deflate check against pydicom's, background
cache writes, the file hash against sha256 of the file, and the per-pass / per-step timings of the ingest report.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from medtl.contracts import PreprocessingSpec, read_json
from medtl.contracts.ingest import IngestReport
from medtl.contracts.preprocessing import PercentileIntensity, WindowIntensity
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.cache import ScanCache, WriteBehind
from medtl.ingest.discover import classify_file
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.preprocess import _centre_pad_crop, _scale_intensity, preprocess_array
from medtl.ingest.qc import intensity_stats
from medtl.io.dicom.deflate import not_deflated
from medtl.io.dicom.fastheader import HEAD_BYTES, fast_header
from medtl.io.dicom.grouping import group_headers
from medtl.io.dicom.headers import read_header
from medtl.io.dicom.integral import physical_integers
from medtl.io.dicom.reader import read_plan
from support.dicom_factory import ct_series
from support.hostile_files import deflate_bomb_dicom


def _plans(folder: Path):
    files = [classify_file(0, p, p.name) for p in sorted(folder.iterdir())]
    return group_headers([f.header for f in files if f.header is not None]).plans


def _both_paths(folder: Path):
    """The same plan read with the bytes in memory (integer path where it applies) and without (float path)."""
    (plan,) = _plans(folder)
    prefetched = {h.path: (h.path.read_bytes(), hashlib.sha256(h.path.read_bytes()).hexdigest()) for h in plan.headers}
    fast = read_plan(plan, prefetched)
    general = read_plan(plan)
    return fast, general, prefetched


@pytest.mark.parametrize(
    ("slope", "intercept", "high", "dtype"),
    [
        (1.0, -1024.0, 3000, np.int16),  # usual CT: uint16 stored, HU fit int16
        (2.0, -1024.0, 3000, np.int16),  # whole-number slope
        (1.0, 0.0, 60000, np.uint16),  # beyond int16 but within uint16
        (1.0, -1024.0, 65535, np.float32),  # fits neither: the float path
        (0.5, 0.0, 3000, np.float32),  # fractional slope: the float path
    ],
)
def test_integer_volumes_hold_the_float_paths_values(tmp_path, slope, intercept, high, dtype):
    stored = np.random.default_rng(3).integers(0, high + 1, size=(6, 5, 7)).astype(np.uint16)
    stored[0, 0, 0] = high
    ct_series(tmp_path, stored, slice_step=(0, 0, -2.5), origin=(-30, -20, 20), RescaleSlope=slope,
              RescaleIntercept=intercept)  # fmt: skip
    fast, general, prefetched = _both_paths(tmp_path)
    (a,), (b,) = fast.scans, general.scans
    assert a.array.dtype == dtype
    assert b.array.dtype == np.float32
    np.testing.assert_array_equal(a.array.astype(np.float64), b.array.astype(np.float64))
    assert a.array.flags.f_contiguous
    np.testing.assert_array_equal(a.affine, b.affine)
    assert (a.qc_flags, a.meta) == (b.qc_flags, b.meta)
    assert [(o.header.path, o.sha256, o.error) for o in fast.files] == [
        (o.header.path, o.sha256, o.error) for o in general.files
    ]
    assert not prefetched  # the bytes were released once used


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_slices_join_the_integer_path_with_the_full_paths_values(tmp_path, syntax):
    stored = np.random.default_rng(4).integers(0, 4000, size=(5, 40, 36)).astype(np.uint16)
    for path in ct_series(tmp_path, stored, RescaleSlope=1.0, RescaleIntercept=-1024.0):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path, enforce_file_format=True)
    fast, general, prefetched = _both_paths(tmp_path)
    (a,), (b,) = fast.scans, general.scans
    assert (a.array.dtype, b.array.dtype) == (np.int16, np.float32)
    np.testing.assert_array_equal(a.array.astype(np.float64), b.array.astype(np.float64))
    assert a.meta["decoder"] == b.meta["decoder"] == "pylibjpeg"
    assert (a.qc_flags, a.meta) == (b.qc_flags, b.meta)
    assert not prefetched


def test_the_standards_uids_come_from_a_table_and_others_are_made_each_time():
    from pydicom.uid import UID

    from medtl.io.dicom.sop import uid_of

    standard = "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless
    assert uid_of(standard) is uid_of(standard) and uid_of(standard) == UID(standard)
    assert uid_of(standard).name == "JPEG-LS Lossless Image Compression" and uid_of(standard).is_compressed
    private = "1.2.826.0.1.3680043.2.1125.99"
    assert uid_of(private) == private and uid_of(private) is not uid_of(private)


def test_whole_volume_rescale_matches_the_per_slice_float_rescale():
    rng = np.random.default_rng(5)
    for stored, slope, intercept in [
        (rng.integers(-2000, 3000, size=(4, 3, 2)).astype(np.int16), 1.0, -1024.0),  # in place, signed
        (rng.integers(0, 255, size=(4, 3, 2)).astype(np.uint8), 3.0, 7.0),
        (np.zeros((2, 2, 2), np.int16), None, None),  # no rescale tags
    ]:
        expected = stored.astype(np.float64) * (slope or 1.0) + (intercept or 0.0)
        header = SimpleNamespace(rescale_slope=slope, rescale_intercept=intercept)
        out = physical_integers(stored.copy(), header)  # type: ignore[arg-type]
        assert out is not None and out.dtype in (np.int16, np.uint16)
        np.testing.assert_array_equal(out.astype(np.float64), expected)
    too_wide = np.array([-32768, 32767], np.int16)
    assert physical_integers(too_wide, SimpleNamespace(rescale_slope=1.0, rescale_intercept=-1024.0)) is None


@pytest.mark.parametrize("intensity", [WindowIntensity(center=40.0, width=400.0), PercentileIntensity()])
def test_crop_before_scale_gives_the_values_of_scale_then_crop(intensity):
    array = np.asfortranarray(np.random.default_rng(2).integers(-1024, 2000, size=(20, 9, 6)).astype(np.int16))
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[1.0, 1.0, 2.0], target_shape=[16, 12, 6],
                             intensity=intensity)  # fmt: skip
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    got = preprocess_array(array, affine, spec)
    reference = _centre_pad_crop(_scale_intensity(array.astype(np.float32), spec), spec.target_shape)
    np.testing.assert_array_equal(got[0], np.clip(reference, 0.0, 1.0))
    assert got.shape == (1, 16, 12, 6) and got.dtype == np.float32


@pytest.mark.parametrize("seed", range(12))
def test_resampling_only_the_kept_centre_gives_the_whole_zooms_values(seed):
    """Shrinking (with its low-pass filter) and enlarging, odd and even sizes, C and Fortran order."""
    from scipy import ndimage

    from medtl.ingest.preprocess import _zoom

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(6, 60, size=3))
    array = rng.random(shape, dtype=np.float32)
    array = np.asfortranarray(array) if seed % 2 else array
    factors = [float(f) for f in rng.uniform(0.4, 2.5, size=3)]
    keep = [int(n) for n in rng.integers(4, 64, size=3)]
    out = tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) if f < 1.0 else 0.0 for f in factors]
    smoothed = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest") if any(sigma) else array
    whole = ndimage.zoom(smoothed, [o / n for o, n in zip(out, shape, strict=True)], order=1, mode="nearest",
                         grid_mode=True)  # fmt: skip
    part = _zoom(array, factors, keep=keep)
    assert part.shape == tuple(min(o, k) for o, k in zip(out, keep, strict=True))
    expected, got = _centre_pad_crop(whole, keep), _centre_pad_crop(part, keep)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_a_zoom_over_the_kept_inputs_only_equals_the_whole_arrays_bit_for_bit(seed):
    """Cutting the input to the span the kept outputs read (filter reach included) changes no value: the same plan
    run over the whole array gives identical bits. Large shrinks (a wide filter) and small keeps stress the margins."""
    from dataclasses import replace

    from medtl.ingest.preprocess import _zoom, _zoom_plan, _zoom_planned

    rng = np.random.default_rng(500 + seed)
    shape = tuple(int(n) for n in rng.integers(5, 100, size=3))
    array = rng.random(shape, dtype=np.float32)
    array = np.asfortranarray(array) if seed % 2 else array
    factors = [float(f) for f in rng.uniform(0.15, 2.0, size=3)]
    keep = [int(n) for n in rng.integers(1, 40, size=3)]
    plan = _zoom_plan(shape, factors, keep=keep)
    whole = _zoom_planned(array, replace(plan, spans=tuple((0, n) for n in shape)))
    np.testing.assert_array_equal(_zoom(array, factors, keep=keep), whole)
    # halving 100 voxels and keeping the centre 10 reads inputs 40..59, widened by the filter's 2 (sigma 0.5)
    assert _zoom_plan((100, 100, 100), [0.5] * 3, keep=[10] * 3).spans == ((38, 62),) * 3


@pytest.mark.parametrize("seed", range(24))
def test_the_low_pass_filter_gives_ndimage_gaussian_filter1ds_values(seed):
    """Any axis, C and Fortran order, an axis shorter than the kernel (edges extended many times over: the taps
    beyond the axis are folded onto its edges), sigmas from a hair to wide; values of any scale."""
    from scipy import ndimage

    from medtl.ingest.preprocess import _filtered_at

    rng = np.random.default_rng(900 + seed)
    shape = tuple(int(n) for n in rng.integers(1, 50, size=2 + seed % 2))
    array = rng.random(shape, dtype=np.float32) * np.float32(rng.choice([1.0, 3000.0]))
    array = np.asfortranarray(array) if seed % 3 == 0 else array
    axis = int(rng.integers(0, array.ndim))
    sigma = float(rng.choice([0.05, 0.5, 0.75, 2.0, 9.0, 60.0]))
    length = array.shape[axis]
    expected = ndimage.gaussian_filter1d(array, sigma, axis=axis, mode="nearest")
    got = _filtered_at(array, axis, np.arange(length), sigma, 0, length)
    assert got.dtype == np.float32 and got.shape == array.shape
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6 * float(np.abs(array).max()))


def test_a_kernel_wider_than_any_scanner_asks_costs_the_axis_not_the_kernel(monkeypatch):
    """A header declaring a spacing a billion times finer than the target gives sigma ~ 1e9: a kernel of 4e9 taps.
    Folded onto the edges it is as cheap as a short one, and its values are the limit the filter tends to (the mean
    of the two edge values). The closed-form kernel sum agrees with the tap-by-tap one where both apply."""
    import time

    import medtl.ingest.preprocess as preprocess

    array = np.random.default_rng(7).random((64, 48, 16), dtype=np.float32)
    started = time.perf_counter()
    got = preprocess._filtered_at(array, 1, np.array([0, 20, 47]), 1e9, 0, 48)
    assert time.perf_counter() - started < 1.0
    limit = (array[:, :1, :] + array[:, -1:, :]) / 2
    np.testing.assert_allclose(got, np.repeat(limit, 3, axis=1), atol=1e-6)
    summed = preprocess._kernel(3000.0, 40)
    monkeypatch.setattr(preprocess, "_EXACT_KERNEL_SUM", 100)
    closed = preprocess._kernel(3000.0, 40)
    np.testing.assert_allclose(closed[0], summed[0], rtol=1e-9)
    assert closed[1] == pytest.approx(summed[1], rel=1e-9)


@pytest.mark.parametrize("seed", range(16))
def test_separable_resampling_gives_ndimage_zooms_values(seed):
    """2D resizing to an exact size and 3D zooms by factors, one axis of length 1 among them."""
    from scipy import ndimage

    from medtl.ingest.preprocess import _zoom

    rng = np.random.default_rng(100 + seed)
    ndim = 2 + seed % 2
    shape = tuple(int(n) for n in rng.integers(1 if seed == 3 else 2, 70, size=ndim))
    array = rng.random(shape, dtype=np.float32)
    exact = tuple(int(n) for n in rng.integers(1, 90, size=ndim)) if ndim == 2 else None
    factors = [o / n for o, n in zip(exact, shape, strict=True)] if exact else list(rng.uniform(0.3, 3.0, ndim))
    out = exact or tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) if f < 1.0 else 0.0 for f in factors]
    smoothed = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest") if any(sigma) else array
    expected = ndimage.zoom(smoothed, [o / n for o, n in zip(out, shape, strict=True)], order=1, mode="nearest",
                            grid_mode=True)  # fmt: skip
    got = _zoom(array, factors, exact=exact)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(40))
def test_whole_number_statistics_from_a_histogram_equal_numpys(seed):
    """Signed and unsigned, narrow and wide ranges, one value to a strided sample; percentiles bit for bit."""
    rng = np.random.default_rng(seed)
    dtype = [np.int16, np.uint16, np.uint8, np.int32][seed % 4]
    info = np.iinfo(dtype)
    low = int(rng.integers(max(info.min, -3000), min(info.max, 3000)))
    high = min(info.max, low + int(rng.integers(0, 70_000 if seed % 5 else 20)))
    shapes = {0: (1, 1, 1), 1: (40, 128, 128)}  # one value; a stack summarised from every other voxel
    shape = shapes.get(seed) or tuple(int(n) for n in rng.integers(1, 90, size=3))
    array = rng.integers(low, high + 1, size=shape).astype(dtype)
    stats = intensity_stats(array)
    assert stats["intensity_min"] == array.min() and stats["intensity_max"] == array.max()
    as_float = array.ravel()[:: max(1, array.size // 250_000)].astype(np.float64)
    assert stats["intensity_mean"] == as_float.mean()
    assert stats["intensity_std"] == pytest.approx(as_float.std(), rel=1e-12, abs=1e-12)
    assert [stats["intensity_p01"], stats["intensity_p99"]] == list(np.percentile(as_float, [1, 99]))
    as_floats = intensity_stats(array.astype(np.float32))  # the general path, for values that are not whole
    assert as_floats["intensity_p99"] == stats["intensity_p99"]


def test_a_runs_long_lived_objects_are_frozen_until_it_ends_and_others_freezes_are_kept():
    import gc

    from medtl.ingest.execution import long_lived_objects

    assert gc.get_freeze_count() == 0
    with long_lived_objects() as settle:
        frozen = gc.get_freeze_count()
        held = [[index] for index in range(1000)]  # tracked objects made during the run
        settle()
        assert frozen > 0 and gc.get_freeze_count() >= frozen + len(held)
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a process that froze its own objects before the run
    try:
        before = gc.get_freeze_count()
        with long_lived_objects() as settle:
            settle()
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()


def test_the_quick_deflate_check_only_ever_skips_work(tmp_path):
    (plain,) = ct_series(tmp_path / "plain", np.zeros((1, 4, 4), np.uint16))
    deflated = deflate_bomb_dicom(tmp_path / "deflated.dcm", inflated_bytes=64)
    head = plain.read_bytes()[:2048]
    assert not_deflated(head)
    assert not not_deflated(deflated.read_bytes()[:2048])
    assert not not_deflated(head[:140])  # the meta group does not fit: ask pydicom
    assert not not_deflated(head[128:])  # no preamble


def test_file_hashes_come_from_the_bytes_decoded_and_timings_add_up(tmp_path):
    rng = np.random.default_rng(0)
    sources = [tmp_path / "src" / name for name in ("a", "b")]
    for k, folder in enumerate(sources):
        ct_series(folder, rng.integers(0, 3000, size=(4 + k, 6, 5)).astype(np.uint16), patient_id=f"P{k}")
    started = time.perf_counter()
    result = ingest_sources(
        sources, out=tmp_path / "out", pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"), workers=1
    )
    elapsed = time.perf_counter() - started
    report = read_json(IngestReport, tmp_path / "out" / "ingest_report.json")
    assert report.counts["ingested"] == 9
    on_disk = {hashlib.sha256(p.read_bytes()).hexdigest() for folder in sources for p in folder.iterdir()}
    assert {record.sha256 for record in report.files} == on_disk
    timings = report.timings
    assert timings is not None and timings == result.report.timings
    assert list(timings.passes) == ["start_workers", "discovery_and_headers", "grouping", "decode", "collect",
                                    "preprocess", "stop_workers", "write_outputs"]  # fmt: skip
    assert all(seconds >= 0 for seconds in [*timings.passes.values(), *timings.worker_steps.values()])
    assert sum(timings.passes.values()) <= timings.wall_seconds + 0.001 * len(timings.passes)
    assert timings.wall_seconds <= elapsed
    assert {
        "read",
        "hash",
        "decode",
        "rescale",
        "assemble",
        "checks",
        "pixel_hash",
        "cache_write",
        "preprocess",
    } <= set(timings.worker_steps)
    # with one worker the steps ran inside the decode and preprocess passes
    inside = timings.passes["decode"] + timings.passes["preprocess"]
    assert sum(timings.worker_steps.values()) <= inside + 0.001 * len(timings.worker_steps)


def _pydicom_test_files() -> list[Path]:
    """The DICOM files shipped inside pydicom (get_testdata_files would also try the network)."""
    import pydicom.data

    return sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm"))


def test_the_fast_header_is_pydicoms_header_or_none():
    files = _pydicom_test_files()
    fast = 0
    for path in files:
        header = fast_header(path, path.stat().st_size, path.read_bytes()[:HEAD_BYTES])
        if header is None:
            continue
        fast += 1
        assert header == read_header(path), path.name  # every field, the warnings count included
    assert fast >= len(files) // 2  # plain files are the usual case


def test_damaged_copies_get_pydicoms_header_or_go_to_pydicom(tmp_path):
    rng = np.random.default_rng(11)
    sources = [p for p in _pydicom_test_files() if p.stat().st_size < 200_000][:25]
    checked = 0
    for index in range(400):
        data = bytearray(sources[index % len(sources)].read_bytes())
        if index % 2:
            data = data[: int(rng.integers(132, min(len(data), 3000)))]
        else:
            for _ in range(3):
                data[int(rng.integers(128, min(len(data), 3000)))] = int(rng.integers(256))
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(bytes(data))
        header = fast_header(path, len(data), bytes(data[:HEAD_BYTES]))
        if header is None:
            continue
        checked += 1
        assert header == read_header(path)  # never accepts what pydicom refuses, never reads another value
    assert checked > 50


@pytest.mark.parametrize("side", [4, 300])  # written where made; written on a background thread (> 256 KiB)
def test_preprocessed_writes_finish_before_the_batch_returns_and_failures_surface(tmp_path, monkeypatch, side):
    from medtl.ingest.cache import BACKGROUND_WRITE_BYTES

    cache = ScanCache(tmp_path)
    arrays = [np.full((side, side), k, np.float32) for k in range(3)]
    assert (arrays[0].nbytes < BACKGROUND_WRITE_BYTES) == (side == 4)
    with WriteBehind(cache) as writes:
        for k, array in enumerate(arrays):
            writes.save(f"cache/t/{k}.npy", array)
    for k, array in enumerate(arrays):
        np.testing.assert_array_equal(cache.load_array(f"cache/t/{k}.npy"), array)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError), WriteBehind(cache) as writes:
        writes.save("cache/t/x.npy", arrays[0])
    with pytest.raises(OSError), cache.writing(arrays[0]) as pending:
        pending.relpath = "cache/t/y.npy"
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    assert not cache.has("cache/t/x.npy") and not cache.has("cache/t/y.npy")


def _oriented_cohort(root: Path) -> list[Path]:
    """Axial, sagittal, coronal and oblique series (slices stepping along each one's normal) and a radiograph."""
    from medtl.io.geometry import slice_normal
    from support.dicom_factory import dx_image

    rng = np.random.default_rng(3)
    c, s = np.cos(0.3), np.sin(0.3)
    layouts = {
        "axial": ((1, 0, 0, 0, 1, 0), (0.8, 0.7), 2.5),
        "sagittal": ((0, 1, 0, 0, 0, -1), (0.9, 0.6), 3.0),
        "coronal": ((1, 0, 0, 0, 0, -1), (0.5, 0.5), 1.2),
        "oblique": ((c, s, 0, 0, 0, -1), (0.7, 0.7), 2.0),
    }
    for k, (name, (orientation, spacing, step)) in enumerate(layouts.items()):
        normal = slice_normal(orientation)
        stored = rng.integers(0, 2000, size=(5 + k, 6 + k, 7)).astype(np.uint16)
        ct_series(root / name, stored, orientation=orientation, spacing=spacing, slice_step=tuple(step * normal),
                  patient_id=f"P{k}")  # fmt: skip
    dx_image(root / "dx" / "chest.dcm", rng.integers(0, 4096, (16, 12)).astype(np.uint16), patient_id="P9")
    return [root / name for name in (*layouts, "dx")]


def _tensors(out: Path, spec: PreprocessingSpec) -> dict[str, np.ndarray]:
    from medtl.contracts import read_table
    from medtl.contracts.ingest import ManifestRow
    from medtl.ingest.preprocess import spec_hash

    cache = ScanCache(out)
    manifest = read_table(ManifestRow, out / "manifest.parquet")
    return {
        row.scan_id: np.load(out / cache.preprocessed_relpath(row.pixel_hash, spec_hash(spec)))
        for row in manifest.itertuples()
        if row.image_kind == "volume"
    }


SPEC_3D = PreprocessingSpec(spatial_dims=3, target_spacing=[1.0, 1.0, 2.0], target_shape=[8, 8, 8])


def test_scans_are_preprocessed_while_decoded_with_the_values_of_the_preprocessing_pass(tmp_path):
    from medtl.contracts import read_table
    from medtl.contracts.ingest import ManifestRow

    sources = _oriented_cohort(tmp_path / "src")
    key = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    result = ingest_sources(sources, out=tmp_path / "out", pseudonymizer=key, workers=1, spec=SPEC_3D)
    steps = result.report.timings.worker_steps
    assert "preprocess" in steps and "preprocess_load" not in steps  # made from the arrays in memory
    manifest = read_table(ManifestRow, tmp_path / "out" / "manifest.parquet")
    tensors = _tensors(tmp_path / "out", SPEC_3D)
    assert len(tensors) == 4
    for row in manifest[manifest.image_kind == "volume"].itertuples():
        array = np.load(tmp_path / "out" / row.cache_path)
        expected = preprocess_array(array, np.asarray(row.affine, dtype=float).reshape(4, 4), SPEC_3D)
        np.testing.assert_array_equal(tensors[row.scan_id], expected)


def test_a_rerun_preprocesses_its_new_scans_under_the_last_runs_spec_while_decoding(tmp_path):
    rng = np.random.default_rng(5)
    key = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    volumes = rng.integers(0, 2000, size=(4, 6, 8, 8)).astype(np.uint16)
    for k in range(3):
        ct_series(tmp_path / "src" / f"s{k}", volumes[k], patient_id=f"P{k}")
    first = ingest_sources([tmp_path / "src"], out=tmp_path / "out", pseudonymizer=key, workers=1)
    ct_series(tmp_path / "src" / "s3", volumes[3], patient_id="P3")  # the same geometry: the same default spec
    second = ingest_sources([tmp_path / "src"], out=tmp_path / "out", pseudonymizer=key, workers=1)
    assert second.spec == first.spec and second.report.changes.files_new == 6
    assert "preprocess_load" not in second.report.timings.worker_steps  # the new scan's tensor: made in memory
    assert len(_tensors(tmp_path / "out", second.spec)) == 4


def test_a_wrong_expected_spec_costs_time_only(tmp_path, monkeypatch):
    from medtl.contracts import read_table
    from medtl.contracts.ingest import ManifestRow
    from medtl.ingest import pipeline

    sources = _oriented_cohort(tmp_path / "src")
    key = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    right = ingest_sources(sources, out=tmp_path / "right", pseudonymizer=key, workers=1)
    wrong = right.spec.model_copy(update={"target_shape": [4, 4, 4]})
    expect = pipeline._expect_spec
    monkeypatch.setattr(pipeline, "_expect_spec", lambda items, spec: expect(items, wrong))
    guessed = ingest_sources(sources, out=tmp_path / "guessed", pseudonymizer=key, workers=1)
    assert guessed.spec == right.spec
    assert "preprocess_load" in guessed.report.timings.worker_steps  # the pass made the chosen spec's tensors
    first = read_table(ManifestRow, tmp_path / "right" / "manifest.parquet").sort_values("scan_id")
    second = read_table(ManifestRow, tmp_path / "guessed" / "manifest.parquet").sort_values("scan_id")
    assert first.reset_index(drop=True).equals(second.reset_index(drop=True))
    expected, found = _tensors(tmp_path / "right", right.spec), _tensors(tmp_path / "guessed", guessed.spec)
    assert expected.keys() == found.keys()
    for scan_id, tensor in expected.items():
        np.testing.assert_array_equal(found[scan_id], tensor)


def test_surviving_work_is_submitted_before_its_results_are_asked_for_and_comes_back_in_order():
    from concurrent.futures import ThreadPoolExecutor

    from medtl.ingest.execution import surviving

    ran: list[int] = []

    def square(value: int) -> int:
        ran.append(value)
        return value * value

    executor = ThreadPoolExecutor(max_workers=3)
    results = surviving(executor, square, [3, 1, 2, 5], 3, alone=square)
    executor.shutdown(wait=True)  # every item ran although no result was asked for yet
    assert sorted(ran) == [1, 2, 3, 5]
    assert list(results) == [(3, 9), (1, 1), (2, 4), (5, 25)]
    ran.clear()
    windowed = ThreadPoolExecutor(max_workers=1)
    results = surviving(windowed, square, [6, 7, 8, 9], 1, alone=square, window=2)
    windowed.shutdown(wait=True)  # only the window was submitted ahead
    assert sorted(ran) == [6, 7]
    ran.clear()
    inline = surviving(None, square, [4, 2], 1, alone=square)  # without workers: each runs when asked for
    assert ran == []
    assert next(inline) == (4, 16) and ran == [4]


def test_a_run_whose_preprocessing_fails_writes_no_outputs(tmp_path, monkeypatch):
    import medtl.ingest.worker as worker

    rng = np.random.default_rng(1)
    sources = [tmp_path / "src" / name for name in ("a", "b", "c")]
    for k, folder in enumerate(sources):
        ct_series(folder, rng.integers(0, 3000, size=(4, 6, 5)).astype(np.uint16), patient_id=f"P{k}")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # writing any tensor fails, while decoding (where the error is left to the pass) and in the preprocessing pass
    monkeypatch.setattr(worker, "preprocess_cached", full_disk)  # the workers are forked with it
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        ingest_sources(sources, out=out, pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"), workers=2)
    written = {"manifest.parquet", "fingerprint.json", "ingest_report.json", "ingest_state.json", "preprocessing.json"}
    assert written.isdisjoint(path.name for path in out.iterdir())
    assert list((out / "cache").rglob("*.npy"))  # the decoded scans stay cached for the next run


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scan_whose_preprocessing_raises_is_quarantined_and_the_run_goes_on(tmp_path, monkeypatch, workers):
    """What one scan's data makes the preprocessing raise costs that scan's series only (unlike a full disk, above):
    its files are quarantined with the reason, the manifest, fingerprint and state hold the others, and a re-run
    carries the quarantine over without reading anything."""
    import pandas as pd

    import medtl.ingest.worker as worker
    from medtl.contracts import IngestState
    from medtl.contracts.ingest import Fingerprint

    rng = np.random.default_rng(2)
    sources = tmp_path / "src"
    for k, rows in enumerate((6, 6, 9)):  # the 9-row series is the one that fails
        ct_series(sources / f"s{k}", rng.integers(0, 3000, size=(4, rows, 8)).astype(np.uint16), patient_id=f"P{k}")
    for path in sources.rglob("*.dcm"):  # older than the run: not inside its racy window (see ingest_state)
        os.utime(path, (path.stat().st_mtime - 3600,) * 2)
    real = worker.preprocess_array

    def fails_on_nine_rows(array, affine, spec):
        if 9 in array.shape:
            raise ValueError("a value this scan's data made up")
        return real(array, affine, spec)

    monkeypatch.setattr(worker, "preprocess_array", fails_on_nine_rows)  # the workers are forked with it
    out, pseudo = tmp_path / "out", Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    result = ingest_sources([sources], out=out, pseudonymizer=pseudo, workers=workers)
    quarantined = [record for record in result.report.files if record.status == "quarantined"]
    assert len(quarantined) == 4 and {record.reason_code for record in quarantined} == {"preprocess_failed"}
    assert {record.reason for record in quarantined} == {"preprocessing this scan raised ValueError"}
    assert all(record.scan_ids == [] for record in quarantined)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 2 and result.fingerprint.n_scans == 2
    assert read_json(Fingerprint, out / "fingerprint.json").n_scans == 2
    assert sorted(read_json(IngestState, out / "ingest_state.json").scans.scan_id) == sorted(manifest["scan_id"])
    again = ingest_sources([sources], out=out, pseudonymizer=pseudo, workers=workers)
    assert again.report.changes.mode == "incremental" and again.report.changes.files_read == 0
    assert again.report.counts == result.report.counts

    def by_scan(frame):
        return frame.sort_values("scan_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(by_scan(pd.read_parquet(out / "manifest.parquet")), by_scan(manifest))


def test_a_first_ingest_foresees_its_spec_from_the_headers_and_preprocesses_while_decoding(tmp_path, monkeypatch):
    """Without a given spec, the dominant stacks' geometry (any orientation, a radiograph beside them) gives the
    default spec before decoding: every tensor is made from the array in memory, equal to the preprocessing
    pass's, and the run without the foresight chooses the same spec and manifest."""
    from medtl.contracts import read_table
    from medtl.contracts.ingest import ManifestRow
    from medtl.ingest import pipeline

    sources = _oriented_cohort(tmp_path / "src")
    key = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    foreseen = ingest_sources(sources, out=tmp_path / "foreseen", pseudonymizer=key, workers=1)
    steps = foreseen.report.timings.worker_steps
    assert "preprocess" in steps and "preprocess_load" not in steps  # nothing read back for the pass
    monkeypatch.setattr(pipeline, "expected_spec", lambda *args, **kwargs: None)
    passed = ingest_sources(sources, out=tmp_path / "passed", pseudonymizer=key, workers=1)
    assert "preprocess_load" in passed.report.timings.worker_steps
    assert foreseen.spec == passed.spec and foreseen.spec.spatial_dims == 3
    first = read_table(ManifestRow, tmp_path / "foreseen" / "manifest.parquet").sort_values("scan_id")
    second = read_table(ManifestRow, tmp_path / "passed" / "manifest.parquet").sort_values("scan_id")
    assert first.reset_index(drop=True).equals(second.reset_index(drop=True))
    made, read_back = _tensors(tmp_path / "foreseen", foreseen.spec), _tensors(tmp_path / "passed", passed.spec)
    assert made.keys() == read_back.keys() and len(made) == 4
    for scan_id, tensor in read_back.items():
        np.testing.assert_array_equal(made[scan_id], tensor)


def test_the_spec_is_not_foreseen_where_the_dominant_scans_are_not_stacks():
    from medtl.ingest.expected import expected_spec
    from medtl.io.dicom.grouping import ScanPlan

    stack = [SimpleNamespace(modality="CT", position=(0.0, 0.0, float(z)), orientation=(1, 0, 0, 0, 1, 0),
                             pixel_spacing=(0.5, 0.5), rows=8, columns=6) for z in range(4)]  # fmt: skip
    planar = SimpleNamespace(modality="DX")
    chosen: list = []

    def choose(groups):
        chosen.append(max(groups, key=lambda group: group.n_scans))
        return "spec"

    assert expected_spec([ScanPlan("stack", "CT", stack)], has_nifti=False, choose=choose) == "spec"
    assert [axis.median for axis in chosen[0].shape] == [6, 8, 4]
    assert [axis.median for axis in chosen[0].spacing] == [0.5, 0.5, 1.0]
    two_radiographs = [ScanPlan("planar", "DX", [planar]), ScanPlan("planar", "DX", [planar])]
    assert expected_spec([ScanPlan("stack", "CT", stack), *two_radiographs], has_nifti=False, choose=choose) is None
    assert expected_spec([ScanPlan("stack", "CT", stack)], has_nifti=True, choose=choose) is None  # NIfTI unread
    enhanced = ScanPlan("enhanced", "MR", [SimpleNamespace(modality="MR")])
    assert expected_spec([ScanPlan("stack", "CT", stack), enhanced], has_nifti=False, choose=choose) is None


def _varied_stacks(n: int) -> list:
    """Stacks of 2-9 slices with varied sizes, spacings, orientations and slice order, and one with rows and
    columns parallel (no geometry: nothing is foreseen from it)."""
    from medtl.io.dicom.grouping import ScanPlan

    rng = np.random.default_rng(7)
    plans = []
    for number in range(n):
        orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0) if number % 3 else (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
        step, size = float(rng.choice([1.0, 2.5, 5.0])), int(rng.choice([16, 32]))
        oblique = number % 3 == 0
        slices = [
            SimpleNamespace(modality="CT" if number % 4 else "MR", orientation=orientation, rows=size,
                            columns=size + 2, pixel_spacing=(0.7, 0.7),
                            position=(0.0, k * step, k * step) if oblique else (0.0, 0.0, k * step))
            for k in rng.permutation(int(rng.integers(2, 10))).tolist()
        ]  # fmt: skip
        plans.append(ScanPlan("stack", "CT", slices))
    return plans


def test_the_workers_foresee_the_spec_that_this_process_would():
    """The stacks' geometry is computed by the pool's workers, in chunks; the spec and the statistics it was
    chosen from are the same as computed here, and a broken pool falls back to computing here."""
    from concurrent.futures import Executor
    from concurrent.futures.process import BrokenProcessPool

    from medtl.ingest.execution import process_pool
    from medtl.ingest.expected import _WORTH_SENDING, expected_spec
    from medtl.io.dicom.grouping import ScanPlan

    plans = _varied_stacks(3 * _WORTH_SENDING)
    seen: list = []

    def choose(groups):
        seen.append([group.model_dump() for group in groups])
        return len(seen)

    assert expected_spec(plans, has_nifti=False, choose=choose) == 1
    with process_pool(2) as pool:
        assert expected_spec(plans, has_nifti=False, choose=choose, executor=pool, n_workers=2) == 2

    class Broken(Executor):
        def map(self, *args, **kwargs):
            raise BrokenProcessPool("a worker died")

    assert expected_spec(plans, has_nifti=False, choose=choose, executor=Broken(), n_workers=2) == 3
    assert seen[0] == seen[1] == seen[2]
    assert {group["modality"] for group in seen[0]} == {"CT", "MR"}
    assert sorted(axis["median"] for axis in seen[0][0]["spacing"]) != [0.7, 0.7, 0.7]  # the slice steps count
    parallel = SimpleNamespace(modality="CT", orientation=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0), rows=4, columns=4,
                               pixel_spacing=(1.0, 1.0), position=(0.0, 0.0, 0.0))  # fmt: skip
    unforeseeable = [*plans, ScanPlan("stack", "CT", [parallel, parallel])]
    with process_pool(2) as pool:
        assert expected_spec(unforeseeable, has_nifti=False, choose=choose, executor=pool, n_workers=2) is None
