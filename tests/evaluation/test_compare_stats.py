"""Paired champion/challenger statistics on prediction frames built directly (no model, no images)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtl.contracts.artifact import TaskSpec
from medtl.contracts.comparison import ComparedArtifact
from medtl.errors import ConfigError
from medtl.evaluation.compare import _shared_task, measure
from medtl.evaluation.paired import delong_paired, verdict

HASH_A, HASH_B, TEST_HASH = "a" * 64, "b" * 64, "c" * 64
BINARY = TaskSpec(kind="binary", classes=["neg", "pos"], positive_class="pos")


def _artifact(digest: str, thresholds: dict[str, float]) -> ComparedArtifact:
    return ComparedArtifact(
        artifact_manifest_hash=digest, model_id="m", model_version="1", trusted=True, approval="approved",
        thresholds=thresholds, thresholds_approved=True,
    )  # fmt: skip


def _binary_frame(y: np.ndarray, logits: np.ndarray, scans_per_patient: int = 1) -> pd.DataFrame:
    p = 1 / (1 + np.exp(-logits))
    return pd.DataFrame(
        {
            "scan_id": [f"S-{i:016x}" for i in range(len(y))],
            "patient_id": [f"P-{i // scans_per_patient:016x}" for i in range(len(y))],
            "p_neg": 1 - p,
            "p_pos": p,
            "y": y,
        }
    )


def _cohort(n: int = 240, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    return y, rng.normal(size=n)


def _measure(frame_a: pd.DataFrame, frame_b: pd.DataFrame, margin: float = 0.02, **kwargs: object):
    return measure(
        frame_a, frame_b, task=BINARY, champion=_artifact(HASH_A, {"pos": 0.5}),
        challenger=_artifact(HASH_B, {"pos": 0.5}), test_manifest_hash=TEST_HASH, margin=margin,
        decision_margin=kwargs.pop("decision_margin", None), n_boot=300, **kwargs,
    )  # fmt: skip


def test_a_model_compared_with_itself_differs_by_zero_and_is_non_inferior():
    y, noise = _cohort()
    frame = _binary_frame(y, 3 * (y - 0.5) + noise)
    result = _measure(frame, frame.copy())
    d = result.auroc.difference
    assert d.value == 0.0 and d.ci_low <= 0.0 <= d.ci_high
    assert result.auroc.champion.value == result.auroc.challenger.value > 0.8
    assert result.verdict == "non_inferior" and result.proposed
    assert all(x.difference.value == 0.0 for x in result.decisions)
    assert result.delong is not None and result.delong.difference == 0.0 and result.delong.p_value is None
    assert result.agreement.champion_only_correct == result.agreement.challenger_only_correct == 0
    assert result.margin == 0.02 and result.n_patients == len(y)


def test_a_challenger_worse_by_a_planted_margin_is_not_proposed():
    y, noise = _cohort()
    champion = _binary_frame(y, 3 * (y - 0.5) + noise)
    challenger = _binary_frame(y, 0.6 * (y - 0.5) + noise)  # the same noise, a weaker signal: clearly worse
    result = _measure(champion, challenger)
    assert result.auroc.difference.value < -0.05
    assert result.auroc.difference.ci_high < -0.02
    assert result.verdict == "inferior" and not result.proposed
    assert result.delong.difference == pytest.approx(result.auroc.difference.value)
    assert result.delong.ci_high < 0 and result.delong.p_value < 0.05


def test_a_small_loss_inside_the_ci_is_inconclusive_and_a_clear_gain_superior():
    y, noise = _cohort(n=60)
    champion = _binary_frame(y, 1.0 * (y - 0.5) + noise)
    rng = np.random.default_rng(9)
    slightly_worse = _binary_frame(y, 1.0 * (y - 0.5) + noise + rng.normal(scale=0.4, size=len(y)))
    assert _measure(champion, slightly_worse).verdict in ("inconclusive", "inferior")
    better = _binary_frame(y, 6 * (y - 0.5) + noise)
    result = _measure(champion, better)
    assert result.verdict == "superior" and result.proposed


def test_a_declared_decision_margin_judges_sensitivity_and_specificity():
    y, noise = _cohort()
    frame = _binary_frame(y, 3 * (y - 0.5) + noise)
    shifted = frame.assign(p_neg=1.0, p_pos=0.0)
    result = _measure(frame, shifted, decision_margin=0.05)  # the challenger never says positive
    sensitivity = next(d for d in result.decisions if d.name == "sensitivity")
    assert sensitivity.challenger.value == 0.0 and sensitivity.verdict == "inferior"
    assert not result.proposed


def test_patients_with_several_scans_are_resampled_whole():
    y, noise = _cohort(n=240)
    frame = _binary_frame(np.repeat(y[:80], 3), np.repeat(3 * (y[:80] - 0.5) + noise[:80], 3), scans_per_patient=3)
    result = _measure(frame, frame.copy())
    assert result.n_patients == 80 and result.n_scans == 240


def test_delong_matches_a_hand_computed_example():
    # positives score A (0.9, 0.6), B (0.8, 0.5); negatives A (0.7, 0.2), B (0.6, 0.7):
    # AUROC A = 3/4, B = 2/4. Components V10 A (1, .5), B (1, 0); V01 A (.5, 1), B (.5, .5).
    # S10 = [[.125, .25], [.25, .5]], S01 = [[.125, 0], [0, 0]]; S = S10/2 + S01/2 = [[.125, .125], [.125, .25]]
    # var(B - A) = .125 + .25 - 2 * .125 = .125; z = -.25 / sqrt(.125); p = 2 * (1 - Phi(.7071)) = .4795
    targets = np.array([1, 1, 0, 0])
    result = delong_paired(targets, np.array([0.9, 0.6, 0.7, 0.2]), np.array([0.8, 0.5, 0.6, 0.7]))
    assert (result.auc_a, result.auc_b, result.difference) == (0.75, 0.5, -0.25)
    assert result.se == pytest.approx(np.sqrt(0.125))
    assert result.p_value == pytest.approx(0.4795, abs=1e-4)
    assert result.low == pytest.approx(-0.25 - 1.959964 * np.sqrt(0.125), abs=1e-6)


def test_delong_agrees_with_the_bootstrap_on_one_scan_per_patient():
    y, noise = _cohort(n=300, seed=11)
    rng = np.random.default_rng(4)
    champion = _binary_frame(y, 2 * (y - 0.5) + noise)
    challenger = _binary_frame(y, 2 * (y - 0.5) + noise + rng.normal(scale=0.7, size=len(y)))
    result = _measure(champion, challenger)
    width_delong = result.delong.ci_high - result.delong.ci_low
    width_boot = result.auroc.difference.ci_high - result.auroc.difference.ci_low
    assert width_boot == pytest.approx(width_delong, rel=0.35)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 0.05, "superior"), (-0.01, 0.03, "non_inferior"), (-0.05, 0.01, "inconclusive"),
     (-0.09, -0.03, "inferior"), (None, None, "inconclusive")],
)  # fmt: skip
def test_verdict_reads_the_ci_against_the_margin(low, high, expected):
    assert verdict(low, high, 0.02) == expected


def test_a_multiclass_self_comparison_uses_macro_auroc_and_accuracy():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 3, size=150)
    logits = rng.normal(size=(150, 3)) + 2 * np.eye(3)[target]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = [f"{i:016x}" for i in range(150)]
    frame = pd.DataFrame({"scan_id": ["S-" + i for i in ids], "patient_id": ["P-" + i for i in ids],
                          "target": target, **{f"p_{c}": p[:, k] for k, c in enumerate("abc")}})  # fmt: skip
    task = TaskSpec(kind="multiclass", classes=["a", "b", "c"])
    result = measure(
        frame, frame.copy(), task=task, champion=_artifact(HASH_A, {}), challenger=_artifact(HASH_B, {}),
        test_manifest_hash=TEST_HASH, margin=0.02, decision_margin=None, n_boot=100,
    )  # fmt: skip
    assert result.auroc.scope.startswith("macro") and result.auroc.difference.value == 0.0
    assert [d.name for d in result.decisions] == ["accuracy", "balanced_accuracy"]
    assert result.delong is None and result.proposed


def test_artifacts_of_different_tasks_are_refused():
    with pytest.raises(ConfigError, match="different questions"):
        _shared_task(BINARY, TaskSpec(kind="binary", classes=["neg", "pos"], positive_class="neg"))
    with pytest.raises(ConfigError, match="different questions"):
        _shared_task(BINARY, TaskSpec(kind="multiclass", classes=["neg", "pos", "other"]))
    assert _shared_task(BINARY, BINARY.model_copy()) == BINARY


def test_the_fast_auroc_equals_sklearns_and_the_paired_draws_equal_the_reports_bootstrap():
    from sklearn.metrics import roc_auc_score

    from medtl.evaluation.metrics import auroc_ci
    from medtl.evaluation.paired import paired_interval, summary_auroc_statistic
    from medtl.ranking import fast_auroc

    rng = np.random.default_rng(5)
    y = (rng.random(90) < 0.3).astype(int)
    scores = np.round(rng.random(90), 1)  # many ties
    assert fast_auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert fast_auroc(np.zeros(5), np.arange(5)) is None
    patients = np.repeat(np.arange(30), 3)
    frame = _binary_frame(y, scores)
    probabilities = frame[["p_neg", "p_pos"]].to_numpy()
    statistic = summary_auroc_statistic("binary", ["neg", "pos"], "pos", None, np.where(y == 1, 1, 0))
    paired = paired_interval(statistic, statistic, probabilities, probabilities, patients, n_boot=200, seed=4)
    alone = auroc_ci(y, probabilities[:, 1], patients, n_boot=200, seed=4)
    assert (paired.champion.low, paired.champion.high) == pytest.approx((alone.low, alone.high))
    assert paired.difference.value == paired.difference.low == paired.difference.high == 0.0


def _by_rows(kind: str, classes: list[str], truth: np.ndarray, thresholds: dict[str, float]):
    """The statistics as first written: computed on a resample's rows (each scan repeated as often as drawn)."""
    from medtl.contracts.task import decision_endpoint, endpoints
    from medtl.ranking import fast_auroc, macro_auroc, mean_finding_auroc

    decision = decision_endpoint(kind, classes, "pos" if kind == "binary" else None, None)
    chosen = [decision] if decision is not None else endpoints(kind, classes)

    def auroc(p, rows):
        if decision is not None:
            return fast_auroc(decision.truth(truth[rows]), np.clip(decision.probability(p[rows]), 0.0, 1.0))
        return macro_auroc(truth[rows], p[rows]) if kind == "multiclass" else mean_finding_auroc(truth[rows], p[rows])

    def rate(p, rows, sensitivity):
        values = []
        for endpoint in chosen:
            y = endpoint.truth(truth[rows]).astype(bool)
            flagged = np.clip(endpoint.probability(p[rows]), 0.0, 1.0) >= thresholds[endpoint.id]
            wanted = y if sensitivity else ~y
            if wanted.any():
                values.append(float((flagged[wanted] == sensitivity).mean()))
        return float(np.mean(values)) if values else None

    def balanced(p, rows):
        y, predicted = truth[rows], p[rows].argmax(axis=1)
        recalls = [(predicted[y == k] == k).mean() for k in range(len(classes)) if (y == k).any()]
        return float(np.mean(recalls)) if recalls else None

    if kind == "multiclass":
        named = {"accuracy": lambda p, rows: float((p[rows].argmax(axis=1) == truth[rows]).mean()),
                 "balanced_accuracy": balanced}  # fmt: skip
    else:
        named = {
            "sensitivity": lambda p, rows: rate(p, rows, True),
            "specificity": lambda p, rows: rate(p, rows, False),
        }
    return auroc, named


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_each_resamples_statistics_from_multiplicities_equal_those_of_its_rows(kind):
    """Every paired statistic, computed from how often a resample holds each scan, equals the statistic of the
    resample's rows: AUROCs (ties included), macro and mean-over-findings AUROCs, rates, accuracies."""
    from medtl.contracts.task import endpoints
    from medtl.evaluation.paired import decision_statistics, summary_auroc_statistic

    rng = np.random.default_rng({"binary": 0, "multiclass": 1, "multilabel": 2}[kind])
    n, classes = 40, ["neg", "pos"] if kind == "binary" else ["a", "b", "c"]
    probabilities = np.round(rng.dirichlet(np.ones(len(classes)), n), 1)  # rounded: ties
    truth = (
        rng.random((n, len(classes))) < 0.4 if kind == "multilabel"
        else np.asarray([c == "pos" for c in rng.choice(classes, n)]).astype(int) if kind == "binary"
        else rng.integers(0, len(classes), n)
    )  # fmt: skip
    thresholds = {
        e.id: float(rng.uniform(0.2, 0.6)) for e in endpoints(kind, classes, "pos" if kind == "binary" else None)
    }
    positive = "pos" if kind == "binary" else None
    fast = {"auroc": summary_auroc_statistic(kind, classes, positive, None, truth),
            **decision_statistics(kind, classes, positive, None, truth, thresholds)}  # fmt: skip
    auroc, named = _by_rows(kind, classes, truth, thresholds)
    slow = {"auroc": auroc, **named}
    weights = rng.integers(0, 3, (25, n)).astype(float)  # 25 resamples; some scans drawn 0, 1 or 2 times
    weights[0] = 0
    weights[0, :3] = 1  # one resample of three scans: often a class or finding absent
    for name, statistic in fast.items():
        values = statistic(probabilities, weights)
        for resample, value in zip(weights.astype(int), values, strict=True):
            expected = slow[name](probabilities, np.repeat(np.arange(n), resample))
            assert (expected is None and np.isnan(value)) or value == pytest.approx(expected, rel=0, abs=1e-15), name
