"""The clinician's report: self-contained, its numbers equal metrics.json, safe text, stable PHI-free images, a PDF
whose first page is the summary."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
from report_support import (
    HEADLINE_KEYS,
    PLANTED_PHI,
    Page,
    build_report,
    expected_metrics,
    needs_chromium,
    run_chromium,
    thumbnail,
)

from medtl.artifacts import PhiTerms
from medtl.artifacts.phi import scan_for_phi
from medtl.contracts.evaluation import Calibration, Estimate, Evaluation
from medtl.errors import ConfigError, DataContractError, MedTLError
from medtl.reporting import plots, pngmeta
from medtl.reporting.checklists import ITEMS, SECTIONS
from medtl.reporting.html import render_html
from medtl.reporting.model import Curve, EvaluationCurves, ReportInput
from medtl.reporting.render import write_report
from medtl.reporting.summary import evaluation, judge


@pytest.fixture(scope="module")
def html() -> str:
    """The default report rendered once per module: rendering draws nine figures, which takes a second or two."""
    return render_html(build_report())


def test_html_is_self_contained(html):
    text = html
    page = Page(text)
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert not {"script", "link", "iframe", "object", "embed", "base"} & page.tags
    assert "url(" not in text.split("</style>")[0]
    assert page.sources, "the images must be there"
    assert all(s.startswith("data:image/png;base64,") or s.startswith("#") for s in page.sources)
    assert all(":" not in href for href in page.sources if href.startswith("#"))  # in-page anchors only


def test_every_data_metric_equals_metrics_json(html, report):
    page, expected = Page(html), expected_metrics(report)
    assert set(HEADLINE_KEYS) | {"operating_point.threshold"} <= set(page.metrics)
    for key, texts in page.metrics.items():
        assert key in expected, f"unexpected data-metric {key}"
        assert set(texts) == {expected[key]}, key
    assert page.metrics["test.sensitivity.value"] == ["0.850"] * 2  # headline and detail table agree
    assert page.metrics["operating_point.threshold"] == ["0.414"]
    assert page.metrics["test.npv.value"] == ["n/a"]


def test_without_a_locked_test_set_the_headline_is_oof_and_says_so():
    base = build_report()
    oof_only = base.metrics.model_copy(update={"evaluations": [evaluation(base.metrics, "oof")]})
    text = render_html(build_report(metrics=oof_only))
    page = Page(text)
    assert not any(key.startswith("test.") for key in page.metrics)
    assert page.metrics["oof.auroc.value"][0] == "0.912"
    assert "No locked test set was evaluated" in text and "may be optimistic" in text
    assert "Source of the headline: Out-of-fold" in text


def test_a_minimal_multiclass_report_renders_without_optional_parts():
    ev = Evaluation(
        evaluated_on="oof",
        n_patients=30,
        n_scans=30,
        prevalence=None,
        operating_point=None,
        classes=["a", "b", "c"],
        confusion=[[8, 1, 1], [2, 7, 1], [0, 1, 9]],
        estimates=[
            Estimate(name="auroc", value=0.8312),
            Estimate(name="accuracy", value=0.8, ci_low=0.62, ci_high=0.9),
        ],
    )
    base = build_report()
    metrics = base.metrics.model_copy(update={"evaluations": [ev], "transfer": []})
    minimal = build_report(
        task_kind="multiclass",
        positive_class=None,
        metrics=metrics,
        transfer_curves=[],
        failure_cases=[],
        curves=[EvaluationCurves(evaluated_on="oof", roc=Curve(x=[0, 0.2, 1], y=[0, 0.7, 1]))],
    )
    text = render_html(minimal)
    page = Page(text)
    assert page.metrics["oof.auroc.value"] == ["0.831"] * 2
    assert page.metrics["oof.auroc.ci_low"] == ["n/a"] * 2
    assert "oof.sensitivity.value" not in page.metrics and "not reported" not in text
    assert "the most probable class is the model&#39;s answer" in text and "rule <strong>none" not in text
    assert [page.metrics[f"oof.recall.{c}.value"] for c in "abc"] == [["0.800"], ["0.700"], ["0.900"]]
    assert "Calibration was not assessed." in text and "No failure cases were supplied." in text  # none supplied
    assert "operating_point.threshold" not in page.metrics


def test_banner_signoff_caption_and_checklist_appendix_are_present(html, report):
    text = html
    page = Page(text)
    summary = text.split('id="methods"')[0]
    assert "NOT FOR CLINICAL USE UNTIL APPROVED" in summary
    for words in ("Reviewer name", "Role", "approve", "reject", "Date", "Signature", "Comment"):
        assert words in text.split('id="signoff"')[1].split('id="checklists"')[0]
    assert "medtl approve ARTIFACT --reviewer" in text
    assert text.count("Saliency is illustrative, not validated localisation") >= 2
    assert set(SECTIONS) <= page.ids
    assert all(anchor in page.ids for item in ITEMS for anchor in item.anchors)
    appendix = text.split('id="checklists"')[1]
    for item in ("claim 2024", "tripod+ai", "fairness", "failure analysis", "de-identified", "calibration"):
        assert item in appendix.lower()
    assert "UNSIGNED" not in text and "ed25519:3f9a0c1b2d4e5f60" in summary
    unsigned = render_html(build_report(provenance=report.provenance.model_copy(update={"signed_by": None})))
    assert "UNSIGNED" in unsigned.split('id="methods"')[0]


@pytest.mark.parametrize(
    ("values", "level", "direction"),
    [
        ({"ece": 0.03, "slope": 1.1, "intercept": 0.05}, "well calibrated", None),
        ({"ece": 0.03, "slope": 0.7, "intercept": 0.0}, "some miscalibration", "overconfident"),
        ({"ece": 0.07, "slope": None, "intercept": None}, "some miscalibration", None),
        ({"ece": 0.04, "slope": 1.0, "intercept": -0.6}, "poorly calibrated", "overestimates risk"),
        ({"ece": 0.12, "slope": 1.3, "intercept": 0.0}, "poorly calibrated", "underconfident"),
    ],
)
def test_calibration_verdict_follows_the_documented_thresholds(values, level, direction):
    verdict = judge(values)
    assert verdict.level == level
    assert direction is None or direction in verdict.detail


def test_the_page_one_calibration_line_uses_the_headline_and_mentions_scaling(html, report):
    summary = html.split('id="methods"')[0]
    assert "Well calibrated (slope 0.91, intercept 0.05, ECE 0.041)" in summary  # the locked test set's numbers
    oof_only = report.metrics.model_copy(update={"evaluations": [evaluation(report.metrics, "oof")]})
    line = render_html(build_report(metrics=oof_only)).split('id="methods"')[0]
    assert "Some miscalibration (slope 0.74" in line and "overconfident" in line
    assert "After temperature scaling (T = 1.27): Well calibrated" in line


def _all_plots(report: ReportInput) -> dict[str, bytes]:
    test, oof = evaluation(report.metrics, "test"), evaluation(report.metrics, "oof")
    return {
        "roc": plots.roc_png(report.curves, [test, oof]),
        "pr": plots.pr_png(report.curves, [test, oof]),
        "reliability": plots.reliability_png(oof.calibration, "Reliability"),
        "confusion": plots.confusion_png(test.classes, test.confusion, "Locked test set"),
        "transfer": plots.transfer_png(report.transfer_curves),
        "forest": plots.forest_png(test.subgroups, ["sensitivity", "specificity", "auroc"], test, "Subgroups"),
    }


def test_plots_are_png_without_text_chunks_and_byte_stable(report):
    first, second = _all_plots(report), _all_plots(build_report())
    for name, png in first.items():
        kinds = [kind for kind, _ in pngmeta.chunks(png)]
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND", name
        assert not {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"tIME"} & set(kinds), name
        assert png == second[name], f"{name} is not byte-stable"


def test_reliability_diagram_tolerates_empty_bins():
    calibration = Calibration(brier=0.2, ece=0.1, bins=[])
    assert pngmeta.text_chunk_types(plots.reliability_png(calibration, "empty")) == []


def test_thumbnail_text_chunks_are_removed_before_embedding(html, report):
    assert pngmeta.text_chunk_types(report.failure_cases[1].thumbnail_png) == ["tEXt"]
    images = [s for s in Page(html).sources if s.startswith("data:")]
    for uri in images:
        png = base64.b64decode(uri.split(",", 1)[1])
        assert pngmeta.text_chunk_types(png) == []
        assert b"Doe^Jane" not in png
    assert pngmeta.strip_metadata(thumbnail(7)) == thumbnail(7)
    with pytest.raises(DataContractError, match="not a PNG"):
        pngmeta.strip_metadata(b"GIF89a....")


def test_text_is_escaped(report):
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    text = render_html(build_report(intended_use=hostile, limitations=[hostile], title="A & B <b>"))
    assert "<script" not in text and "onerror=alert(1)>" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert "<title>A &amp; B &lt;b&gt; — evaluation report</title>" in text


def test_the_phi_gate_passes_on_a_pseudonymous_report_and_catches_a_planted_name(tmp_path, report):
    terms = PhiTerms(**PLANTED_PHI)
    write_report(report, tmp_path / "clean", pdf=False)
    text = (tmp_path / "clean" / "report.html").read_text(encoding="utf-8")
    assert not any(term.lower() in text.lower() for values in PLANTED_PHI.values() for term in values)
    assert scan_for_phi(tmp_path / "clean", terms) == []
    leaked = build_report(limitations=["Reviewed with Jane Doe"])  # positive control: the gate is not vacuous
    write_report(leaked, tmp_path / "leaked", pdf=False)
    assert [f.kind for f in scan_for_phi(tmp_path / "leaked", terms)]


def test_a_report_mixing_two_artifacts_is_refused(report):
    other = report.provenance.model_copy(update={"artifact_manifest_hash": "0" * 64})
    with pytest.raises(DataContractError, match="artifact_manifest_hash"):
        render_html(build_report(provenance=other))
    with pytest.raises(DataContractError, match="model_id"):
        render_html(build_report(model_version="9.9.9"))
    oof, test = evaluation(report.metrics, "oof"), evaluation(report.metrics, "test")
    moved = test.model_copy(update={"operating_point": test.operating_point.model_copy(update={"threshold": 0.3})})
    with pytest.raises(DataContractError, match="threshold frozen on OOF"):
        render_html(build_report(metrics=report.metrics.model_copy(update={"evaluations": [oof, moved]})))


def test_write_report_returns_the_sha256_of_what_it_wrote(tmp_path, report):
    digests = write_report(report, tmp_path / "out", pdf=False)
    assert list(digests) == ["report.html"]
    assert digests["report.html"] == hashlib.sha256((tmp_path / "out" / "report.html").read_bytes()).hexdigest()
    assert write_report(report, tmp_path / "again", pdf=False) == digests  # same input, same bytes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html"]


def test_missing_weasyprint_is_a_config_error_that_says_how_to_install(monkeypatch):
    from medtl.reporting.pdf import render_pdf

    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"medtl\[pdf\].*libpango-1\.0-0 libpangoft2-1\.0-0"):
        render_pdf("<p>x</p>")


def skip_without_weasyprint() -> None:
    """The PDF extra is optional: without WeasyPrint or its pango libraries these tests skip (the error is tested)."""
    from medtl.reporting.pdf import _weasyprint

    try:
        _weasyprint()
    except ConfigError as error:
        pytest.skip(str(error).splitlines()[0])


@pytest.fixture(scope="module")
def pdf_pages(tmp_path_factory) -> list[str]:
    skip_without_weasyprint()
    pypdf = pytest.importorskip("pypdf")
    out = tmp_path_factory.mktemp("pdf")
    digests = write_report(build_report(), out)
    assert set(digests) == {"report.html", "report.pdf"}
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(out / "report.pdf").pages]


def test_pdf_page_one_is_the_summary_and_the_checklists_come_later(pdf_pages):
    assert len(pdf_pages) > 1
    first = pdf_pages[0]
    assert "NOT FOR CLINICAL USE UNTIL APPROVED" in first
    for number in ("0.850", "0.640", "0.948", "0.875", "0.888", "0.801", "0.957", "0.414"):
        assert number in first
    assert "Provenance" in first and "How these numbers were obtained" not in first  # page break after the summary
    assert any("CLAIM" in page for page in pdf_pages[1:])
    assert all(re.search(rf"Page {i} of {len(pdf_pages)}", page) for i, page in enumerate(pdf_pages, start=1))


def test_pdf_renderer_refuses_anything_but_data_uris(tmp_path):
    skip_without_weasyprint()
    from medtl.reporting.pdf import render_pdf

    secret = tmp_path / "secret.png"
    secret.write_bytes(thumbnail(1))
    for url in (secret.as_uri(), "http://127.0.0.1:9/x.png"):
        with pytest.raises(MedTLError, match="only data: URIs"):
            render_pdf(f'<p>x</p><img src="{url}">')
    assert render_pdf(f'<img src="data:image/png;base64,{base64.b64encode(thumbnail(1)).decode()}">')[:5] == b"%PDF-"


def test_templates_ship_as_package_data():
    from importlib.resources import files

    templates = files("medtl.reporting") / "templates"
    assert (templates / "report.html.j2").is_file() and (templates / "report.css").is_file()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"medtl.reporting" = ["templates/*.j2", "templates/*.css"]' in pyproject


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked the network stack for. Chromium's own background requests (update checks, time sync)
    have no initiating origin and are not the report's doing; a file:// page's requests carry "null" and file://."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    jobs = [event.get("params") or {} for event in log["events"] if event["type"] == start]
    return [
        job["url"]
        for job in jobs
        if "url" in job
        and (job.get("initiator") != "not an origin" or "file://" in job.get("network_isolation_key", ""))
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    write_report(build_report(), out, pdf=False)
    return out / "report.html"


@pytest.mark.integration
@needs_chromium
def test_chromium_renders_the_headline_numbers(written, tmp_path, report):
    dom = Page(run_chromium(written, tmp_path / "profile").stdout)
    expected = expected_metrics(report)
    for key in [*HEADLINE_KEYS, "operating_point.threshold"]:
        assert dom.metrics[key][0] == expected[key], key
    assert "summary" in dom.ids and "signoff" in dom.ids


@pytest.mark.integration
@needs_chromium
def test_chromium_makes_no_network_request_for_the_report(written, tmp_path):
    offline = ("--host-resolver-rules=MAP * ~NOTFOUND",)  # nothing could leave the machine anyway
    control = tmp_path / "control.html"  # the detector must see what a careless page would fetch
    control.write_text('<p>x</p><img src="http://example.invalid/a.png"><img src="https://example.invalid/b.png">')
    run_chromium(control, tmp_path / "p1", *offline, f"--log-net-log={tmp_path / 'control.json'}")
    assert sorted(page_requests(tmp_path / "control.json")) == [
        "http://example.invalid/a.png",
        "https://example.invalid/b.png",
    ]
    result = run_chromium(written, tmp_path / "p2", *offline, f"--log-net-log={tmp_path / 'report.json'}")
    assert page_requests(tmp_path / "report.json") == []
    assert "NOT FOR CLINICAL USE UNTIL APPROVED" in result.stdout
