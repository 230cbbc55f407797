"""Decision-curve analysis and predicted-probability distributions: is acting on the model better than acting on
nobody or on everybody, and how well do the probabilities of the true classes separate?

Why net benefit: AUROC says how well the model ranks, not whether using it helps. A threshold probability t states how
a clinician weighs a missed case against an unnecessary work-up (t = 0.2: one true positive is worth four false
positives); net benefit counts true positives minus false positives weighted by t / (1 - t), per patient examined
(Vickers & Elkin 2006). The model is useful at t when its net benefit exceeds both defaults: treat none (0) and treat
all (prevalence - (1 - prevalence) * t / (1 - t)). Like every other measure here a scan is positive when its
probability is at or above the threshold, and the unit is the scan (the row), as for AUROC and the confusion matrix.

Which decisions get a curve: the binary task's positive class, the ordinal decision cut and every multi-label finding
(each is a yes/no a clinician acts on); a multiclass task decides by its most probable class, so it has none. The
probability distributions are drawn for the same decisions and, for multiclass, for every class against the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtl.contracts.evaluation import DecisionCurve, OperatingPoint
from medtl.contracts.task import Endpoint, TaskKind, endpoints
from medtl.evaluation.endpoints import endpoint_scores, task_arrays
from medtl.reporting.model import HistogramGroup, ProbabilityHistogram

# 0.01 .. 0.99: every threshold a clinician could state; the report draws the whole range and the useful part.
THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(1, 100))
HISTOGRAM_BINS = 20


def net_benefit(targets: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """TP/n - FP/n * t/(1-t) at each threshold t (positive: score >= t); n counts every scan."""
    targets, scores = np.asarray(targets, dtype=int), np.asarray(scores, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    n = len(targets)
    if n == 0:
        return np.full(len(thresholds), np.nan)
    decided = scores[None, :] >= thresholds[:, None]  # (T, N)
    true_positive = (decided & (targets[None, :] == 1)).sum(axis=1)
    false_positive = (decided & (targets[None, :] == 0)).sum(axis=1)
    return true_positive / n - false_positive / n * thresholds / (1.0 - thresholds)


def treat_all(prevalence: float, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating every patient: prevalence - (1 - prevalence) * t / (1 - t)."""
    thresholds = np.asarray(thresholds, dtype=float)
    return prevalence - (1.0 - prevalence) * thresholds / (1.0 - thresholds)


def useful_ranges(thresholds: np.ndarray, model: np.ndarray, everyone: np.ndarray) -> list[tuple[float, float]]:
    """The runs of grid thresholds where the model beats both treat-all and treat-none, as [first, last] pairs."""
    better = model > np.maximum(everyone, 0.0) + 1e-12
    ranges: list[tuple[float, float]] = []
    start = None
    for index, flag in enumerate(better):
        if flag and start is None:
            start = index
        if start is not None and (not flag or index == len(better) - 1):
            end = index if flag else index - 1
            ranges.append((float(thresholds[start]), float(thresholds[end])))
            start = None
    return ranges


def decision_curve(
    targets: np.ndarray,
    scores: np.ndarray,
    *,
    endpoint: str | None = None,
    display: str,
    point: OperatingPoint | None = None,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> DecisionCurve:
    grid = np.asarray(thresholds, dtype=float)
    targets = np.asarray(targets, dtype=int)
    prevalence = float(targets.mean()) if len(targets) else 0.0
    model, everyone = net_benefit(targets, scores, grid), treat_all(prevalence, grid)
    at_point = None
    if point is not None and point.threshold < 1.0:
        at_point = float(net_benefit(targets, scores, np.asarray([point.threshold]))[0])
    return DecisionCurve(
        endpoint=endpoint,
        display=display,
        n=len(targets),
        n_positive=int(targets.sum()),
        prevalence=prevalence,
        thresholds=[float(t) for t in grid],
        net_benefit=[float(v) for v in model],
        treat_all=[float(v) for v in everyone],
        useful_thresholds=[list(r) for r in useful_ranges(grid, model, everyone)],
        operating_threshold=point.threshold if point is not None else None,
        operating_net_benefit=at_point,
    )


def _curve_endpoints(kind: TaskKind, classes: list[str], decision: Endpoint | None) -> list[Endpoint]:
    if kind == "ordinal":
        return [decision] if decision is not None else []
    if kind == "multilabel":
        return endpoints(kind, classes)
    return []


def decision_curves(
    frame: pd.DataFrame,
    kind: TaskKind,
    classes: list[str],
    *,
    positive: str | None,
    decision: Endpoint | None,
    points: dict[str, OperatingPoint],
) -> list[DecisionCurve]:
    """One curve per decision (see the module docstring); a decision without both outcomes among the scans gets
    none, since its net benefit would only restate the prevalence."""
    if kind == "binary":
        targets = frame["y"].to_numpy(dtype=int)
        if len(np.unique(targets)) < 2:
            return []
        point = next(iter(points.values()), None)
        return [decision_curve(targets, frame["probability"].to_numpy(), display=f"class {positive}", point=point)]
    probabilities, truth = task_arrays(frame, kind, classes)
    curves = []
    for endpoint in _curve_endpoints(kind, classes, decision):
        targets, scores = endpoint_scores(endpoint, probabilities, truth)
        if len(np.unique(targets)) == 2:
            curves.append(
                decision_curve(
                    targets, scores, endpoint=endpoint.id, display=endpoint.display, point=points.get(endpoint.id)
                )
            )
    return curves


def histogram(
    scores: np.ndarray, groups: list[tuple[str, np.ndarray]], *, evaluated_on: str, endpoint: str | None, display: str
) -> ProbabilityHistogram:
    """Counts of scans per probability bin for each true group; the last bin includes 1.0."""
    edges = np.round(np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1), 10)  # 0.6 is an edge, not 0.6000000000000001
    scores = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    return ProbabilityHistogram(
        evaluated_on=evaluated_on,  # type: ignore[arg-type]
        endpoint=endpoint,
        display=display,
        edges=[float(e) for e in edges],
        groups=[
            HistogramGroup(label=label, counts=[int(c) for c in np.histogram(scores[mask], bins=edges)[0]])
            for label, mask in groups
            if mask.any()
        ],
    )


def probability_histograms(
    name: str,
    frame: pd.DataFrame,
    kind: TaskKind,
    classes: list[str],
    *,
    positive: str | None,
    decision: Endpoint | None,
) -> list[ProbabilityHistogram]:
    """The distribution of each decision's probability per true class (per true grade for an ordinal cut, present
    and absent for a finding); multiclass: each class's probability against every true class."""
    if kind == "binary":
        labels = frame["label"].astype(str).to_numpy()
        groups = [(f"true {c}", labels == str(c)) for c in classes]
        return [histogram(frame["probability"].to_numpy(), groups, evaluated_on=name, endpoint=None,
                          display=f"P({positive})")]  # fmt: skip
    probabilities, truth = task_arrays(frame, kind, classes)
    chosen = endpoints(kind, classes) if kind == "multiclass" else _curve_endpoints(kind, classes, decision)
    out = []
    for endpoint in chosen:
        targets, scores = endpoint_scores(endpoint, probabilities, truth)
        if kind == "multilabel":
            groups = [("finding absent", targets == 0), ("finding present", targets == 1)]
        else:
            groups = [(f"true {c}", truth == index) for index, c in enumerate(classes)]
        out.append(histogram(scores, groups, evaluated_on=name, endpoint=endpoint.id, display=endpoint.display))
    return out
