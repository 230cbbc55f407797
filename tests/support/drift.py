"""Simulated nights of scheduled scoring and the training reference they are drawn like, without any model.

One distribution describes the site: CT mostly (some MR), three scanner vendors, in-plane spacing around 0.7 mm
and a few slice thicknesses, intensities in HU, a binary finding in 30% of the scans scored by a model that
separates it fairly well, a few feature outliers and QC flags. `night(...)` draws a night from it, or from a
shifted version (intensities, a vendor, the case mix); `reference(...)` draws the training side from the same
distribution. Frames carry only the columns monitoring reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtl.contracts.ingest import AxisStats, GroupStats, IntensityStats
from medtl.monitoring.nights import Night
from medtl.monitoring.reference import Reference

ARTIFACT = "a" * 64
MODALITIES = (("CT", 0.9), ("MR", 0.1))
MAKERS = (("siemens", 0.5), ("ge", 0.3), ("philips", 0.2))
THICKNESS = ((1.0, 0.2), (2.5, 0.5), (5.0, 0.3))
THRESHOLD = 0.5


@dataclass(frozen=True)
class Shift:
    intensity: float = 0.0  # added to every intensity statistic (HU)
    manufacturer: str | None = None  # every scan from this vendor
    prevalence: float = 0.3
    slice_thickness: float | None = None  # every scan with this slice spacing


def _choice(rng: np.random.Generator, table: tuple, n: int) -> np.ndarray:
    values, weights = zip(*table, strict=True)
    return rng.choice(np.array(values, dtype=object), size=n, p=weights)


def draw_scans(rng: np.random.Generator, n: int, shift: Shift = Shift()) -> pd.DataFrame:
    """N scans: input statistics and the model's probability, as one frame."""
    modality = _choice(rng, MODALITIES, n)
    makers = np.full(n, shift.manufacturer, dtype=object) if shift.manufacturer else _choice(rng, MAKERS, n)
    thickness = np.full(n, shift.slice_thickness) if shift.slice_thickness else _choice(rng, THICKNESS, n).astype(float)
    in_plane = rng.normal(0.7, 0.05, n)
    y = rng.random(n) < shift.prevalence
    probability = 1 / (1 + np.exp(-rng.normal(np.where(y, 1.5, -1.5), 1.0)))
    return pd.DataFrame(
        {
            "modality": modality.astype(str),
            "manufacturer": makers.astype(str),
            "spacing": [[float(a), float(a), float(t)] for a, t in zip(in_plane, thickness, strict=True)],
            "shape": [[512, 512, int(max(20, s))] for s in rng.normal(120, 30, n)],
            "intensity_mean": rng.normal(-500, 80, n) + shift.intensity,
            "intensity_p01": rng.normal(-1000, 20, n) + shift.intensity,
            "intensity_p99": rng.normal(800, 100, n) + shift.intensity,
            "probability": probability,
            "feature_outlier": rng.random(n) < 0.01,
            "qc": rng.random(n) < 0.02,
        }
    )


def night(rng: np.random.Generator, label: str, n: int, shift: Shift = Shift()) -> Night:
    scans = draw_scans(rng, n, shift)
    hashes = [f"{rng.integers(2**63):016x}".ljust(64, "0") for _ in range(n)]
    flags = [
        (["feature_outlier"] if outlier else []) + (["qc:slice_gap"] if qc else [])
        for outlier, qc in zip(scans["feature_outlier"], scans["qc"], strict=True)
    ]
    scores = pd.DataFrame(
        {
            "input_hash": hashes,
            "artifact_hash": ARTIFACT,
            "endpoint_probabilities": [[float(p)] for p in scans["probability"]],
            "decisions": [[bool(p >= THRESHOLD)] for p in scans["probability"]],
            "flags": flags,
            "abstained": False,
            "scored_at": f"{label}T23:00:00+00:00",
        }
    )
    inputs = scans[["modality", "manufacturer", "spacing", "shape", "intensity_mean", "intensity_p01", "intensity_p99"]]
    inputs = inputs.assign(input_hash=hashes, image_kind="volume", recorded_at=f"{label}T22:00:00+00:00")
    return Night(label, scores, inputs.reset_index(drop=True))


def _axes(values: np.ndarray) -> list[AxisStats]:
    return [
        AxisStats(p05=float(np.percentile(c, 5)), median=float(np.median(c)), p95=float(np.percentile(c, 95)))
        for c in values.T
    ]


def reference(rng: np.random.Generator, n: int = 400) -> Reference:
    scans = draw_scans(rng, n)
    groups = []
    for modality, frame in scans.groupby("modality"):
        groups.append(
            GroupStats(
                image_kind="volume",
                modality=str(modality),
                n_scans=len(frame),
                spacing=_axes(np.array(list(frame["spacing"]), dtype=float)),
                shape=_axes(np.array(list(frame["shape"]), dtype=float)),
                intensity=IntensityStats(p01=-1000, p50=-500, p99=800, mean=-500, std=400),
            )
        )
    probability = scans["probability"].to_numpy()
    return Reference(
        image_kind="volume",
        modalities=scans["modality"].value_counts().to_dict(),
        manufacturers=scans["manufacturer"].value_counts().to_dict(),
        groups=groups,
        endpoints=["1"],
        scores={"1": probability},
        positives={"1": (int((probability >= THRESHOLD).sum()), n)},
        flag_tolerance={"feature_outlier": 0.01, "spacing_out_of_range": 0.02, "intensity_out_of_range": 0.02},
    )


def labels(count: int, start: str = "2026-01-01") -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(start, periods=count, freq="D")]
