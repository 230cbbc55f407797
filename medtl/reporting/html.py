"""render_html: the report as ONE self-contained HTML file (inline CSS, images as data: URIs, no scripts).

Why self-contained: the report is archived with the model artifact, mailed to a reviewer and opened on hospital
machines without internet access; it must look the same everywhere and make no network request when opened. Why
Jinja2 with autoescaping: every string in the report (intended use, limitations, subgroup names) comes from
configuration or data, and none of it may become markup.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2

from medtl.contracts.evaluation import Calibration, EndpointResult, Evaluation, SubgroupResult
from medtl.errors import ContractProblem, DataContractError
from medtl.reporting import efficiency, plots, pngmeta, tasks, utility
from medtl.reporting.checklists import ITEMS, SECTIONS
from medtl.reporting.model import ReportInput
from medtl.reporting.summary import (
    EVALUATION_LABELS,
    HEADLINE_ALIASES,
    ROUGH_BELOW_PATIENTS,
    all_cells,
    cell,
    evaluation,
    find_estimate,
    fmt,
    headline_evaluation,
    judge,
    short_label,
    transfer_rows,
)

KEY_LIMITATIONS_ON_PAGE_ONE = 5
_CALIBRATION_FIELDS = (
    ("brier", "Brier score"),
    ("ece", "ECE (expected calibration error)"),
    ("intercept", "Intercept"),
    ("slope", "Slope"),
)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medtl.reporting", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug in this module, never a blank in the report
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: ReportInput) -> str:
    """The complete report; raises DataContractError when the parts do not belong to the same model."""
    _check_consistency(report)
    return _environment().get_template("report.html.j2").render(**_context(report))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _check_consistency(report: ReportInput) -> None:
    """The report must describe one artifact: numbers from another model would be signed off by mistake."""
    m, problems = report.metrics, []
    if m.artifact_manifest_hash != report.provenance.artifact_manifest_hash:
        problems.append(
            ContractProblem("provenance.artifact_manifest_hash", "must equal metrics.artifact_manifest_hash")
        )
    if (m.model_id, m.model_version) != (report.model_id, report.model_version):
        problems.append(ContractProblem("model_id/model_version", "must equal those in metrics.json"))
    if len({e.evaluated_on for e in m.evaluations}) != len(m.evaluations):
        problems.append(ContractProblem("metrics.evaluations", "each of oof/test may appear at most once"))
    thresholds = {e.operating_point.threshold for e in m.evaluations if e.operating_point is not None}
    if len(thresholds) > 1:
        problems.append(
            ContractProblem(
                "metrics.evaluations[].operating_point", "the test set must use the threshold frozen on OOF"
            )
        )
    per_endpoint: dict[str, set[float]] = {}
    for ev in m.evaluations:
        for ep in ev.endpoints:
            if ep.operating_point is not None:
                per_endpoint.setdefault(ep.endpoint, set()).add(ep.operating_point.threshold)
    problems += [
        ContractProblem(
            f"metrics.evaluations[].endpoints[{name}].operating_point",
            "the test set must use the threshold frozen on OOF",
        )
        for name, values in sorted(per_endpoint.items())
        if len(values) > 1
    ]
    if problems:
        raise DataContractError(
            "report input", problems, fix="build the report from the artifact's own metrics.json and provenance"
        )


def _context(report: ReportInput) -> dict[str, Any]:
    m = report.metrics
    head = headline_evaluation(m)
    ordered = [e for name in ("test", "oof") if (e := evaluation(m, name)) is not None]
    folds = {
        arm: len({c.fold for c in report.transfer_curves if c.arm == arm})
        for arm in {c.arm for c in report.transfer_curves}
    }
    return {
        "report": report,
        "sections": SECTIONS,
        "cohort": _cohort(report),
        "task_words": tasks.task_description(report),
        "head": _head(head, report.task_kind),
        "headline": tasks.headline(report, ordered),
        "operating": tasks.operating(report, head),
        "calibration_line": tasks.calibration_line(report),
        "key_limitations": report.limitations[:KEY_LIMITATIONS_ON_PAGE_ONE],
        "more_limitations": max(len(report.limitations) - KEY_LIMITATIONS_ON_PAGE_ONE, 0),
        "provenance": _provenance(report),
        "methods": _methods(report, head),
        "recipe": report.recipe,
        "evaluations": [_evaluation(e) for e in ordered],
        "endpoint_heading": _endpoint_heading(ordered),
        "roc_image": data_uri(plots.roc_png(report.curves, ordered)) if report.curves else None,
        "pr_image": data_uri(plots.pr_png(report.curves, ordered)) if any(c.pr for c in report.curves) else None,
        "decision_curves": utility.decision_section(ordered, data_uri),
        "decision_reading": utility.DECISION_CURVE_READING,
        "distributions": utility.distribution_section(report.distributions, data_uri),
        "distribution_reading": utility.DISTRIBUTION_READING,
        "seed_spread": utility.seed_section(m.seed_spread),
        "transfer": transfer_rows(m, folds),
        "transfer_image": data_uri(plots.transfer_png(report.transfer_curves)) if report.transfer_curves else None,
        "efficiency": _efficiency(report),
        "failures": [
            {
                "kind": case.kind.replace("_", " "),
                "scan_id": case.scan_id,
                "probability": fmt(case.probability),
                "true_class": case.true_class,
                "endpoint": case.endpoint,
                "saliency_method": case.saliency_method,
                "image": data_uri(pngmeta.strip_metadata(case.thumbnail_png, where=f"failure case {case.scan_id}")),
            }
            for case in report.failure_cases
        ],
        "checklist": ITEMS,
    }


def _efficiency(report: ReportInput) -> dict[str, Any] | None:
    result = report.metrics.label_efficiency
    if result is None:
        return None
    return {
        "rows": efficiency.efficiency_rows(result),
        "sentences": efficiency.saving_sentences(result),
        "note": efficiency.OUT_OF_FOLD_NOTE,
        "image": data_uri(plots.label_efficiency_png(result)),
    }


def _cohort(report: ReportInput) -> dict[str, str]:
    c = report.cohort
    excluded = ", ".join(f"{reason}: {count}" for reason, count in sorted(c.excluded_scans.items())) or "none"
    return {
        "n_patients": str(c.n_patients),
        "n_scans": str(c.n_scans),
        "prevalence": fmt(c.prevalence)
        if c.prevalence is not None or report.task_kind == "binary"
        else "per class or finding, in the results per decision",
        "modalities": ", ".join(c.modalities) or "not recorded",
        "image_kind": c.image_kind,
        "classes": ", ".join(c.classes),
        "excluded": excluded,
        "locked_test": f"{c.locked_test_patients} patients" if c.locked_test_patients else "none",
    }


def _head(head: Evaluation, kind: str) -> dict[str, str]:
    if head.evaluated_on == "test":
        beside = (
            "Out-of-fold numbers for each finding are in the results per decision."
            if kind == "multilabel"
            else "Out-of-fold numbers are shown beside them for comparison."
        )
        note = (
            "These numbers come from the locked test set, scored once after the model and its threshold were frozen "
            f"on the cross-validation results. {beside}"
        )
    else:
        note = (
            "No locked test set was evaluated: these numbers come from out-of-fold cross-validation predictions. The "
            "threshold was chosen on these same predictions, so sensitivity and specificity may be optimistic; an "
            "independent test set is needed before clinical use."
        )
    return {"label": EVALUATION_LABELS[head.evaluated_on], "note": note}


def _provenance(report: ReportInput) -> list[tuple[str, str, str]]:
    p = report.provenance
    if not p.signed_by:
        signed = ("Signed", "UNSIGNED: the artifact's origin cannot be verified", "warning")
    elif p.signer_trusted:
        signed = ("Signed", f"key {p.signed_by} (a trusted pipeline key)", "hash")
    else:
        signed = ("Signed", f"key {p.signed_by}, UNTRUSTED: not checked against a trust anchor", "warning")
    return [
        ("Model", f"{report.model_id} {report.model_version}", ""),
        ("Artifact manifest", p.artifact_manifest_hash, "hash"),
        ("Data manifest", p.data_manifest_hash, "hash"),
        ("Code version", p.code_version, "hash"),
        ("Pretrained weights", p.pretrained, "hash"),
        ("Weights licence", p.pretrained_license or "not recorded", ""),
        signed,
        ("Seed", str(p.seed), ""),
        ("Trained at", p.trained_at, ""),
    ]


def _methods(report: ReportInput, head: Evaluation) -> list[str]:
    methods = sorted({e.ci_method for ev in report.metrics.evaluations for e in ev.estimates if e.ci_method})
    lines = [
        "Patients were assigned to cross-validation folds by patient (stratified by label): no patient has scans on "
        "both the training and the evaluation side of a fold, and every patient's out-of-fold prediction comes from a "
        "model that never saw that patient.",
        "The reference standard is the label supplied with the dataset for each patient/scan "
        f"(classes: {', '.join(report.cohort.classes)}); how the site established it is outside this report.",
        _operating_method(report.task_kind),
        "Confidence intervals are 95% intervals: "
        + ("; ".join(methods) if methods else "no method was reported")
        + ".",
        "Patients and scans are identified by keyed pseudonyms only; the report holds no names, birth dates, accession "
        "numbers or original file paths, and image metadata chunks are removed before embedding.",
    ]
    if head.n_patients < ROUGH_BELOW_PATIENTS:
        lines.append(
            f"The headline rests on {head.n_patients} patients: intervals are wide and small subgroups unstable."
        )
    return lines


def _operating_method(kind: str) -> str:
    if kind == "multiclass":
        return (
            "The model's decision is its most probable class; no threshold was chosen. Each class is also evaluated "
            "against the rest, with AUROC and AUPRC that need no threshold."
        )
    what = {
        "ordinal": "Each grade cut ('grade >= k') had its operating point rule",
        "multilabel": "Each finding had its operating point rule",
    }.get(kind, "The operating point rule was")
    return (
        f"{what} declared before the evaluation, applied to the out-of-fold predictions, and its threshold frozen; a "
        "locked test set, when present, was scored once with that threshold."
    )


def _endpoint_heading(ordered: Sequence[Evaluation]) -> str:
    roles = {ep.role for ev in ordered for ep in ev.endpoints}
    return " / ".join(tasks.ENDPOINT_HEADINGS[r] for r in ("class", "cut", "finding", "positive_class") if r in roles)


def _evaluation(ev: Evaluation) -> dict[str, Any]:
    label = EVALUATION_LABELS[ev.evaluated_on]
    point = ev.operating_point
    square = tasks.confusion_table(ev.classes, ev.confusion)
    return {
        "key": ev.evaluated_on,
        "label": label,
        "n_patients": ev.n_patients,
        "n_scans": ev.n_scans,
        "prevalence": fmt(ev.prevalence),
        "operating": f"{point.rule}, threshold {fmt(point.threshold)}" if point else "",
        "cells": all_cells(ev),
        "confusion_image": data_uri(plots.confusion_png(ev.classes, ev.confusion, label)) if square else None,
        "confusion": square,
        "endpoint_confusions": [
            {"display": ep.display, "table": table}
            for ep in ev.endpoints
            if ev.task_kind == "multilabel"
            and (table := tasks.confusion_table(["absent", "present"], ep.confusion)) is not None
        ],
        "endpoints": tasks.endpoint_rows(ev),
        "calibration": _calibration(ev.calibration, label) if ev.calibration else None,
        "endpoint_calibration": _endpoint_calibration(ev, label),
        "subgroups": _subgroups(ev.subgroups, ev, label) if ev.subgroups else None,
        "endpoint_subgroups": [
            {"display": ep.display, "table": _subgroups(ep.subgroups, ep, f"{label}, {ep.display}")}
            for ep in ev.endpoints
            if ep.subgroups
        ],
    }


def _endpoint_calibration(ev: Evaluation, label: str) -> dict[str, Any] | None:
    """Brier, ECE, intercept and slope per endpoint, with reliability diagrams for the decisions the model supports
    (the ordinal cut, every finding); a multi-class task adds its class-wise ECE and multi-class Brier score."""
    task_level = [
        cell(ev.evaluated_on, e, short_label(e.name))
        for name in ("classwise_ece", "multiclass_brier")
        if (e := find_estimate(ev.estimates, name)) is not None
    ]
    rows = []
    images = []
    for ep in ev.endpoints:
        if ep.calibration is None:
            continue
        values = ep.calibration.model_dump()
        rows.append(
            {
                "key": f"{tasks.endpoint_prefix(ev, ep)}.calibration",
                "display": ep.display,
                "values": [(f, fmt(values.get(f))) for f, _ in _CALIBRATION_FIELDS],
                "verdict": judge(values).sentence,
            }
        )
        if ep.calibration.bins and (ep.is_decision or ep.role == "finding"):
            title = f"Reliability, {label.lower()}, {ep.display}"
            images.append({"display": ep.display, "image": data_uri(plots.reliability_png(ep.calibration, title))})
    if not rows and not task_level:
        return None
    return {
        "task_level": task_level,
        "fields": [text.split(" (")[0] for _, text in _CALIBRATION_FIELDS],
        "rows": rows,
        "images": images,
    }


def _calibration(cal: Calibration, label: str) -> dict[str, Any]:
    before, after = cal.model_dump(), cal.after_scaling
    return {
        "rows": [
            {"field": f, "label": text, "before": fmt(before.get(f)), "after": fmt((after or {}).get(f))}
            for f, text in _CALIBRATION_FIELDS
        ],
        "after": bool(after),
        "temperature": fmt(cal.temperature, 3),
        "verdict": judge(before).sentence,
        "verdict_after": judge(after).sentence if after else "",
        "image": data_uri(plots.reliability_png(cal, f"Reliability, {label.lower()}")) if cal.bins else None,
    }


def _subgroups(subgroups: Sequence[SubgroupResult], ev: Evaluation | EndpointResult, label: str) -> dict[str, Any]:
    names = list(dict.fromkeys(e.name for s in subgroups for e in s.estimates))
    plotted = [q for q in HEADLINE_ALIASES if any(find_estimate(s.estimates, q) for s in subgroups)] or names[:3]
    rows = []
    for s in subgroups:
        by_name = {e.name: e for e in s.estimates}
        values = [
            f"{fmt(e.value)} ({fmt(e.ci_low)}–{fmt(e.ci_high)})" if (e := by_name.get(n)) else "n/a" for n in names
        ]
        rows.append(
            {**s.model_dump(include={"attribute", "value", "n_patients", "n_positive", "small_cell"}), "texts": values}
        )
    image = plots.forest_png(subgroups, plotted, ev, f"Subgroups, {label.lower()}")
    return {"names": [short_label(n) for n in names], "rows": rows, "image": data_uri(image)}
