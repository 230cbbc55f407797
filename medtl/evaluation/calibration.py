"""Are the probabilities right, not just well ranked? Reliability bins, Brier score, ECE, calibration slope and
intercept, and optional temperature scaling fitted on out-of-fold predictions only."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from medtl.contracts.evaluation import Calibration, CalibrationBin

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def reliability_bins(targets: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> list[CalibrationBin]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        member = index == b
        count = int(member.sum())
        bins.append(
            CalibrationBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                mean_predicted=float(scores[member].mean()) if count else None,
                observed=float(targets[member].mean()) if count else None,
            )
        )
    return bins


def expected_calibration_error(bins: list[CalibrationBin]) -> float:
    total = sum(b.count for b in bins)
    return float(sum(b.count * abs(b.mean_predicted - b.observed) for b in bins if b.count) / total if total else 0.0)


def slope_intercept(targets: np.ndarray, scores: np.ndarray) -> tuple[float | None, float | None]:
    """Logistic recalibration: outcome ~ a + b * logit(p). Ideal: a = 0, b = 1; b < 1 means overconfident."""
    if targets.min() == targets.max():
        return None, None
    model = LogisticRegression(C=1e12, max_iter=1000)  # effectively unpenalised
    model.fit(logit(scores).reshape(-1, 1), targets)
    return float(model.intercept_[0]), float(model.coef_[0, 0])


def summarise(targets: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> dict[str, float | None]:
    targets, scores = np.asarray(targets).astype(float), np.asarray(scores, dtype=float)
    bins = reliability_bins(targets, scores, n_bins)
    intercept, slope = slope_intercept(targets, scores)
    return {
        "brier": float(np.mean((scores - targets) ** 2)),
        "ece": expected_calibration_error(bins),
        "intercept": intercept,
        "slope": slope,
    }


def fit_temperature(targets: np.ndarray, scores: np.ndarray) -> float:
    """The temperature T that minimises the log loss of sigmoid(logit(p) / T) on these (out-of-fold) predictions."""
    z, y = logit(scores), np.asarray(targets, dtype=float)

    def loss(log_t: float) -> float:
        p = 1 / (1 + np.exp(-z / np.exp(log_t)))
        p = np.clip(p, _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    return float(np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded").x))


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    return 1 / (1 + np.exp(-logit(scores) / temperature))


def calibration(
    targets: np.ndarray, scores: np.ndarray, *, temperature: float | None = None, n_bins: int = 10
) -> Calibration:
    """Calibration of these predictions; with a temperature (fitted elsewhere, on OOF), also after scaling."""
    targets, scores = np.asarray(targets).astype(float), np.asarray(scores, dtype=float)
    before = summarise(targets, scores, n_bins)
    after = summarise(targets, apply_temperature(scores, temperature), n_bins) if temperature else None
    return Calibration(
        brier=before["brier"],
        ece=before["ece"],
        intercept=before["intercept"],
        slope=before["slope"],
        bins=reliability_bins(targets, scores, n_bins),
        temperature=temperature,
        after_scaling=after,
    )
