"""The evaluation flow: the library's report and numbers, a headline fit for the UI, bad rules refused up front."""

from __future__ import annotations

import shutil

import pytest

from medtl.contracts import read_json
from medtl.contracts.evaluation import Metrics
from pipelines.evaluate import EvaluateParameters, evaluate_flow, summary_markdown

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flow_writes_the_report_and_returns_its_headline(trained, tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(trained / "artifact", artifact)  # the evaluation appends an audit event: work on a copy
    params = EvaluateParameters(artifact=artifact, out=tmp_path / "report", rule="sensitivity >= 0.9", pdf=False,
                                n_boot=100, temperature_scaling=True)  # fmt: skip
    summary = evaluate_flow(params)
    metrics = read_json(Metrics, tmp_path / "report" / "metrics.json")
    oof = metrics.evaluations[0]
    assert oof.operating_point.rule == "sensitivity>=0.9"
    assert summary["threshold"] == oof.operating_point.threshold
    named = {e.name: e for e in oof.estimates}
    assert summary["headline"]["oof"]["auroc"] == [named["auroc"].value, named["auroc"].ci_low, named["auroc"].ci_high]
    assert named["sensitivity"].value >= 0.9  # the declared rule was honoured
    assert oof.calibration.temperature is not None
    assert set(summary["files"]) >= {"report.html", "metrics.json"} and "report.pdf" not in summary["files"]


def test_a_misspelt_rule_fails_before_the_artifact_is_opened(tmp_path):
    with pytest.raises(ValueError, match="operating-point rule"):
        EvaluateParameters(artifact=tmp_path / "missing", out=tmp_path / "r", rule="sensitivity=0.9")
    with pytest.raises(ValueError):
        EvaluateParameters(artifact=tmp_path / "missing", out=tmp_path / "r", n_boot=5)


def test_summary_shows_estimates_without_an_interval_plainly():
    text = summary_markdown(
        {"headline": {"oof": {"auroc": [0.91, 0.85, 0.96], "sensitivity": [1.0, None, None]}}, "threshold": 0.4321,
         "report": "reports/v1"}
    )  # fmt: skip
    assert "auroc 0.910 (0.850-0.960)" in text and "sensitivity 1.000," not in text and "sensitivity 1.000" in text
    assert "threshold 0.4321" in text and "medtl approve" in text
