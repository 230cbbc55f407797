"""Preprocessing (resample with anti-aliasing, intensity scaling) against scipy.ndimage doing the same.

medtl's preprocess_array resamples with a linear zoom after a Gaussian low-pass on the axes that shrink, computed
in numpy only (medtl/ingest/preprocess.py): only the kept centre, and the low-pass only at the inputs the
resampling reads. The baseline is the textbook route to the same values: `ndimage.gaussian_filter(mode="nearest")`
on the whole scaled scan, then `ndimage.zoom(order=1, mode="nearest", grid_mode=True)`, then the centre crop
(the values agree to 1e-6; tests/ingest/test_ingest_fast_paths.py compares them). Cases:

- `stack_64`: the synthetic archive's small CT stacks (64 x 64 x 24, 0.9 x 0.9 x 1 mm to 0.8 x 0.8 x 2.5 mm);
- `ct_512`: a 512 x 512 x 120 CT at 0.7 x 0.7 x 1.25 mm to 1.5 x 1.5 x 3 mm, 128 x 128 x 64 kept;
- `radiograph`: a 3000 x 2500 radiograph resized to 224 x 224;
- `fine_spacing`: a 64 x 64 x 24 stack declaring 1e-3 mm pixels among 0.8 mm scans (an 800x shrink in plane):
  the baseline's kernel has 1,600 taps a side and pays all of them; medtl folds those beyond the axis onto its
  edges (at most the axis's length) and filters only where the resampling reads.

Also timed: importing scipy.ndimage in a fresh interpreter, which every ingest and scoring worker paid before the
low-pass moved to numpy. Medians over `--rounds` interleaved rounds, with min and max; compare ratios only.

    python benchmarks/bench_preprocess.py --rounds 5 --out benchmarks/results/preprocess.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtl.contracts import PreprocessingSpec
from medtl.contracts.preprocessing import PercentileIntensity, WindowIntensity
from medtl.ingest.preprocess import _centre_pad_crop, _intensity_bounds, _scale, preprocess_array


def baseline(array: np.ndarray, affine: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """The same preprocessing with scipy.ndimage over the whole scan."""
    scaled = _scale(np.asarray(array, dtype=np.float32), *_intensity_bounds(array, spec))
    if spec.spatial_dims == 2:
        target = spec.target_shape
        factors = [t / s for t, s in zip(target, scaled.shape, strict=True)]
    else:
        spacing = [float(np.linalg.norm(affine[:3, axis])) for axis in range(3)]
        factors = [s / t for s, t in zip(spacing, spec.target_spacing, strict=True)]
        target = [max(1, round(n * f)) for n, f in zip(scaled.shape, factors, strict=True)]
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) if f < 1.0 else 0.0 for f in factors]
    if any(sigma):
        scaled = ndimage.gaussian_filter(scaled, sigma=sigma, mode="nearest")
    zoomed = ndimage.zoom(
        scaled, [t / n for t, n in zip(target, scaled.shape, strict=True)], order=1, mode="nearest", grid_mode=True
    )
    out = zoomed if spec.spatial_dims == 2 else _centre_pad_crop(zoomed, spec.target_shape)
    return np.clip(out, 0.0, 1.0)[np.newaxis]


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, PreprocessingSpec]]:
    rng = np.random.default_rng(0)
    window = WindowIntensity(center=40.0, width=400.0)
    small = PreprocessingSpec(spatial_dims=3, target_spacing=[0.8, 0.8, 2.5], target_shape=[64, 64, 16],
                              intensity=window)  # fmt: skip
    stack = rng.integers(-1000, 1500, (64, 64, 24)).astype(np.int16)
    ct = rng.integers(-1000, 1500, (512, 512, 120)).astype(np.int16)
    radiograph = rng.integers(0, 4096, (3000, 2500)).astype(np.uint16)
    return {
        "stack_64": (stack, np.diag([0.9, 0.9, 1.0, 1.0]), small),
        "ct_512": (ct, np.diag([0.7, 0.7, 1.25, 1.0]),
                   PreprocessingSpec(spatial_dims=3, target_spacing=[1.5, 1.5, 3.0], target_shape=[128, 128, 64],
                                     intensity=window)),
        "radiograph": (radiograph, np.eye(4),
                       PreprocessingSpec(spatial_dims=2, target_spacing=None, target_shape=[224, 224],
                                         intensity=PercentileIntensity())),
        "fine_spacing": (stack, np.diag([1e-3, 1e-3, 1.0, 1.0]), small),
    }  # fmt: skip


def timed(function: Callable[[], object], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def summary(values: list[float]) -> dict[str, object]:
    return {"median": round(statistics.median(values), 6), "min": round(min(values), 6),
            "max": round(max(values), 6), "rounds": [round(v, 6) for v in values]}  # fmt: skip


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import scipy.ndimage; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    agreement: dict[str, float] = {}
    for name, (array, affine, spec) in cases().items():
        got, expected = preprocess_array(array, affine, spec), baseline(array, affine, spec)
        agreement[name] = float(np.max(np.abs(got - expected)))
        repeats = 20 if array.size < 1_000_000 and name != "fine_spacing" else 2
        arms = {"medtl": preprocess_array, "scipy": baseline}
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.rounds):  # interleaved: drift on a shared machine hits both arms alike
            for arm, function in arms.items():
                times[arm].append(timed(lambda f=function: f(array, affine, spec), repeats))  # noqa: B023
        results[name] = times
        print(name, {arm: round(statistics.median(values) * 1e3, 2) for arm, values in times.items()}, "ms")
    imports = [import_seconds() for _ in range(args.rounds)]
    report = {
        "benchmark": "preprocess",
        "seconds_per_scan": {
            name: {arm: summary(values) for arm, values in times.items()} for name, times in results.items()
        },
        "ratios_medtl_vs_scipy_time": {
            name: summary([m / s for m, s in zip(times["medtl"], times["scipy"], strict=True)])
            for name, times in results.items()
        },
        "max_abs_difference": agreement,
        "scipy_ndimage_import_seconds": summary(imports),
        "rounds": args.rounds,
        "cpu_count": __import__("os").cpu_count(),
        "platform": platform.platform(),
        "note": "per-scan times of medtl's preprocess_array and the scipy.ndimage route to the same values, "
        "interleaved rounds; ratio < 1: medtl faster. The import is paid once per worker process by the "
        "baseline only. Shared machine: compare ratios.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report["ratios_medtl_vs_scipy_time"], indent=1), report["max_abs_difference"])


if __name__ == "__main__":
    main()
