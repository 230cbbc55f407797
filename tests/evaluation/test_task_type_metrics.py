"""Evaluation of multiclass, ordinal and multi-label tasks on small fixed frames, against scikit-learn or by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from medtl.contracts.evaluation import Estimate, Evaluation, Metrics, OperatingPoint
from medtl.contracts.task import decision_endpoint, endpoints
from medtl.errors import ConfigError
from medtl.evaluation.class_metrics import classwise_ece, multiclass_brier
from medtl.evaluation.endpoints import choose_points
from medtl.evaluation.evaluate import EvaluationResult
from medtl.evaluation.failures import failure_candidates
from medtl.evaluation.metrics import threshold_metrics
from medtl.evaluation.operating_point import choose_threshold
from medtl.evaluation.task_evaluation import summary_auroc, task_evaluation

GRADES = ["0", "1", "2", "3"]
FINDINGS = ["effusion", "nodule", "mass"]

# the hand-computed calibration example: 4 scans, 3 classes, every probability in the middle of a reliability bin
HAND_PROBABILITIES = np.array([[0.62, 0.33, 0.05], [0.62, 0.33, 0.05], [0.15, 0.13, 0.72], [0.15, 0.13, 0.72]])
HAND_TARGETS = np.array([0, 1, 2, 2])


def _frame(probabilities: np.ndarray, classes: list[str], *, targets=None, findings=None, folds=None) -> pd.DataFrame:
    n = len(probabilities)
    frame = pd.DataFrame(
        {
            "scan_id": [f"X-{i:016x}" for i in range(n)],
            "patient_id": [f"P-{i:016x}" for i in range(n)],
            "label": ["x"] * n,
            "target": targets if targets is not None else -1,
            "fold": folds if folds is not None else np.arange(n) % 2,
        }
    )
    for index, name in enumerate(classes):
        frame[f"p_{name}"] = probabilities[:, index]
        if findings is not None:
            frame[f"y_{name}"] = findings[:, index]
    return frame


def _ordinal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grades 0-3 and class probabilities that lean towards the true grade, with errors."""
    rng = np.random.default_rng(seed)
    targets = np.tile(np.arange(4), n // 4)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), targets] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return targets, probabilities


def _multilabel(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    findings = (rng.random((n, 3)) < [0.4, 0.3, 0.5]).astype(int)
    probabilities = np.clip(0.3 * findings + rng.uniform(0, 0.7, size=(n, 3)), 0, 1)
    return findings, probabilities


def _named(estimates: list[Estimate]) -> dict[str, Estimate]:
    return {e.name: e for e in estimates}


def test_multiclass_brier_on_a_hand_computed_example():
    # rows: (.38^2+.33^2+.05^2) + (.62^2+.67^2+.05^2) + 2 * (.15^2+.13^2+.28^2) = .2558 + .8358 + 2 * .1178
    assert multiclass_brier(HAND_TARGETS, HAND_PROBABILITIES) == pytest.approx(1.3272 / 4)
    assert multiclass_brier([0, 1], np.eye(2)) == 0.0 and multiclass_brier([0, 1], np.eye(2)[::-1]) == 2.0


def test_classwise_ece_on_a_hand_computed_example():
    # class 0: |.62-.5|*2 + |.15-0|*2 = .54; class 1: |.33-.5|*2 + |.13-0|*2 = .60; class 2: .05*2 + .28*2 = .66
    expected = np.mean([0.54 / 4, 0.60 / 4, 0.66 / 4])
    assert classwise_ece(HAND_TARGETS, HAND_PROBABILITIES) == pytest.approx(expected)
    assert expected == pytest.approx(0.15)


def test_multiclass_evaluation_has_calibration_estimates_and_one_endpoint_per_class():
    targets, probabilities = _ordinal(80, seed=1)
    classes = ["a", "b", "c", "d"]
    result = task_evaluation("oof", _frame(probabilities, classes, targets=targets), "multiclass", classes, n_boot=100)
    named = _named(result.estimates)
    assert result.task_kind == "multiclass" and result.operating_point is None and result.prevalence is None
    assert named["multiclass_brier"].value == pytest.approx(multiclass_brier(targets, probabilities))
    assert named["classwise_ece"].value == pytest.approx(classwise_ece(targets, probabilities))
    assert named["multiclass_brier"].ci_low <= named["multiclass_brier"].value <= named["multiclass_brier"].ci_high
    assert named["auroc"].value == pytest.approx(roc_auc_score(targets, probabilities, multi_class="ovr"))
    assert "quadratic_weighted_kappa" not in named
    assert [e.endpoint for e in result.endpoints] == classes
    for index, endpoint in enumerate(result.endpoints):
        assert endpoint.role == "class" and endpoint.operating_point is None and endpoint.confusion == []
        expected = roc_auc_score(targets == index, probabilities[:, index])
        assert _named(endpoint.estimates)["auroc"].value == pytest.approx(expected)
        assert endpoint.calibration is not None and not endpoint.is_decision
    assert sum(map(sum, result.confusion)) == 80 and len(result.confusion) == 4


def test_ordinal_kappa_and_grade_error_match_scikit_learn_and_hand_counts():
    targets, probabilities = _ordinal(80, seed=2)
    frame = _frame(probabilities, GRADES, targets=targets)
    points = choose_points(frame, "ordinal", GRADES, "youden", by_fold=False)
    result = task_evaluation("oof", frame, "ordinal", GRADES, points=points, decision="ge_2", n_boot=200)
    named = _named(result.estimates)
    predicted = probabilities.argmax(axis=1)
    kappa = named["quadratic_weighted_kappa"]
    assert kappa.value == pytest.approx(cohen_kappa_score(targets, predicted, weights="quadratic"))
    assert kappa.ci_low < kappa.value < kappa.ci_high and "patients" not in kappa.ci_method  # one scan each
    error = sum(abs(int(t) - int(p)) for t, p in zip(targets, predicted, strict=True)) / len(targets)
    assert named["mean_absolute_grade_error"].value == pytest.approx(error)
    assert {"auroc", "auroc_0", "accuracy", "multiclass_brier", "classwise_ece"} <= set(named)  # all of multiclass


def test_ordinal_cut_endpoints_use_summed_probabilities_and_grade_truth():
    targets, probabilities = _ordinal(80, seed=3)
    frame = _frame(probabilities, GRADES, targets=targets)
    points = choose_points(frame, "ordinal", GRADES, "youden", by_fold=False)
    result = task_evaluation("oof", frame, "ordinal", GRADES, points=points, decision="ge_2", n_boot=100)
    assert [e.endpoint for e in result.endpoints] == ["ge_1", "ge_2", "ge_3"]
    for k, endpoint in zip((1, 2, 3), result.endpoints, strict=True):
        truth, score = (targets >= k).astype(int), probabilities[:, k:].sum(axis=1)
        assert endpoint.role == "cut" and endpoint.display == f"grade >= {k}"
        assert _named(endpoint.estimates)["auroc"].value == pytest.approx(roc_auc_score(truth, score))
        assert endpoint.operating_point == choose_threshold(truth, score, "youden")
        threshold = endpoint.operating_point.threshold
        hand = [[int(((truth == t) & ((score >= threshold) == p)).sum()) for p in (0, 1)] for t in (0, 1)]
        assert endpoint.confusion == hand
        expected = _named(threshold_metrics(truth, score, threshold))
        assert _named(endpoint.estimates)["sensitivity"].value == pytest.approx(expected["sensitivity"].value)
        assert endpoint.prevalence == pytest.approx(truth.mean())
    decision = [e for e in result.endpoints if e.is_decision]
    assert [e.endpoint for e in decision] == ["ge_2"]
    assert result.operating_point == decision[0].operating_point and result.prevalence == decision[0].prevalence
    assert decision_endpoint("ordinal", GRADES, None, None).id == "ge_2"  # the middle cut when none is declared


def test_operating_points_are_frozen_on_oof_and_applied_unchanged_to_the_test_set():
    oof_findings, oof_probabilities = _multilabel(120, seed=4)
    oof = _frame(oof_probabilities, FINDINGS, findings=oof_findings)
    points = choose_points(oof, "multilabel", FINDINGS, "sensitivity>=0.9", by_fold=False)
    test_findings, test_probabilities = _multilabel(60, seed=5)
    test_probabilities = np.clip(test_probabilities + 0.1, 0, 1)  # the test set scores higher: its own rule differs
    test = _frame(test_probabilities, FINDINGS, findings=test_findings)
    result = task_evaluation("test", test, "multilabel", FINDINGS, points=points, n_boot=100)
    for index, endpoint in enumerate(result.endpoints):
        oof_point = choose_threshold(oof_findings[:, index], oof_probabilities[:, index], "sensitivity>=0.9")
        assert points[FINDINGS[index]] == oof_point and endpoint.operating_point == oof_point
        own = choose_threshold(test_findings[:, index], test_probabilities[:, index], "sensitivity>=0.9")
        assert own.threshold != oof_point.threshold  # so the check below can tell the two apart
        truth, score = test_findings[:, index], test_probabilities[:, index]
        positives = truth == 1
        sensitivity = ((score >= oof_point.threshold) & positives).sum() / positives.sum()
        assert _named(endpoint.estimates)["sensitivity"].value == pytest.approx(sensitivity)


def test_multilabel_findings_and_macro_auroc_match_scikit_learn():
    findings, probabilities = _multilabel(90, seed=6)
    findings[:, 2] = 0  # no scan has the third finding: its AUROC is undefined and stays out of the mean
    frame = _frame(probabilities, FINDINGS, findings=findings)
    result = task_evaluation("test", frame, "multilabel", FINDINGS, n_boot=200)
    per_finding = [roc_auc_score(findings[:, k], probabilities[:, k]) for k in range(2)]
    aurocs = [_named(e.estimates)["auroc"].value for e in result.endpoints]
    assert aurocs[:2] == pytest.approx(per_finding) and aurocs[2] is None
    macro = _named(result.estimates)["auroc"]
    assert macro.value == pytest.approx(np.mean(per_finding)) and macro.ci_low < macro.value < macro.ci_high
    assert summary_auroc(frame, "multilabel", FINDINGS, n_boot=50).value == pytest.approx(macro.value)
    assert result.confusion == [] and result.operating_point is None and result.classes == FINDINGS
    assert [e.role for e in result.endpoints] == ["finding"] * 3 and not any(e.is_decision for e in result.endpoints)
    assert [e.n_positive for e in result.endpoints] == [int(findings[:, 0].sum()), int(findings[:, 1].sum()), 0]


def test_a_finding_without_positives_out_of_fold_gets_no_silent_threshold():
    findings, probabilities = _multilabel(40, seed=7)
    findings[:, 1] = 0
    with pytest.raises(ConfigError, match="no positive scan for finding nodule"):
        choose_points(
            _frame(probabilities, FINDINGS, findings=findings), "multilabel", FINDINGS, "youden", by_fold=False
        )


def test_youden_by_fold_is_used_for_cuts_when_asked():
    targets, probabilities = _ordinal(80, seed=8)
    frame = _frame(probabilities, GRADES, targets=targets)
    points = choose_points(frame, "ordinal", GRADES, "youden", by_fold=True)
    assert {p.pooling for p in points.values()} == {"fold_median"}
    assert choose_points(frame, "multiclass", GRADES, "youden", by_fold=False) == {}  # the argmax decides


def test_failure_cases_of_the_decision_cut_are_its_most_confident_errors():
    probabilities = np.array(
        [[0.1, 0.1, 0.4, 0.4], [0.5, 0.3, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2], [0.7, 0.2, 0.05, 0.05], [0.3, 0.3, 0.2, 0.2]]
    )
    targets = np.array([0, 3, 1, 2, 0])  # P(grade >= 2): .8, .2, .4, .1, .4
    frame = _frame(probabilities, GRADES, targets=targets)
    points = {"ge_2": OperatingPoint(rule="youden", threshold=0.35, chosen_on="oof")}
    decision = decision_endpoint("ordinal", GRADES, None, "2")
    chosen = failure_candidates(frame, "ordinal", GRADES, count=1, points=points, decision=decision)
    assert [(c.kind, c.row, c.endpoint, c.output) for c in chosen] == [
        ("false_positive", 0, "grade >= 2", 1),  # grade 0 scored .8 (above .4 of rows 2 and 4)
        ("false_negative", 3, "grade >= 2", 1),  # grade 2 scored .1 (below .2 of row 1); logit of cut 2 is index 1
    ]
    assert chosen[0].probability == pytest.approx(0.8)


def test_failure_cases_of_findings_are_capped_in_total_per_kind():
    probabilities = np.array([[0.9, 0.15, 0.5], [0.2, 0.95, 0.5], [0.1, 0.6, 0.5], [0.3, 0.05, 0.5]])
    findings = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    points = {name: OperatingPoint(rule="youden", threshold=0.5, chosen_on="oof") for name in FINDINGS[:2]}
    frame = _frame(probabilities, FINDINGS, findings=findings)
    chosen = failure_candidates(frame, "multilabel", FINDINGS, count=2, points=points)
    assert [(c.kind, c.row, c.endpoint, c.output) for c in chosen] == [
        ("false_positive", 1, "finding nodule", 1),  # .95
        ("false_positive", 0, "finding effusion", 0),  # .9 (row 2's nodule .6 is the third: left out)
        ("false_negative", 3, "finding nodule", 1),  # .05
        ("false_negative", 2, "finding effusion", 0),  # .1 (row 0's nodule .15 is the third: left out)
    ]


def test_failure_cases_of_a_multiclass_task_are_the_missed_true_classes():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.45, 0.05], [0.1, 0.8, 0.1]])
    targets = np.array([0, 0, 1, 2])  # rows 1, 2, 3 are wrong; true-class probabilities .2, .45, .1
    frame = _frame(probabilities, ["a", "b", "c"], targets=targets)
    chosen = failure_candidates(frame, "multiclass", ["a", "b", "c"], count=2)
    assert [(c.kind, c.row, c.endpoint, c.output) for c in chosen] == [
        ("false_negative", 3, "class c (vs rest)", 2),
        ("false_negative", 1, "class a (vs rest)", 0),
    ]


