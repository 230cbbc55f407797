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

from medtl.contracts.evaluation import Calibration, Evaluation, SubgroupResult
from medtl.errors import ContractProblem, DataContractError
from medtl.reporting import plots, pngmeta
from medtl.reporting.checklists import ITEMS, SECTIONS
from medtl.reporting.model import ReportInput
from medtl.reporting.summary import (
    EVALUATION_LABELS,
    HEADLINE_ALIASES,
    ROUGH_BELOW_PATIENTS,
    all_cells,
    calibration_verdict,
    evaluation,
    find_estimate,
    fmt,
    headline_cells,
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
    if problems:
        raise DataContractError(
            "report input", problems, fix="build the report from the artifact's own metrics.json and provenance"
        )


def _context(report: ReportInput) -> dict[str, Any]:
    m = report.metrics
    head = headline_evaluation(m)
    ordered = [e for name in ("test", "oof") if (e := evaluation(m, name)) is not None]
    calibration_line, _ = calibration_verdict(m)
    folds = {
        arm: len({c.fold for c in report.transfer_curves if c.arm == arm})
        for arm in {c.arm for c in report.transfer_curves}
    }
    return {
        "report": report,
        "sections": SECTIONS,
        "cohort": _cohort(report),
        "head": _head(head),
        "headline": [
            {"label": EVALUATION_LABELS[e.evaluated_on], "n_patients": e.n_patients, "cells": headline_cells(e)}
            for e in ordered
        ],
        "operating": _operating(head),
        "calibration_line": calibration_line,
        "key_limitations": report.limitations[:KEY_LIMITATIONS_ON_PAGE_ONE],
        "more_limitations": max(len(report.limitations) - KEY_LIMITATIONS_ON_PAGE_ONE, 0),
        "provenance": _provenance(report),
        "methods": _methods(report, head),
        "recipe": report.recipe,
        "evaluations": [_evaluation(e) for e in ordered],
        "roc_image": data_uri(plots.roc_png(report.curves, ordered)) if report.curves else None,
        "pr_image": data_uri(plots.pr_png(report.curves, ordered)) if any(c.pr for c in report.curves) else None,
        "transfer": transfer_rows(m, folds),
        "transfer_image": data_uri(plots.transfer_png(report.transfer_curves)) if report.transfer_curves else None,
        "failures": [
            {
                "kind": case.kind.replace("_", " "),
                "scan_id": case.scan_id,
                "probability": fmt(case.probability),
                "true_class": case.true_class,
                "saliency_method": case.saliency_method,
                "image": data_uri(pngmeta.strip_metadata(case.thumbnail_png, where=f"failure case {case.scan_id}")),
            }
            for case in report.failure_cases
        ],
        "checklist": ITEMS,
    }


def _cohort(report: ReportInput) -> dict[str, str]:
    c = report.cohort
    excluded = ", ".join(f"{reason}: {count}" for reason, count in sorted(c.excluded_scans.items())) or "none"
    return {
        "n_patients": str(c.n_patients),
        "n_scans": str(c.n_scans),
        "prevalence": fmt(c.prevalence),
        "modalities": ", ".join(c.modalities) or "not recorded",
        "image_kind": c.image_kind,
        "classes": ", ".join(c.classes),
        "excluded": excluded,
        "locked_test": f"{c.locked_test_patients} patients" if c.locked_test_patients else "none",
    }


def _head(head: Evaluation) -> dict[str, str]:
    if head.evaluated_on == "test":
        note = (
            "These numbers come from the locked test set, scored once after the model and its threshold were frozen "
            "on the cross-validation results. Out-of-fold numbers are shown beside them for comparison."
        )
    else:
        note = (
            "No locked test set was evaluated: these numbers come from out-of-fold cross-validation predictions. The "
            "threshold was chosen on these same predictions, so sensitivity and specificity may be optimistic; an "
            "independent test set is needed before clinical use."
        )
    return {"label": EVALUATION_LABELS[head.evaluated_on], "note": note}


def _operating(head: Evaluation) -> dict[str, str]:
    point = head.operating_point
    if point is None:
        return {
            "rule": "none",
            "threshold": "n/a",
            "chosen": "no operating point was set (multiclass: the most probable class is the decision).",
        }
    return {
        "rule": point.rule,
        "threshold": fmt(point.threshold),
        "chosen": (
            "chosen on the out-of-fold predictions and frozen before any test data was scored."
            if point.pooling == "pooled"
            else "the median of the thresholds chosen on each fold's own held-out predictions (the folds score on "
            "different scales), frozen before any test data was scored."
        ),
    }


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
        "The operating point rule was declared before the evaluation, applied to the out-of-fold predictions, and its "
        "threshold frozen; a locked test set, when present, was scored once with that threshold.",
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


def _evaluation(ev: Evaluation) -> dict[str, Any]:
    label = EVALUATION_LABELS[ev.evaluated_on]
    point = ev.operating_point
    return {
        "key": ev.evaluated_on,
        "label": label,
        "n_patients": ev.n_patients,
        "n_scans": ev.n_scans,
        "prevalence": fmt(ev.prevalence),
        "operating": f"{point.rule}, threshold {fmt(point.threshold)}" if point else "",
        "cells": all_cells(ev),
        "confusion_image": data_uri(plots.confusion_png(ev.classes, ev.confusion, label)),
        "calibration": _calibration(ev.calibration, label) if ev.calibration else None,
        "subgroups": _subgroups(ev.subgroups, ev, label) if ev.subgroups else None,
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


def _subgroups(subgroups: Sequence[SubgroupResult], ev: Evaluation, label: str) -> dict[str, Any]:
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
