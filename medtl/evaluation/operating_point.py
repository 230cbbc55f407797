"""Choosing the decision threshold by a declared rule on out-of-fold predictions, before any test data is seen.

A threshold tuned on the test set is an optimistic threshold. The rule is declared up front (default: Youden's J),
applied to the out-of-fold predictions, and the resulting threshold is frozen for the test set, the report and
scoring.

Fold models of one cross-validation can put their scores on different scales (one fold's 0.4 is another's 0.6):
pooled out-of-fold predictions then rank worse than each fold does alone, and a threshold chosen on the pool fits no
model. When training flagged that gap, the rule is applied to each fold's own held-out predictions and the median
of those thresholds is kept: each is a threshold on a real model's scale, and the final model (the mean of the fold
models, or a refit like them) scores on a scale near their middle. This applies to Youden's J, an optimum that
pooling distorts; a declared bound (sensitivity>=X) is a promise, so it stays checked on the pooled predictions the
report shows.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import roc_curve

from medtl.contracts.evaluation import OperatingPoint
from medtl.errors import ConfigError

_BOUND = re.compile(r"^(sensitivity|specificity)\s*>=\s*(0(?:\.\d+)?|1(?:\.0+)?)$")


def parse_rule(rule: str) -> tuple[str, float | None]:
    """`youden` -> ("youden", None); `sensitivity >= 0.95` -> ("sensitivity", 0.95). Checked before any work starts."""
    rule = rule.replace(" ", "").lower()
    if rule == "youden":
        return rule, None
    match = _BOUND.match(rule)
    if match is None:
        raise ConfigError(
            f"unknown operating-point rule {rule!r}",
            fix="use youden, sensitivity>=X or specificity>=X with X between 0 and 1",
        )
    return match.group(1), float(match.group(2))


def choose_threshold(targets: np.ndarray, scores: np.ndarray, rule: str = "youden") -> OperatingPoint:
    """`youden` maximises sensitivity + specificity - 1; `sensitivity>=0.95` keeps the highest threshold that still
    reaches that sensitivity (fewest false positives); `specificity>=0.9` the lowest threshold that keeps that
    specificity (most true positives)."""
    kind, bound = parse_rule(rule)
    targets = np.asarray(targets).astype(int)
    if targets.min() == targets.max():
        raise ConfigError("the out-of-fold predictions hold one class only: no threshold can be chosen")
    fpr, tpr, thresholds = roc_curve(targets, np.asarray(scores, dtype=float))
    thresholds = np.clip(thresholds, 0.0, 1.0)  # roc_curve puts +inf first; a probability threshold stays in [0, 1]
    if bound is None:
        index = int(np.argmax(tpr - fpr))
    elif kind == "sensitivity":
        index = int(np.flatnonzero(tpr >= bound - 1e-12)[0])
    else:
        index = int(np.flatnonzero(1 - fpr >= bound - 1e-12)[-1])
    return OperatingPoint(rule=rule.replace(" ", "").lower(), threshold=float(thresholds[index]), chosen_on="oof")


def choose_threshold_by_fold(
    targets: np.ndarray, scores: np.ndarray, folds: np.ndarray, rule: str = "youden"
) -> OperatingPoint:
    """The median over folds of the threshold `rule` picks on each fold's own predictions (folds with one class are
    skipped; with none left, the pooled threshold)."""
    targets, scores, folds = np.asarray(targets).astype(int), np.asarray(scores, dtype=float), np.asarray(folds)
    per_fold = [
        choose_threshold(targets[folds == fold], scores[folds == fold], rule).threshold
        for fold in np.unique(folds)
        if len(np.unique(targets[folds == fold])) == 2
    ]
    if not per_fold:
        return choose_threshold(targets, scores, rule)
    pooled = choose_threshold(targets, scores, rule)
    return pooled.model_copy(update={"threshold": float(np.median(per_fold)), "pooling": "fold_median"})
