"""`medtl evaluate` on tiny trained ordinal and multi-label artifacts with a locked test set: metrics.json must equal
a recomputation from the artifact's out-of-fold predictions, and the operating points frozen on them."""

from __future__ import annotations

import csv
import random

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import read_json
from medtl.contracts.evaluation import Metrics
from medtl.datasets.synth import make_cohort
from medtl.errors import ConfigError
from medtl.evaluation.evaluate import evaluate
from medtl.evaluation.operating_point import choose_threshold, choose_threshold_by_fold
from medtl.ingest.pipeline import ingest_sources
from medtl.reporting.render import write_report
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC, environment, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_BOOT = 100


def _relabel(label: str, kind: str, rng: random.Random) -> str:
    """The synthetic cohort's 0/1 finding as grades 0-3 (ordinal) or as findings mass and calc (multi-label)."""
    y = int(label)
    if kind == "ordinal":
        return str(min(3, y * 2 + rng.randint(0, 1)))
    return "|".join(name for name, present in (("mass", y), ("calc", rng.random() < 0.4)) if present) or "none"


def _cohort(root, name: str, kind: str, *, patients: int, seed: int):
    make_cohort(root / name, patients=patients, seed=seed)
    labels = root / name / "labels.csv"
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(seed)
    for row in rows:
        row["label"] = _relabel(row["label"], kind, rng)
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ingest_sources([root / name / "dicom"], out=root / f"{name}-data", labels=labels, spec=TINY_SPEC,
                   pseudonymizer=DEV_PSEUDONYMIZER, workers=1)  # fmt: skip
    return root / f"{name}-data"


class _Captured:
    """Wraps the report renderer: keeps the report input evaluation handed to it, then renders as usual."""

    def __init__(self) -> None:
        self.reports: list = []
        self.render = write_report

    def __call__(self, report, folder, *, pdf: bool = True) -> dict[str, str]:
        self.reports.append(report)
        return self.render(report, folder, pdf=pdf)


def _evaluated(root, kind: str):
    """ROOT/artifact trained on 30 patients, evaluated with a locked test set of 12 into ROOT/report; returns the
    report input evaluation handed to the renderer."""
    captured = _Captured()
    with signing_key(root / "signing.pem"), pytest.MonkeyPatch.context() as patch:
        dev = _cohort(root, "dev", kind, patients=30, seed=3)
        test = _cohort(root, "test", kind, patients=12, seed=4)
        train(dev, tiny_config(task={"kind": kind}), root / "artifact")
        patch.setattr("medtl.reporting.render.write_report", captured)
        evaluate(root / "artifact", out=root / "report", test=test, dataset=dev, n_boot=N_BOOT, pdf=False)
    return root, captured.reports[0]


def _pipeline_key(root):
    """The key that sealed ROOT/artifact, as signing key and trust anchor."""
    key = root / "signing.pem"
    return environment(MEDTL_SIGNING_KEY=str(key), MEDTL_TRUSTED_KEYS=f"{key}.pub")


@pytest.fixture(scope="module")
def ordinal(tmp_path_factory):
    return _evaluated(tmp_path_factory.mktemp("evaluate-ordinal"), "ordinal")


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    return _evaluated(tmp_path_factory.mktemp("evaluate-multilabel"), "multilabel")


def _named(estimates):
    return {e.name: e for e in estimates}


def _artifact(root):
    with _pipeline_key(root):
        return open_verified(root / "artifact")


def _oof(root) -> pd.DataFrame:
    frame = _artifact(root).read_table("predictions/oof.parquet")
    return frame[frame["arm"] == "main"].reset_index(drop=True)


def _expected_point(root, truth: np.ndarray, scores: np.ndarray, folds: np.ndarray):
    transfer = ArtifactContents(_artifact(root)).transfer.arms
    if any(entry.arm == "main" and entry.pooling_gap_flagged for entry in transfer):
        return choose_threshold_by_fold(truth, scores, folds, "youden")
    return choose_threshold(truth, scores, "youden")


