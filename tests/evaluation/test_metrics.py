"""AUROC confidence intervals resample patients: correlated scans of one patient do not narrow the interval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from medtl.evaluation.metrics import auprc_ci, auroc_ci, macro_auroc_ci
from medtl.ranking import fast_auroc, fast_average_precision


def test_value_is_sklearns_auroc_and_the_interval_contains_it():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 200)
    scores = targets * 0.6 + rng.random(200)
    result = auroc_ci(targets, scores, n_boot=500)
    assert result.value == pytest.approx(roc_auc_score(targets, scores))
    assert result.low < result.value < result.high
    assert "images" in result.method


def test_patient_bootstrap_is_wider_than_image_bootstrap_when_scans_repeat():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(40), 5)  # five near-identical scans per patient
    patient_target = rng.integers(0, 2, 40)
    patient_score = patient_target * 0.5 + rng.random(40)
    targets = patient_target[patients]
    scores = patient_score[patients] + rng.normal(0, 0.01, len(patients))
    by_image = auroc_ci(targets, scores, n_boot=800, seed=2)
    by_patient = auroc_ci(targets, scores, patients, n_boot=800, seed=2)
    assert by_patient.value == by_image.value
    assert (by_patient.high - by_patient.low) > 1.6 * (by_image.high - by_image.low)
    assert "patients" in by_patient.method


def test_one_class_gives_no_auroc_instead_of_a_number():
    assert auroc_ci(np.zeros(10), np.random.default_rng(0).random(10)).value is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=1, max_size=40),
    st.sampled_from([0.0, 0.1, 1.0]),
)
def test_the_fast_metrics_equal_sklearns_including_tied_scores(pairs, spread):
    """Scores from a handful of values force ties, where both definitions (midranks; one threshold per distinct
    score) are easiest to get wrong."""
    targets = np.array([target for target, _ in pairs])
    scores = np.array([value * spread for _, value in pairs])
    if targets.any():
        assert fast_average_precision(targets, scores) == pytest.approx(average_precision_score(targets, scores), 1e-12)
    else:
        assert fast_average_precision(targets, scores) is None
    if 0 < targets.sum() < len(targets):
        assert fast_auroc(targets, scores) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    else:
        assert fast_auroc(targets, scores) is None


def test_intervals_equal_a_bootstrap_recomputed_with_sklearn():
    """The same resamples (seed, patients) through sklearn's own functions give the same interval bounds."""
    from medtl.evaluation.metrics import _groups

    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 2)
    targets = np.repeat(rng.integers(0, 2, 30), 2)
    scores = np.round(targets * 0.4 + rng.random(60), 1)  # rounded: ties
    unique, members = _groups(patients, len(targets))
    draws = np.random.default_rng(7)
    aurocs, precisions = [], []
    for _ in range(300):
        rows = np.concatenate([members[g] for g in draws.integers(0, len(unique), size=len(unique))])
        if 0 < targets[rows].sum() < len(rows):
            aurocs.append(roc_auc_score(targets[rows], scores[rows]))
        if targets[rows].sum() > 0:
            precisions.append(average_precision_score(targets[rows], scores[rows]))
    for interval, expected in ((auroc_ci(targets, scores, patients, n_boot=300, seed=7), aurocs),
                               (auprc_ci(targets, scores, patients, n_boot=300, seed=7), precisions)):  # fmt: skip
        assert (interval.low, interval.high) == pytest.approx(tuple(np.quantile(expected, [0.025, 0.975])), abs=1e-12)
        assert interval.n_boot == len(expected)


def test_macro_auroc_is_sklearns_one_vs_rest_macro():
    import pandas as pd

    rng = np.random.default_rng(4)
    targets = rng.integers(0, 3, 90)
    probabilities = rng.dirichlet(np.ones(3), 90) + np.eye(3)[targets] * 0.3
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {"target": targets, "patient_id": np.arange(90), **{f"p_{c}": probabilities[:, i] for i, c in enumerate("abc")}}
    )
    expected = roc_auc_score(targets, probabilities, multi_class="ovr", average="macro")
    assert macro_auroc_ci(frame, list("abc"), n_boot=50).value == pytest.approx(expected, abs=1e-12)
