"""What each task type's report says: the decision the model supports, its page-one numbers, and the per-endpoint views.

Why a module of its own: the report was built around a binary task's one probability and one threshold. A graded,
multi-class or multi-label task turns into several binary "endpoints" (contracts/task.py), and each type states its
decision differently: an ordinal model supports one grade cut, a multi-label model one decision per finding, and a
multi-class model's decision is its most probable class, with no threshold at all. Only formatting and simple derived
views happen here (a confusion matrix's row percentages, a class's recall read off it); every other number is one
that metrics.json holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from medtl.contracts.evaluation import EndpointResult, Estimate, Evaluation, Metrics
from medtl.reporting.model import ReportInput
from medtl.reporting.summary import (
    EVALUATION_LABELS,
    HEADLINE_LABELS,
    MACRO_AUROC,
    ROUGH_BELOW_PATIENTS,
    Cell,
    calibration_verdict,
    cell,
    find_estimate,
    fmt,
    headline_cells,
    headline_evaluation,
    judge,
    plain_cell,
    short_label,
)

# The columns of every per-endpoint table, in the names evaluation/metrics.py gives them.
ENDPOINT_QUANTITIES = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")
ENDPOINT_HEADINGS = {"class": "Class (vs rest)", "cut": "Grade cut", "finding": "Finding", "positive_class": "Class"}
TASK_WORDS = {
    "binary": "binary classification",
    "multiclass": "multi-class classification",
    "ordinal": "graded (ordinal) classification",
    "multilabel": "multi-label classification",
}


@dataclass(frozen=True)
class Headline:
    """Page one's table: `rows` of (label, cells) under `columns`, with the decision stated above it."""

    statement: str
    notes: list[str]
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    extra: list[Cell] = field(default_factory=list)  # single numbers printed under the table
    compact: bool = False  # many columns: intervals printed as "(low–high)" under a "(95% CI)" column header


def task_description(report: ReportInput) -> str:
    """The subtitle's words for the task, with its classes (grades in order, findings) when it has more than two."""
    words, classes = TASK_WORDS[report.task_kind], report.cohort.classes
    if report.task_kind == "ordinal":
        return f"{words}, grades {' < '.join(classes)}"
    if report.task_kind == "multiclass":
        return f"{words}, {len(classes)} classes"
    if report.task_kind == "multilabel":
        return f"{words}, {len(classes)} findings"
    return words


def decision_endpoint(ev: Evaluation) -> EndpointResult | None:
    return next((ep for ep in ev.endpoints if ep.is_decision), None)


def endpoint_prefix(ev: Evaluation, ep: EndpointResult) -> str:
    """The data-metric prefix of an endpoint's numbers, e.g. "test.endpoint.ge_2"."""
    return f"{ev.evaluated_on}.endpoint.{ep.endpoint}"


def _column(ev: Evaluation) -> str:
    return f"{EVALUATION_LABELS[ev.evaluated_on]} (n = {ev.n_patients} patients)"


def _task_cell(ev: Evaluation, name: str, label: str) -> Cell:
    return cell(ev.evaluated_on, find_estimate(ev.estimates, name), label)


def headline(report: ReportInput, ordered: Sequence[Evaluation]) -> Headline:
    kind = report.task_kind
    if kind == "ordinal":
        return _ordinal(report, ordered)
    if kind == "multiclass":
        return _multiclass(report, ordered)
    if kind == "multilabel":
        return _multilabel(report, ordered)
    rows = [(c.label, [headline_cells(ev)[i] for ev in ordered]) for i, c in enumerate(headline_cells(ordered[0]))]
    return Headline("", [], "Measure", [_column(ev) for ev in ordered], rows)


def _ordinal(report: ReportInput, ordered: Sequence[Evaluation]) -> Headline:
    decided = decision_endpoint(ordered[0])
    if decided is None:
        statement = "No decision endpoint (grade cut) was reported in metrics.json."
    else:
        statement = f"Supports the decision: {decided.display}" + (
            f" ({report.decision_text})." if report.decision_text else "."
        )
    notes = {
        True: "This cut was declared with the task.",
        False: "Default cut (the middle grade): none was declared.",
        None: "",
    }[report.decision_cut_declared]
    rows: list[tuple[str, list[Cell]]] = []
    for quantity in ("sensitivity", "specificity"):
        label = f"{HEADLINE_LABELS[quantity]}, {decided.display}" if decided else HEADLINE_LABELS[quantity]
        cells = []
        for ev in ordered:
            ep = next((e for e in ev.endpoints if decided and e.endpoint == decided.endpoint), None)
            found = find_estimate(ep.estimates, quantity) if ep else None
            cells.append(cell(endpoint_prefix(ev, ep), found, label) if ep else cell(ev.evaluated_on, None, label))
        rows.append((label, cells))
    for name in ("auroc", "quadratic_weighted_kappa", "mean_absolute_grade_error"):
        label = MACRO_AUROC if name == "auroc" else short_label(name)
        rows.append((label, [_task_cell(ev, name, label) for ev in ordered]))
    return Headline(statement, [notes] if notes else [], "Measure", [_column(ev) for ev in ordered], rows)


