"""Discrimination with honest uncertainty: AUROC with a bootstrap CI that resamples patients, not images.

Several scans of one patient are not independent evidence; resampling images would make the interval too narrow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


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


def auroc_ci(
    targets: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """AUROC and a percentile bootstrap CI over groups (patients); each group keeps all of its scans."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=float)
    groups = np.arange(len(targets)) if groups is None else np.asarray(groups)
    if len(np.unique(targets)) < 2:
        return Interval(None, None, None, 0, "undefined: one class")
    value = float(roc_auc_score(targets, scores))
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(unique), size=len(unique))
        rows = np.concatenate([members[g] for g in chosen])
        if len(np.unique(targets[rows])) == 2:
            estimates.append(roc_auc_score(targets[rows], scores[rows]))
    alpha = (1 - level) / 2
    low, high = np.quantile(estimates, [alpha, 1 - alpha]) if estimates else (None, None)
    unit = "patients" if len(unique) < len(targets) else "images"
    return Interval(value, float(low), float(high), len(estimates), f"percentile bootstrap over {unit} ({n_boot})")
