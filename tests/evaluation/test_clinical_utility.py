"""Decision curves and probability distributions against numbers worked out by hand on five scans."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtl.contracts.evaluation import OperatingPoint
from medtl.contracts.task import decision_endpoint
from medtl.evaluation.clinical_utility import (
    decision_curve,
    decision_curves,
    net_benefit,
    probability_histograms,
    treat_all,
    useful_ranges,
)

# truth and probability of five scans; prevalence 3/5
TARGETS = np.array([1, 1, 0, 0, 1])
SCORES = np.array([0.9, 0.4, 0.6, 0.1, 0.2])


def test_net_benefit_equals_the_hand_computed_values():
    # t = 0.15: decided positive 0.9, 0.4, 0.6, 0.2 -> TP 3, FP 1: 3/5 - 1/5 * 0.15/0.85
    # t = 0.3:  0.9, 0.4, 0.6 -> TP 2, FP 1: 2/5 - 1/5 * 0.3/0.7
    # t = 0.5:  0.9, 0.6 -> TP 1, FP 1: 1/5 - 1/5 * 1 = 0
    # t = 0.95: nobody -> 0
    thresholds = np.array([0.15, 0.3, 0.5, 0.95])
    expected = [3 / 5 - 1 / 5 * 0.15 / 0.85, 2 / 5 - 1 / 5 * 0.3 / 0.7, 0.0, 0.0]
    assert net_benefit(TARGETS, SCORES, thresholds) == pytest.approx(expected, abs=1e-12)
    # treat all: 3/5 - 2/5 * t/(1-t)
    assert treat_all(0.6, thresholds) == pytest.approx([0.6 - 0.4 * t / (1 - t) for t in thresholds], abs=1e-12)
    assert treat_all(0.6, np.array([0.6])) == pytest.approx([0.0])  # treat-all meets treat-none at t = prevalence


def test_a_score_equal_to_the_threshold_counts_as_positive():
    assert net_benefit(np.array([1, 0]), np.array([0.4, 0.1]), np.array([0.4])) == pytest.approx([0.5])


def test_the_curve_records_where_the_model_beats_both_defaults_and_its_value_at_the_operating_point():
    point = OperatingPoint(rule="youden", threshold=0.3, chosen_on="oof")
    curve = decision_curve(TARGETS, SCORES, display="positive", point=point)
    assert curve.n == 5 and curve.n_positive == 3 and curve.prevalence == pytest.approx(0.6)
    assert len(curve.thresholds) == 99 and curve.thresholds[0] == 0.01 and curve.thresholds[-1] == 0.99
    at = curve.thresholds.index(0.3)
    assert curve.net_benefit[at] == pytest.approx(2 / 5 - 1 / 5 * 0.3 / 0.7)
    assert curve.treat_all[at] == pytest.approx(0.6 - 0.4 * 0.3 / 0.7)
    assert curve.operating_net_benefit == pytest.approx(2 / 5 - 1 / 5 * 0.3 / 0.7)
    # t <= 0.10 treats all five (= treat-all); 0.11..0.20 treats four (TP 3, FP 1): 3/5 - 1/5 x beats 3/5 - 2/5 x
    # (x = t/(1-t)); 0.21..0.40 TP 2, FP 1: 2/5 - 1/5 x beats treat-all only for x > 1, i.e. never below 0.5;
    # 0.41..0.60 TP 1, FP 1: below treat-all, then below 0; 0.61..0.90 only the 0.9 scan (TP 1): 1/5 > max(ta, 0)
    assert curve.useful_thresholds == [[0.11, 0.2], [0.61, 0.9]]


def test_useful_ranges_splits_runs():
    grid = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    model = np.array([0.1, -0.1, 0.2, 0.3, -0.2])
    assert useful_ranges(grid, model, np.array([0.0, 0.0, 0.5, 0.0, -1.0])) == [(0.1, 0.1), (0.4, 0.4)]


def _binary_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"P-{i:016x}" for i in range(5)],
            "label": ["pos", "pos", "neg", "neg", "pos"],
            "target": [1, 1, 0, 0, 1],
            "y": TARGETS,
            "probability": SCORES,
            "p_neg": 1 - SCORES,
            "p_pos": SCORES,
        }
    )


def test_binary_task_histogram_counts_scans_per_true_class():
    (histogram,) = probability_histograms("oof", _binary_frame(), "binary", ["neg", "pos"], positive="pos",
                                          decision=None)  # fmt: skip
    assert len(histogram.edges) == 21 and histogram.edges[0] == 0.0 and histogram.edges[-1] == 1.0
    by_label = {g.label: g.counts for g in histogram.groups}
    assert set(by_label) == {"true neg", "true pos"}
    assert sum(by_label["true neg"]) == 2 and sum(by_label["true pos"]) == 3
    # bins of width 0.05: 0.1 -> bin 2, 0.6 -> bin 12; 0.2 -> bin 4, 0.4 -> bin 8, 0.9 -> bin 18
    assert [i for i, c in enumerate(by_label["true neg"]) if c] == [2, 12]
    assert [i for i, c in enumerate(by_label["true pos"]) if c] == [4, 8, 18]


def test_a_probability_of_one_falls_in_the_last_bin():
    frame = _binary_frame().assign(probability=[1.0, 1.0, 0.0, 0.0, 1.0])
    (histogram,) = probability_histograms("test", frame, "binary", ["neg", "pos"], positive="pos", decision=None)
    counts = {g.label: g.counts for g in histogram.groups}
    assert counts["true pos"][-1] == 3 and counts["true neg"][0] == 2


def test_ordinal_curve_is_for_the_decision_cut_and_histograms_are_per_true_grade():
    classes = ["0", "1", "2"]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    frame = pd.DataFrame({"target": [0, 1, 2, 0, 2], **{f"p_{c}": p[:, i] for i, c in enumerate(classes)}})
    decision = decision_endpoint("ordinal", classes, None, "1")
    (curve,) = decision_curves(frame, "ordinal", classes, positive=None, decision=decision, points={})
    assert curve.endpoint == "ge_1" and curve.n_positive == 3
    scores = p[:, 1:].sum(axis=1)  # P(grade >= 1)
    at = curve.thresholds.index(0.5)
    assert curve.net_benefit[at] == pytest.approx(net_benefit(np.array([0, 1, 1, 0, 1]), scores, np.array([0.5]))[0])
    (histogram,) = probability_histograms("oof", frame, "ordinal", classes, positive=None, decision=decision)
    assert [(g.label, sum(g.counts)) for g in histogram.groups] == [("true 0", 2), ("true 1", 1), ("true 2", 2)]


def test_multiclass_has_no_decision_curve_but_a_histogram_per_class():
    classes = ["a", "b", "c"]
    p = np.full((3, 3), 1 / 3)
    frame = pd.DataFrame({"target": [0, 1, 2], **{f"p_{c}": p[:, i] for i, c in enumerate(classes)}})
    assert decision_curves(frame, "multiclass", classes, positive=None, decision=None, points={}) == []
    assert [h.endpoint for h in probability_histograms("oof", frame, "multiclass", classes, positive=None,
                                                       decision=None)] == classes  # fmt: skip


def test_a_decision_with_one_outcome_gets_no_curve():
    frame = _binary_frame().assign(y=[1, 1, 1, 1, 1])
    assert decision_curves(frame, "binary", ["neg", "pos"], positive="pos", decision=None, points={}) == []


def test_multilabel_has_a_curve_and_a_present_absent_histogram_per_finding():
    findings = ["effusion", "nodule"]
    frame = pd.DataFrame(
        {"p_effusion": [0.9, 0.2, 0.7, 0.1], "p_nodule": [0.3, 0.8, 0.4, 0.6], "y_effusion": [1, 0, 1, 0],
         "y_nodule": [0, 1, 1, 0]}
    )  # fmt: skip
    curves = decision_curves(frame, "multilabel", findings, positive=None, decision=None, points={})
    assert [c.endpoint for c in curves] == findings and [c.n_positive for c in curves] == [2, 2]
    at = curves[1].thresholds.index(0.5)  # nodule: 0.8 (present) and 0.6 (absent) decided positive
    assert curves[1].net_benefit[at] == pytest.approx(1 / 4 - 1 / 4 * 1.0)
    histograms = probability_histograms("test", frame, "multilabel", findings, positive=None, decision=None)
    assert [[(g.label, sum(g.counts)) for g in h.groups] for h in histograms] == [
        [("finding absent", 2), ("finding present", 2)]
    ] * 2
