"""One Evaluation (out-of-fold or locked test) of a multiclass, ordinal or multi-label task.

What each type reports, and why (a binary task's evaluation stays in evaluate.py, unchanged):
- multiclass: macro and per-class one-vs-rest AUROC, accuracy, the K x K confusion, multi-class Brier and class-wise
  ECE; each class vs the rest as an endpoint without an operating point (the most probable class decides).
- ordinal: all of that, plus quadratic weighted kappa and mean absolute grade error; each cut "grade >= k" as an
  endpoint with its own frozen operating point; the declared decision cut is marked, and its operating point is
  repeated as the evaluation's, which is the threshold a reviewer approves.
- multilabel: the macro AUROC over findings; each finding as an endpoint with its own operating point. There is no
  K x K confusion: findings are not exclusive, so each finding's 2x2 stands alone.
"""

from __future__ import annotations

import pandas as pd

from medtl.contracts.evaluation import Estimate, Evaluation, OperatingPoint
from medtl.contracts.task import TaskKind, endpoints
from medtl.evaluation.class_metrics import class_estimates, confusion_counts
from medtl.evaluation.endpoints import endpoint_result, task_arrays
from medtl.evaluation.metrics import macro_auroc_ci, mean_finding_auroc_ci
from medtl.evaluation.ordinal import ordinal_estimates


def summary_auroc(frame: pd.DataFrame, kind: TaskKind, classes: list[str], *, n_boot: int) -> Estimate:
    """The task's one AUROC: macro one-vs-rest over classes (multiclass, ordinal) or the mean over findings."""
    n = int(frame["patient_id"].nunique())
    if kind == "multilabel":
        probabilities, truth = task_arrays(frame, kind, classes)
        interval = mean_finding_auroc_ci(truth, probabilities, frame["patient_id"].to_numpy(), n_boot=n_boot)
        return interval.estimate("auroc", n=n)
    return macro_auroc_ci(frame, classes, n_boot=n_boot).estimate("auroc", n=n)


def task_evaluation(
    name: str,
    frame: pd.DataFrame,
    kind: TaskKind,
    classes: list[str],
    *,
    points: dict[str, OperatingPoint] | None = None,
    decision: str | None = None,
    n_boot: int = 2000,
) -> Evaluation:
    """`points`: the operating points frozen on the out-of-fold predictions, by endpoint id; `decision`: the id of
    the decision endpoint (ordinal)."""
    points = points or {}
    probabilities, truth = task_arrays(frame, kind, classes)
    patients = frame["patient_id"].to_numpy()
    estimates = [summary_auroc(frame, kind, classes, n_boot=n_boot)]
    confusion: list[list[int]] = []
    if kind in ("multiclass", "ordinal"):
        estimates += class_estimates(truth, probabilities, patients, classes, n_boot=n_boot)
        confusion = confusion_counts(truth, probabilities.argmax(axis=1), len(classes))
    if kind == "ordinal":
        estimates += ordinal_estimates(truth, probabilities, patients, n_boot=n_boot)
    results = [
        endpoint_result(
            endpoint,
            frame,
            probabilities,
            truth,
            points.get(endpoint.id),
            is_decision=endpoint.id == decision,
            n_boot=n_boot,
        )
        for endpoint in endpoints(kind, classes)
    ]
    chosen = next((result for result in results if result.is_decision), None)
    return Evaluation(
        evaluated_on=name,  # type: ignore[arg-type]
        task_kind=kind,
        n_patients=int(frame["patient_id"].nunique()),
        n_scans=len(frame),
        prevalence=chosen.prevalence if chosen is not None else None,
        operating_point=chosen.operating_point if chosen is not None else None,
        estimates=estimates,
        classes=list(classes),
        confusion=confusion,
        endpoints=results,
    )
