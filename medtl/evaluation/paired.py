"""Paired statistics for two models scored on the same test scans: AUROC and decision differences with CIs.

Why a paired patient bootstrap is the primary method: both models are measured on the same patients, so their
errors are correlated and the difference is much better determined than either AUROC alone; resampling patients
(each keeps all of its scans) keeps that pairing and the clustering of several scans per patient, uses the same
resamples as every other interval medtl reports (metrics.bootstrap, same seed), and applies unchanged to every
statistic compared here (macro AUROC, sensitivity, specificity, accuracy). DeLong's paired test is reported beside
it for single-endpoint tasks as a closed-form cross-check: it treats scans as independent, so it agrees with the
bootstrap when each patient has one scan and is too narrow when patients have several.

Differences are always challenger minus champion: a positive difference favours the challenger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binomtest, rankdata

from medtl.contracts.task import TaskKind, decision_endpoint, endpoints
from medtl.evaluation.metrics import Z95, Interval, patient_groups, percentile_interval, resampled_multiplicities
from medtl.ranking import RankedScores, column_aurocs, mean_of_defined

Verdict = Literal["superior", "non_inferior", "inconclusive", "inferior"]
# (probabilities (N, K), multiplicities (m, N): how often each resample holds each scan) -> m values, NaN undefined
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DeLong:
    """DeLong, DeLong & Clarke-Pearson (1988) paired test, with Sun & Xu's (2014) midrank computation."""

    auc_a: float
    auc_b: float
    difference: float  # b - a
    se: float
    low: float
    high: float
    p_value: float | None  # None when the difference has no variance (identical rankings)


