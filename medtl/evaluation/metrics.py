"""Discrimination and threshold metrics with honest uncertainty.

Confidence intervals resample patients, not images: several scans of one patient are not independent evidence,
and resampling images makes intervals too narrow. When every patient has exactly one scan the two coincide, and
proportions (sensitivity, specificity, PPV, NPV) then use the Wilson score interval, which behaves well near 0
and 1 and for small counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_curve

from medtl.contracts.evaluation import Estimate
from medtl.ranking import (
    RankedScores,
    column_aurocs,
    fast_auroc,
    fast_average_precision,
    macro_auroc,
    mean_finding_auroc,
    mean_of_defined,
)

Z95 = float(norm.ppf(0.975))


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n_boot: int
    method: str

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "value": self.value,
            "ci_low": self.low,
            "ci_high": self.high,
            "n_boot": self.n_boot,
            "method": self.method,
        }

    def estimate(self, name: str, n: int | None = None) -> Estimate:
        return Estimate(name=name, value=self.value, ci_low=self.low, ci_high=self.high, ci_method=self.method, n=n)


def wilson(successes: int, total: int) -> tuple[float | None, float | None, float | None]:
    """Proportion with its 95% Wilson score interval; None when there is nothing to count."""
    if total == 0:
        return None, None, None
    p = successes / total
    denominator = 1 + Z95**2 / total
    centre = (p + Z95**2 / (2 * total)) / denominator
    half = Z95 * np.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / denominator
    return p, float(max(0.0, centre - half)), float(min(1.0, centre + half))


def patient_groups(groups: np.ndarray | None, n: int) -> tuple[int, np.ndarray]:
    """(number of groups, each row's group number 0..groups-1)."""
    if groups is None:
        return n, np.arange(n)
    unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
    return len(unique), inverse.reshape(-1)


RESAMPLE_BLOCK = 1 << 20  # drawn group numbers held at once (8 MiB), however many resamples and groups


def resampled_groups(n_groups: int, n_boot: int, seed: int, *, width: int = 0) -> Iterator[np.ndarray]:
    """The resamples' drawn groups, a block of rows at a time (one row per resample; `width`: values a caller
    holds per resample, when more than the groups, to size the blocks by).

    numpy's generator continues one stream across calls, so a block holds the very numbers one draw per resample
    would give: results do not depend on the block size, and match those of earlier versions."""
    rng = np.random.default_rng(seed)
    per_block = max(1, RESAMPLE_BLOCK // max(1, n_groups, width))
    for start in range(0, n_boot, per_block):
        yield rng.integers(0, n_groups, size=(min(per_block, n_boot - start), n_groups))


def resampled_multiplicities(n_groups: int, n_boot: int, seed: int, *, width: int = 0) -> Iterator[np.ndarray]:
    """How often each resample drew each group (resamples x groups, as floats), a block at a time: the draws of
    `resampled_groups`, counted."""
    for block in resampled_groups(n_groups, n_boot, seed, width=width):
        offsets = np.arange(len(block))[:, None] * n_groups
        yield np.bincount((block + offsets).ravel(), minlength=block.size).reshape(block.shape).astype(float)


def rows_of_groups(inverse: np.ndarray, n_groups: int) -> Callable[[np.ndarray], np.ndarray]:
    """drawn group numbers -> the rows of those groups, each group's rows in order, the groups in drawn order.

    Vectorised (no Python step per drawn group): a patient-level bootstrap of a test set of thousands of patients
    draws thousands of groups per resample, two thousand times per interval."""
    order = np.argsort(inverse, kind="stable")  # rows grouped, each group's rows in ascending order
    sizes = np.bincount(inverse, minlength=n_groups)
    starts = np.cumsum(sizes) - sizes
    if (sizes == 1).all():
        return lambda drawn: order[drawn]

    def rows(drawn: np.ndarray) -> np.ndarray:
        lengths = sizes[drawn]
        before = np.cumsum(lengths) - lengths  # where each drawn group's rows begin in the resample
        return order[np.repeat(starts[drawn] - before, lengths) + np.arange(lengths.sum())]

    return rows


def percentile_interval(value: float, estimates: np.ndarray, *, level: float, method: str) -> Interval:
    """The percentile interval of the defined resample estimates (in resample order)."""
    if len(estimates) == 0:
        return Interval(float(value), None, None, 0, "undefined interval")
    alpha = (1 - level) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    return Interval(float(value), float(low), float(high), len(estimates), method)


def _interval(value: float, estimates: np.ndarray, *, n_boot: int, level: float, per_patient: bool) -> Interval:
    unit = "patients" if per_patient else "images"
    return percentile_interval(value, estimates, level=level, method=f"percentile bootstrap over {unit} ({n_boot})")


def bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    n: int,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap of `statistic(rows)` over groups (patients); each group keeps all of its rows."""
    value = statistic(np.arange(n))
    if value is None:
        return Interval(None, None, None, 0, "undefined")
    n_groups, inverse = patient_groups(groups, n)
    rows_of = rows_of_groups(inverse, n_groups)
    estimates = []
    for block in resampled_groups(n_groups, n_boot, seed):
        for drawn in block:
            result = statistic(rows_of(drawn))
            if result is not None:
                estimates.append(result)
    return _interval(value, np.asarray(estimates, dtype=float), n_boot=n_boot, level=level, per_patient=n_groups < n)


def multiplicity_bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    value: float | None,
    n: int,
    n_groups: int,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    width: int = 0,
) -> Interval:
    """`bootstrap` for a statistic that can be computed from how often a resample drew each of the `n_groups`
    groups (patient_groups) of `n` rows: `statistic` maps those multiplicities (m resamples x groups) to m values,
    NaN where undefined; `value`: the statistic on all rows. No resample is gathered and no Python call is made per
    resample; the draws are `bootstrap`'s."""
    if value is None or np.isnan(value):
        return Interval(None, None, None, 0, "undefined")
    estimates = []
    for drawn in resampled_multiplicities(n_groups, n_boot, seed, width=width):
        values = statistic(drawn)
        estimates.append(values[~np.isnan(values)])
    return _interval(value, np.concatenate(estimates), n_boot=n_boot, level=level, per_patient=n_groups < n)


def count_bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    counts: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """`bootstrap` for a statistic of summed counts: `counts` holds one row of counts per image (images x k) and
    `statistic` maps sums (m x k) to m values, NaN where undefined. A resample's sums are how often it drew each
    group times the groups' sums: the same numbers as `bootstrap` of the equivalent statistic over rows."""
    counts = np.asarray(counts, dtype=float)  # integer counts: exact in float64, and sums by BLAS
    n = len(counts)
    n_groups, inverse = patient_groups(groups, n)
    per_group = np.stack([np.bincount(inverse, weights=column, minlength=n_groups) for column in counts.T], axis=1)
    value = float(statistic(counts.sum(axis=0, keepdims=True))[0])
    return multiplicity_bootstrap(
        lambda drawn: statistic(drawn @ per_group), value, n, n_groups, n_boot=n_boot, level=level, seed=seed
    )


def auroc_ci(
    targets: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    """AUROC with its percentile bootstrap interval over groups (patients): each resample's AUROC from its images'
    multiplicities (ranking.RankedScores), equal to the AUROC of the gathered resample."""
    targets, scores = np.asarray(targets).astype(bool), np.asarray(scores, dtype=float)
    value = fast_auroc(targets, scores)
    if value is None:
        return Interval(None, None, None, 0, "undefined: one class")
    n_groups, inverse = patient_groups(groups, len(targets))
    ranked = RankedScores(targets, scores)
    return multiplicity_bootstrap(
        lambda drawn: ranked.auroc(drawn[:, inverse]), value, len(targets), n_groups, n_boot=n_boot, seed=seed,
        width=len(targets),
    )  # fmt: skip


def _class_aurocs_ci(
    truth: np.ndarray, probabilities: np.ndarray, groups: np.ndarray | None, value: float | None,
    combine: Callable[[np.ndarray], np.ndarray], *, n_boot: int, seed: int,
) -> Interval:  # fmt: skip
    """Interval of `combine` (classes x m AUROCs -> m values) over each column's one-vs-rest AUROC, every
    resample's from its images' multiplicities (as auroc_ci)."""
    n = len(truth)
    n_groups, inverse = patient_groups(groups, n)

    def statistic(drawn: np.ndarray) -> np.ndarray:
        return combine(column_aurocs(truth, probabilities, drawn[:, inverse]))

    width = n * truth.shape[1]
    return multiplicity_bootstrap(statistic, value, n, n_groups, n_boot=n_boot, seed=seed, width=width)


def macro_auroc_ci(frame, classes: list[str], *, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Macro one-vs-rest AUROC of a multiclass prediction frame (columns target, patient_id, p_<class>); a
    resample without every class has none."""
    targets = frame["target"].to_numpy().astype(int)
    probabilities = frame[[f"p_{c}" for c in classes]].to_numpy().astype(float)
    one_vs_rest = targets[:, None] == np.arange(len(classes))
    value = macro_auroc(targets, probabilities)
    return _class_aurocs_ci(one_vs_rest, probabilities, frame["patient_id"].to_numpy(), value,
                            lambda aurocs: aurocs.mean(axis=0), n_boot=n_boot, seed=seed)  # fmt: skip


def mean_finding_auroc_ci(
    truth: np.ndarray, probabilities: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    """Macro AUROC of a multi-label prediction: the mean of the findings' AUROCs that are defined (a finding with
    no positive, or no negative, scan in a resample has none and is left out of that resample's mean)."""
    truth, probabilities = np.asarray(truth).astype(bool), np.asarray(probabilities, dtype=float)
    value = mean_finding_auroc(truth, probabilities)
    if value is None:
        return Interval(None, None, None, 0, "undefined: no finding has both")

    return _class_aurocs_ci(truth, probabilities, groups, value, mean_of_defined, n_boot=n_boot, seed=seed)


def auprc_ci(
    targets: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    targets, scores = np.asarray(targets).astype(int), np.asarray(scores, dtype=float)

    def statistic(rows: np.ndarray) -> float | None:
        return fast_average_precision(targets[rows], scores[rows])

    return bootstrap(statistic, len(targets), groups, n_boot=n_boot, seed=seed)


# the per-image counts behind every threshold metric, and each metric as a ratio of their sums
_COUNTS = ("true_positive", "positive", "true_negative", "negative", "predicted_positive", "predicted_negative")
_RATIOS = {
    "sensitivity": ("true_positive", "positive"),
    "specificity": ("true_negative", "negative"),
    "ppv": ("true_positive", "predicted_positive"),
    "npv": ("true_negative", "predicted_negative"),
}


def threshold_metrics(
    targets: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[Estimate]:
    """Sensitivity, specificity, PPV, NPV and balanced accuracy at `threshold` (positive when score >= threshold);
    `n_boot` bootstrap resamples (of patients); where each patient has one scan, the four proportions take Wilson
    intervals instead and only balanced accuracy is bootstrapped."""
    targets = np.asarray(targets).astype(bool)
    predicted = np.asarray(scores, dtype=float) >= threshold
    one_scan_each = groups is None or len(np.unique(groups)) == len(targets)
    counts = np.stack(
        [predicted & targets, targets, ~predicted & ~targets, ~targets, predicted, ~predicted], axis=1
    ).astype(float)
    totals = dict(zip(_COUNTS, counts.sum(axis=0).astype(int).tolist(), strict=True))
    estimates = []
    for name, (hits, of) in _RATIOS.items():
        if one_scan_each:
            value, low, high = wilson(totals[hits], totals[of])
            estimates.append(
                Estimate(name=name, value=value, ci_low=low, ci_high=high, ci_method="wilson", n=totals[of])
            )
            continue
        interval = count_bootstrap(_ratio(hits, of), counts, groups, n_boot=n_boot, seed=seed)
        if interval.value is not None and interval.low == interval.high:
            # every resample gives the same 0% or 100%: the bootstrap cannot express the uncertainty of a small
            # count at the boundary, so fall back to a Wilson interval over the patients behind the denominator
            patients = len(np.unique(np.asarray(groups)[counts[:, _COUNTS.index(of)] > 0]))
            _, low, high = wilson(round(interval.value * patients), patients)
            interval = Interval(interval.value, low, high, 0, "wilson over patients (bootstrap degenerate)")
        estimates.append(interval.estimate(name, n=totals[of]))
    balanced = count_bootstrap(_balanced_accuracy, counts, groups, n_boot=n_boot, seed=seed)
    estimates.append(balanced.estimate("balanced_accuracy", n=len(targets)))
    return estimates


def _ratio(hits: str, of: str) -> Callable[[np.ndarray], np.ndarray]:
    numerator, denominator = _COUNTS.index(hits), _COUNTS.index(of)

    def statistic(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[:, denominator] > 0, sums[:, numerator] / sums[:, denominator], np.nan)

    return statistic


def _balanced_accuracy(sums: np.ndarray) -> np.ndarray:
    """Mean of sensitivity and specificity; undefined unless both classes are present."""
    tp, pos, tn, neg = (sums[:, _COUNTS.index(name)] for name in _COUNTS[:4])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), (tp / pos + tn / neg) / 2, np.nan)


def roc_points(targets: np.ndarray, scores: np.ndarray) -> tuple[list[float], list[float]]:
    fpr, tpr, _ = roc_curve(np.asarray(targets).astype(int), np.asarray(scores, dtype=float))
    return [float(v) for v in fpr], [float(v) for v in tpr]
