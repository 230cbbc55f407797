"""Task-level measures of K-class predictions (multiclass and ordinal): accuracy, confusion, multi-class Brier
score and class-wise ECE, each with a patient-bootstrap interval.

Why these two calibration measures: a clinician reads a class probability as "how likely is this class", so every
class's probability must be right, not only the top one. The multi-class Brier score (Brier's original definition:
the squared distance between the probability vector and the one-hot truth, summed over classes, 0 best, 2 worst)
measures all of them at once; the class-wise ECE (the mean over classes of each class's one-vs-rest ECE, in the
same reliability bins the binary report uses) says by how much, on average, a class's stated probability misses
its observed frequency.
"""

from __future__ import annotations

import numpy as np

from medtl.contracts.evaluation import Estimate
from medtl.evaluation.calibration import expected_calibration_error, reliability_bins
from medtl.evaluation.metrics import auroc_ci, bootstrap

N_BINS = 10


def multiclass_brier(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over scans of sum_k (p_k - [y = k])^2."""
    targets, probabilities = np.asarray(targets, dtype=int), np.asarray(probabilities, dtype=float)
    one_hot = np.eye(probabilities.shape[1])[targets]
    return float(np.mean(((probabilities - one_hot) ** 2).sum(axis=1)))


def classwise_ece(targets: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS) -> float:
    """Mean over classes of the ECE of p_k against [y = k]."""
    targets, probabilities = np.asarray(targets, dtype=int), np.asarray(probabilities, dtype=float)
    errors = [
        expected_calibration_error(reliability_bins((targets == k).astype(float), probabilities[:, k], n_bins))
        for k in range(probabilities.shape[1])
    ]
    return float(np.mean(errors))


def confusion_counts(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[list[int]]:
    """Counts; rows = true class, columns = predicted class."""
    return [[int(((targets == t) & (predicted == p)).sum()) for p in range(n_classes)] for t in range(n_classes)]


def class_estimates(
    targets: np.ndarray, probabilities: np.ndarray, patients: np.ndarray, classes: list[str], *, n_boot: int
) -> list[Estimate]:
    """Per-class one-vs-rest AUROC (auroc_<class>), accuracy of the most probable class, multiclass_brier and
    classwise_ece. The macro AUROC is the caller's (metrics.macro_auroc_ci), so the transfer arms share it."""
    targets = np.asarray(targets, dtype=int)
    estimates = []
    for index, name in enumerate(classes):
        interval = auroc_ci(targets == index, probabilities[:, index], patients, n_boot=n_boot)
        estimates.append(interval.estimate(f"auroc_{name}", n=int((targets == index).sum())))
    predicted = probabilities.argmax(axis=1)
    measures = {
        "accuracy": lambda rows: float((predicted[rows] == targets[rows]).mean()),
        "multiclass_brier": lambda rows: multiclass_brier(targets[rows], probabilities[rows]),
        "classwise_ece": lambda rows: classwise_ece(targets[rows], probabilities[rows]),
    }
    for name, statistic in measures.items():
        interval = bootstrap(statistic, len(targets), patients, n_boot=n_boot)
        estimates.append(interval.estimate(name, n=len(targets)))
    return estimates
