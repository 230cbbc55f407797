"""The monitored quantities of a set of score rows and their input statistics, as plain numbers and counts.

Shared by the checks and the night summaries so that what is tested and what is shown are the same numbers.
Parquet gives list columns back as numpy arrays; everything here accepts either.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from medtl.scoring.score import OOD_FLAGS

QC = "qc"  # any ingest QC flag that scoring passes on (prefixed `qc:`)
MONITORED_FLAGS = (*OOD_FLAGS, QC)
INTENSITY = ("intensity_mean", "intensity_p01", "intensity_p99")


def categories(inputs: pd.DataFrame, column: str) -> dict[str, int]:
    return dict(Counter(str(v) for v in inputs[column])) if len(inputs) else {}


def axis_values(inputs: pd.DataFrame, column: str, axis: int, ndim: int) -> np.ndarray:
    """Axis AXIS of spacing or shape, over the rows with NDIM axes (2D and 3D scans are not mixed)."""
    return np.array([float(v[axis]) for v in inputs[column] if len(v) == ndim], dtype=float)


def dimensions(inputs: pd.DataFrame, image_kind: str) -> int | None:
    """The number of axes most scans of IMAGE_KIND have (None without such scans): 2D images scored by a 3D model
    are kind_mismatch flags, and their spacing is no sample of the model's inputs."""
    mine = inputs[inputs["image_kind"] == image_kind] if len(inputs) else inputs
    if not len(mine):
        return None
    return Counter(len(v) for v in mine["spacing"]).most_common(1)[0][0]


def flag_count(scores: pd.DataFrame, flag: str) -> int:
    if flag == QC:
        return sum(any(str(f).startswith("qc:") for f in flags) for flags in scores["flags"])
    return sum(flag in set(flags) for flags in scores["flags"])


def abstained(scores: pd.DataFrame) -> int:
    return int(scores["abstained"].astype(bool).sum())


def endpoint_scores(scores: pd.DataFrame, index: int) -> np.ndarray:
    """Endpoint INDEX's probability of every scored row (rows that could not be scored have none)."""
    return np.array([float(p[index]) for p in scores["endpoint_probabilities"] if len(p) > index], dtype=float)


def endpoint_decisions(scores: pd.DataFrame, index: int) -> tuple[int, int]:
    """(decided positive, decided) for endpoint INDEX: abstained rows and rows without a threshold have no decision."""
    decided = [bool(d[index]) for d in scores["decisions"] if len(d) > index and _is_decision(d[index])]
    return sum(decided), len(decided)


def _is_decision(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))
