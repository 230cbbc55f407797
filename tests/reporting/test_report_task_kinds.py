"""The report for every task type: page one states the decision the model supports with its numbers, the per-endpoint
tables, confusion row percentages and calibration follow, and the checklist anchors exist for all four kinds.

The reports are built by hand (the builder below) from numbers with more decimals than the report prints, so every
value the page shows is compared with a text formatted here, independently of the renderer."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from report_support import CHROMIUM, Page, build_report, estimate, run_chromium, thumbnail

from medtl.contracts.evaluation import (
    Calibration,
    CalibrationBin,
    EndpointResult,
    Evaluation,
    Metrics,
    OperatingPoint,
    SubgroupResult,
)
from medtl.errors import DataContractError
from medtl.reporting.checklists import ITEMS, SECTIONS
from medtl.reporting.html import render_html
from medtl.reporting.model import Cohort, Curve, EvaluationCurves, FailureCase, ReportInput
from medtl.reporting.render import write_report

KINDS = ("binary", "multiclass", "ordinal", "multilabel")
NON_BINARY = KINDS[1:]
GRADES = ["0", "1", "2", "3"]
FINDINGS = ["effusion", "nodule", "mass"]
CLASSES = ["benign", "malignant", "normal"]
DEFECT_TEXTS = ("not reported", "not assessed", "rule <strong>none", "threshold n/a")
STATEMENTS = {
    "ordinal": "Supports the decision: grade &gt;= 2 (refer).",
    "multilabel": "Supports one decision per finding",
    "multiclass": "Supports the decision: the most probable class is the model&#39;s answer",
}


def _bins() -> list[CalibrationBin]:
    return [
        CalibrationBin(lower=i / 5, upper=(i + 1) / 5, count=10 + i, mean_predicted=i / 5 + 0.1, observed=i / 5 + 0.08)
        for i in range(5)
    ]


def _calibration(offset: float) -> Calibration:
    return Calibration(brier=0.1 + offset, ece=0.031 + offset, intercept=0.04, slope=0.93 - offset, bins=_bins())


def _endpoint(
    ev: str,
    endpoint: str,
    display: str,
    role: str,
    seed: float,
    *,
    threshold: float | None,
    decision: bool = False,
    subgroups: bool = False,
) -> EndpointResult:
    """One endpoint with all six quantities (none for a multi-class class: the argmax decides, no threshold)."""
    n, positives = (60, 20) if ev == "test" else (120, 44)
    names = ("auroc", "auprc") if threshold is None else ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")
    estimates = [
        estimate(name, 0.70 + seed + 0.0211 * i, 0.55 + seed + 0.0111 * i, min(0.85 + seed + 0.0101 * i, 0.999), n)
        for i, name in enumerate(names)
    ]
    groups = [
        SubgroupResult(
            attribute="sex",
            value=value,
            n_patients=30,
            n_positive=10,
            small_cell=False,
            estimates=[estimate("sensitivity", 0.8 + d, 0.6 + d, 0.9 + d, 10, "wilson")],
        )
        for value, d in (("F", 0.01234), ("M", -0.04321))
    ]
    return EndpointResult(
        endpoint=endpoint,
        display=display,
        role=role,  # type: ignore[arg-type]
        is_decision=decision,
        n_patients=n,
        n_positive=positives,
        prevalence=positives / n,
        operating_point=None
        if threshold is None
        else OperatingPoint(rule="youden", threshold=threshold, chosen_on="oof"),
        estimates=estimates,
        confusion=[[30, 10], [5, 15]] if ev == "test" else [[60, 16], [9, 35]],
        calibration=_calibration(seed / 10) if threshold is not None else None,
        subgroups=groups if subgroups else [],
    )


def _evaluation(kind: str, ev: str) -> Evaluation:
    n = 60 if ev == "test" else 120
    shift = 0.0 if ev == "test" else 0.0123
    common: dict[str, Any] = {"evaluated_on": ev, "task_kind": kind, "n_patients": n, "n_scans": n + 7}
    macro = estimate("auroc", 0.84231 + shift, 0.77654, 0.90123, n)
    if kind == "ordinal":
        cuts = [
            _endpoint(ev, f"ge_{g}", f"grade >= {g}", "cut", 0.05 * k + shift, threshold=[0.71234, 0.38172, 0.1919][k])
            for k, g in enumerate(GRADES[1:])
        ]
        cuts[1] = _endpoint(
            ev, "ge_2", "grade >= 2", "cut", 0.0831 + shift, threshold=0.38172, decision=True, subgroups=ev == "test"
        )
        return Evaluation(
            **common,
            prevalence=None,
            operating_point=cuts[1].operating_point,
            classes=GRADES,
            confusion=[[12, 3, 1, 0], [2, 9, 3, 1], [1, 2, 11, 2], [0, 1, 3, 9]],
            estimates=[
                macro,
                estimate("accuracy", 0.6833, 0.55, 0.79, n),
                estimate("quadratic_weighted_kappa", 0.73125 + shift, 0.61234, 0.82345, n),
                estimate("mean_absolute_grade_error", 0.41667 + shift, 0.30123, 0.55432, n),
                estimate("multiclass_brier", 0.45678, 0.4, 0.51, n),
                estimate("classwise_ece", 0.04321, 0.03, 0.07, n),
            ],
            endpoints=cuts,
        )
    if kind == "multilabel":
        return Evaluation(
            **common,
            prevalence=None,
            operating_point=None,
            classes=FINDINGS,
            confusion=[],
            estimates=[macro],
            endpoints=[
                _endpoint(
                    ev,
                    name,
                    f"finding {name}",
                    "finding",
                    0.03 * i + shift,
                    threshold=[0.4141, 0.2727, 0.5656][i],
                    decision=True,
                    subgroups=ev == "test" and i == 0,
                )
                for i, name in enumerate(FINDINGS)
            ],
        )
    return Evaluation(
        **common,
        prevalence=None,
        operating_point=None,
        classes=CLASSES,
        confusion=[[8, 1, 1], [2, 7, 1], [0, 1, 9]] if ev == "test" else [[30, 6, 4], [5, 27, 8], [2, 3, 35]],
        estimates=[
            estimate("accuracy", 0.8 + shift, 0.62, 0.9, n),
            macro,
            *[estimate(f"auroc_{c}", 0.8 + 0.03 * i, 0.7, 0.9, n) for i, c in enumerate(CLASSES)],
            estimate("multiclass_brier", 0.31234, 0.27, 0.36, n),
            estimate("classwise_ece", 0.04876, 0.031, 0.071, n),
        ],
        endpoints=[
            _endpoint(ev, c, f"class {c} (vs rest)", "class", 0.02 * i + shift, threshold=None)
            for i, c in enumerate(CLASSES)
        ],
    )


def kind_report(kind: str, **changes: Any) -> ReportInput:
    """A complete report of one task type: OOF and a locked test set, every endpoint, curves and a failure case."""
    base = build_report()
    if kind == "binary":
        return build_report(**changes)
    classes = {"ordinal": GRADES, "multilabel": FINDINGS, "multiclass": CLASSES}[kind]
    metrics = Metrics(
        artifact_manifest_hash=base.metrics.artifact_manifest_hash,
        model_id=base.model_id,
        model_version=base.model_version,
        evaluations=[_evaluation(kind, "oof"), _evaluation(kind, "test")],
        transfer=base.metrics.transfer,
    )
    first = {"ordinal": "ge_2", "multilabel": "effusion", "multiclass": "benign"}[kind]
    values: dict[str, Any] = {
        "task_kind": kind,
        "positive_class": None,
        "decision_text": "refer" if kind == "ordinal" else None,
        "decision_cut_declared": False if kind == "ordinal" else None,
        "cohort": Cohort(
            n_patients=180, n_scans=201, prevalence=None, classes=classes, modalities=["CR"], image_kind="2D image"
        ),
        "metrics": metrics,
        "curves": [
            EvaluationCurves(
                evaluated_on=ev, endpoint=first, roc=Curve(x=[0, 0.2, 1], y=[0, 0.7, 1]), pr=Curve(x=[0, 1], y=[1, 0.4])
            )
            for ev in ("oof", "test")
        ],
        "failure_cases": [
            FailureCase(
                kind="false_negative",
                scan_id="X-00112233445566aa",
                probability=0.1234,
                true_class=classes[-1],
                thumbnail_png=thumbnail(60),
                saliency_method="occlusion",
                endpoint={"ordinal": "grade >= 2", "multilabel": "finding mass", "multiclass": None}[kind],
            )
        ],
    }
    values.update(changes)
    return build_report(**values)


def f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def expected_metrics(report: ReportInput) -> dict[str, str]:
    """Every data-metric the report may print for any task type, formatted here from the report's own input."""
    out: dict[str, str] = {}
    for ev in report.metrics.evaluations:
        on = ev.evaluated_on
        for est in ev.estimates:
            for field in ("value", "ci_low", "ci_high"):
                out[f"{on}.{est.name}.{field}"] = f(getattr(est, field))
        if ev.calibration:
            for field in ("brier", "ece", "intercept", "slope", "temperature"):
                out[f"{on}.calibration.{field}"] = f(getattr(ev.calibration, field))
            for field, value in (ev.calibration.after_scaling or {}).items():
                out[f"{on}.calibration_after.{field}"] = f(value)
        for i, name in enumerate(ev.classes if ev.task_kind == "multiclass" else []):
            row, column = ev.confusion[i], [r[i] for r in ev.confusion]
            total = sum(map(sum, ev.confusion))
            tn = total - sum(row) - sum(column) + row[i]
            out[f"{on}.recall.{name}.value"] = f(row[i] / sum(row))
            out[f"{on}.endpoint.{name}.sensitivity.value"] = f(row[i] / sum(row))
            out[f"{on}.endpoint.{name}.specificity.value"] = f(tn / (total - sum(row)))
            out[f"{on}.endpoint.{name}.ppv.value"] = f(row[i] / sum(column))
            out[f"{on}.endpoint.{name}.npv.value"] = f(tn / (total - sum(column)))
        for ep in ev.endpoints:
            prefix = f"{on}.endpoint.{ep.endpoint}"
            out[f"{prefix}.prevalence.value"] = f(ep.prevalence)
            if ep.operating_point:  # none for a multi-class class: the page says the most probable class decides
                out[f"{prefix}.threshold.value"] = f(ep.operating_point.threshold)
            for est in ep.estimates:
                for field in ("value", "ci_low", "ci_high"):
                    out[f"{prefix}.{est.name}.{field}"] = f(getattr(est, field))
            for field in ("brier", "ece", "intercept", "slope"):
                if ep.calibration:
                    out[f"{prefix}.calibration.{field}"] = f(getattr(ep.calibration, field))
    for arm in report.metrics.transfer:
        for field in ("value", "ci_low", "ci_high"):
            out[f"transfer.{arm.arm}.{arm.auc.name}.{field}"] = f(getattr(arm.auc, field))
    head = next(e for e in report.metrics.evaluations if e.evaluated_on == "test")
    if head.operating_point:
        out["operating_point.threshold"] = f(head.operating_point.threshold)
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {kind: render_html(kind_report(kind)) for kind in KINDS}


