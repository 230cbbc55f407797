"""Task types: what a label means, and the binary decisions ("endpoints") each task type supports.

Why one module for this: the task type travels from the labels file through splits, loss, metrics, the operating
policy, the report and scoring; every stage asks these functions instead of testing the class count itself.

- binary: two classes; one probability (of the positive class) and one threshold.
- multiclass: K unordered classes; softmax; the decision is the most probable class. Each class is also evaluated
  one-vs-rest.
- ordinal: K classes in a declared order (grades); the network predicts K-1 conditional "above grade k" logits (a
  rank-consistent formulation), from which class probabilities follow. Each cut "grade >= k" is a binary decision with
  its own operating point; one cut (`decision_cut`) is the decision the model supports.
- multilabel: K findings, each present or absent on a scan; one sigmoid per finding, one operating point per finding.
  In labels.csv a multi-label scan's `label` lists its findings separated by `|` ("effusion|nodule"), and a scan with
  none of them is labelled `none`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from medtl.contracts.base import ContractModel

TaskKind = Literal["binary", "multiclass", "ordinal", "multilabel"]
TASK_KINDS: tuple[TaskKind, ...] = ("binary", "multiclass", "ordinal", "multilabel")
FINDING_SEPARATOR = "|"
NO_FINDING = "none"


class TaskDeclaration(ContractModel):
    """task.json in a dataset folder: the task type and class order a person (or an importer) declared.

    Written by `medtl ingest --task-kind` and by `import-medmnist`; read by training and planning, where a training
    config's own task: section still wins. Without it the type is inferred only where that is unambiguous."""

    contract_name: ClassVar[str] = "task"
    contract_title: ClassVar[str] = "task.json: the declared task type and class order of a dataset"

    kind: TaskKind
    classes: list[str] | None = Field(
        None, min_length=2, description="class (or finding) names in order; required for ordinal (lowest grade first)"
    )
    positive_class: str | None = Field(None, description="binary: the class the probability is for")
    decision_cut: str | None = Field(
        None, description="ordinal: the decision the model supports is 'grade >= decision_cut' (default: middle grade)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TaskDeclaration:
        check_declaration(self.kind, self.classes, self.positive_class, self.decision_cut)
        return self


def check_declaration(kind: TaskKind | None, classes: list[str] | None, positive: str | None, cut: str | None) -> None:
    """The rules a declared task must follow, shared by task.json and the training config's task: section."""
    if kind == "ordinal" and classes is not None and len(classes) < 3:
        raise ValueError("an ordinal task needs at least three grades (two are a binary task)")
    if kind == "binary" and classes is not None and len(classes) != 2:
        raise ValueError(f"a binary task has exactly two classes, not {len(classes)}")
    if classes is not None and len(set(classes)) != len(classes):
        raise ValueError("classes must not repeat")
    if kind == "multilabel" and classes is not None and NO_FINDING in classes:
        raise ValueError(f"{NO_FINDING!r} means 'no finding' in a multi-label task and cannot be a finding's name")
    if positive is not None and classes is not None and positive not in classes:
        raise ValueError("positive_class must be one of classes")
    if positive is not None and kind not in (None, "binary"):
        raise ValueError("positive_class applies to binary tasks only")
    if cut is not None:
        if kind not in (None, "ordinal"):
            raise ValueError("decision_cut applies to ordinal tasks only")
        if classes is not None and (cut not in classes or cut == classes[0]):
            raise ValueError("decision_cut must be one of the grades above the lowest")


def findings_of(label: str) -> list[str]:
    """The findings a multi-label cell names ('none' names none)."""
    return [name for name in label.split(FINDING_SEPARATOR) if name and name != NO_FINDING]


def infer_kind(labels: set[str]) -> TaskKind:
    """Only the unambiguous cases: a `|` anywhere means multi-label; two labels are binary; more are unordered
    classes. Grades must be declared ordinal: numbers alone do not say that their order is clinical."""
    if any(FINDING_SEPARATOR in label for label in labels):
        return "multilabel"
    return "binary" if len(labels) == 2 else "multiclass"


def all_numbers(labels: Iterable[str]) -> bool:
    return all(label.lstrip("-").isdigit() for label in labels)


def default_class_order(labels: Iterable[str]) -> list[str]:
    """The order classes take when none is declared: numbers numerically (0, 1, 2, 10), names alphabetically."""
    found = set(labels)
    return sorted(found, key=int) if all_numbers(found) else sorted(found)


def looks_graded(labels: set[str]) -> bool:
    """Three or more consecutive whole numbers: perhaps grades. Used to suggest declaring the task ordinal."""
    if len(labels) < 3 or not all(label.isdigit() for label in labels):
        return False
    values = sorted(int(label) for label in labels)
    return values == list(range(values[0], values[0] + len(values)))


def output_units(kind: TaskKind, n_classes: int) -> int:
    """Network outputs: one logit per class, except ordinal (one per cut between neighbouring grades)."""
    return n_classes - 1 if kind == "ordinal" else n_classes


def default_decision_cut(classes: list[str]) -> str:
    """The middle cut when none is declared: for grades 0-4, 'grade >= 2'. Stated as a default in the report."""
    return classes[len(classes) // 2]


@dataclass(frozen=True)
class Endpoint:
    """One binary question the task answers, with the probability and the truth that go with it."""

    id: str  # machine name: the class, the finding, or ge_<grade>
    display: str  # how the report and the SR say it
    role: Literal["positive_class", "class", "cut", "finding"]
    index: int  # the class / finding / cut index

    def probability(self, probabilities: np.ndarray) -> np.ndarray:
        """From the (N, K) class (or finding) probabilities a task's model returns."""
        if self.role == "cut":
            return probabilities[:, self.index :].sum(axis=1)
        return probabilities[:, self.index]

    def truth(self, targets: np.ndarray) -> np.ndarray:
        """From class indices (N,) or, for multi-label, the (N, K) 0/1 finding matrix."""
        if self.role == "finding":
            return np.asarray(targets)[:, self.index].astype(int)
        if self.role == "cut":
            return (np.asarray(targets) >= self.index).astype(int)
        return (np.asarray(targets) == self.index).astype(int)


def endpoints(kind: TaskKind, classes: list[str], positive: str | None = None) -> list[Endpoint]:
    if kind == "binary":
        index = classes.index(positive) if positive in classes else 1
        return [Endpoint(classes[index], f"{classes[index]}", "positive_class", index)]
    if kind == "multiclass":
        return [Endpoint(name, f"class {name} (vs rest)", "class", i) for i, name in enumerate(classes)]
    if kind == "ordinal":
        return [Endpoint(f"ge_{classes[k]}", f"grade >= {classes[k]}", "cut", k) for k in range(1, len(classes))]
    return [Endpoint(name, f"finding {name}", "finding", i) for i, name in enumerate(classes)]


def decision_endpoint(kind: TaskKind, classes: list[str], positive: str | None, cut: str | None) -> Endpoint | None:
    """The endpoint whose operating point is the decision the model supports (None for multiclass: the argmax, and
    for multi-label, where every finding is its own decision)."""
    if kind == "binary":
        return endpoints(kind, classes, positive)[0]
    if kind == "ordinal":
        grade = cut or default_decision_cut(classes)
        return next(e for e in endpoints(kind, classes) if e.index == classes.index(grade))
    return None
