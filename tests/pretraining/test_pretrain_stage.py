"""`medtl pretrain` end to end on small MedMNIST-format datasets: exclusion, the artifact, its use as a weight source,
and the refusals (evaluate/score/approve, a locked test set the backbone saw)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medtl.artifacts import open_verified, verify
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import read_table, write_table
from medtl.contracts.ingest import ManifestRow
from medtl.errors import ConfigError, LeakageError
from medtl.models.artifact_index import read_index
from medtl.planning.weights import pick_weights
from medtl.pretraining.config import PretrainConfig
from medtl.pretraining.pretrain import pretrain
from medtl.training.train import train
from support.medmnist_like import make_dataset
from support.trained import signing_key, tiny_config

SIZES = {"train": 24, "val": 6, "test": 10}


def manifest(dataset: Path) -> pd.DataFrame:
    return read_table(ManifestRow, dataset / "manifest.parquet")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """`a` with its official test split; `b`, other patients, with no split at all."""
    root = tmp_path_factory.mktemp("pretrain")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = make_dataset(root / "a", "breastmnist", seed=1, sizes=SIZES)
    other = make_dataset(root / "b", "pneumoniamnist", seed=2, sizes={"train": 30, "val": 5, "test": 5})
    b = unsplit_copy(other, root / "b-unsplit")  # 40 scans, none marked test
    key = root / "keys" / "pipeline.pem"
    key.parent.mkdir()
    with signing_key(key):
        yield {"root": root, "a": a, "b": b}


def unsplit_copy(dataset: Path, out: Path) -> Path:
    """The same export with its split column emptied: another export of the same patients, with no test mark."""
    shutil.copytree(dataset, out)
    shutil.rmtree(out / "splits", ignore_errors=True)  # a persisted split's locked_test would mark them again
    frame = manifest(out)
    frame["split"] = None
    write_table(ManifestRow, frame, out / "manifest.parquet")
    return out


def small(**overrides) -> PretrainConfig:
    return PretrainConfig.model_validate({"epochs": 2, "batch_size": 8, "checkpoint_every_s": 0, **overrides})


@pytest.fixture(scope="module")
def simclr(site) -> Path:
    out = site["root"] / "pre-simclr"
    pretrain([site["a"], site["b"]], small(), out)
    return out


def test_locked_test_patients_are_excluded_and_recorded(site, simclr):
    record = json.loads((simclr / "metrics" / "pretraining.json").read_text())
    frame = manifest(site["a"])
    test_patients = set(frame.loc[frame["split"] == "test", "patient_id"])
    assert len(test_patients) == SIZES["test"]
    assert set(record["exclusion"]["patients"]) == test_patients
    assert not test_patients & set(record["patients_used"])
    assert record["exclusion"]["locked_test_patients"] == SIZES["test"]
    # every other scan of both datasets was used, and each dataset says how many
    assert record["scans"] == SIZES["train"] + SIZES["val"] + 40
    assert [d["scans"] for d in record["datasets"]] == [SIZES["train"] + SIZES["val"], 40]
    assert record["epochs_done"] == 2 and len(record["curve"]) == 2 and record["stopped_by"] == "epochs"


def test_a_patient_marked_test_in_one_export_is_excluded_from_every_export(site, tmp_path):
    """The same patient in two datasets: the test mark of one removes their scans from the other too."""
    other = unsplit_copy(site["a"], tmp_path / "other-export")
    frame_b = manifest(other)
    frame_a = manifest(site["a"])
    shared = sorted(set(frame_a.loc[frame_a["split"] == "test", "patient_id"]))
    out = tmp_path / "pre"
    pretrain([other, site["a"]], small(epochs=1), out)
    record = json.loads((out / "metrics" / "pretraining.json").read_text())
    b_use = record["datasets"][0]
    left_out = frame_b["patient_id"].isin(shared).sum()
    assert b_use["scans"] == len(frame_b) - left_out
    assert b_use["left_out"] == {"excluded patient (locked test or named dataset)": int(left_out)}


def test_artifact_is_a_signed_backbone_without_head(site, simclr):
    report = verify(simclr)
    assert report.signed and report.trusted and report.files_checked >= 5
    verified = open_verified(simclr)
    assert verified.kind == "pretrained"
    assert verified.metadata["task"] is None
    weights = load_file(simclr / "weights" / "final.safetensors")
    assert not any(name.startswith("fc.") for name in weights)
    assert "conv1.weight" in weights and "layer4.1.conv2.weight" in weights
    entries = read_index()
    assert [e.manifest_sha256 for e in entries if Path(e.path) == simclr.resolve()] == [verified.manifest_hash]


def test_pretrained_artifact_cannot_be_evaluated_scored_or_approved(simclr):
    with pytest.raises(ConfigError, match=r"pretrained artifact.*cannot be evaluated or scored"):
        ArtifactContents(open_verified(simclr))
    with pytest.raises(ConfigError, match="cannot be approved"):
        open_verified(simclr).require_model("approved or rejected")


def test_training_starts_from_the_pretrained_backbone(site, simclr, tmp_path):
    """The body's weights at the start of fine-tuning are exactly the artifact's; only the head is new."""
    from medtl.models.factory import create_model

    built = create_model(
        "resnet18", weights={"source": "artifact", "path": str(simclr)}, in_channels=1, num_classes=2, spatial_dims=2
    )
    saved = load_file(simclr / "weights" / "final.safetensors")
    state = built.model.state_dict()
    assert torch.equal(state["layer3.0.conv1.weight"], saved["layer3.0.conv1.weight"])
    assert set(built.new_params) == {"fc.weight", "fc.bias"}
    assert built.pretrained.source == "artifact"
    config = tiny_config(model={"backbone": "resnet18", "weights": {"source": "artifact", "path": str(simclr)}})
    result = train(site["a"], config, tmp_path / "model")
    metadata = open_verified(result.artifact).metadata
    assert metadata["provenance"]["pretrained"]["source"] == "artifact"
    listed = {entry.path: entry.sha256 for entry in open_verified(simclr).manifest.files}
    assert metadata["provenance"]["pretrained"]["sha256"] == listed["weights/final.safetensors"]


def test_training_refuses_a_test_set_the_backbone_was_pretrained_on(site, tmp_path):
    """Pretrained on `a` as if it had no test split (the split column dropped) -> training on `a` is refused."""
    unsplit = unsplit_copy(site["a"], tmp_path / "a-unsplit")
    pretrained = tmp_path / "pre"
    pretrain([unsplit], small(epochs=1), pretrained)
    config = tiny_config(model={"backbone": "resnet18", "weights": {"source": "artifact", "path": str(pretrained)}})
    with pytest.raises(LeakageError, match=rf"^{SIZES['test']} test patient\(s\) were pretrained on by pre,"):
        train(site["a"], config, tmp_path / "model")


def test_evaluate_refuses_a_separately_ingested_test_set_the_backbone_was_pretrained_on(site, simclr, tmp_path):
    """`b` (no split: all of it is a test set) was in the pretraining pool; `a`'s locked test split was left out."""
    from medtl.cards.card import build_model_card
    from medtl.evaluation.evaluate import evaluate
    from medtl.evaluation.unseen import check_unseen

    config = tiny_config(model={"backbone": "resnet18", "weights": {"source": "artifact", "path": str(simclr)}})
    model = train(site["a"], config, tmp_path / "model").artifact
    with pytest.raises(
        LeakageError, match=r"^40 test patient\(s\) were pretrained on by pre-simclr, which the model started"
    ) as raised:
        evaluate(model, out=tmp_path / "report", test=site["b"], n_boot=20, pdf=False)
    assert "P-" not in str(raised.value) and not (tmp_path / "report").exists()  # refused before any work
    contents = ArtifactContents(open_verified(model))
    check_unseen({"model": contents}, site["a"])  # its own locked test split is clean
    pool = json.loads((simclr / "metrics" / "pretraining.json").read_text())["patients_used"]
    (source,) = build_model_card(contents).lineage.learnt_from  # the card counts, and names no patient
    assert (source.kind, source.artifact_name, source.patients) == ("pretrained", "pre-simclr", len(pool))