def recall_cells(ev: Evaluation) -> list[Cell]:
    """Each class's sensitivity (recall), read off the confusion matrix: the diagonal over the row total."""
    cells = []
    for i, name in enumerate(ev.classes):
        row = ev.confusion[i] if i < len(ev.confusion) else []
        total = sum(row)
        value = row[i] / total if total and i < len(row) else None
        detail = f"{row[i]} of {total}" if total and i < len(row) else "no patients of this class"
        cells.append(plain_cell(f"{ev.evaluated_on}.recall.{name}", f"Sensitivity (recall), {name}", value, detail))
    return cells


def _multiclass(report: ReportInput, ordered: Sequence[Evaluation]) -> Headline:
    statement = "Supports the decision: the most probable class is the model's answer; there is no threshold." + (
        f" {report.decision_text}" if report.decision_text else ""
    )
    rows = [
        ("Accuracy", [_task_cell(ev, "accuracy", "Accuracy") for ev in ordered]),
        (MACRO_AUROC, [_task_cell(ev, "auroc", MACRO_AUROC) for ev in ordered]),
    ]
    per_class = [recall_cells(ev) for ev in ordered]
    for i, name in enumerate(ordered[0].classes):
        rows.append((f"Sensitivity (recall), {name}", [cells[i] for cells in per_class if i < len(cells)]))
    notes = ["Sensitivity per class is read off the confusion matrix: correct decisions among all cases of the class."]
    return Headline(statement, notes, "Measure", [_column(ev) for ev in ordered], rows)


def threshold_cell(ev: Evaluation, ep: EndpointResult) -> Cell:
    point = ep.operating_point
    key = f"{endpoint_prefix(ev, ep)}.threshold"
    if point is None:
        return plain_cell(key, "Threshold", None, "none (most probable class)")
    return plain_cell(key, "Threshold", point.threshold, point.rule)


def prevalence_cell(ev: Evaluation, ep: EndpointResult) -> Cell:
    return plain_cell(
        f"{endpoint_prefix(ev, ep)}.prevalence", "Prevalence", ep.prevalence, f"{ep.n_positive} of {ep.n_patients}"
    )


def _multilabel(report: ReportInput, ordered: Sequence[Evaluation]) -> Headline:
    head = ordered[0]
    statement = (
        "Supports one decision per finding: present when its predicted probability reaches the finding's own threshold."
        + (f" {report.decision_text}" if report.decision_text else "")
    )
    rows = []
    for ep in head.endpoints:
        prefix = endpoint_prefix(head, ep)
        cells = [prevalence_cell(head, ep)]
        cells += [
            cell(prefix, find_estimate(ep.estimates, q), HEADLINE_LABELS[q])
            for q in ("auroc", "sensitivity", "specificity")
        ]
        rows.append((ep.endpoint, [*cells, threshold_cell(head, ep)]))
    columns = ["Prevalence", "AUROC (95% CI)", "Sensitivity (95% CI)", "Specificity (95% CI)", "Threshold (rule)"]
    extra = [_task_cell(head, "auroc", MACRO_AUROC)]
    return Headline(statement, [], "Finding", columns, rows, extra, compact=True)


def operating(report: ReportInput, head: Evaluation) -> dict[str, str]:
    """The sentence about thresholds on page one: one frozen threshold (binary, ordinal), one per finding, or none."""
    kind = report.task_kind
    if kind == "multiclass":
        return {"text": "No threshold is applied: the model's decision is the class with the highest probability."}
    if kind == "multilabel":
        rules = sorted({ep.operating_point.rule for ep in head.endpoints if ep.operating_point})
        return {
            "text": "Each finding's threshold was chosen by the rule "
            + (", ".join(rules) or "reported with it")
            + " on the out-of-fold predictions and frozen before any test data was scored."
        }
    point = head.operating_point
    decided = decision_endpoint(head)
    if point is None and decided is not None:
        point = decided.operating_point
    if point is None:
        return {"text": "No operating point was reported in metrics.json."}
    subject = (decided.display if decided else "the decision cut") if kind == "ordinal" else None
    return {
        "rule": point.rule,
        "threshold": fmt(point.threshold),
        "subject": subject or report.positive_class or "the positive class",
        "chosen": (
            "chosen on the out-of-fold predictions and frozen before any test data was scored."
            if point.pooling == "pooled"
            else "the median of the thresholds chosen on each fold's own held-out predictions (the folds score on "
            "different scales), frozen before any test data was scored."
        ),
    }


