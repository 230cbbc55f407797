"""Each binary decision a task supports (contracts/task.py endpoints), measured as a binary task of its own.

Why one path for all of them: a grade cut "grade >= 2", a finding "effusion" and a class "vs the rest" are each a
yes/no question with a probability, and a clinician reads them exactly as a binary model's result: discrimination,
calibration, subgroups and, where the endpoint is a decision, sensitivity and specificity at an operating point that
was chosen on the out-of-fold predictions by the declared rule and then frozen for the test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtl.contracts.evaluation import EndpointResult, Estimate, OperatingPoint
from medtl.contracts.task import Endpoint, TaskKind, endpoints
from medtl.errors import ConfigError
from medtl.evaluation.calibration import calibration
from medtl.evaluation.metrics import auprc_ci, auroc_ci, threshold_metrics
from medtl.evaluation.operating_point import choose_threshold, choose_threshold_by_fold
from medtl.evaluation.subgroups import subgroup_results

SUBGROUP_BOOT = 1000  # as for a binary task's subgroups


def task_arrays(frame: pd.DataFrame, kind: TaskKind, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (N, K) class or finding probabilities (p_<name>) and the truth: class indices (`target`), or for
    multi-label the (N, K) 0/1 finding matrix (y_<finding>), as training's prediction frames carry them."""
    probabilities = frame[[f"p_{name}" for name in classes]].to_numpy(dtype=float)
    if kind == "multilabel":
        return probabilities, frame[[f"y_{name}" for name in classes]].to_numpy(dtype=int)
    return probabilities, frame["target"].to_numpy(dtype=int)


def endpoint_scores(endpoint: Endpoint, probabilities: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 truth, probability) of one endpoint; a cut's summed class probabilities are kept inside [0, 1]."""
    return endpoint.truth(truth), np.clip(endpoint.probability(probabilities), 0.0, 1.0)


def has_operating_point(kind: TaskKind) -> bool:
    """Grade cuts and findings are decisions of their own; a multiclass task decides by its most probable class."""
    return kind in ("ordinal", "multilabel")


def choose_points(
    frame: pd.DataFrame, kind: TaskKind, classes: list[str], rule: str, *, by_fold: bool
) -> dict[str, OperatingPoint]:
    """One operating point per cut or finding, by the declared rule on these out-of-fold predictions (per fold and
    the median, as for a binary task, when `by_fold`)."""
    if not has_operating_point(kind):
        return {}
    probabilities, truth = task_arrays(frame, kind, classes)
    points = {}
    for endpoint in endpoints(kind, classes):
        targets, scores = endpoint_scores(endpoint, probabilities, truth)
        if targets.min() == targets.max():
            raise ConfigError(
                f"the out-of-fold predictions hold no {'positive' if targets.max() == 0 else 'negative'} scan for "
                f"{endpoint.display}: no operating point can be chosen for it",
                fix="give the training data scans on both sides of every cut or finding (or drop that finding from "
                "task.classes) and train again",
            )
        if by_fold:
            points[endpoint.id] = choose_threshold_by_fold(targets, scores, frame["fold"].to_numpy(), rule)
        else:
            points[endpoint.id] = choose_threshold(targets, scores, rule)
    return points


def endpoint_result(
    endpoint: Endpoint,
    frame: pd.DataFrame,
    probabilities: np.ndarray,
    truth: np.ndarray,
    point: OperatingPoint | None,
    *,
    is_decision: bool,
    n_boot: int,
) -> EndpointResult:
    """AUROC, AUPRC, calibration and subgroups; with an operating point also sensitivity, specificity, PPV, NPV,
    balanced accuracy and the 2x2 confusion (rows truth neg/pos, columns predicted neg/pos)."""
    targets, scores = endpoint_scores(endpoint, probabilities, truth)
    patients = frame["patient_id"].to_numpy()
    n_patients = int(frame["patient_id"].nunique())
    positive_patients = int(frame.loc[targets == 1, "patient_id"].nunique())
    estimates: list[Estimate] = [
        auroc_ci(targets, scores, patients, n_boot=n_boot).estimate("auroc", n=n_patients),
        auprc_ci(targets, scores, patients, n_boot=n_boot).estimate("auprc", n=int(targets.sum())),
    ]
    confusion: list[list[int]] = []
    threshold = point.threshold if point is not None else None
    if threshold is not None:
        estimates += threshold_metrics(targets, scores, threshold, patients, n_boot=n_boot)
        predicted = (scores >= threshold).astype(int)
        confusion = [[int(((targets == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]
    scored = frame.assign(endpoint_score=scores, endpoint_truth=targets)
    return EndpointResult(
        endpoint=endpoint.id,
        display=endpoint.display,
        role=endpoint.role,
        is_decision=is_decision,
        n_patients=n_patients,
        n_positive=positive_patients,
        prevalence=float(targets.mean()) if len(targets) else None,
        operating_point=point,
        estimates=estimates,
        confusion=confusion,
        calibration=calibration(targets, scores) if len(targets) else None,
        subgroups=subgroup_results(
            scored,
            score="endpoint_score",
            target="endpoint_truth",
            threshold=threshold,
            n_boot=min(n_boot, SUBGROUP_BOOT),
        ),
    )
