"""The report's decision curves, probability distributions and seed spread: present, explained, and saying the
numbers that metrics.json holds."""

from __future__ import annotations

import html as html_lib
import re

import numpy as np
from report_support import build_report

from medtl.contracts.evaluation import Estimate, OperatingPoint, SeedRun, SeedSpread
from medtl.evaluation.clinical_utility import decision_curve, histogram
from medtl.evaluation.replicates import spread_summary
from medtl.reporting.html import render_html
from medtl.reporting.utility import curve_sentence

TARGETS = np.array([1, 1, 0, 0, 1])
SCORES = np.array([0.9, 0.4, 0.6, 0.1, 0.2])


def _section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</section>", start)]


def _with_utility():
    report = build_report()
    point = OperatingPoint(rule="youden", threshold=0.3, chosen_on="oof")
    curve = decision_curve(TARGETS, SCORES, display="malignant", point=point)
    evaluations = [e.model_copy(update={"decision_curves": [curve]}) for e in report.metrics.evaluations]
    runs = [
        SeedRun(seed=seed, model_version=f"1.0.{seed}", artifact_manifest_hash=f"{seed:x}" * 64,
                estimates=[Estimate(name="auroc", value=value), Estimate(name="brier", value=0.2)])
        for seed, value in ((1, 0.8), (2, 0.9), (3, 0.85))
    ]  # fmt: skip
    spread = SeedSpread(split_shared=True, runs=runs, summary=spread_summary(runs))
    metrics = report.metrics.model_copy(update={"evaluations": evaluations, "seed_spread": spread})
    labels = np.array(["pos", "pos", "neg", "neg", "pos"])
    distribution = histogram(SCORES, [("true neg", labels == "neg"), ("true pos", labels == "pos")],
                             evaluated_on="oof", endpoint=None, display="P(malignant)")  # fmt: skip
    return report.model_copy(update={"metrics": metrics, "distributions": [distribution]}), curve


def test_decision_curves_are_drawn_with_a_reading_and_the_useful_range_in_words():
    report, curve = _with_utility()
    page = html_lib.unescape(render_html(report))
    section = _section(page, "decision-curves")
    assert "threshold probability" in section and "treat all" in section.lower()
    assert section.count("<img") == len(report.metrics.evaluations)  # one curve per evaluation
    assert "11% to 20%, 61% to 90%" in section  # curve.useful_thresholds, [[0.11, 0.2], [0.61, 0.9]]
    assert f"net benefit is {curve.operating_net_benefit:.3f}" in section and "31.4 cases per 100" in section


def test_probability_distributions_and_the_seed_spread_are_shown():
    report, _ = _with_utility()
    page = html_lib.unescape(render_html(report))
    assert _section(page, "distributions").count("<img") == 1
    spread = _section(page, "seed-spread")
    assert "same patient folds" in spread
    cells = re.findall(r'<td class="num">([^<]*)</td>', spread)
    assert [cells[0], cells[2], cells[4]] == ["0.800", "0.900", "0.850"]  # AUROC per seed, beside its Brier score
    # summary: AUROC over 3 runs, median 0.850, range 0.800-0.900, SD 0.050; the Brier score does not vary
    assert cells[6:10] == ["3", "0.850", "0.800–0.900", "0.050"]
    assert cells[10:14] == ["3", "0.200", "0.200–0.200", "0.000"]


def test_without_utility_parts_the_sections_say_why():
    page = render_html(build_report())
    assert "no decision curve could be drawn" in _section(page, "decision-curves").lower()
    assert "--replicate" in _section(page, "seed-spread")


def test_a_curve_never_better_than_the_defaults_says_so():
    curve = decision_curve(np.array([1, 0, 1, 0]), np.array([0.1, 0.9, 0.2, 0.8]), display="x")
    assert curve.useful_thresholds == []
    assert "at no threshold probability" in curve_sentence(curve, "Out-of-fold")
