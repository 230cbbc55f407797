"""The `features` arm: frozen pretrained features + a logistic regression per fold, checked against scikit-learn fits
on the same features, blind to held-out labels, for every task kind, and end to end through train and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from medtl.contracts.training import Fold, Splits
from medtl.hashing import sha256_file
from medtl.models.factory import create_model
from medtl.training.config import TrainConfig
from medtl.training.cv import FoldOutcome, arm_specs, build, run_fold, transfer_indicators
from medtl.training.data import TaskData
from medtl.training.features_arm import C_GRID, CACHE, fit_logistic
from support.trained import ingested_cohort, signing_key, tiny_config

N_PATIENTS = 24


def _weights(root: Path, in_channels: int = 1) -> dict:
    """A ResNet-18 state dict in a local file, as a site's own pretrained weights would be given."""
    path = root / f"resnet18-{in_channels}ch.safetensors"
    if not path.exists():
        torch.manual_seed(7)
        model = create_model("resnet18", weights="none", in_channels=in_channels, num_classes=2).model
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return {"source": "file", "path": str(path), "sha256": sha256_file(path)}


def _task(root: Path, kind: str = "binary") -> TaskData:
    """24 one-scan patients, 16x16 2D images; the bright square's size carries the label (or the findings)."""
    rng = np.random.default_rng(0)
    (root / "tensors").mkdir(parents=True, exist_ok=True)
    classes = {"binary": ["0", "1"], "multiclass": ["a", "b", "c"], "ordinal": ["0", "1", "2"]}.get(kind, ["x", "y"])
    rows, findings = [], []
    for index in range(N_PATIENTS):
        target = index % len(classes)
        image = rng.random((1, 16, 16), dtype=np.float32) * 0.3
        image[:, 2 : 4 + 3 * target, 2 : 4 + 3 * target] += 0.6
        has = [index % 2, (index // 2) % 2]  # multi-label: two independent findings
        if kind == "multilabel":
            image[:, 10:14, 10:14] += 0.6 * has[1]
            findings.append(has)
        np.save(root / "tensors" / f"{index:03d}.npy", image)
        rows.append(
            {
                "scan_id": f"X-{index:016x}",
                "patient_id": f"P-{index:016x}",
                "study_id": None,
                "label": "|".join(c for c, h in zip(classes, has, strict=True) if h)
                if kind == "multilabel"
                else classes[target],
                "target": -1 if kind == "multilabel" else target,
                "split": None,
                "modality": "DX",
                "tensor_path": f"tensors/{index:03d}.npy",
            }
        )
    from medtl.contracts import PreprocessingSpec

    return TaskData(
        dataset=root,
        scans=pd.DataFrame(rows),
        classes=classes,
        positive_class="1" if kind == "binary" else None,
        spec=PreprocessingSpec(spatial_dims=2, target_shape=[16, 16]),
        spec_hash="c" * 64,
        manifest_hash="d" * 64,
        fingerprint_hash="e" * 64,
        kind=kind,  # type: ignore[arg-type]
        decision_cut="1" if kind == "ordinal" else None,
        findings=np.array(findings) if kind == "multilabel" else None,
    )


def _splits() -> Splits:
    """Two folds by hand: patients 0-11 held out in fold 0, 12-23 in fold 1; a third of the rest tunes."""
    patients = [f"P-{i:016x}" for i in range(N_PATIENTS)]
    folds = []
    for index, (heldout, rest) in enumerate(((patients[:12], patients[12:]), (patients[12:], patients[:12]))):
        folds.append(Fold(index=index, train=rest[:8], tune=rest[8:], heldout=heldout))
    return Splits(method="manual", seed=0, n_folds=2, manifest_hash="d" * 64, folds=folds)


def _config(root: Path, **overrides) -> TrainConfig:
    settings = {"model": {"backbone": "resnet18", "weights": _weights(root)}, "arms": ["features"], "batch_size": 8}
    return TrainConfig.model_validate({**settings, **overrides})


def _features_arm(config: TrainConfig):
    return next(arm for arm in arm_specs(config) if arm.name == "features")


def _run(task: TaskData, config: TrainConfig, workdir: Path, fold: int = 0):
    return run_fold(task, _splits(), _features_arm(config), fold, config, device=torch.device("cpu"), workdir=workdir)


def _direct_fit(train_x, train_y, tune_x, tune_y, heldout_x):
    """The reference: standardise on train, one balanced L2 LR per C, best tuning AUROC (ties: lower log loss, then
    the smaller C), written with scikit-learn alone."""
    scaler = StandardScaler().fit(train_x)
    best, chosen = None, None
    for c in C_GRID:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(scaler.transform(train_x), train_y)
        tune_p = model.predict_proba(scaler.transform(tune_x))
        key = (roc_auc_score(tune_y, tune_p[:, 1]), -log_loss(tune_y, tune_p, labels=[0, 1]))
        if best is None or key > best:
            best, chosen = key, (c, model)
    c, model = chosen
    return c, model.predict_proba(scaler.transform(heldout_x))


def test_chosen_c_and_heldout_probabilities_equal_a_direct_scikit_learn_fit(tmp_path):
    task, config = _task(tmp_path), _config(tmp_path)
    outcome, frame, state, built = _run(task, config, tmp_path / "work")
    assert state == {} and built.pretrained is not None and set(frame["arm"]) == {"features"}

    # the cached features are the input of the network's classification layer, for every fold patient
    cached = load_file(tmp_path / "work" / "features" / CACHE)
    rows, values = cached["rows"].numpy(), cached["values"].numpy()
    assert sorted(rows) == list(range(N_PATIENTS)) and values.shape == (N_PATIENTS, 512)
    reference = build(task, _features_arm(config), seed=123).model.eval()  # another seed: only the head differs
    captured = []
    reference.fc.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    images = torch.stack([torch.from_numpy(np.load(tmp_path / "tensors" / f"{r:03d}.npy")) for r in rows])
    with torch.no_grad():
        reference(images)
    np.testing.assert_allclose(values, captured[0].numpy(), rtol=1e-5, atol=1e-6)

    fold = _splits().folds[0]
    position = {int(r): i for i, r in enumerate(rows)}

    def part(patients):
        indices = [int(p[2:], 16) for p in patients]
        return values[[position[i] for i in indices]], task.scans["target"].to_numpy()[indices]

    (train_x, train_y), (tune_x, tune_y), (heldout_x, _) = part(fold.train), part(fold.tune), part(fold.heldout)
    c, heldout_p = _direct_fit(train_x, train_y, tune_x, tune_y, heldout_x)
    assert outcome.features["c"] == c and c in C_GRID
    np.testing.assert_allclose(frame[["p_0", "p_1"]].to_numpy(), heldout_p, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(frame["probability"], heldout_p[:, 1], rtol=1e-6, atol=1e-9)
    assert list(frame["patient_id"]) == fold.heldout
    assert outcome.best_epoch == 0 and outcome.curve == [] and outcome.seconds == outcome.features["fit_seconds"]
    assert outcome.features["feature_seconds"] > 0 and len(outcome.features["grid"]) == len(C_GRID)
    assert outcome.best_tune_auc == pytest.approx(roc_auc_score(tune_y, _direct_tune_p(train_x, train_y, tune_x, c)))


def _direct_tune_p(train_x, train_y, tune_x, c):
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(scaler.transform(train_x), train_y)
    return model.predict_proba(scaler.transform(tune_x))[:, 1]


def test_heldout_labels_never_influence_the_choice_of_c(tmp_path):
    task, config = _task(tmp_path), _config(tmp_path)
    outcome, frame, _, _ = _run(task, config, tmp_path / "first")
    flipped = task.scans.copy()
    heldout = flipped["patient_id"].isin(_splits().folds[0].heldout)
    flipped.loc[heldout, "target"] = 1 - flipped.loc[heldout, "target"]
    flipped.loc[heldout, "label"] = flipped.loc[heldout, "target"].astype(str)
    task.scans = flipped
    again, frame_again, _, _ = _run(task, config, tmp_path / "second")
    assert again.features["c"] == outcome.features["c"]
    assert again.features["grid"] == outcome.features["grid"]
    np.testing.assert_array_equal(frame_again["p_1"], frame["p_1"])
    assert (frame_again["target"] != frame["target"]).all()  # the flip did reach the frame's truth column


def test_the_choice_ignores_heldout_features_too():
    """fit_logistic alone: whatever the held-out rows are, the grid and the chosen C stay the same."""
    rng = np.random.default_rng(3)
    train_x, tune_x = rng.normal(size=(40, 6)), rng.normal(size=(16, 6))
    train_y, tune_y = (train_x[:, 0] + rng.normal(size=40) > 0).astype(int), (tune_x[:, 0] > 0).astype(int)
    one = fit_logistic("binary", 2, (train_x, train_y), (tune_x, tune_y), rng.normal(size=(5, 6)), positive=1)
    two = fit_logistic("binary", 2, (train_x, train_y), (tune_x, tune_y), 100 * rng.normal(size=(9, 6)), positive=1)
    assert one.c == two.c and one.grid == two.grid and two.heldout.shape == (9, 2)


@pytest.mark.parametrize("kind", ["ordinal", "multiclass", "multilabel"])
def test_every_task_kind_gives_a_prediction_frame_of_its_shape(tmp_path, kind):
    task, config = _task(tmp_path, kind), _config(tmp_path)
    outcome, frame, _, _ = _run(task, config, tmp_path / "work", fold=1)
    columns = [f"p_{name}" for name in task.classes]
    probabilities = frame[columns].to_numpy()
    assert probabilities.shape == (12, len(task.classes)) and ((probabilities >= 0) & (probabilities <= 1)).all()
    assert "probability" not in frame and outcome.features["c"] in C_GRID
    if kind == "multilabel":
        assert {f"y_{n}" for n in task.classes} <= set(frame.columns)
        np.testing.assert_array_equal(frame[["y_x", "y_y"]].to_numpy(), task.findings[12:])
        # one-vs-rest: each finding's probabilities are those of its own balanced LR at the chosen C
        cached = load_file(tmp_path / "work" / "features" / CACHE)
        values = cached["values"].numpy()[np.argsort(cached["rows"].numpy())]
        fold = _splits().folds[1]
        train = [int(p[2:], 16) for p in fold.train]
        scaler = StandardScaler().fit(values[train])
        for k, name in enumerate(task.classes):
            model = LogisticRegression(C=outcome.features["c"], class_weight="balanced", max_iter=5000)
            model.fit(scaler.transform(values[train]), task.findings[train, k])
            expected = model.predict_proba(scaler.transform(values[12:]))[:, 1]
            np.testing.assert_allclose(frame[f"p_{name}"], expected, rtol=1e-6, atol=1e-9)
    else:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)  # grades in class order, one vector


def test_a_finished_fold_is_read_back_not_refitted(tmp_path, monkeypatch):
    import medtl.training.features_arm as features_arm

    task, config = _task(tmp_path), _config(tmp_path)
    outcome, frame, _, _ = _run(task, config, tmp_path / "work")
    monkeypatch.setattr(features_arm, "fit_logistic", lambda *a, **k: pytest.fail("a finished fold was refitted"))
    monkeypatch.setattr(features_arm, "extract", lambda *a, **k: pytest.fail("features were extracted again"))
    again, frame_again, _, _ = _run(task, config, tmp_path / "work")
    assert again == outcome
    pd.testing.assert_frame_equal(frame_again, frame)
    stored = json.loads((tmp_path / "work" / "features" / "fold0" / "result.json").read_text())
    assert FoldOutcome(**stored) == outcome


def test_the_arm_needs_pretrained_weights_and_its_indicators_carry_seconds_and_c(tmp_path):
    assert [a.name for a in arm_specs(_config(tmp_path, model={"backbone": "resnet18", "weights": "none"}))] == ["main"]
    task, config = _task(tmp_path), _config(tmp_path)
    results, frames = [], []
    from medtl.training.cv import ArmResult

    arm = _features_arm(config)
    result = ArmResult(arm)
    for fold in (0, 1):
        outcome, frame, _, built = _run(task, config, tmp_path / "work", fold)
        result.folds.append(outcome)
        frames.append(frame)
    result.pretrained = built.provenance()
    results.append(result)
    oof = pd.concat(frames, ignore_index=True)
    (entry,) = transfer_indicators(results, oof, task)
    assert entry["arm"] == "features" and entry["strategy"] == "logistic_regression"
    assert entry["oof_auc"] == pytest.approx(roc_auc_score(oof["target"], oof["p_1"]))
    assert entry["seconds_per_fold"] == pytest.approx(np.median([f.seconds for f in result.folds]))
    assert [f["features"]["c"] for f in entry["folds"]] == [f.features["c"] for f in result.folds]
    assert entry["folds"][0]["epochs_to_scratch_best"] is None


@pytest.mark.slow
def test_train_and_evaluate_with_the_features_arm(tmp_path):
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import ArtifactContents
    from medtl.contracts import read_json
    from medtl.contracts.evaluation import Metrics
    from medtl.evaluation.evaluate import evaluate
    from medtl.training.train import train

    with signing_key(tmp_path / "signing.pem"):
        dataset = ingested_cohort(tmp_path, "dev", patients=16, seed=31, difficulty=0.0)
        config = tiny_config(model={"backbone": "resnet18", "weights": _weights(tmp_path, 1)}, arms=["features"])
        result = train(dataset, config, tmp_path / "artifact")
        artifact = open_verified(tmp_path / "artifact")
        oof = artifact.read_table("predictions/oof.parquet")
        main, features = oof[oof["arm"] == "main"], oof[oof["arm"] == "features"]
        assert len(features) == len(main) > 0 and set(features["scan_id"]) == set(main["scan_id"])
        transfer = ArtifactContents(artifact).transfer
        arm = transfer.arm("features")
        assert arm is not None and arm.strategy == "logistic_regression" and arm.seconds_per_fold is not None
        assert all(f.features is not None and f.features.c in C_GRID and f.seconds is not None for f in arm.folds)
        assert len({f.features.feature_seconds for f in arm.folds}) == 1  # one extraction shared by the folds
        assert [e["arm"] for e in result.indicators] == ["main", "features"]

        evaluate(tmp_path / "artifact", out=tmp_path / "report", pdf=False, n_boot=50, failure_cases=0)
        metrics = read_json(Metrics, tmp_path / "report" / "metrics.json")
        reported = next(t for t in metrics.transfer if t.arm == "features")
        assert reported.seconds_per_fold == arm.seconds_per_fold
        assert reported.feature_seconds == arm.folds[0].features.feature_seconds
        html = (tmp_path / "report" / "report.html").read_text()
        assert "Frozen features + logistic regression" in html and "once, extracting features" in html


def test_the_report_row_names_the_arm_and_its_seconds():
    from types import SimpleNamespace

    from medtl.contracts.evaluation import Estimate, TransferArm
    from medtl.reporting.summary import transfer_rows

    def arm(name, low, high, **extra):
        auc = Estimate(name="auroc", value=(low + high) / 2, ci_low=low, ci_high=high)
        return TransferArm(arm=name, strategy="s", pretrained="file:w", auc=auc, **extra)

    metrics = SimpleNamespace(
        transfer=[
            arm("scratch", 0.5, 0.6, seconds_per_fold=42.0),
            arm("features", 0.7, 0.8, seconds_per_fold=0.25, feature_seconds=3.5),
        ]
    )
    scratch, features = transfer_rows(metrics, {"scratch": 2})
    assert features.label == "Frozen features + logistic regression"
    assert features.fold_seconds == "0.25 (+ 3.5 once, extracting features)" and scratch.fold_seconds == "42.0"
    assert features.epochs == "— (no epochs)" and features.reading.startswith("higher AUROC than from scratch")
