"""AUROC confidence intervals resample patients: correlated scans of one patient do not narrow the interval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from medtl.evaluation import metrics as metrics_module
from medtl.evaluation.metrics import _RATIOS, _ratio, auprc_ci, auroc_ci, bootstrap, count_bootstrap, macro_auroc_ci
from medtl.ranking import RankedScores, fast_auroc, fast_average_precision


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
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 2)
    targets = np.repeat(rng.integers(0, 2, 30), 2)
    scores = np.round(targets * 0.4 + rng.random(60), 1)  # rounded: ties
    unique, members = _members(patients)
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


def _members(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each patient's rows, patients in sorted order."""
    unique, inverse = np.unique(groups, return_inverse=True)
    return unique, [np.flatnonzero(inverse == g) for g in range(len(unique))]


def _loop_bootstrap(statistic, n, groups, *, n_boot, seed=0, level=0.95):
    """The bootstrap as first written: one draw of patients per resample, their rows concatenated in drawn order."""
    unique, members = _members(groups)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(unique), size=len(unique))])
        value = statistic(rows)
        if value is not None:
            values.append(value)
    return np.quantile(values, [(1 - level) / 2, (1 + level) / 2]).tolist(), len(values)


@settings(max_examples=25, deadline=None)
@given(
    scans=st.lists(st.integers(1, 4), min_size=3, max_size=30),
    prevalence=st.floats(0.05, 0.95),
    threshold=st.floats(0.1, 0.9),
    seed=st.integers(0, 5),
)
def test_threshold_intervals_equal_a_resample_by_resample_bootstrap(scans, prevalence, threshold, seed):
    """Counts summed per patient and weighted by how often each resample drew the patient give the numbers a
    bootstrap that gathers every resample's rows gives, for any number of scans per patient; the order of rows
    inside a resample (vectorised gathering) changes nothing either."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(rng.permutation(len(scans)), scans)  # patients in shuffled order, scans contiguous
    targets = np.repeat(rng.random(len(scans)) < prevalence, scans)
    predicted = rng.random(len(patients)) < threshold
    statistics = {
        "sensitivity": lambda rows: _share(predicted[rows] & targets[rows], targets[rows]),
        "specificity": lambda rows: _share(~predicted[rows] & ~targets[rows], ~targets[rows]),
        "ppv": lambda rows: _share(predicted[rows] & targets[rows], predicted[rows]),
        "npv": lambda rows: _share(~predicted[rows] & ~targets[rows], ~predicted[rows]),
    }
    counts = np.stack([predicted & targets, targets, ~predicted & ~targets, ~targets, predicted, ~predicted], axis=1)
    for name, (hits, of) in _RATIOS.items():
        fast = count_bootstrap(_ratio(hits, of), counts, patients, n_boot=200, seed=seed)
        rows_one_by_one = bootstrap(statistics[name], len(patients), patients, n_boot=200, seed=seed)
        assert (fast.value, fast.low, fast.high, fast.n_boot) == (
            rows_one_by_one.value, rows_one_by_one.low, rows_one_by_one.high, rows_one_by_one.n_boot,
        )  # fmt: skip
        if fast.value is not None and fast.n_boot:
            expected = _loop_bootstrap(statistics[name], len(patients), patients, n_boot=200, seed=seed)
            assert ([fast.low, fast.high], fast.n_boot) == expected


def _share(hits: np.ndarray, of: np.ndarray) -> float | None:
    return float(hits.sum() / of.sum()) if of.sum() else None


def test_resamples_drawn_in_blocks_give_the_same_interval(monkeypatch):
    rng = np.random.default_rng(4)
    patients = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    targets = rng.integers(0, 2, len(patients))
    scores = targets * 0.4 + rng.random(len(patients))
    whole = auroc_ci(targets, scores, patients, n_boot=300)
    monkeypatch.setattr(metrics_module, "RESAMPLE_BLOCK", 7 * 60)  # seven resamples per block
    assert auroc_ci(targets, scores, patients, n_boot=300) == whole
    expected, n_defined = _loop_bootstrap(
        lambda rows: fast_auroc(targets[rows], scores[rows]), len(patients), patients, n_boot=300
    )
    assert [whole.low, whole.high] == expected and whole.n_boot == n_defined


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=40),
)
def test_auroc_of_a_reweighting_equals_the_auroc_of_the_images_repeated(data):
    """Scores with ties, multiplicities including zero: the same number, to the bit, as the images repeated."""
    targets = np.array([t for t, _, _ in data])
    scores = np.array([s / 6 for _, s, _ in data])
    weights = np.array([w for _, _, w in data])
    repeated = fast_auroc(np.repeat(targets, weights), np.repeat(scores, weights))
    (reweighted,) = RankedScores(targets, scores).auroc(weights[None, :].astype(float))
    assert (repeated is None and np.isnan(reweighted)) or repeated == reweighted