def _midrank_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and its structural components: V10 per positive (the share of negatives it outranks) and V01 per
    negative (the share of positives that outrank it), ties counted one half."""
    m, n = len(positives), len(negatives)
    within_x, within_y = rankdata(positives), rankdata(negatives)
    combined = rankdata(np.concatenate([positives, negatives]))
    v10 = (combined[:m] - within_x) / n
    v01 = 1.0 - (combined[m:] - within_y) / m
    auc = float((combined[:m].sum() - m * (m + 1) / 2) / (m * n))
    return auc, v10, v01


def delong_paired(targets: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLong | None:
    """None when the scans hold only one class (no AUROC), or fewer than two of either (no variance)."""
    targets = np.asarray(targets).astype(bool)
    if targets.sum() < 2 or (~targets).sum() < 2:
        return None
    parts = [
        _midrank_components(np.asarray(s, float)[targets], np.asarray(s, float)[~targets]) for s in (scores_a, scores_b)
    ]
    aucs = [p[0] for p in parts]
    v10 = np.vstack([p[1] for p in parts])
    v01 = np.vstack([p[2] for p in parts])
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    se = float(np.sqrt(max(variance, 0.0)))
    difference = aucs[1] - aucs[0]
    p_value = None
    if se > 1e-12:
        from scipy.stats import norm

        p_value = float(2 * norm.sf(abs(difference) / se))
    return DeLong(aucs[0], aucs[1], difference, se, difference - Z95 * se, difference + Z95 * se, p_value)


def summary_auroc_statistic(
    kind: TaskKind, classes: list[str], positive: str | None, cut: str | None, truth: np.ndarray
) -> Statistic:
    """The task's one discrimination figure: the decision endpoint's AUROC (binary: the positive class; ordinal: the
    decision cut), the macro one-vs-rest AUROC (multiclass) or the mean of the findings' AUROCs (multilabel)."""
    decision = decision_endpoint(kind, classes, positive, cut)
    if decision is not None:
        targets = decision.truth(truth)

        def single(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
            scores = np.clip(decision.probability(probabilities), 0.0, 1.0)
            return RankedScores(targets, scores).auroc(weights)

        return single
    if kind == "multiclass":
        one_vs_rest = truth[:, None] == np.arange(len(classes))

        def macro(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return column_aurocs(one_vs_rest, probabilities, weights).mean(axis=0)  # NaN unless every class

        return macro

    def findings(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return mean_of_defined(column_aurocs(truth, probabilities, weights))

    return findings


def _shares(hits: np.ndarray, of: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample, the weighted share of the `of` scans that are `hits` (columns: one share each); NaN where a
    resample holds none of them."""
    numerator, denominator = weights @ (hits & of).astype(float), weights @ of.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def decision_statistics(
    kind: TaskKind,
    classes: list[str],
    positive: str | None,
    cut: str | None,
    truth: np.ndarray,
    thresholds: dict[str, float],
) -> dict[str, Statistic]:
    """Named statistics of the decisions one model makes at its own thresholds (endpoint id -> threshold, as
    ApprovalStatus.thresholds gives them): sensitivity and specificity of the decision endpoint (binary, ordinal),
    their means over findings (multilabel), accuracy and balanced accuracy of the most probable class (multiclass)."""
    if kind == "multiclass":
        of_class = truth[:, None] == np.arange(len(classes))

        def accuracy(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
            right = probabilities.argmax(axis=1) == truth
            return _shares(right, np.ones_like(right), weights)

        def balanced(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
            right = (probabilities.argmax(axis=1) == truth)[:, None]
            return mean_of_defined(_shares(right, of_class, weights).T)  # the recall of each class present

        return {"accuracy": accuracy, "balanced_accuracy": balanced}
    decision = decision_endpoint(kind, classes, positive, cut)
    chosen = [decision] if decision is not None else endpoints(kind, classes)
    truths = np.stack([endpoint.truth(truth).astype(bool) for endpoint in chosen], axis=1)

    def rate(which: Literal["sensitivity", "specificity"]) -> Statistic:
        def statistic(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
            flagged = np.stack(
                [np.clip(e.probability(probabilities), 0.0, 1.0) >= thresholds[e.id] for e in chosen], axis=1
            )
            wanted = truths if which == "sensitivity" else ~truths
            return mean_of_defined(_shares(flagged == (which == "sensitivity"), wanted, weights).T)

        return statistic

    return {"sensitivity": rate("sensitivity"), "specificity": rate("specificity")}


@dataclass(frozen=True)
class PairedInterval:
    champion: Interval
    challenger: Interval
    difference: Interval  # challenger - champion


def paired_interval(
    statistic_a: Statistic,
    statistic_b: Statistic,
    probabilities_a: np.ndarray,
    probabilities_b: np.ndarray,
    patients: np.ndarray,
    *,
    n_boot: int,
    seed: int = 0,
    level: float = 0.95,
) -> PairedInterval:
    """Each model's value and the difference, with percentile CIs from one set of patient resamples (drawn as
    metrics.bootstrap draws them, so each model's interval equals its own bootstrap's for the same seed); a resample
    where either statistic is undefined is left out of all three. Each resample is computed from how often it holds
    each scan (metrics.resampled_multiplicities), a block of resamples per call."""
    n = len(patients)
    everything = np.ones((1, n))
    a, b = _value(statistic_a(probabilities_a, everything)), _value(statistic_b(probabilities_b, everything))
    if a is None or b is None:
        undefined = Interval(None, None, None, 0, "undefined")
        return PairedInterval(
            Interval(a, None, None, 0, "undefined") if a is not None else undefined,
            Interval(b, None, None, 0, "undefined") if b is not None else undefined,
            undefined,
        )
    n_groups, inverse = patient_groups(patients, n)
    blocks = []
    for drawn in resampled_multiplicities(n_groups, n_boot, seed, width=n):
        weights = drawn[:, inverse]
        values = np.stack([statistic_a(probabilities_a, weights), statistic_b(probabilities_b, weights)], axis=1)
        blocks.append(values[~np.isnan(values).any(axis=1)])
    unit = "patients" if n_groups < n else "images"
    method = f"paired percentile bootstrap over {unit} ({n_boot})"

    def interval(value: float, values: np.ndarray) -> Interval:
        return percentile_interval(value, values, level=level, method=method)

    pairs = np.concatenate(blocks)
    return PairedInterval(
        champion=interval(a, pairs[:, 0]),
        challenger=interval(b, pairs[:, 1]),
        difference=interval(b - a, pairs[:, 1] - pairs[:, 0]),
    )


def _value(values: np.ndarray) -> float | None:
    return None if np.isnan(values[0]) else float(values[0])


def mcnemar_p(champion_only_correct: int, challenger_only_correct: int) -> float | None:
    """Exact McNemar test on the discordant scans (a binomial test of one side against one half)."""
    discordant = champion_only_correct + challenger_only_correct
    return float(binomtest(challenger_only_correct, discordant, 0.5).pvalue) if discordant else None


def verdict(low: float | None, high: float | None, margin: float) -> Verdict:
    """Non-inferiority of the challenger against the margin declared before the run, from the CI of the difference
    (challenger - champion): superior when the whole CI is above 0, non-inferior when it is above -margin, inferior
    when it is wholly below -margin, otherwise inconclusive (the data cannot tell; not a reason to promote)."""
    if low is None or high is None:
        return "inconclusive"
    if low > 0:
        return "superior"
    if low > -margin:
        return "non_inferior"
    if high < -margin:
        return "inferior"
    return "inconclusive"


def is_proposed(result: Verdict) -> bool:
    return result in ("superior", "non_inferior")