def test_describe_prints_each_kinds_headline():
    targets, probabilities = _ordinal(40, seed=9)
    frame = _frame(probabilities, GRADES, targets=targets)
    points = choose_points(frame, "ordinal", GRADES, "youden", by_fold=False)
    ordinal = task_evaluation("oof", frame, "ordinal", GRADES, points=points, decision="ge_2", n_boot=50)
    findings, scores = _multilabel(40, seed=10)
    multilabel = task_evaluation("test", _frame(scores, FINDINGS, findings=findings), "multilabel", FINDINGS, n_boot=50)
    lines = [_describe(ordinal), _describe(multilabel)]
    assert "macro AUROC" in lines[0] and "QWK" in lines[0] and "grade >= 2: sensitivity" in lines[0]
    assert "grade >= 2: specificity" in lines[0]
    assert all(f"finding {name} AUROC" in lines[1] for name in FINDINGS)


def _describe(evaluation: Evaluation) -> str:
    metrics = Metrics(artifact_manifest_hash="0" * 64, model_id="m", model_version="1", evaluations=[evaluation])
    return EvaluationResult(out=None, metrics=metrics, files={}).describe().splitlines()[1]  # type: ignore[arg-type]


def test_endpoints_cover_each_kind():
    assert [e.id for e in endpoints("multilabel", FINDINGS)] == FINDINGS
    assert [e.index for e in endpoints("ordinal", GRADES)] == [1, 2, 3]
