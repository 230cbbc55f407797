"""Operating-point rules, Wilson intervals and calibration statistics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medtl.errors import ConfigError
from medtl.evaluation.calibration import apply_temperature, calibration, fit_temperature, logit
from medtl.evaluation.metrics import threshold_metrics, wilson
from medtl.evaluation.operating_point import choose_threshold, choose_threshold_by_fold

TARGETS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_youden_picks_the_threshold_maximising_sensitivity_plus_specificity():
    point = choose_threshold(TARGETS, SCORES, "youden")
    # at 0.7: sensitivity 3/4, specificity 4/4 -> J = 0.75; at 0.4: 4/4 and 3/4 -> J = 0.75 too; the first wins
    predicted = point.threshold <= SCORES
    sens = (predicted & (TARGETS == 1)).sum() / 4
    spec = (~predicted & (TARGETS == 0)).sum() / 4
    assert sens + spec - 1 == pytest.approx(0.75)
    assert point.chosen_on == "oof"


def test_sensitivity_rule_keeps_the_highest_threshold_reaching_the_bound():
    point = choose_threshold(TARGETS, SCORES, "sensitivity>=1.0")
    assert point.threshold == pytest.approx(0.4)  # every positive caught, fewest false positives (one: 0.6)
    point = choose_threshold(TARGETS, SCORES, "specificity >= 1")
    assert point.threshold == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="unknown operating-point rule"):
        choose_threshold(TARGETS, SCORES, "accuracy>=0.9")


def test_wilson_interval_matches_the_textbook_value():
    value, low, high = wilson(8, 10)
    assert value == 0.8
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (None, None, None)
    _, low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-3)


def test_threshold_metrics_count_correctly():
    estimates = {e.name: e for e in threshold_metrics(TARGETS, SCORES, 0.5)}
    assert estimates["sensitivity"].value == 0.75 and estimates["sensitivity"].n == 4
    assert estimates["specificity"].value == 0.75
    assert estimates["ppv"].value == 0.75 and estimates["npv"].value == 0.75
    assert estimates["sensitivity"].ci_method == "wilson"
    # with several scans per patient the proportions are bootstrapped over patients instead
    grouped = {e.name: e for e in threshold_metrics(TARGETS, SCORES, 0.5, groups=np.array([0, 0, 1, 1, 2, 2, 3, 3]))}
    assert "patients" in grouped["sensitivity"].ci_method


def test_threshold_metrics_take_the_callers_number_of_resamples():
    # evaluate's n_boot reaches the threshold metrics too: their intervals say how many resamples they rest on
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, 60)
    scores = np.clip(targets * 0.3 + rng.random(60) * 0.7, 0, 1)
    groups = np.repeat(np.arange(30), 2)
    for n_boot in (250, 900):
        estimates = {e.name: e for e in threshold_metrics(targets, scores, 0.5, groups, n_boot=n_boot)}
        assert f"({n_boot})" in estimates["balanced_accuracy"].ci_method
        assert f"({n_boot})" in estimates["sensitivity"].ci_method


def test_brier_and_ece_on_a_hand_computed_example():
    targets = np.array([0, 1, 1, 0])
    scores = np.array([0.2, 0.8, 0.6, 0.4])
    result = calibration(targets, scores, n_bins=2)
    assert result.brier == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 4)
    # bin [0, .5): predictions .2, .4 (mean .3), observed 0 -> gap .3; bin [.5, 1]: mean .7, observed 1 -> gap .3
    assert result.ece == pytest.approx(0.3)
    assert [b.count for b in result.bins] == [2, 2]


def test_slope_detects_overconfidence_and_temperature_scaling_repairs_it():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 20000)
    targets = rng.random(20000) < 1 / (1 + np.exp(-true_logit))
    calibrated = 1 / (1 + np.exp(-true_logit))
    overconfident = 1 / (1 + np.exp(-2 * true_logit))
    good = calibration(targets, calibrated)
    assert good.slope == pytest.approx(1.0, abs=0.05) and abs(good.intercept) < 0.05 and good.ece < 0.02
    bad = calibration(targets, overconfident)
    assert bad.slope == pytest.approx(0.5, abs=0.05)
    temperature = fit_temperature(targets, overconfident)
    assert temperature == pytest.approx(2.0, abs=0.1)
    repaired = calibration(targets, overconfident, temperature=temperature)
    assert repaired.after_scaling["slope"] == pytest.approx(1.0, abs=0.06)
    assert repaired.after_scaling["ece"] < bad.ece
    np.testing.assert_allclose(logit(apply_temperature(overconfident, 2.0)), 2 * true_logit / 2, atol=1e-4)


def test_a_perfect_proportion_still_gets_an_honest_interval():
    # 12 positives from 6 patients, all caught: a bootstrap says [1, 1]; Wilson over 6 patients does not
    targets = np.array([1] * 12 + [0] * 12)
    scores = np.array([0.9] * 12 + [0.1] * 12)
    groups = np.repeat(np.arange(12), 2)
    sensitivity = next(e for e in threshold_metrics(targets, scores, 0.5, groups) if e.name == "sensitivity")
    assert sensitivity.value == 1.0 and sensitivity.ci_high == pytest.approx(1.0)
    assert sensitivity.ci_low == pytest.approx(wilson(6, 6)[1]) and sensitivity.ci_low < 0.7
    assert "wilson over patients" in sensitivity.ci_method


def test_multiclass_evaluation_reports_one_vs_rest_aurocs_and_a_confusion_matrix():
    import pandas as pd

    from medtl.evaluation.task_evaluation import task_evaluation

    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 20)
    probabilities = rng.dirichlet([1, 1, 1], size=60)
    probabilities[np.arange(60), targets] += 1.0  # the true class always scores highest
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[:5, 0], probabilities[:5, 1] = probabilities[:5, 1], probabilities[:5, 0].copy()  # 5 mistakes
    frame = pd.DataFrame({"target": targets, "patient_id": [f"P-{i:016x}" for i in range(60)]})
    for index, name in enumerate(["a", "b", "c"]):
        frame[f"p_{name}"] = probabilities[:, index]
    result = task_evaluation("oof", frame, "multiclass", ["a", "b", "c"], n_boot=200)
    named = {e.name: e for e in result.estimates}
    assert named["accuracy"].value == pytest.approx(55 / 60)
    assert named["auroc_c"].value == pytest.approx(1.0)
    assert named["auroc"].ci_low <= named["auroc"].value <= named["auroc"].ci_high
    assert result.confusion[0] == [15, 5, 0] and result.confusion[2] == [0, 0, 20]
    assert result.operating_point is None and result.classes == ["a", "b", "c"]


def test_folds_on_different_scales_get_the_median_of_their_own_thresholds():
    """Fold 0 scores in [0, 0.5], fold 1 in [0.5, 1]; each separates its classes perfectly at its middle."""
    rng = np.random.default_rng(0)
    targets = np.tile([0, 1], 50)
    low = np.where(targets == 1, rng.uniform(0.3, 0.5, 100), rng.uniform(0.0, 0.2, 100))
    high = np.where(targets == 1, rng.uniform(0.8, 1.0, 100), rng.uniform(0.5, 0.7, 100))
    scores, folds = np.concatenate([low, high]), np.repeat([0, 1], 100)
    pooled = choose_threshold(np.concatenate([targets, targets]), scores)
    by_fold = choose_threshold_by_fold(np.concatenate([targets, targets]), scores, folds)
    own = [choose_threshold(targets, part).threshold for part in (low, high)]
    assert by_fold.pooling == "fold_median" and pooled.pooling == "pooled"
    assert by_fold.threshold == pytest.approx(float(np.median(own)))
    assert 0.3 <= own[0] <= 0.5 and 0.8 <= own[1] <= 1.0  # each fold's own rule: its lowest positive score
    one_class = choose_threshold_by_fold(targets, low, np.where(np.arange(100) < 99, 0, 1))  # fold 1: one scan
    assert one_class.threshold == pytest.approx(choose_threshold(targets[:99], low[:99]).threshold)
