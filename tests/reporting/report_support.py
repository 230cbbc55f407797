"""Builders for the report tests. A realistic ReportInput built by hand: a binary task with OOF and locked-test
evaluations, subgroups with a small cell, three transfer arms with learning curves, two failure cases with tiny PNG
thumbnails (one carrying a tEXt chunk with a name, as careless exporters write), and full provenance.

Every identifier is a pseudonym; the numbers have more decimals than the report prints, so formatting is exercised.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from medtl.contracts.evaluation import (
    Calibration,
    CalibrationBin,
    Estimate,
    Evaluation,
    Metrics,
    OperatingPoint,
    SubgroupResult,
    TransferArm,
)
from medtl.reporting.model import (
    Cohort,
    Curve,
    EvaluationCurves,
    FailureCase,
    Provenance,
    ReportInput,
    TransferCurve,
)
from medtl.reporting.summary import evaluation

ARTIFACT_HASH = hashlib.sha256(b"artifact manifest").hexdigest()
DATA_HASH = hashlib.sha256(b"data manifest").hexdigest()
# What a site's phi_terms.json could hold: none of it may ever reach the report.
PLANTED_PHI = {"patient_names": ["Doe^Jane", "Jane Doe"], "patient_ids": ["MRN0042137"], "birth_dates": ["19580214"]}
BOOT = "percentile bootstrap over patients (2000)"
HEADLINE_KEYS = [
    f"{ev}.{name}.{field}"
    for ev in ("test", "oof")
    for name in ("sensitivity", "specificity", "auroc")
    for field in ("value", "ci_low", "ci_high")
]


def thumbnail(shade: int, *, text: dict[str, str] | None = None) -> bytes:
    """A 16x16 grey PNG; `text` adds tEXt chunks, like an exporter that writes metadata would."""
    image = Image.new("L", (16, 16), shade)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def estimate(
    name: str, value: float | None, low: float | None, high: float | None, n: int, method: str = BOOT
) -> Estimate:
    return Estimate(name=name, value=value, ci_low=low, ci_high=high, ci_method=method, n=n)


def _bins(shift: float) -> list[CalibrationBin]:
    bins = []
    for i in range(10):
        lower, upper = i / 10, (i + 1) / 10
        mean = lower + 0.05
        bins.append(
            CalibrationBin(
                lower=lower,
                upper=upper,
                count=[30, 18, 12, 9, 8, 7, 9, 11, 16, 26][i],
                mean_predicted=mean,
                observed=min(max(mean + shift * (mean - 0.5), 0.0), 1.0),
            )
        )
    return bins


def _subgroups() -> list[SubgroupResult]:
    def group(attribute: str, value: str, n: int, pos: int, small: bool, sens: float, spec: float, auc: float):
        width = 0.35 if small else 0.12
        return SubgroupResult(
            attribute=attribute,
            value=value,
            n_patients=n,
            n_positive=pos,
            small_cell=small,
            estimates=[
                estimate("sensitivity", sens, max(sens - width, 0), min(sens + width / 2, 1), pos, "wilson"),
                estimate("specificity", spec, max(spec - width, 0), min(spec + width / 2, 1), n - pos, "wilson"),
                estimate("auroc", auc, max(auc - width, 0), min(auc + width / 2, 1), n),
            ],
        )

    return [
        group("sex", "F", 31, 10, False, 0.9, 0.857142, 0.91237),
        group("sex", "M", 29, 10, False, 0.8, 0.894736, 0.86842),
        group("site", "S-01", 33, 11, False, 0.818181, 0.909090, 0.89669),
        group("site", "S-02", 21, 7, False, 0.857142, 0.857142, 0.87755),
        group("site", "S-03", 6, 2, True, 1.0, 0.75, 0.875),
    ]


def _evaluations() -> list[Evaluation]:
    point = OperatingPoint(rule="youden", threshold=0.41372, chosen_on="oof")
    oof = Evaluation(
        evaluated_on="oof",
        n_patients=120,
        n_scans=186,
        prevalence=0.35,
        operating_point=point,
        classes=["normal", "nodule"],
        confusion=[[69, 9], [6, 36]],
        estimates=[
            estimate("auroc", 0.912345, 0.861149, 0.954213, 120),
            estimate("sensitivity", 0.857142, 0.756137, 0.930241, 42, "wilson"),
            estimate("specificity", 0.884615, 0.810088, 0.940511, 78, "wilson"),
            estimate("ppv", 0.8, 0.667, 0.893, 45),
            estimate("npv", 0.92, 0.84, 0.962, 75),
            estimate("auprc", 0.861, 0.78, 0.925, 120),
        ],
        calibration=Calibration(
            brier=0.10234,
            ece=0.06871,
            intercept=-0.1432,
            slope=0.7421,
            bins=_bins(0.3),
            temperature=1.2734,
            after_scaling={"brier": 0.0951, "ece": 0.0312, "intercept": -0.0411, "slope": 0.9632},
        ),
    )
    test = Evaluation(
        evaluated_on="test",
        n_patients=60,
        n_scans=91,
        prevalence=0.333333,
        operating_point=point,
        classes=["normal", "nodule"],
        confusion=[[35, 5], [3, 17]],
        estimates=[
            estimate("auroc", 0.887512, 0.801234, 0.956789, 60),
            estimate("sensitivity", 0.85, 0.639608, 0.947613, 20, "wilson"),
            estimate("specificity", 0.875, 0.738852, 0.945394, 40, "wilson"),
            estimate("ppv", 0.772727, 0.566, 0.9, 22),
            estimate("npv", None, None, None, 38, "undefined"),
        ],
        calibration=Calibration(brier=0.1123, ece=0.04123, intercept=0.0532, slope=0.9121, bins=_bins(0.1)),
        subgroups=_subgroups(),
    )
    return [oof, test]


def _transfer_curves() -> list[TransferCurve]:
    curves = []
    for arm, ceiling, rate, seconds_per_epoch in (
        ("main", 0.93, 0.6, 11.0),
        ("linear_probe", 0.9, 0.9, 4.0),
        ("scratch", 0.68, 0.15, 10.0),
    ):
        for fold in range(3):
            epochs = list(range(1, 13))
            auc: list[float | None] = [
                round(0.5 + (ceiling - 0.5) * (1 - math.exp(-rate * e)) - 0.01 * fold, 4) for e in epochs
            ]
            if arm == "scratch" and fold == 2:
                auc[0] = None  # one class in the tuning batch: undefined, must still plot
            curves.append(
                TransferCurve(
                    arm=arm,
                    fold=fold,
                    epochs=epochs,
                    tune_auc=auc,
                    seconds=[seconds_per_epoch * e + fold for e in epochs],
                )
            )
    return curves


def _roc(power: float) -> Curve:
    xs = [i / 20 for i in range(21)]
    return Curve(x=xs, y=[x**power for x in xs])


def build_report(**changes: Any) -> ReportInput:
    evaluations = _evaluations()
    metrics = Metrics(
        artifact_manifest_hash=ARTIFACT_HASH,
        model_id="chest-nodule-ct",
        model_version="1.0.0",
        evaluations=evaluations,
        transfer=[
            TransferArm(
                arm="main",
                strategy="full_finetune",
                pretrained="artifact:demo-source",
                auc=estimate("auroc", 0.912345, 0.861149, 0.954213, 120),
                epochs_to_scratch_best=2.0,
                seconds_to_scratch_best=22.5,
                folds_reaching_scratch_best=3,
            ),
            TransferArm(
                arm="linear_probe",
                strategy="linear_probe",
                pretrained="artifact:demo-source",
                auc=estimate("auroc", 0.883, 0.82, 0.931, 120),
                epochs_to_scratch_best=1.0,
                seconds_to_scratch_best=4.2,
                folds_reaching_scratch_best=3,
            ),
            TransferArm(
                arm="scratch",
                strategy="full_finetune",
                pretrained="none",
                auc=estimate("auroc", 0.612, 0.51, 0.709, 120),
            ),
        ],
    )
    values: dict[str, Any] = {
        "title": "Lung nodule on chest CT",
        "model_id": "chest-nodule-ct",
        "model_version": "1.0.0",
        "intended_use": "Flags chest CT scans of adults that likely contain a lung nodule, to prioritise the "
        "radiologist's worklist. Not for use in children or on contrast-enhanced scans.",
        "task_kind": "binary",
        "positive_class": "nodule",
        "cohort": Cohort(
            n_patients=180,
            n_scans=277,
            prevalence=0.344444,
            classes=["normal", "nodule"],
            modalities=["CT"],
            image_kind="3D volume",
            excluded_scans={"quarantined: slice gap": 4, "skipped: localizer": 11},
            locked_test_patients=60,
        ),
        "metrics": metrics,
        "curves": [
            EvaluationCurves(evaluated_on="oof", roc=_roc(0.25), pr=Curve(x=[0, 0.5, 0.857, 1], y=[1, 0.9, 0.8, 0.35])),
            EvaluationCurves(
                evaluated_on="test", roc=_roc(0.3), pr=Curve(x=[0, 0.5, 0.85, 1], y=[1, 0.88, 0.77, 0.33])
            ),
        ],
        "transfer_curves": _transfer_curves(),
        "failure_cases": [
            FailureCase(
                kind="false_positive",
                scan_id="X-0123456789abcdef",
                probability=0.83121,
                true_class="normal",
                thumbnail_png=thumbnail(90),
                saliency_method="Grad-CAM (MONAI)",
            ),
            # an exporter left a name in a tEXt chunk: the renderer must drop it
            FailureCase(
                kind="false_negative",
                scan_id="X-fedcba9876543210",
                probability=0.12,
                true_class="nodule",
                thumbnail_png=thumbnail(180, text={"Author": "Doe^Jane"}),
                saliency_method="occlusion",
            ),
        ],
        "limitations": [
            "Single-centre retrospective data from two scanners; performance elsewhere is unknown.",
            "Small locked test set (60 patients): intervals are wide.",
            "Site S-03 has 6 patients: its subgroup estimates must not be interpreted.",
        ],
        "provenance": Provenance(
            artifact_manifest_hash=ARTIFACT_HASH,
            signed_by="ed25519:3f9a0c1b2d4e5f60",
            data_manifest_hash=DATA_HASH,
            code_version="medtl 0.4.0 (git 5d79e34, clean)",
            pretrained="artifact:demo-source sha256:" + "ab" * 32,
            pretrained_license="Apache-2.0",
            seed=20240611,
            trained_at="2025-03-02T10:14:00Z",
        ),
        "generated_at": "2025-03-03T08:00:00Z",
        "medtl_version": "0.4.0",
    }
    values.update(changes)
    return ReportInput(**values)


class Page(HTMLParser):
    """What the tests need from the HTML: data-metric texts, element ids, tags and attribute values."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.metrics: dict[str, list[str]] = {}
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.sources: list[str] = []
        self._open: list[tuple[str, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        self.sources += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "poster", "data", "action")]
        if "data-metric" in values:
            self._open.append((values["data-metric"] or "", []))

    def handle_data(self, data: str) -> None:
        for _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            key, parts = self._open.pop()
            self.metrics.setdefault(key, []).append("".join(parts))


def expected_metrics(report: ReportInput) -> dict[str, str]:
    """Independently of the renderer: every data-metric key it may print and the text it must show."""

    def f(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    out: dict[str, str] = {}
    for ev in report.metrics.evaluations:
        for est in ev.estimates:
            for field in ("value", "ci_low", "ci_high"):
                out[f"{ev.evaluated_on}.{est.name}.{field}"] = f(getattr(est, field))
        if ev.calibration:
            for field in ("brier", "ece", "intercept", "slope", "temperature"):
                out[f"{ev.evaluated_on}.calibration.{field}"] = f(getattr(ev.calibration, field))
            for field, value in (ev.calibration.after_scaling or {}).items():
                out[f"{ev.evaluated_on}.calibration_after.{field}"] = f(value)
    for arm in report.metrics.transfer:
        for field in ("value", "ci_low", "ci_high"):
            out[f"transfer.{arm.arm}.{arm.auc.name}.{field}"] = f(getattr(arm.auc, field))
    head = evaluation(report.metrics, "test") or report.metrics.evaluations[0]
    out["operating_point.threshold"] = f(head.operating_point.threshold)
    return out


CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)"
)


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium that loads `page` and prints the DOM after the load event."""
    command = [
        CHROMIUM or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *extra,
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result
