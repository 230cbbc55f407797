"""Out-of-distribution checks: the feature distance flags what lies outside, and little of what lies inside."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.contracts.ingest import AxisStats, Fingerprint, GroupStats, IntensityStats
from medtl.scoring.ood import input_flags
from medtl.training.feature_reference import FeatureReference, fit_reference


def test_feature_reference_flags_shifted_scans_and_few_in_distribution_ones():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 64))
    training = rng.normal(size=(80, 6)) @ basis + rng.normal(0, 0.1, (80, 64))
    reference = fit_reference(training)
    new_inside = rng.normal(size=(400, 6)) @ basis + rng.normal(0, 0.1, (400, 64))
    shifted = new_inside[:50] + 6.0 * basis[0]  # a shift of about six standard deviations along one direction
    inside_rate = (reference.distances(new_inside) > reference.threshold).mean()
    assert inside_rate < 0.08  # about the 1% the quantile promises, with slack for 80 training scans
    assert (reference.distances(shifted) > reference.threshold).mean() > 0.9
    restored = FeatureReference.from_parts(reference.tensors(), reference.summary())
    np.testing.assert_allclose(restored.distances(shifted), reference.distances(shifted), rtol=1e-4)


def _fingerprint() -> Fingerprint:
    axis = lambda low, mid, high: AxisStats(p05=low, median=mid, p95=high)  # noqa: E731
    group = GroupStats(
        image_kind="volume",
        modality="CT",
        n_scans=40,
        spacing=[axis(0.6, 0.7, 0.8), axis(0.6, 0.7, 0.8), axis(2.0, 2.5, 3.0)],
        shape=[axis(60, 64, 64), axis(60, 64, 64), axis(20, 30, 40)],
        intensity=IntensityStats(p01=-1000, p50=40, p99=700, mean=-200, std=400),
    )
    return Fingerprint(medtl_version="0", pseudonym_key_id="development", manifest_hash="a" * 64, n_scans=40,
                       n_patients=30, n_studies=40, modalities={"CT": 40}, labels={}, patients_per_label={},
                       groups=[group])  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"modality": "MR"}, ["modality_unseen"]),
        ({"spacing": [0.7, 0.7, 10.0]}, ["spacing_out_of_range"]),
        ({"shape": [512, 512, 30]}, ["shape_out_of_range"]),
        ({"intensity_p01": 0.0, "intensity_p99": 4000.0}, ["intensity_out_of_range"]),
        ({"qc_flags": ["slice_gap", "monochrome1_inverted"]}, ["qc:slice_gap"]),
        ({"image_kind": "image2d"}, ["kind_mismatch"]),
    ],
)
def test_input_flags_compare_a_scan_with_the_training_fingerprint(changes, expected):
    row = {"image_kind": "volume", "modality": "CT", "spacing": [0.7, 0.7, 2.5], "shape": [64, 64, 30],
           "intensity_p01": -1000.0, "intensity_p99": 650.0, "qc_flags": []}  # fmt: skip
    row.update(changes)
    assert input_flags(row, _fingerprint(), modalities=["CT"], image_kind="volume") == expected