def calibration_line(report: ReportInput) -> str:
    """Page one's calibration sentence: the decision's (binary, ordinal), each finding's, or the class-wise ECE."""
    metrics: Metrics = report.metrics
    if report.task_kind == "binary":
        return calibration_verdict(metrics)[0]
    head = headline_evaluation(metrics)
    for ev in [head, *(e for e in metrics.evaluations if e is not head)]:
        sentence = _task_calibration(report.task_kind, ev)
        if sentence:
            where = f"{EVALUATION_LABELS[ev.evaluated_on].lower()}, {ev.n_patients} patients"
            rough = (
                f" Fewer than {ROUGH_BELOW_PATIENTS} patients: treat this verdict as rough."
                if ev.n_patients < ROUGH_BELOW_PATIENTS
                else ""
            )
            return f"{sentence} — {where}.{rough}"
    return "Calibration was not assessed."


def _with_interval(estimate: Estimate) -> str:
    if estimate.ci_low is None or estimate.ci_high is None:
        return fmt(estimate.value)
    return f"{fmt(estimate.value)} (95% CI {fmt(estimate.ci_low)}–{fmt(estimate.ci_high)})"


def _task_calibration(kind: str, ev: Evaluation) -> str:
    parts = []
    if kind == "ordinal":
        decided = decision_endpoint(ev)
        if decided is not None and decided.calibration is not None:
            # the cut a reviewer approves; the class-wise numbers across all grades are in the calibration section
            return f"For the decision {decided.display}: {judge(decided.calibration.model_dump()).sentence}"
    if kind == "multilabel":
        parts += [  # the level and ECE only: the full numbers per finding are in the calibration section
            f"{ep.display}: {judge(ep.calibration.model_dump()).level} (ECE {fmt(ep.calibration.ece)})"
            for ep in ev.endpoints
            if ep.calibration
        ]
    classwise = find_estimate(ev.estimates, "classwise_ece")
    brier = find_estimate(ev.estimates, "multiclass_brier")
    if classwise is not None or brier is not None:
        numbers = "; ".join(f"{short_label(e.name)} {_with_interval(e)}" for e in (classwise, brier) if e is not None)
        level = judge({"ece": classwise.value}).level if classwise is not None else ""
        prefix = "Across all classes" if kind == "multiclass" else "Across all grades"
        if kind != "multilabel":
            parts.append(f"{prefix}: {level + ' (' if level else ''}{numbers}{')' if level else ''}")
    return "; ".join(parts)


def endpoint_rows(ev: Evaluation) -> list[dict[str, object]]:
    """One row per endpoint for the detailed table: prevalence, threshold and rule, and the six quantities."""
    rows = []
    derived = _one_vs_rest(ev) if ev.task_kind == "multiclass" else {}
    for ep in ev.endpoints:
        prefix = endpoint_prefix(ev, ep)
        cells = []
        for quantity in ENDPOINT_QUANTITIES:
            found = find_estimate(ep.estimates, quantity)
            if found is None and (ep.endpoint, quantity) in derived:
                cells.append(derived[(ep.endpoint, quantity)])
            else:
                cells.append(cell(prefix, found, short_label(quantity)))
        rows.append(
            {
                "display": ep.display,
                "decision": ep.is_decision,
                "n": f"{ep.n_positive} of {ep.n_patients}",
                "prevalence": prevalence_cell(ev, ep),
                "threshold": threshold_cell(ev, ep),
                "cells": cells,
            }
        )
    return rows


def _one_vs_rest(ev: Evaluation) -> dict[tuple[str, str], Cell]:
    """A multi-class model decides by its most probable class; each class's sensitivity, specificity, PPV and NPV at
    that decision are counts in the confusion matrix (no interval: metrics.json gives none for them)."""
    matrix, out = ev.confusion, {}
    total = sum(sum(row) for row in matrix)
    for i, name in enumerate(ev.classes):
        if i >= len(matrix):
            continue
        tp = matrix[i][i]
        positives = sum(matrix[i])
        predicted = sum(row[i] for row in matrix if i < len(row))
        tn = total - positives - predicted + tp
        for quantity, hits, of in (
            ("sensitivity", tp, positives),
            ("specificity", tn, total - positives),
            ("ppv", tp, predicted),
            ("npv", tn, total - predicted),
        ):
            out[(name, quantity)] = plain_cell(
                f"{ev.evaluated_on}.endpoint.{name}.{quantity}",
                short_label(quantity),
                hits / of if of else None,
                f"{hits}/{of}",
            )
    return out


def confusion_table(classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> dict[str, object] | None:
    """Counts with row percentages (of each true class), the reading a clinician asks for first."""
    if not confusion or len(confusion) != len(classes):
        return None
    rows = []
    for name, row in zip(classes, confusion, strict=True):
        total = sum(row)
        rows.append(
            {
                "label": name,
                "total": total,
                "cells": [
                    {"count": count, "percent": f"{100 * count / total:.1f}%" if total else "n/a"} for count in row
                ],
            }
        )
    return {"classes": list(classes), "rows": rows}