def test_plan_picks_the_sites_pretrained_backbone_when_no_public_file_is_there(simclr):
    pick, checks = pick_weights(2)
    assert pick.weights == {"source": "artifact", "path": str(simclr.resolve())} or pick.source == "artifact"
    assert "site's own pretrained backbone" in pick.reason
    assert checks[-1].source == "artifact" and checks[-1].usable
    pick_3d, _ = pick_weights(3)  # a 2D backbone is not offered for volumes
    assert pick_3d.source == "none"


def test_time_budget_shortens_the_schedule(site, tmp_path):
    out = tmp_path / "pre"
    result = pretrain([site["b"]], small(epochs=50, time_budget_minutes=0.0005), out)
    assert result.record.stopped_by == "time_budget"
    assert result.record.epochs_done == result.record.epochs_scheduled < 50


def test_cli_pretrain_and_weights_list(site, tmp_path):
    out = tmp_path / "cli-pre"
    run = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "pretrain", str(site["b"]), "--out", str(out), "--epochs", "1",
         "--method", "masked"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((out / "metrics" / "pretraining.json").read_text())["method"] == "masked"
    listing = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "weights", "list"], capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    row = next(line for line in listing.stdout.splitlines() if "cli-pre" in line)
    assert "masked" in row and "verified" in row
    (out / "config.yaml").write_text((out / "config.yaml").read_text() + "# edited\n")
    listing = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "weights", "list"], capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    row = next(line for line in listing.stdout.splitlines() if "cli-pre" in line)
    assert "invalid" in row and "verified" not in row


