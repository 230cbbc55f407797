"""The report's worst errors: the scans the model got most confidently wrong, with where the network looked.

Which errors count depends on the task type, because "wrong" is a statement about a decision:
- binary: the highest-scored negatives and the lowest-scored positives at the frozen threshold;
- ordinal: the same for the decision cut "grade >= k";
- multilabel: the same for every finding, at most `count` of each kind of error over all findings together;
- multiclass: misclassified scans whose true class got the lowest probability (a missed class).
Saliency explains the network output the error is about (the class, the finding, or the cut's logit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from medtl.contracts.evaluation import OperatingPoint
from medtl.contracts.task import Endpoint, TaskKind, endpoints
from medtl.evaluation.endpoints import endpoint_scores, task_arrays
from medtl.evaluation.saliency import saliency_map, thumbnail_png
from medtl.models.loaded import LoadedModel
from medtl.reporting.model import FailureCase
from medtl.training.config import TaskConfig
from medtl.training.data import TensorSet, load_task

ErrorKind = Literal["false_positive", "false_negative"]


@dataclass(frozen=True)
class Candidate:
    kind: ErrorKind
    row: int  # position in the prediction frame
    probability: float  # of the endpoint the error is about
    endpoint: str | None  # its display name (None for a binary task: there is one)
    output: int  # the network output saliency explains


def failure_candidates(
    frame: pd.DataFrame,
    kind: TaskKind,
    classes: list[str],
    *,
    count: int,
    threshold: float | None = None,
    points: dict[str, OperatingPoint] | None = None,
    decision: Endpoint | None = None,
) -> list[Candidate]:
    """The most confident errors of `frame` (binary: at `threshold`; ordinal: the `decision` cut at its point;
    multilabel: every finding at its point from `points`)."""
    if count <= 0 or frame.empty:
        return []
    if kind == "binary":
        if threshold is None:
            return []
        truth, scores = frame["y"].to_numpy(dtype=int), frame["probability"].to_numpy(dtype=float)
        return _threshold_errors([(None, 1, truth, scores, threshold)], count)
    probabilities, truth = task_arrays(frame, kind, classes)
    if kind == "multiclass":
        return _missed_classes(probabilities, truth, classes, count)
    points = points or {}
    chosen = [decision] if kind == "ordinal" and decision is not None else endpoints(kind, classes)
    per_endpoint = []
    for endpoint in chosen:
        if endpoint.id not in points:
            continue
        cut_truth, scores = endpoint_scores(endpoint, probabilities, truth)
        output = endpoint.index - 1 if endpoint.role == "cut" else endpoint.index  # a cut k is the logit "above k-1"
        per_endpoint.append((endpoint.display, output, cut_truth, scores, points[endpoint.id].threshold))
    return _threshold_errors(per_endpoint, count)


def _threshold_errors(
    per_endpoint: list[tuple[str | None, int, np.ndarray, np.ndarray, float]], count: int
) -> list[Candidate]:
    """Negatives scored highest at or above the threshold, then positives scored lowest below it."""
    false_positive, false_negative = [], []
    for display, output, truth, scores, threshold in per_endpoint:
        for row in np.flatnonzero((truth == 0) & (scores >= threshold)):
            false_positive.append(Candidate("false_positive", int(row), float(scores[row]), display, output))
        for row in np.flatnonzero((truth == 1) & (scores < threshold)):
            false_negative.append(Candidate("false_negative", int(row), float(scores[row]), display, output))
    false_positive.sort(key=lambda c: -c.probability)  # stable: ties keep frame order
    false_negative.sort(key=lambda c: c.probability)
    return false_positive[:count] + false_negative[:count]


def _missed_classes(probabilities: np.ndarray, truth: np.ndarray, classes: list[str], count: int) -> list[Candidate]:
    rows = np.flatnonzero(probabilities.argmax(axis=1) != truth)
    true_probability = probabilities[rows, truth[rows]]
    order = rows[np.argsort(true_probability, kind="stable")][:count]
    named = endpoints("multiclass", classes)
    return [
        Candidate("false_negative", int(row), float(probabilities[row, truth[row]]), named[truth[row]].display,
                  int(truth[row]))
        for row in order
    ]  # fmt: skip


def failure_cases(
    model: LoadedModel,
    task_config: TaskConfig,
    select: Callable[[pd.DataFrame], list[Candidate]],
    *,
    test_frame: pd.DataFrame | None,
    test_tensors: torch.Tensor | None,
    oof: pd.DataFrame,
    dataset: Path | None,
) -> list[FailureCase]:
    """From the test set when there is one, else from the out-of-fold predictions when the training dataset is
    given (its tensors are read again); otherwise none."""
    if test_frame is not None and test_tensors is not None:
        frame, tensors = test_frame, test_tensors
    elif dataset is not None:
        frame = oof
        tensors = None
    else:
        return []
    chosen = select(frame)
    if not chosen:
        return []
    if tensors is None:
        tensors = oof_tensors(model, task_config, oof, dataset)  # type: ignore[arg-type]
    cases = []
    for candidate in chosen:
        tensor = tensors[candidate.row]
        heat, method = saliency_map(model.networks, model.artifact.metadata["model"], tensor, candidate.output)
        row = frame.iloc[candidate.row]
        cases.append(
            FailureCase(
                kind=candidate.kind,
                scan_id=row["scan_id"],
                probability=candidate.probability,
                true_class=str(row["label"]),
                thumbnail_png=thumbnail_png(tensor[0].numpy(), heat),
                saliency_method=method,
                endpoint=candidate.endpoint,
            )
        )
    return cases


def oof_tensors(model: LoadedModel, task_config: TaskConfig, oof: pd.DataFrame, dataset: Path) -> torch.Tensor:
    task = load_task(dataset, task_config, model.spec)
    position = {scan: i for i, scan in enumerate(task.scans["scan_id"])}
    rows = np.array([position[scan] for scan in oof["scan_id"]])
    data = TensorSet(task, rows)
    return torch.stack([data[i][0] for i in range(len(data))])
