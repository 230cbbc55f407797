"""Label efficiency in evaluation and the report: each arm's out-of-fold AUROC per share of the labels (checked against
scikit-learn on the stored predictions), the "how many labels did pretraining save" reading, and the report section."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import read_json
from medtl.contracts.evaluation import LabelsSaved, Metrics
from medtl.contracts.handoff import ArmTransfer
from medtl.evaluation.evaluate import evaluate
from medtl.evaluation.label_efficiency import label_efficiency
from medtl.reporting.efficiency import saving_sentence
from medtl.training.train import train
from support.trained import ingested_cohort, pretrained_file, signing_key, tiny_config

ARMS = ("main", "scratch")
SHARES = (0.25, 0.5, 1.0)
# Per arm and share, how strongly the score follows the truth: main learns with fewer labels than scratch.
SIGNAL = {("main", 0.25): 0.6, ("main", 0.5): 1.5, ("main", 1.0): 2.0, ("scratch", 0.25): 0.2,
          ("scratch", 0.5): 0.5, ("scratch", 1.0): 1.2}  # fmt: skip


def _transfer(arm: str) -> ArmTransfer:
    source = "none" if arm == "scratch" else "file"
    return ArmTransfer(arm=arm, strategy="full", pretrained={"source": source}, oof_auc=None, folds=[])


def _table(kind: str, classes: list[str], seed: int = 0) -> pd.DataFrame:
    """Two scans per patient, two folds, every arm and share predicting the same held-out patients."""
    rng = np.random.default_rng(seed)
    patients = [f"P-{i:016x}" for i in range(40)]
    frames = []
    for arm in ARMS:
        for share in SHARES:
            rows = []
            for index, patient in enumerate(patients):
                fold = index % 2
                for _ in range(2):
                    row = {"patient_id": patient, "arm": arm, "fraction": share, "fold": fold,
                           "n_labelled_patients": max(1, round(share * (14 + fold)))}  # fmt: skip
                    signal = SIGNAL[(arm, share)]
                    if kind == "multilabel":
                        truth = (rng.random(len(classes)) < 0.4).astype(int)
                        scores = 1 / (1 + np.exp(-(signal * (2 * truth - 1) + rng.normal(size=len(classes)))))
                        row.update({f"y_{c}": int(t) for c, t in zip(classes, truth, strict=True)})
                        row.update(
                            {"label": "|".join(c for c, t in zip(classes, truth, strict=True) if t), "target": -1}
                        )
                    else:
                        target = int(rng.integers(len(classes)))
                        logits = rng.normal(size=len(classes))
                        logits[target] += signal
                        scores = np.exp(logits) / np.exp(logits).sum()
                        row.update({"label": classes[target], "target": target})
                    row.update({f"p_{c}": float(s) for c, s in zip(classes, scores, strict=True)})
                    if kind == "binary":
                        row["probability"] = row[f"p_{classes[1]}"]
                    rows.append(row)
            frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)


def _sklearn_auroc(frame: pd.DataFrame, kind: str, classes: list[str]) -> float:
    if kind == "binary":
        return roc_auc_score((frame["label"] == classes[1]).astype(int), frame["probability"])
    if kind == "multilabel":
        return float(np.mean([roc_auc_score(frame[f"y_{c}"], frame[f"p_{c}"]) for c in classes]))
    return roc_auc_score(frame["target"], frame[[f"p_{c}" for c in classes]], multi_class="ovr", average="macro")


@pytest.mark.parametrize(
    ("kind", "classes"),
    [("binary", ["0", "1"]), ("multiclass", ["a", "b", "c"]), ("ordinal", ["0", "1", "2"]),
     ("multilabel", ["effusion", "nodule"])],
)  # fmt: skip
def test_points_equal_sklearn_on_the_stored_predictions(kind: str, classes: list[str]) -> None:
    table = _table(kind, classes)
    result = label_efficiency(table, [_transfer(a) for a in ARMS], kind, classes, classes[1], n_boot=50)
    assert result is not None
    assert [(p.arm, p.fraction) for p in result.points] == [(a, s) for a in ARMS for s in SHARES]
    for point in result.points:
        frame = table[(table["arm"] == point.arm) & (table["fraction"] == point.fraction)]
        assert point.auc.value == pytest.approx(_sklearn_auroc(frame, kind, classes), abs=1e-12)
        assert point.auc.ci_low <= point.auc.value <= point.auc.ci_high and "patients" in point.auc.ci_method
        assert point.auc.n == 40
        fold_counts = [max(1, round(point.fraction * 14)), max(1, round(point.fraction * 15))]
        assert point.fold_patients == fold_counts and point.n_labelled_patients == np.median(fold_counts)
    # the pretrained arm reaches scratch's AUROC on every label at the smallest share where its AUROC is >= it
    reference = next(p for p in result.points if (p.arm, p.fraction) == ("scratch", 1.0)).auc.value
    main = [p for p in result.points if p.arm == "main"]
    expected = next((p for p in main if p.auc.value >= reference), None)
    assert [s.arm for s in result.saved] == ["main"]  # scratch itself is not pretrained
    saved = result.saved[0]
    assert saved.reference_auc == reference and saved.all_patients == 14.5
    assert saved.reached_fraction == (expected.fraction if expected else None)


def test_no_runs_no_section_and_no_scratch_no_reading() -> None:
    assert label_efficiency(None, [], "binary", ["0", "1"], "1", n_boot=10) is None
    table = _table("binary", ["0", "1"])
    only_main = table[table["arm"] == "main"]
    result = label_efficiency(only_main, [_transfer("main")], "binary", ["0", "1"], "1", n_boot=10)
    assert result is not None and result.saved == [] and {p.arm for p in result.points} == {"main"}


def test_the_saving_sentence_says_share_patients_or_not_reached() -> None:
    def sentence(fraction: float | None, patients: float | None) -> str:
        return saving_sentence(LabelsSaved(arm="main", reference_auc=0.8123, reached_fraction=fraction,
                                           reached_patients=patients, all_patients=48.0))  # fmt: skip

    assert sentence(0.25, 12.0) == (
        "Transferred (configured recipe): reached the from-scratch arm's AUROC with every label (0.812) with 25% of "
        "the labels (12 instead of 48 training patients per fold, median)."
    )
    assert "did not reach" in sentence(None, None) and "up to all 48" in sentence(None, None)
    assert "no labels saved" in sentence(1.0, 48.0)


# ---- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_evaluate_reports_the_label_efficiency_curve(tmp_path: Path) -> None:
    with signing_key(tmp_path / "signing.pem"):
        dataset = ingested_cohort(tmp_path, "cohort", patients=16, seed=8, difficulty=0.0)
        config = tiny_config(
            model={"backbone": "resnet18", "weights": pretrained_file(tmp_path)}, arms=["scratch"],
            label_fractions=[0.5], epochs=2, early_stopping={"patience": 2, "min_epochs": 1},
        )  # fmt: skip
        train(dataset, config, tmp_path / "artifact")
        evaluate(tmp_path / "artifact", out=tmp_path / "report", pdf=False, n_boot=100)
        table = ArtifactContents(open_verified(tmp_path / "artifact")).label_efficiency

    metrics = read_json(Metrics, tmp_path / "report" / "metrics.json")
    result = metrics.label_efficiency
    assert result is not None and result.evaluated_on == "oof"
    assert {(p.arm, p.fraction) for p in result.points} == {(a, s) for a in ARMS for s in (0.5, 1.0)}
    html = (tmp_path / "report" / "report.html").read_text()
    for point in result.points:
        frame = table[(table["arm"] == point.arm) & (table["fraction"] == point.fraction)]
        direct = roc_auc_score((frame["label"] == "1").astype(int), frame["probability"])
        assert point.auc.value == pytest.approx(direct, abs=1e-12)
        counts = frame.groupby("fold")["n_labelled_patients"].first()
        assert point.n_labelled_patients == float(np.median(counts))
        shown = re.search(rf'data-metric="efficiency\.{point.arm}\.{point.fraction:g}\.auroc\.value">([0-9.]+)<', html)
        assert shown is not None and float(shown.group(1)) == pytest.approx(point.auc.value, abs=5e-4)
    half = [p for p in result.points if p.fraction == 0.5]
    full = [p for p in result.points if p.fraction == 1.0]
    for h, f in zip(half, full, strict=True):
        assert h.fold_patients == [math.ceil(n / 2) for n in f.fold_patients]
    assert [s.arm for s in result.saved] == ["main"]
    assert 'id="label-efficiency"' in html and saving_sentence(result.saved[0]).replace("'", "&#39;") in html
    assert "The curve is out of fold" in html