def test_a_persisted_splits_locked_test_is_excluded_too(site, tmp_path):
    """An export whose manifest no longer marks the test split, but whose persisted split still names it."""
    from medtl.training.config import TaskConfig
    from medtl.training.data import load_task
    from medtl.training.splits import resolve_splits

    task = load_task(site["a"], TaskConfig())
    splits, _ = resolve_splits(task.scans, dataset=site["a"], n_folds=2, tune_fraction=0.2, seed=3,
                               manifest_hash=task.manifest_hash)  # fmt: skip
    assert len(splits.locked_test) == SIZES["test"]
    copy = tmp_path / "copy"
    shutil.copytree(site["a"], copy)
    frame = manifest(copy)
    frame["split"] = None
    write_table(ManifestRow, frame, copy / "manifest.parquet")
    out = tmp_path / "pre"
    pretrain([copy], small(epochs=1), out)
    record = json.loads((out / "metrics" / "pretraining.json").read_text())
    assert set(record["exclusion"]["patients"]) == set(splits.locked_test)
    assert not set(splits.locked_test) & set(record["patients_used"])


def test_a_plan_for_volumes_loads_a_backbone_pretrained_on_volumes(tmp_path):
    """A backbone pretrained on volumes has 3D kernels: the plan keeps its layout (it once chose ACS, meant for 2D
    kernels, and training stopped at its start on 20 shape mismatches), and the planned model loads its body."""
    from medtl.models.factory import create_model_from_config
    from medtl.planning import PlanOptions, make_plan

    (tmp_path / "v").mkdir()
    volumes = make_dataset(tmp_path / "v", "adrenalmnist3d", seed=3, sizes={"train": 16, "val": 4, "test": 6})
    pretrained = tmp_path / "pre-3d"
    with signing_key(tmp_path / "keys" / "pipeline.pem"):
        pretrain([volumes], small(epochs=1), pretrained)
        config = make_plan(volumes, PlanOptions(weights_artifact=pretrained, search=False, max_steps=8))
        assert config.model.weights.source == "artifact" and config.model.adapt_3d == "inflate"
        built = create_model_from_config(config.model, in_channels=1, num_classes=2, spatial_dims=3)
    saved = load_file(pretrained / "weights" / "final.safetensors")
    assert torch.equal(built.model.state_dict()["layer2.0.conv1.weight"], saved["layer2.0.conv1.weight"])
    assert saved["layer2.0.conv1.weight"].ndim == 5