def _evaluated_event(root):
    return next(e for e in _artifact(root).events if e.kind == "evaluated")


def test_ordinal_metrics_equal_a_recomputation_from_the_oof_predictions(ordinal):
    root, report = ordinal
    metrics = read_json(Metrics, root / "report" / "metrics.json")
    oof_eval, test_eval = metrics.evaluations
    assert (oof_eval.evaluated_on, test_eval.evaluated_on) == ("oof", "test")
    assert oof_eval.task_kind == test_eval.task_kind == "ordinal" and report.task_kind == "ordinal"
    oof = _oof(root)
    grades = oof_eval.classes
    assert grades == ["0", "1", "2", "3"]
    probabilities = oof[[f"p_{g}" for g in grades]].to_numpy()
    targets = oof["target"].to_numpy()
    named = _named(oof_eval.estimates)
    predicted = probabilities.argmax(axis=1)
    assert named["quadratic_weighted_kappa"].value == pytest.approx(
        cohen_kappa_score(targets, predicted, labels=[0, 1, 2, 3], weights="quadratic")
    )
    assert named["mean_absolute_grade_error"].value == pytest.approx(np.abs(targets - predicted).mean())
    assert named["accuracy"].value == pytest.approx((targets == predicted).mean())
    assert named["auroc"].value == pytest.approx(roc_auc_score(targets, probabilities, multi_class="ovr"))
    one_hot = np.eye(4)[targets]
    assert named["multiclass_brier"].value == pytest.approx(((probabilities - one_hot) ** 2).sum(axis=1).mean())
    assert oof_eval.confusion == [[int(((targets == t) & (predicted == p)).sum()) for p in range(4)] for t in range(4)]
    event = _evaluated_event(root)
    assert set(event.payload["operating_points"]) == {"ge_1", "ge_2", "ge_3"}
    for k, endpoint in zip((1, 2, 3), oof_eval.endpoints, strict=True):
        truth, score = (targets >= k).astype(int), probabilities[:, k:].sum(axis=1)
        assert endpoint.endpoint == f"ge_{k}"
        assert _named(endpoint.estimates)["auroc"].value == pytest.approx(roc_auc_score(truth, score))
        point = _expected_point(root, truth, np.clip(score, 0, 1), oof["fold"].to_numpy())
        assert endpoint.operating_point.threshold == pytest.approx(point.threshold)
        frozen = test_eval.endpoints[k - 1]
        assert frozen.operating_point == endpoint.operating_point  # frozen on OOF, applied unchanged to the test set
        assert sum(map(sum, frozen.confusion)) == test_eval.n_scans
        assert event.payload["operating_points"][f"ge_{k}"] == endpoint.operating_point.model_dump()
    decision = next(e for e in oof_eval.endpoints if e.is_decision)
    assert decision.endpoint == "ge_2"  # the default middle cut of grades 0-3
    assert oof_eval.operating_point == decision.operating_point == test_eval.operating_point
    assert event.payload["operating_point"] == decision.operating_point.model_dump()
    assert test_eval.n_patients == 12 and event.payload["test_manifest_hash"] is not None
    assert {"quadratic_weighted_kappa", "mean_absolute_grade_error"} <= set(_named(test_eval.estimates))
    main_arm = next(arm for arm in metrics.transfer if arm.arm == "main")
    assert main_arm.auc.value == pytest.approx(named["auroc"].value)
    assert all(case.endpoint == "grade >= 2" for case in report.failure_cases)


