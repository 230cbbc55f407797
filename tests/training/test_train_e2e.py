"""`medtl train` end to end on a synthetic cohort: a sealed artifact, clean folds, arms, and transfer from an
earlier medtl artifact (the "train on a related task, then transfer" path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medtl.artifacts import open_verified, verify
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import read_json, write_json
from medtl.contracts.training import Splits
from medtl.datasets.synth import make_cohort
from medtl.errors import LeakageError
from medtl.hashing import sha256_file
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from medtl.training import cv as cv_module
from medtl.training.config import TrainConfig
from medtl.training.train import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPEC = {"spatial_dims": 3, "target_spacing": [3.0, 3.0, 6.0], "target_shape": [16, 16, 8]}


def _config(**overrides) -> TrainConfig:
    base = {
        "model": {"backbone": "resnet18", "weights": "none"},
        "strategy": {"name": "full", "lr": 1e-3},
        "arms": [],
        "epochs": 2,
        "batch_size": 8,
        "cv": {"n_folds": 2},
        "early_stopping": {"patience": 2, "min_epochs": 1},
    }
    base.update(overrides)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="module", autouse=True)
def signing_key(tmp_path_factory):
    """Artifacts are signed, as in production, and the key is the trust anchor: a transfer source must verify before
    its weights are used."""
    from support.trained import signing_key as site_keys

    with site_keys(tmp_path_factory.mktemp("keys") / "signing.pem") as key:
        yield key


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-e2e")
    make_cohort(root / "cohort", patients=16, seed=3)
    from medtl.contracts import PreprocessingSpec

    ingest_sources(
        [root / "cohort" / "dicom"],
        out=root / "dataset",
        labels=root / "cohort" / "labels.csv",
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        spec=PreprocessingSpec.model_validate(SPEC),
        workers=1,
    )
    return root / "dataset"


@pytest.fixture(scope="module")
def source_artifact(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "source"
    train(dataset, _config(final_model="refit"), out)
    return out


def test_source_artifact_is_sealed_and_its_folds_never_saw_their_heldout_patients(dataset, tmp_path, monkeypatch):
    seen: list[tuple[int, set[str], set[str]]] = []
    original = cv_module.fit

    def recording_fit(built, plans, train_set, tune_set, config, **kwargs):
        patients = lambda data: set(data.task.scans["patient_id"].iloc[data.rows])  # noqa: E731
        seen.append((kwargs["seed"], patients(train_set), patients(tune_set) if tune_set else set()))
        return original(built, plans, train_set, tune_set, config, **kwargs)

    monkeypatch.setattr(cv_module, "fit", recording_fit)
    out = tmp_path / "artifact"
    train(dataset, _config(final_model="ensemble"), out)
    verify(out)  # raises on any problem
    splits = read_json(Splits, out / "splits.json")
    assert len(seen) == 2
    for fold, (_, train_patients, tune_patients) in zip(splits.folds, seen, strict=True):
        assert train_patients == set(fold.train) and tune_patients == set(fold.tune)
        assert not (train_patients | tune_patients) & set(fold.heldout)
    oof = open_verified(out).read_table("predictions/oof.parquet")
    heldout = {p: f.index for f in splits.folds for p in f.heldout}
    assert sorted(oof.patient_id.unique()) == sorted(heldout)
    assert all(heldout[p] == fold for p, fold in zip(oof.patient_id, oof.fold, strict=True))
    assert oof.groupby("scan_id").size().max() == 1
    assert ((oof.p_0 + oof.p_1 - 1).abs() < 1e-5).all()
    # the sealed fold weights are the ones that made the out-of-fold predictions
    import numpy as np
    import torch

    from medtl.models.loaded import load_model
    from medtl.training.config import TaskConfig
    from medtl.training.data import TensorSet, load_task, rows_of

    loaded = load_model(out, device=torch.device("cpu"))
    assert loaded.kind == "ensemble of 2"
    task = load_task(dataset, TaskConfig())
    for fold, network in zip(splits.folds, loaded.networks, strict=True):
        data = TensorSet(task, rows_of(task, fold.heldout))
        with torch.no_grad():
            batch = torch.stack([data[i][0] for i in range(len(data))])
            probabilities = torch.softmax(network(batch), dim=1)[:, 1].numpy()
        expected = oof.set_index("scan_id").loc[task.scans.scan_id.iloc[data.rows], "p_1"].to_numpy()
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_transfer_from_an_earlier_artifact_with_comparison_arms(dataset, source_artifact, tmp_path):
    config = _config(
        model={"backbone": "resnet18", "weights": {"source": "artifact", "path": str(source_artifact)}},
        strategy={"name": "layerwise_lr_decay", "lr": 1e-3},
        arms=["linear_probe", "scratch"],
    )
    out = tmp_path / "target"
    result = train(dataset, config, out)
    artifact = open_verified(out)
    pretrained = artifact.metadata["provenance"]["pretrained"]
    assert pretrained["source"] == "artifact"
    assert pretrained["sha256"] == sha256_file(source_artifact / "weights" / "final.safetensors")
    oof = artifact.read_table("predictions/oof.parquet")
    assert set(oof.arm) == {"main", "linear_probe", "scratch"}
    per_arm = oof.groupby("arm").scan_id.apply(lambda s: tuple(sorted(s)))
    assert per_arm.nunique() == 1  # every arm predicted exactly the same scans, once
    transfer = ArtifactContents(artifact).transfer.arms
    assert [entry.arm for entry in transfer] == ["main", "linear_probe", "scratch"]
    for entry in transfer:
        for fold in entry.folds:
            seconds = [r.seconds for r in fold.curve]
            assert seconds == sorted(seconds)
            assert fold.scratch_best_tune_auc is not None
    assert [e["arm"] for e in result.indicators] == ["main", "linear_probe", "scratch"]
    config_yaml = artifact.read_yaml("config.yaml")
    probe = config_yaml["resolved_arms"]["linear_probe"]["schedule"]
    assert probe["strategy"]["name"] == "linear_probe"
    assert all(lr == 0 for plan in probe["epochs"] for stage, lr in plan["lr"].items() if stage != "head")
    terms = json.loads((dataset / "private" / "phi_terms.json").read_text())
    for path in out.rglob("*"):
        if path.suffix in (".json", ".yaml", ".md", ".jsonl", ".txt"):
            text = path.read_text()
            assert not [t for t in terms["patient_ids"] if t in text], path.name


def test_a_leaky_hand_written_split_stops_training_before_it_starts(dataset, tmp_path):
    source = next((dataset / "splits").glob("*.json"))
    splits = read_json(Splits, source)
    first = splits.folds[0]
    leaky = first.model_copy(update={"tune": [*first.tune, first.heldout[0]]})
    write_json(splits.model_copy(update={"folds": [leaky, *splits.folds[1:]]}), tmp_path / "leaky.json")
    with pytest.raises(LeakageError):
        train(dataset, _config(cv={"n_folds": 2, "splits_file": str(tmp_path / "leaky.json")}), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: {backbone: resnet18, weights: none}\nstrategy: {name: full}\narms: []\n"
        f"cv: {{n_folds: 2, splits_file: {tmp_path / 'leaky.json'}}}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medtl.cli",
            "train",
            str(dataset),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == LeakageError.exit_code, result.stderr
    assert "both the tune and the heldout side" in result.stderr


def test_oof_predictions_are_pseudonymous(dataset, source_artifact):
    oof = pd.read_parquet(source_artifact / "predictions" / "oof.parquet")
    assert oof.patient_id.str.fullmatch(r"P-[0-9a-f]{16}").all()
    assert oof.scan_id.str.fullmatch(r"X-[0-9a-f]{16}").all()


def test_a_work_folder_left_by_other_inputs_is_discarded_and_one_from_the_same_inputs_is_kept(dataset, tmp_path):
    from medtl.training.train import prepare_training

    config = _config(seed=11)
    plan = prepare_training(dataset, config, tmp_path / "artifact")
    checkpoint = plan.workdir / "main" / "fold0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"completed fold")
    assert prepare_training(dataset, config, tmp_path / "artifact").workdir == plan.workdir
    assert checkpoint.read_bytes() == b"completed fold"  # same data, split and config: resumed
    prepare_training(dataset, _config(seed=12), tmp_path / "artifact")
    assert not checkpoint.exists()  # another seed, another run: its folds must not be mixed into this one


def test_a_work_folder_medtl_did_not_make_is_refused_and_kept(dataset, tmp_path):
    from medtl.errors import ConfigError
    from medtl.training.train import prepare_training

    theirs = tmp_path / "artifact.work"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("a user's notes\n")
    with pytest.raises(ConfigError, match="was not made by a medtl training run"):
        prepare_training(dataset, _config(seed=11), tmp_path / "artifact")
    assert (theirs / "notes.txt").read_text() == "a user's notes\n" and sorted(p.name for p in theirs.iterdir()) == [
        "notes.txt"
    ]


def test_every_precondition_is_checked_before_any_fold_trains(dataset, tmp_path, monkeypatch):
    from medtl.errors import ConfigError, WeightsError
    from medtl.training.train import prepare_training

    trained = []
    monkeypatch.setattr(cv_module, "run_fold", lambda *a, **k: trained.append(1))
    with monkeypatch.context() as without_key:
        without_key.delenv("MEDTL_SIGNING_KEY")
        with pytest.raises(ConfigError, match="no signing key"):
            train(dataset, _config(), tmp_path / "a")
    with monkeypatch.context() as other_anchor:
        other_anchor.setenv("MEDTL_TRUSTED_KEYS", "cd" * 32)
        with pytest.raises(ConfigError, match="this site would refuse the artifact"):
            train(dataset, _config(), tmp_path / "b")
    missing = {"source": "file", "path": str(tmp_path / "absent.safetensors"), "sha256": "0" * 64}
    with pytest.raises(WeightsError):
        prepare_training(dataset, _config(model={"backbone": "resnet18", "weights": missing}), tmp_path / "c")
    assert trained == [] and not any(p.name.startswith(("a", "b", "c", ".")) for p in tmp_path.iterdir())


def test_an_interrupted_packaging_leaves_no_artifact_folder(dataset, tmp_path, monkeypatch):
    from medtl.training import train as train_module

    def interrupted(folder, **kwargs):
        (folder / "weights").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "write_artifact", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(dataset, _config(epochs=1), tmp_path / "artifact")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.work"]  # resumable work, no half artifact


def test_no_trainable_scans_says_which_filter_removed_how_many(dataset):
    from medtl.errors import ConfigError
    from medtl.training.config import TaskConfig
    from medtl.training.data import load_task

    manifest = pd.read_parquet(dataset / "manifest.parquet")
    volumes = int((manifest.image_kind == "volume").sum())
    assert 0 < volumes < len(manifest)
    with pytest.raises(ConfigError) as caught:
        load_task(dataset, TaskConfig(modalities=["MR"]))  # the cohort is CT (and a few 2D images)
    message = str(caught.value)
    assert f"0 of {len(manifest)} scans remain" in message
    assert f"Removed: {len(manifest) - volumes} not volume by task.image_kind" in message
    assert f"; {volumes} other modality by task.modalities." in message
