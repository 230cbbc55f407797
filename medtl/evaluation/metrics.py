"""Discrimination and threshold metrics with honest uncertainty.

Confidence intervals resample patients, not images: several scans of one patient are not independent evidence,
and resampling images makes intervals too narrow. When every patient has exactly one scan the two coincide, and
proportions (sensitivity, specificity, PPV, NPV) then use the Wilson score interval, which behaves well near 0
and 1 and for small counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_curve

from medtl.contracts.evaluation import Estimate
from medtl.ranking import fast_auroc, fast_average_precision, macro_auroc, mean_finding_auroc

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


def _groups(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    groups = np.arange(n) if groups is None else np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    return unique, [np.flatnonzero(inverse == g) for g in range(len(unique))]


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
    unique, members = _groups(groups, n)
    rng = np.random.default_rng(seed)
    single = np.concatenate(members) if len(unique) == n else None  # one row per group: index the draw directly
    estimates = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(unique), size=len(unique))
        rows = single[drawn] if single is not None else np.concatenate([members[g] for g in drawn])
        result = statistic(rows)
        if result is not None:
            estimates.append(result)
    if not estimates:
        return Interval(float(value), None, None, 0, "undefined interval")
    alpha = (1 - level) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha])
    unit = "patients" if len(unique) < n else "images"
    return Interval(
        float(value), float(low), float(high), len(estimates), f"percentile bootstrap over {unit} ({n_boot})"
    )


def auroc_ci(
    targets: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    targets, scores = np.asarray(targets).astype(int), np.asarray(scores, dtype=float)

    def statistic(rows: np.ndarray) -> float | None:
        return fast_auroc(targets[rows], scores[rows])

    result = bootstrap(statistic, len(targets), groups, n_boot=n_boot, seed=seed)
    return result if result.value is not None else Interval(None, None, None, 0, "undefined: one class")


def macro_auroc_ci(frame, classes: list[str], *, n_boot: int = 2000, seed: int = 0) -> Interval:
    """Macro one-vs-rest AUROC of a multiclass prediction frame (columns target, patient_id, p_<class>)."""
    targets = frame["target"].to_numpy().astype(int)
    probabilities = frame[[f"p_{c}" for c in classes]].to_numpy()

    def statistic(rows: np.ndarray) -> float | None:
        return macro_auroc(targets[rows], probabilities[rows])

    return bootstrap(statistic, len(targets), frame["patient_id"].to_numpy(), n_boot=n_boot, seed=seed)


def mean_finding_auroc_ci(
    truth: np.ndarray, probabilities: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    """Macro AUROC of a multi-label prediction: the mean of the findings' AUROCs that are defined (a finding with
    no positive, or no negative, scan in a resample has none and is left out of that resample's mean)."""
    truth, probabilities = np.asarray(truth).astype(int), np.asarray(probabilities, dtype=float)

    def statistic(rows: np.ndarray) -> float | None:
        return mean_finding_auroc(truth[rows], probabilities[rows])

    result = bootstrap(statistic, len(truth), groups, n_boot=n_boot, seed=seed)
    return result if result.value is not None else Interval(None, None, None, 0, "undefined: no finding has both")


def auprc_ci(
    targets: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, *, n_boot: int = 2000, seed: int = 0
) -> Interval:
    targets, scores = np.asarray(targets).astype(int), np.asarray(scores, dtype=float)

    def statistic(rows: np.ndarray) -> float | None:
        return fast_average_precision(targets[rows], scores[rows])

    return bootstrap(statistic, len(targets), groups, n_boot=n_boot, seed=seed)


def threshold_metrics(
    targets: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray | None = None, *, seed: int = 0
) -> list[Estimate]:
    """Sensitivity, specificity, PPV, NPV and balanced accuracy at `threshold` (positive when score >= threshold)."""
    targets = np.asarray(targets).astype(bool)
    predicted = np.asarray(scores, dtype=float) >= threshold
    one_scan_each = groups is None or len(np.unique(groups)) == len(targets)
    counts = {
        "sensitivity": (int((predicted & targets).sum()), int(targets.sum())),
        "specificity": (int((~predicted & ~targets).sum()), int((~targets).sum())),
        "ppv": (int((predicted & targets).sum()), int(predicted.sum())),
        "npv": (int((~predicted & ~targets).sum()), int((~predicted).sum())),
    }
    estimates = []
    for name, (hits, total) in counts.items():
        if one_scan_each:
            value, low, high = wilson(hits, total)
            estimates.append(Estimate(name=name, value=value, ci_low=low, ci_high=high, ci_method="wilson", n=total))
        else:
            statistic = _proportion(name, targets, predicted)
            interval = bootstrap(statistic, len(targets), groups, seed=seed)
            if interval.value is not None and interval.low == interval.high:
                # every resample gives the same 0% or 100%: the bootstrap cannot express the uncertainty of a small
                # count at the boundary, so fall back to a Wilson interval over the patients behind the denominator
                patients = _denominator_patients(name, targets, predicted, np.asarray(groups))
                _, low, high = wilson(round(interval.value * patients), patients)
                interval = Interval(interval.value, low, high, 0, "wilson over patients (bootstrap degenerate)")
            estimates.append(interval.estimate(name, n=total))

    def balanced(rows: np.ndarray) -> float | None:
        y, p = targets[rows], predicted[rows]
        if y.all() or (~y).all():
            return None
        return float(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)

    estimates.append(bootstrap(balanced, len(targets), groups, seed=seed).estimate("balanced_accuracy", n=len(targets)))
    return estimates


def _denominator_patients(name: str, targets: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> int:
    mask = {"sensitivity": targets, "specificity": ~targets, "ppv": predicted, "npv": ~predicted}[name]
    return len(np.unique(groups[mask]))


def _proportion(name: str, targets: np.ndarray, predicted: np.ndarray) -> Callable[[np.ndarray], float | None]:
    def statistic(rows: np.ndarray) -> float | None:
        y, p = targets[rows], predicted[rows]
        numerator, denominator = {
            "sensitivity": ((p & y).sum(), y.sum()),
            "specificity": ((~p & ~y).sum(), (~y).sum()),
            "ppv": ((p & y).sum(), p.sum()),
            "npv": ((~p & ~y).sum(), (~p).sum()),
        }[name]
        return float(numerator / denominator) if denominator else None

    return statistic


def roc_points(targets: np.ndarray, scores: np.ndarray) -> tuple[list[float], list[float]]:
    fpr, tpr, _ = roc_curve(np.asarray(targets).astype(int), np.asarray(scores, dtype=float))
    return [float(v) for v in fpr], [float(v) for v in tpr]
