"""The task declaration a person gives at ingest (`--task-kind`, `--classes`, ...), checked against the labels.

Why at ingest: an ordinal task cannot be inferred (numbers alone do not say their order is clinical) and a class
order must be stated once, where the labels come in, not in every training config. Why checked here: a declaration
that names a class no label has, or misses one the labels use, is a typo that would otherwise surface hours later
in training; it is refused before any scan is decoded. The completed declaration (classes always listed, in the
order training will use) is what ingest writes as the dataset's task.json.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from medtl.contracts import read_json
from medtl.contracts.task import (
    FINDING_SEPARATOR,
    TaskDeclaration,
    TaskKind,
    all_numbers,
    default_class_order,
    findings_of,
    looks_graded,
)
from medtl.errors import ConfigError, describe_validation_error
from medtl.ingest.labels import read_labels


def declare_task(
    kind: str | None,
    classes: str | list[str] | None = None,
    positive_class: str | None = None,
    decision_cut: str | None = None,
    *,
    file: Path | None = None,
) -> TaskDeclaration | None:
    """A declaration from the CLI's options (classes comma-separated) or from a task.json file; None when neither
    was given. Names the option at fault when the declaration is inconsistent."""
    others = [name for name, value in (("--classes", classes), ("--positive-class", positive_class),
                                       ("--decision-cut", decision_cut)) if value]  # fmt: skip
    if file is not None:
        if kind or others:
            raise ConfigError(
                "--task-json gives the whole declaration; it cannot be combined with "
                + ", ".join((["--task-kind"] if kind else []) + others),
                fix="use either --task-json FILE or --task-kind with its options",
            )
        return read_json(TaskDeclaration, file)
    if kind is None:
        if others:
            raise ConfigError(
                f"{', '.join(others)} need --task-kind",
                fix="add --task-kind (binary, multiclass, ordinal or multilabel)",
            )
        return None
    names = [name.strip() for name in classes.split(",")] if isinstance(classes, str) else classes
    try:
        return TaskDeclaration(
            kind=kind, classes=names or None, positive_class=positive_class, decision_cut=decision_cut
        )  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(
            f"the task declaration is not consistent: {describe_validation_error(error)}",
            where="--task-kind / --classes / --positive-class / --decision-cut",
            fix="see data_contracts/README.md, 'Task types'",
        ) from None


def check_with_labels_file(declared: TaskDeclaration, labels: Path | None) -> TaskDeclaration:
    """`complete_declaration` against the labels file's label column (before any scan is read)."""
    if labels is None:
        raise ConfigError("a task declaration needs --labels", fix="pass the labels file, or leave out the task")
    rows = read_labels(labels).rows
    return complete_declaration(declared, [row.label for row in rows], where=Path(labels).name)


def complete_declaration(declared: TaskDeclaration, labels: Iterable[str], *, where: str) -> TaskDeclaration:
    """Check the declaration against the label values found and list its classes in training's order.

    Refused: a class (or finding) no label uses, a label (or finding) that is not a class, a multi-label cell in a
    single-label task, a binary task without exactly two labels, ordinal grades that are not numbers and not listed."""
    values = set(labels)
    if not values:
        raise ConfigError(
            "a task declaration needs labels to check it against, and none were found",
            where=where,
            fix="pass --labels with the labels file, or leave out the task declaration",
        )
    kind: TaskKind = declared.kind
    if kind == "multilabel":
        found = {name for value in values for name in findings_of(value)}
    else:
        cells = sorted(value for value in values if FINDING_SEPARATOR in value)
        if cells:
            raise ConfigError(
                f"{len(cells)} label value(s) list several findings ('|'), which only a multilabel task allows",
                where=where,
                fix="declare --task-kind multilabel, or fix the labels file",
            )
        found = values
    classes = declared.classes or _training_order(kind, found, where)
    unused = [name for name in classes if name not in found]
    undeclared = sorted(found - set(classes))
    what = "finding" if kind == "multilabel" else "class"
    if unused or undeclared:
        problems = []
        if unused:
            problems.append(f"declared {what}(es) {unused} appear in no label")
        if undeclared:
            problems.append(f"the labels use {what}(es) {undeclared} that are not declared")
        raise ConfigError(
            "the task declaration does not match the labels: " + "; ".join(problems),
            where=where,
            fix=f"list exactly the {what} names the labels file uses in --classes (declared: {classes})",
        )
    if kind == "binary" and len(classes) != 2:
        raise ConfigError(
            f"a binary task needs exactly two classes; the labels have {len(classes)}",
            where=where,
            fix="declare --task-kind multiclass (or ordinal for grades), or relabel",
        )
    if kind == "ordinal" and len(classes) < 3:
        raise ConfigError(
            f"an ordinal task needs at least three grades; the labels have {len(classes)}",
            where=where,
            fix="declare --task-kind binary",
        )
    return declared.model_copy(update={"classes": list(classes)})


def _training_order(kind: TaskKind, found: set[str], where: str) -> list[str]:
    """The order training would use without a declaration: numbers numerically, names alphabetically. Ordinal
    grades must be numbers for that; named grades have to be listed lowest first."""
    if kind == "ordinal" and not all_numbers(found):
        raise ConfigError(
            "an ordinal task needs its grades in order, and these labels are not numbers",
            where=where,
            fix="list the grades lowest first with --classes",
        )
    return default_class_order(found)


def suggestion(labels: Iterable[str]) -> str | None:
    """A hint for labels that look like grades but were not declared (they would train as unordered classes)."""
    values = set(labels)
    if looks_graded(values):
        grades = ",".join(sorted(values, key=int))
        return (
            f"the labels look like grades ({grades}); without a declaration they train as unordered classes. "
            f"If they are grades, re-run ingest with --task-kind ordinal --classes {grades}"
        )
    return None
