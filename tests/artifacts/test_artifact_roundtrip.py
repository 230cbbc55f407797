"""Write → seal → verify → load: the same bytes, the same predictions, anywhere the folder is copied to."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from artifact_support import PHI, Built, TinyNet, model_inputs

from medtl.artifacts import load_artifact_weights, open_verified, verify
from medtl.artifacts.cli import verify_command
from medtl.artifacts.layout import CONFIG, LABEL_MAP, MODEL_CARD, OOF_PREDICTIONS
from medtl.contracts.artifact import ArtifactManifest, ArtifactMetadata, AuditEvent
from medtl.contracts.schemas import render
from medtl.hashing import sha256_bytes, sha256_file

REPO = Path(__file__).resolve().parents[2]


def test_predictions_are_bit_identical_after_loading(pristine: Built, keys: dict[str, Any]) -> None:
    loaded = open_verified(pristine.folder, trusted_keys=[keys["public"]])
    assert sorted(loaded.weight_names) == ["final", "fold0", "fold1"]
    inputs = model_inputs()
    for name, original in pristine.models.items():
        state = loaded.load_weights(name)
        for key, tensor in original.state_dict().items():
            assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
        fresh = TinyNet()
        fresh.load_state_dict(state)
        fresh.eval()
        with torch.no_grad():
            predicted = fresh(inputs)
        assert torch.equal(predicted, pristine.predictions[name])  # bit-identical, not just close
    assert torch.equal(
        load_artifact_weights(pristine.folder, "final")["head.weight"],
        pristine.models["final"].state_dict()["head.weight"],
    )


def test_tables_and_documents_round_trip(pristine: Built) -> None:
    loaded = open_verified(pristine.folder)
    pd.testing.assert_frame_equal(loaded.read_table(OOF_PREDICTIONS), pristine.oof)
    assert loaded.read_yaml(CONFIG) == pristine.config
    assert loaded.read_json(LABEL_MAP) == {"normal": 0, "finding": 1}
    assert loaded.metadata["model_id"] == "tinynet-demo"
    assert isinstance(loaded.metadata_model(), ArtifactMetadata)
    assert loaded.metadata["provenance"]["seeds"] == {"split": 7, "init": 8, "loader": 9, "augment": 10}


def test_manifest_lists_every_file_with_hash_and_size(pristine: Built) -> None:
    folder = pristine.folder
    data = (folder / "manifest.json").read_bytes()
    assert sha256_bytes(data) == pristine.manifest_hash
    document = json.loads(data)
    assert document["contract"] == "artifact_manifest" and document["signed"] is True
    manifest = ArtifactManifest.model_validate({k: v for k, v in document.items() if not k.startswith("contract")})
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    listed = [entry.path for entry in manifest.files]
    assert listed == sorted(set(on_disk) - {"manifest.json", "signature.bin", "audit.jsonl"})
    assert {
        "weights/final.safetensors",
        "weights/fold0.safetensors",
        "weights/fold1.safetensors",
        "metadata.json",
        "model_card.md",
        "environment.txt",
        "config.yaml",
        "preprocessing.json",
        "label_map.json",
        "splits.json",
        "predictions/oof.parquet",
        "metrics/pooled.json",
        "metrics/fold0.json",
    } <= set(listed)
    for entry in manifest.files:
        assert not entry.path.startswith("/") and "\\" not in entry.path and ".." not in entry.path.split("/")
        assert entry.sha256 == sha256_file(folder / entry.path)
        assert entry.size_bytes == (folder / entry.path).stat().st_size
    assert len((folder / "signature.bin").read_bytes()) == 64


def test_created_event_and_report(pristine: Built, keys: dict[str, Any]) -> None:
    report = verify(pristine.folder, trusted_keys=[keys["public"]])
    assert report.manifest_hash == pristine.manifest_hash
    assert report.signed and report.trusted is True and report.public_key == keys["hex"]
    assert report.warnings == []
    assert report.files_checked == 14
    [created] = report.events
    assert isinstance(created, AuditEvent)
    assert (created.index, created.kind, created.actor, created.prev_hash) == (0, "created", "ci-pipeline", None)
    assert created.payload["manifest_sha256"] == pristine.manifest_hash
    assert created.payload["signed"] is True
    assert created.payload["phi_gate"]["passed"] is True
    assert created.payload["phi_gate"]["terms"]["patient_names"] == len(PHI.patient_names)
    assert created.signature is not None and created.public_key == keys["hex"]
    assert report.status.state == "undecided" and report.status.event is None
    assert "chain intact" in report.describe()


def test_model_card_says_what_the_metadata_says(pristine: Built) -> None:
    card = (pristine.folder / MODEL_CARD).read_text()
    assert "# Model card: tinynet-demo 1.0.0" in card
    assert "Research demonstration on synthetic data only." in card
    assert "<!-- medtl:integrity -->" not in card
    fingerprint = verify(pristine.folder).key_fingerprint
    assert fingerprint is not None and f"by key {fingerprint}" in card
    for heading in ("## Intended use", "## Data", "## Performance", "## Provenance", "## Limitations"):
        assert heading in card
    assert "| auroc | 0.91 | 0.8 – 0.97 |" in card
    assert "tiny-pretrained" in card and "license CC0-1.0" in card


def test_a_copy_moved_to_another_folder_verifies(pristine: Built, tmp_path: Path, keys: dict[str, Any]) -> None:
    moved = tmp_path / "elsewhere" / "deeper" / "renamed-artifact"
    shutil.copytree(pristine.folder, moved)
    report = verify(moved, trusted_keys=[keys["public"]])
    assert report.manifest_hash == pristine.manifest_hash
    loaded = open_verified(moved)
    with torch.no_grad():
        fresh = TinyNet()
        fresh.load_state_dict(loaded.load_weights("final"))
        assert torch.equal(fresh.eval()(model_inputs()), pristine.predictions["final"])


def test_no_absolute_paths_inside(pristine: Built) -> None:
    build_location = str(pristine.folder.resolve())
    for path in pristine.folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert build_location.encode() not in data, path.name
            assert str(pristine.folder.parent).encode() not in data, path.name
            assert not re.search(rb"/(?:tmp|home|work|Users)/", data), path.name


def test_environment_and_provenance_are_recorded(pristine: Built) -> None:
    loaded = open_verified(pristine.folder)
    provenance = loaded.metadata["provenance"]
    lock = loaded.read_text("environment.txt")
    assert sha256_bytes(lock.encode()) == provenance["environment_sha256"]
    assert re.search(r"^torch==\S+$", lock, re.MULTILINE) and re.search(r"^numpy==\S+$", lock, re.MULTILINE)
    assert provenance["packages"]["torch"] == torch.__version__.split("+")[0] or provenance["packages"]["torch"]
    assert provenance["code"]["kind"] in ("git", "package")
    assert provenance["hardware"]["cpu_count"] >= 1
    assert provenance["pretrained"]["sha256"] == "d" * 64


def test_verify_command_reports_ok(pristine: Built, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_command(pristine.folder, [keys["public"]]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and pristine.manifest_hash in out and "trusted" in out


def test_committed_schemas_match_the_models() -> None:
    for model in (ArtifactMetadata, ArtifactManifest, AuditEvent):
        committed = REPO / "data_contracts" / model.schema_filename()
        assert committed.read_text(encoding="utf-8") == render(model), f"regenerate {committed.name}"


@pytest.mark.parametrize("axes", [[0, 0], [3], [2]])
def test_mirror_axes_must_be_distinct_axes_of_the_input(pristine: Built, axes: list[int]) -> None:
    """A hand-edited metadata file cannot make prediction flip an axis twice or one the (2D) input lacks."""
    document = {**open_verified(pristine.folder).metadata_model().model_dump(), "prediction_flip_axes": axes}
    assert len(document["input"]["spatial_shape"]) == 2
    with pytest.raises(ValueError, match=r"prediction_flip_axes|less than or equal"):
        ArtifactMetadata.model_validate(document)
    assert ArtifactMetadata.model_validate({**document, "prediction_flip_axes": [1, 0]}).prediction_flip_axes == [1, 0]
