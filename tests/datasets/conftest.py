"""Shared fixtures for the dataset-builder tests: one synthetic cohort with problems, written once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from medtl.datasets.synth import CohortSummary, make_cohort

COHORT_ARGS: dict[str, Any] = {"patients": 8, "seed": 7, "with_problems": True}


@pytest.fixture(scope="session")
def cohort_args() -> dict[str, Any]:
    return dict(COHORT_ARGS)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    return make_cohort(tmp_path_factory.mktemp("synth") / "cohort", **COHORT_ARGS)


@pytest.fixture(scope="session")
def truth(cohort: CohortSummary) -> dict[str, Any]:
    return cohort.truth


def _read_series(root: Path, series: dict[str, Any]) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """HU volume (k, j, i) of a CT series, sorted by IPP on the slice normal (not by the truth's order)."""
    datasets = [pydicom.dcmread(root / f) for f in series["files"] if f is not None]
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    volume = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in datasets])
    return volume, datasets


@pytest.fixture(scope="session")
def read_series() -> Callable[[Path, dict[str, Any]], tuple[np.ndarray, list[pydicom.Dataset]]]:
    return _read_series


@pytest.fixture(scope="session")
def problem(truth: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """The one recorded problem of a kind."""

    def find(kind: str) -> dict[str, Any]:
        matches = [p for p in truth["problems"] if p["kind"] == kind]
        assert len(matches) == 1, f"expected exactly one {kind} problem, found {len(matches)}"
        return matches[0]

    return find