def test_multilabel_metrics_equal_a_recomputation_from_the_oof_predictions(multilabel):
    root, report = multilabel
    metrics = read_json(Metrics, root / "report" / "metrics.json")
    oof_eval, test_eval = metrics.evaluations
    assert oof_eval.task_kind == test_eval.task_kind == "multilabel" and report.task_kind == "multilabel"
    oof = _oof(root)
    findings = oof_eval.classes
    assert sorted(findings) == ["calc", "mass"]
    event = _evaluated_event(root)
    aurocs = []
    for index, endpoint in enumerate(oof_eval.endpoints):
        name = findings[index]
        truth, score = oof[f"y_{name}"].to_numpy(), oof[f"p_{name}"].to_numpy()
        aurocs.append(roc_auc_score(truth, score))
        assert endpoint.endpoint == name and endpoint.role == "finding" and not endpoint.is_decision
        assert _named(endpoint.estimates)["auroc"].value == pytest.approx(aurocs[-1])
        point = _expected_point(root, truth, score, oof["fold"].to_numpy())
        assert endpoint.operating_point.threshold == pytest.approx(point.threshold)
        assert test_eval.endpoints[index].operating_point == endpoint.operating_point
        assert event.payload["operating_points"][name] == endpoint.operating_point.model_dump()
        predicted = score >= point.threshold
        sensitivity = (predicted & (truth == 1)).sum() / (truth == 1).sum()
        assert _named(endpoint.estimates)["sensitivity"].value == pytest.approx(sensitivity)
    assert _named(oof_eval.estimates)["auroc"].value == pytest.approx(np.mean(aurocs))
    assert oof_eval.confusion == [] == test_eval.confusion and oof_eval.operating_point is None
    assert event.payload["operating_point"] is None and set(event.payload["operating_points"]) == set(findings)
    assert test_eval.n_patients == 12
    main_arm = next(arm for arm in metrics.transfer if arm.arm == "main")
    assert main_arm.auc.value == pytest.approx(np.mean(aurocs))
    failures = report.failure_cases
    assert all(case.endpoint in {f"finding {name}" for name in findings} for case in failures)
    assert sum(case.kind == "false_positive" for case in failures) <= 2  # at most `failure_cases` of each kind


def test_temperature_scaling_is_refused_for_a_non_binary_task(ordinal, tmp_path):
    root, _ = ordinal
    with (
        _pipeline_key(root),
        pytest.raises(ConfigError, match="binary tasks only, and this artifact's task is ordinal"),
    ):
        evaluate(root / "artifact", out=tmp_path / "report", temperature_scaling=True, n_boot=10, pdf=False)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("kind", ["ordinal", "multilabel"])
def test_the_report_renders_for_the_task_type(kind, request, tmp_path):
    root, _ = request.getfixturevalue(kind)
    with _pipeline_key(root):
        evaluate(root / "artifact", out=tmp_path / "report", n_boot=20, pdf=False, failure_cases=0)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "NOT FOR CLINICAL USE" in html.upper()
    page_one = html.split('id="endpoints"')[0]
    assert "not reported" not in page_one and "Calibration was not assessed" not in page_one
    if kind == "ordinal":  # the default cut of grades 0-3 is grade >= 2, and the report says it was not declared
        assert "Supports the decision: grade &gt;= 2." in page_one
        assert "Default cut (the middle grade)" in page_one
    else:
        assert "Supports one decision per finding" in page_one
        for finding in ("calc", "mass"):
            assert f"finding {finding}" in page_one


@pytest.mark.parametrize("kind", ["ordinal", "multilabel"])
def test_roc_curves_are_drawn_for_the_decisions(kind, request):
    """The decision cut (ordinal) or every finding (multi-label) gets its ROC curve, and the curve's area is the
    endpoint's AUROC in metrics.json."""
    root, report = request.getfixturevalue(kind)
    metrics = read_json(Metrics, root / "report" / "metrics.json")
    expected = {"ordinal": {"ge_2"}, "multilabel": {"calc", "mass"}}[kind]
    for evaluation in metrics.evaluations:
        mine = [c for c in report.curves if c.evaluated_on == evaluation.evaluated_on]
        assert {c.endpoint for c in mine} == expected
        for curve in mine:
            endpoint = next(e for e in evaluation.endpoints if e.endpoint == curve.endpoint)
            area = float(np.trapezoid(curve.roc.y, curve.roc.x))
            assert area == pytest.approx(_named(endpoint.estimates)["auroc"].value, abs=1e-6)