def page_one(text: str) -> str:
    return text.split('id="methods"')[0]


def section(text: str, anchor: str) -> str:
    return text.split(f'id="{anchor}"')[1].split("<section")[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_number_equals_metrics_json_and_every_endpoint_number_is_shown(rendered, kind):
    report, page = kind_report(kind), Page(rendered[kind])
    expected = expected_metrics(report)
    for key, texts in page.metrics.items():
        assert key in expected, f"unexpected data-metric {key}"
        assert set(texts) == {expected[key]}, key
    endpoint_keys = {k for k in expected if ".endpoint." in k}
    assert endpoint_keys <= set(page.metrics), sorted(endpoint_keys - set(page.metrics))[:5]


@pytest.mark.parametrize("kind", KINDS)
def test_checklist_anchors_exist_for_every_kind(rendered, kind):
    ids = Page(rendered[kind]).ids
    assert set(SECTIONS) <= ids
    assert all(anchor in ids for item in ITEMS for anchor in item.anchors)
    assert "endpoints" in {a for item in ITEMS for a in item.anchors}


@pytest.mark.parametrize("kind", NON_BINARY)
def test_page_one_states_the_decision_and_no_placeholder_text_remains(rendered, kind):
    text = rendered[kind]
    assert STATEMENTS[kind] in page_one(text)
    for defect in DEFECT_TEXTS:
        assert defect not in text, defect
    assert "Calibration in one line" in page_one(text)


def test_ordinal_page_one_shows_the_cut_its_sensitivity_and_specificity_and_the_grade_measures(rendered):
    summary, page = page_one(rendered["ordinal"]), Page(page_one(rendered["ordinal"]))
    assert "graded (ordinal) classification, grades 0 &lt; 1 &lt; 2 &lt; 3" in summary
    assert "Default cut (the middle grade): none was declared." in summary
    # ge_2 on the locked test set: seed 0.0831 -> sensitivity 0.7831 + 0.0422, specificity 0.7831 + 0.0633
    assert page.metrics["test.endpoint.ge_2.sensitivity.value"] == ["0.825"]
    assert page.metrics["test.endpoint.ge_2.sensitivity.ci_low"] == ["0.655"]
    assert page.metrics["test.endpoint.ge_2.specificity.value"] == ["0.846"]
    assert page.metrics["oof.endpoint.ge_2.sensitivity.value"] == ["0.838"]
    assert page.metrics["test.auroc.value"] == ["0.842"] and "Macro-average AUROC" in summary
    assert page.metrics["test.quadratic_weighted_kappa.value"] == ["0.731"]
    assert page.metrics["test.mean_absolute_grade_error.value"] == ["0.417"]
    assert page.metrics["operating_point.threshold"] == ["0.382"]
    assert "probability of\n    grade &gt;= 2" in summary
    assert "For the decision grade &gt;= 2: Well calibrated" in summary
    declared = page_one(render_html(kind_report("ordinal", decision_cut_declared=True)))
    assert "This cut was declared with the task." in declared and "middle grade" not in declared
    silent = page_one(render_html(kind_report("ordinal", decision_cut_declared=None, decision_text=None)))
    assert "declared" not in silent and "Supports the decision: grade &gt;= 2." in silent


def test_multilabel_page_one_has_one_row_per_finding_at_its_own_threshold(rendered):
    summary = page_one(rendered["multilabel"])
    page = Page(summary)
    for i, name in enumerate(FINDINGS):
        seed = 0.03 * i
        row = summary.split(f"<th>{name}</th>")[1].split("</tr>")[0]
        assert f"{f(0.70 + seed)}</span>" in row  # AUROC
        assert page.metrics[f"test.endpoint.{name}.sensitivity.value"] == [f(0.70 + seed + 0.0422)]
        assert page.metrics[f"test.endpoint.{name}.specificity.value"] == [f(0.70 + seed + 0.0633)]
        assert page.metrics[f"test.endpoint.{name}.threshold.value"] == [f([0.4141, 0.2727, 0.5656][i])]
        assert "youden" in row and "20 of 60" in row
    assert "finding effusion: well calibrated (ECE 0.031); finding nodule: well calibrated (ECE 0.034)" in summary
    assert "operating_point.threshold" not in page.metrics


def test_multiclass_page_one_shows_accuracy_macro_auroc_and_recall_per_class(rendered):
    summary = page_one(rendered["multiclass"])
    page = Page(summary)
    assert page.metrics["test.accuracy.value"] == ["0.800"] and page.metrics["oof.accuracy.value"] == ["0.812"]
    assert page.metrics["test.auroc.value"] == ["0.842"]
    # recall = diagonal / row total of the test confusion [[8,1,1],[2,7,1],[0,1,9]]
    assert [page.metrics[f"test.recall.{c}.value"] for c in CLASSES] == [["0.800"], ["0.700"], ["0.900"]]
    assert "8 of 10" in summary and "9 of 10" in summary
    assert "No threshold is applied" in summary
    assert "Across all classes: well calibrated (Class-wise ECE 0.049 (95% CI 0.031–0.071)" in summary


def test_confusion_matrices_show_counts_and_row_percentages(rendered):
    ordinal = section(rendered["ordinal"], "confusion")
    # test set, true grade 1: [2, 9, 3, 1] of 15
    row = ordinal.split("<th>1</th>")[1].split("</tr>")[0]
    assert re.findall(r"(\d+) <span class=\"muted\">\(([\d.]+)%\)", row) == [
        ("2", "13.3"),
        ("9", "60.0"),
        ("3", "20.0"),
        ("1", "6.7"),
    ]
    multiclass = section(rendered["multiclass"], "confusion")
    assert '7 <span class="muted">(70.0%)</span>' in multiclass and "<img" in multiclass
    multilabel = section(rendered["multilabel"], "confusion")
    assert multilabel.count("<table") == 6  # a 2x2 per finding and evaluation
    assert '15 <span class="muted">(75.0%)</span>' in multilabel  # present, decided present: 15 of 20


def test_per_endpoint_tables_calibration_and_subgroups_follow_page_one(rendered):
    ordinal = rendered["ordinal"]
    table = section(ordinal, "endpoints")
    assert table.count("grade &gt;= ") == 6 and "(the decision)" in table
    calibration = section(ordinal, "calibration")
    assert calibration.count("<img") == 2  # the decision cut's reliability diagram, per evaluation
    assert "Multi-class Brier score" in calibration and "Class-wise ECE" in calibration
    subgroups = section(ordinal, "subgroups")
    assert "Locked test set — grade &gt;= 2" in subgroups and "sex = F" in subgroups
    multiclass = section(rendered["multiclass"], "endpoints")
    assert "none (most probable class)" in multiclass and "read off the confusion matrix" in multiclass
    assert '0.778</span> <span class="muted">(7/9)' in multiclass  # PPV of malignant: 7 of the 9 decided malignant
    assert section(rendered["multilabel"], "calibration").count("<img") == 6  # every finding, per evaluation


@pytest.mark.parametrize("kind", ["ordinal", "multilabel"])
def test_failure_cases_name_their_endpoint(rendered, kind):
    failures = section(rendered[kind], "failures")
    assert {"ordinal": "· grade &gt;= 2 ·", "multilabel": "· finding mass ·"}[kind] in failures


def test_an_endpoint_threshold_moved_on_the_test_set_is_refused():
    report = kind_report("multilabel")
    oof, test = report.metrics.evaluations
    moved = test.endpoints[1].model_copy(
        update={"operating_point": OperatingPoint(rule="youden", threshold=0.5, chosen_on="oof")}
    )
    test = test.model_copy(update={"endpoints": [test.endpoints[0], moved, test.endpoints[2]]})
    metrics = report.metrics.model_copy(update={"evaluations": [oof, test]})
    with pytest.raises(DataContractError, match=r"endpoints\[nodule\]"):
        render_html(kind_report("multilabel", metrics=metrics))


def chromium(page: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    """run_chromium with the page's console logged to stderr (as "CONSOLE" lines)."""
    return run_chromium(page, profile, "--enable-logging=stderr", "--v=0")


def console_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)")
@pytest.mark.parametrize("kind", NON_BINARY)
def test_chromium_renders_each_kind_without_console_errors(kind, tmp_path):
    control = tmp_path / "control.html"  # the detector must see a page that does log to the console
    control.write_text('<p>x</p><script>console.error("boom")</script>')
    assert console_lines(chromium(control, tmp_path / "p0"))
    write_report(kind_report(kind), tmp_path / "out", pdf=False)
    result = chromium(tmp_path / "out" / "report.html", tmp_path / "p1")
    assert console_lines(result) == []
    dom = Page(result.stdout)
    assert html.unescape(STATEMENTS[kind]) in html.unescape(" ".join(result.stdout.split()))
    expected = expected_metrics(kind_report(kind))
    for key, texts in dom.metrics.items():
        assert set(texts) == {expected[key]}, key
    assert {"summary", "endpoints", "signoff"} <= dom.ids


@pytest.mark.slow
def test_an_ordinal_pdf_states_the_decision_on_page_one(tmp_path):
    from medtl.errors import ConfigError
    from medtl.reporting.pdf import _weasyprint

    try:
        _weasyprint()
    except ConfigError as error:  # the PDF extra is optional; its absence is tested in test_report_render.py
        pytest.skip(str(error).splitlines()[0])
    pypdf = pytest.importorskip("pypdf")
    digests = write_report(kind_report("ordinal"), tmp_path)
    assert set(digests) == {"report.html", "report.pdf"}
    pages = [" ".join(p.extract_text().split()) for p in pypdf.PdfReader(tmp_path / "report.pdf").pages]
    first = pages[0]
    assert "Supports the decision: grade >= 2 (refer)." in first
    for number in ("0.825", "0.846", "0.731", "0.417", "0.382"):
        assert number in first
    assert "not reported" not in " ".join(pages)
    assert "Provenance" in first and "How these numbers were obtained" not in first  # page one fits one page
