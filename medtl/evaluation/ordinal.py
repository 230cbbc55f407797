"""Measures that use the order of grades: quadratic weighted kappa and mean absolute grade error.

Why both: accuracy treats calling a grade-3 lesion grade 2 the same as calling it grade 0, which no grader does.
The quadratic weighted kappa (agreement beyond chance, disagreements weighted by the squared grade distance) is the
figure grading studies report between readers, so a model can be compared with them; the mean absolute grade
error says the same in grade steps a clinician can picture. The predicted grade is the most probable grade.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score

from medtl.contracts.evaluation import Estimate
from medtl.evaluation.metrics import bootstrap


def predicted_grade(probabilities: np.ndarray) -> np.ndarray:
    return np.asarray(probabilities, dtype=float).argmax(axis=1)


def quadratic_weighted_kappa(targets: np.ndarray, predicted: np.ndarray, n_grades: int) -> float | None:
    """None when kappa is undefined (chance agreement is total, e.g. truth and prediction both one grade)."""
    value = cohen_kappa_score(
        np.asarray(targets, dtype=int), np.asarray(predicted, dtype=int), labels=list(range(n_grades)),
        weights="quadratic",
    )  # fmt: skip
    return None if not np.isfinite(value) else float(value)


def mean_absolute_grade_error(targets: np.ndarray, predicted: np.ndarray) -> float:
    """In grade steps: 0.5 means half a grade off on average."""
    return float(np.mean(np.abs(np.asarray(targets, dtype=int) - np.asarray(predicted, dtype=int))))


def ordinal_estimates(
    targets: np.ndarray, probabilities: np.ndarray, patients: np.ndarray, *, n_boot: int
) -> list[Estimate]:
    """quadratic_weighted_kappa and mean_absolute_grade_error with patient-bootstrap intervals."""
    targets = np.asarray(targets, dtype=int)
    predicted = predicted_grade(probabilities)
    n_grades = probabilities.shape[1]
    kappa = bootstrap(
        lambda rows: quadratic_weighted_kappa(targets[rows], predicted[rows], n_grades),
        len(targets),
        patients,
        n_boot=n_boot,
    )
    error = bootstrap(
        lambda rows: mean_absolute_grade_error(targets[rows], predicted[rows]), len(targets), patients, n_boot=n_boot
    )
    return [
        kappa.estimate("quadratic_weighted_kappa", n=len(targets)),
        error.estimate("mean_absolute_grade_error", n=len(targets)),
    ]
