"""Decisions under the operating policy, for every task type: one scan's probabilities -> the ScoreRow columns.

Why one place: the Parquet row and the DICOM SR must say the same thing, and the binary columns must keep their
meaning while the other task types gain theirs. Every task type is a set of binary endpoints (contracts/task.py);
each endpoint with a threshold is decided `P(endpoint) >= threshold`, except multi-class, where the most probable
class is the decision. Thresholds were chosen on uncalibrated probabilities, so decisions are made on those; a
temperature (fitted by the evaluation on binary positive-class probabilities only) changes the reported numbers,
never a decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medtl.contracts.task import FINDING_SEPARATOR, NO_FINDING, Endpoint, TaskKind, decision_endpoint, endpoints


@dataclass(frozen=True)
class Policy:
    """The task and the thresholds (endpoint id -> threshold) that decide a scan; thresholds may be provisional."""

    kind: TaskKind
    classes: list[str]
    positive: str | None = None
    cut: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    temperature: float | None = None  # binary only: reported probabilities are scaled with it

    @property
    def endpoints(self) -> list[Endpoint]:
        return endpoints(self.kind, self.classes, self.positive)

    @property
    def decision(self) -> Endpoint | None:
        """The endpoint whose threshold a reviewer approves (binary, ordinal); None for multi-class, multi-label."""
        return decision_endpoint(self.kind, self.classes, self.positive, self.cut)

    @property
    def threshold(self) -> float | None:
        """The decision endpoint's threshold, on the model's own probability scale."""
        return self.thresholds.get(self.decision.id) if self.decision is not None else None

    def columns(self, probabilities: np.ndarray | None, *, abstained: bool) -> dict[str, Any]:
        """probability, decision, threshold and the per-class / per-endpoint lists of a ScoreRow (see its fields).

        `probabilities` are the model's (K,) class (or finding) probabilities, None when the scan was not scored;
        an abstained scan keeps its probabilities and has no decisions."""
        ends = self.endpoints
        raw_thresholds = [self.thresholds.get(e.id) for e in ends]
        scale = self._scale
        row: dict[str, Any] = {
            "task_kind": self.kind,
            "classes": list(self.classes),
            "probability": None,
            "decision": None,
            "threshold": _maybe(scale, self.threshold),
            "probabilities": [],
            "endpoints": [e.id for e in ends],
            "endpoint_probabilities": [],
            "thresholds": [_maybe(scale, t) for t in raw_thresholds],
            "decisions": [None] * len(ends),
        }
        if probabilities is None:
            return row
        matrix = np.asarray(probabilities, dtype=float).reshape(1, -1)
        raw = [float(e.probability(matrix)[0]) for e in ends]
        decided = self._decide(matrix[0], raw, raw_thresholds)
        row["probabilities"] = self._class_probabilities(matrix[0])
        row["endpoint_probabilities"] = [min(1.0, max(0.0, scale(p))) for p in raw]
        if self.decision is not None:  # binary, ordinal: the decision endpoint's number
            row["probability"] = row["endpoint_probabilities"][ends.index(self.decision)]
        if not abstained:
            row["decisions"] = decided
            row["decision"] = self._summary(matrix[0], decided)
        return row

    def _decide(self, probabilities: np.ndarray, raw: list[float], thresholds: list[float | None]) -> list[bool | None]:
        if self.kind == "multiclass":
            best = int(np.argmax(probabilities))
            return [e.index == best for e in self.endpoints]
        return [None if t is None else p >= t for p, t in zip(raw, thresholds, strict=True)]

    def _summary(self, probabilities: np.ndarray, decided: list[bool | None]) -> str | None:
        """The `decision` column: what one string can say about the scan under this policy."""
        if self.kind == "multiclass":
            return self.classes[int(np.argmax(probabilities))]
        if self.kind == "multilabel":
            if any(d is None for d in decided):
                return None  # an incomplete set would read as "absent" for a finding nobody decided
            present = [e.id for e, d in zip(self.endpoints, decided, strict=True) if d]
            return FINDING_SEPARATOR.join(present) or NO_FINDING
        verdict = None if self.decision is None else decided[self.endpoints.index(self.decision)]
        if self.decision is None or verdict is None:
            return None
        if self.kind == "binary":
            return self.decision.id if verdict else next(c for c in self.classes if c != self.decision.id)
        grade = self.classes[self.decision.index]
        return f"grade >= {grade}" if verdict else f"grade < {grade}"

    def _class_probabilities(self, probabilities: np.ndarray) -> list[float]:
        if self.kind == "binary" and self.decision is not None and self.temperature is not None:
            positive = self._scale(float(probabilities[self.decision.index]))
            return [positive if i == self.decision.index else 1.0 - positive for i in range(len(self.classes))]
        return [min(1.0, max(0.0, float(p))) for p in probabilities]

    def _scale(self, probability: float) -> float:
        """Temperature scaling is monotonic: the decision is the same on either scale; the reported number is
        calibrated (binary only)."""
        if self.temperature is None or self.kind != "binary":
            return probability
        from medtl.evaluation.calibration import apply_temperature

        return float(apply_temperature(np.array([probability]), self.temperature)[0])


def _maybe(scale: Any, value: float | None) -> float | None:
    return None if value is None else scale(value)
