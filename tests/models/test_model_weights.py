"""Weight sources, each exercised with a file in its real on-disk format, through the code path users take."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from model_helpers import fake_artifacts_module, install_torchvision_file, randomise, sha, write_artifact
from safetensors.torch import save_file

from medtl.errors import ArtifactIntegrityError, ConfigError, WeightsError
from medtl.models import create_model, get_backbone
from medtl.models.catalog import register_file
from medtl.models.sources import torchvision_checkpoint


@pytest.fixture(scope="module")
def resnet18_imagenet_state() -> dict[str, torch.Tensor]:
    """A state dict with torchvision resnet18's exact keys and shapes (3 channels, 1000 classes), random values."""
    return randomise(tvm.resnet18(weights=None).state_dict())


# ---- torchvision ---------------------------------------------------------------------------------------------------


def test_torchvision_file_is_expected_where_torchvision_caches_it() -> None:
    ckpt = torchvision_checkpoint(get_backbone("resnet18"), "IMAGENET1K_V1")
    assert ckpt.file_name == "resnet18-f37072fd.pth" and ckpt.hash_prefix == "f37072fd"
    assert ckpt.directory == Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert ckpt.directory == Path(torch.hub.get_dir()) / "checkpoints"
    default = torchvision_checkpoint(get_backbone("resnet50"), "DEFAULT")
    assert default.weights_name == "ResNet50_Weights.IMAGENET1K_V2"


def test_missing_torchvision_file_says_which_file_where_and_which_hash() -> None:
    with pytest.raises(WeightsError) as caught:
        create_model("resnet18", weights={"source": "torchvision", "name": "IMAGENET1K_V1"}, in_channels=3,
                     num_classes=2)  # fmt: skip
    message = str(caught.value)
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert "resnet18-f37072fd.pth" in message and str(folder) in message
    assert "f37072fd" in message and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_torchvision_weights_arrive_in_the_model_and_the_head_is_new(resnet18_imagenet_state, monkeypatch) -> None:
    member = tvm.ResNet18_Weights.IMAGENET1K_V1
    path = install_torchvision_file(resnet18_imagenet_state, monkeypatch, member, "resnet18")
    # torchvision's own loader finds the very same file in its cache (and therefore would not download it).
    from_hub = torch.hub.load_state_dict_from_url(member.url, check_hash=True, weights_only=True)
    assert from_hub.keys() == resnet18_imagenet_state.keys()

    built = create_model("resnet18", weights={"source": "torchvision", "name": "IMAGENET1K_V1"}, in_channels=3,
                         num_classes=2)  # fmt: skip
    state = built.model.state_dict()
    for key, value in resnet18_imagenet_state.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key
    assert state["fc.weight"].shape == (2, 512)
    assert built.new_params == ["fc.weight", "fc.bias"] and "conv1.weight" in built.pretrained_params
    record = built.pretrained
    assert record is not None and record.sha256 == sha(path) and record.path_name == path.name
    assert record.name == "ResNet18_Weights.IMAGENET1K_V1" and "ImageNet" in record.license
    assert "prefix" in record.verified_by
    assert built.load_report["dropped_head_keys"] == ["fc.bias", "fc.weight"]
    assert str(Path(os.environ["TORCH_HOME"])) not in json.dumps(built.as_dict())  # no absolute paths


def test_tampered_torchvision_file_is_refused(resnet18_imagenet_state, monkeypatch) -> None:
    path = install_torchvision_file(
        resnet18_imagenet_state, monkeypatch, tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet18"
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not start with"):
        create_model("resnet18", weights={"source": "torchvision"}, in_channels=3, num_classes=2)


def test_a_pinned_torchvision_file_must_match_the_full_pin(resnet18_imagenet_state, monkeypatch) -> None:
    path = install_torchvision_file(
        resnet18_imagenet_state, monkeypatch, tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet18"
    )
    pin = register_file(path)
    assert pin.source == "torchvision" and pin.key == path.name
    built = create_model("resnet18", weights="torchvision", in_channels=3, num_classes=2)
    assert built.pretrained is not None and "pinned" in built.pretrained.verified_by
    # Same hash prefix, different content: passes torch.hub's check but not the pin.
    pins_file = Path(os.environ["MEDTL_HOME"]) / "weights.json"
    document = json.loads(pins_file.read_text())
    document["pins"][path.name]["sha256"] = sha(path)[:8] + "0" * 56
    pins_file.write_text(json.dumps(document))
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        create_model("resnet18", weights="torchvision", in_channels=3, num_classes=2)


def test_grey_input_sums_the_rgb_kernels_and_records_it(resnet18_imagenet_state, monkeypatch) -> None:
    install_torchvision_file(resnet18_imagenet_state, monkeypatch, tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet18")
    built = create_model("resnet18", weights="torchvision", in_channels=1, num_classes=2)
    expected = resnet18_imagenet_state["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(built.model.conv1.weight.detach(), expected)
    channels = built.adaptation["input_channels"]
    assert channels == {"data": 1, "network": 1, "pretrained": 3, "layer": "conv1", "method": "sum"}
    assert "conv1.weight" in built.pretrained_params


@pytest.mark.slow
def test_legacy_densenet_checkpoint_layout_loads(monkeypatch) -> None:
    """densenet121-a639ec97.pth predates the current module names (`norm.1`) and the zip serialisation."""
    state = randomise(tvm.densenet121(weights=None).state_dict())
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # the 2017 file predates BatchNorm's counter
        for old, new in (("norm1", "norm.1"), ("norm2", "norm.2"), ("conv1", "conv.1"), ("conv2", "conv.2")):
            if ".denselayer" in key and f".{old}." in key:
                key = key.replace(f".{old}.", f".{new}.")
        legacy[key] = value
    install_torchvision_file(legacy, monkeypatch, tvm.DenseNet121_Weights.IMAGENET1K_V1, "densenet121",
                              _use_new_zipfile_serialization=False)  # fmt: skip
    built = create_model("densenet121", weights="torchvision", in_channels=3, num_classes=2)
    loaded = built.model.state_dict()
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(loaded[key], state[key])
    assert any("legacy DenseNet" in step for step in built.load_report["normalisation"])
    assert "features.norm5.num_batches_tracked" in built.load_report["defaulted"]


def test_weights_for_another_architecture_are_an_error(resnet18_imagenet_state, tmp_path) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_imagenet_state.items()}, path)
    with pytest.raises(WeightsError, match="do not fit the model beyond its head") as caught:
        create_model("resnet50", weights={"source": "file", "path": path, "sha256": sha(path)}, in_channels=3,
                     num_classes=2)  # fmt: skip
    assert "missing key" in str(caught.value) and "shape mismatch" in str(caught.value)


def test_plain_file_source_with_explicit_hash(resnet18_imagenet_state, tmp_path) -> None:
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_imagenet_state.items()}, path)
    with pytest.raises(WeightsError, match=sha(path)):  # no hash given, none pinned: refused, with the actual hash
        create_model("resnet18", weights={"source": "file", "path": path}, in_channels=3, num_classes=2)
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        create_model("resnet18", weights={"source": "file", "path": path, "sha256": "ab" * 32}, in_channels=3,
                     num_classes=2)  # fmt: skip
    built = create_model("resnet18", weights={"source": "file", "path": path, "sha256": sha(path),
                                              "license": "CC-BY-4.0"}, in_channels=3, num_classes=2)  # fmt: skip
    assert built.pretrained is not None and built.pretrained.license == "CC-BY-4.0"
    assert torch.equal(built.model.layer4[1].bn2.running_var, resnet18_imagenet_state["layer4.1.bn2.running_var"])


def test_pickled_code_is_never_run(tmp_path) -> None:
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    path = tmp_path / "learner.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "learner": Payload()}, path)
    with pytest.raises(WeightsError, match="pickled Python objects"):
        create_model("resnet18", weights={"source": "file", "path": path, "sha256": sha(path)}, in_channels=3,
                     num_classes=2)  # fmt: skip
    assert not marker.exists()


# ---- MedicalNet ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def medicalnet10_state() -> dict[str, torch.Tensor]:
    """MedicalNet ResNet-10 as published: 1 input channel, 3D, no classification layer."""
    model = get_backbone("monai_resnet10").build(1, 2, 3)
    return randomise({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, seed=3)


def _write_medicalnet(state: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "resnet_10_23dataset.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def test_medicalnet_checkpoint_loads_into_the_3d_resnet(medicalnet10_state, tmp_path) -> None:
    path = _write_medicalnet(medicalnet10_state, tmp_path / "medicalnet")
    built = create_model("monai_resnet10", weights={"source": "medicalnet", "path": path.parent, "sha256": sha(path)},
                         in_channels=1, num_classes=2, spatial_dims=3)  # fmt: skip
    state = built.model.state_dict()
    for key, value in medicalnet10_state.items():
        assert torch.equal(state[key], value), key
    assert built.new_params == ["fc.weight", "fc.bias"]
    assert built.load_report["normalisation"] == ["unwrapped checkpoint['state_dict']", "stripped key prefix 'module.'"]
    assert built.pretrained is not None and built.pretrained.license.startswith("MIT")


def test_medicalnet_default_location_pins_and_3_channel_adaptation(medicalnet10_state) -> None:
    default = Path(os.environ["MEDTL_HOME"]) / "weights" / "medicalnet"
    with pytest.raises(WeightsError) as caught:
        create_model("monai_resnet10", weights="medicalnet", in_channels=1, num_classes=2, spatial_dims=3)
    assert "resnet_10_23dataset.pth" in str(caught.value) and str(default) in str(caught.value)
    assert "TencentMedicalNet/MedicalNet-Resnet10" in str(caught.value)

    path = _write_medicalnet(medicalnet10_state, default)
    with pytest.raises(WeightsError, match=f"no expected SHA-256.*{sha(path)}"):
        create_model("monai_resnet10", weights="medicalnet", in_channels=1, num_classes=2, spatial_dims=3)
    register_file(path)
    built = create_model("monai_resnet10", weights="medicalnet", in_channels=3, num_classes=2, spatial_dims=3)
    expected = medicalnet10_state["conv1.weight"].repeat(1, 3, 1, 1, 1) / 3
    torch.testing.assert_close(built.model.conv1.weight.detach(), expected)

    with pytest.raises(WeightsError, match="3D but the model is 2D"):
        create_model("monai_resnet10", weights="medicalnet", in_channels=1, num_classes=2, spatial_dims=2)
    with pytest.raises(ConfigError, match="MedicalNet weights do not fit"):
        create_model("resnet18", weights="medicalnet", in_channels=1, num_classes=2)


# ---- MONAI bundle --------------------------------------------------------------------------------------------------


def _write_bundle(folder: Path, state: dict) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    metadata = {"name": "toy_densenet_classifier", "version": "0.3.1", "monai_version": "1.4.0",
                "network_data_format": {"inputs": {}, "outputs": {}}}  # fmt: skip
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "LICENSE").write_text("Apache License\nVersion 2.0\n")
    torch.save(state, folder / "models" / "model.pt")  # MONAI bundles store the network's state dict
    return folder / "models" / "model.pt"


@pytest.mark.slow
def test_monai_bundle_folder_loads_and_checks_its_declared_hash(tmp_path) -> None:
    source = get_backbone("monai_densenet121").build(1, 4, 2)
    state = randomise(source.state_dict(), seed=5)
    model_file = _write_bundle(tmp_path / "bundle", state)
    choice = {"source": "monai_bundle", "path": tmp_path / "bundle", "sha256": sha(model_file)}
    built = create_model("monai_densenet121", weights=choice, in_channels=1, num_classes=2, spatial_dims=2)
    key = "features.denseblock2.denselayer3.layers.conv1.weight"
    assert torch.equal(built.model.state_dict()[key], state[key])
    assert built.new_params == ["class_layers.out.weight", "class_layers.out.bias"]
    record = built.pretrained
    assert record is not None and record.name == "toy_densenet_classifier@0.3.1"
    assert record.path_name == "models/model.pt" and record.license == "bundle LICENSE: Apache License"

    (tmp_path / "bundle" / "large_files.yml").write_text(
        "large_files:\n  - path: models/model.pt\n    url: https://example.invalid/model.pt\n"
        "    hash_val: 0123456789abcdef0123456789abcdef\n    hash_type: md5\n"
    )
    with pytest.raises(WeightsError, match="md5"):
        create_model("monai_densenet121", weights=choice, in_channels=1, num_classes=2, spatial_dims=2)
    with pytest.raises(WeightsError, match="not a MONAI bundle"):
        create_model("monai_densenet121", weights={"source": "monai_bundle", "path": tmp_path}, in_channels=1,
                     num_classes=2)  # fmt: skip


# ---- earlier medtl artifact ----------------------------------------------------------------------------------------


def test_artifact_source_reuses_an_earlier_model(monkeypatch, tmp_path) -> None:
    fake_artifacts_module(monkeypatch)
    earlier = create_model("resnet18", weights="none", in_channels=1, num_classes=5)
    write_artifact(tmp_path / "artifact", earlier)
    choice = {"source": "artifact", "path": tmp_path / "artifact"}
    built = create_model("artifact", weights=choice, in_channels=1, num_classes=2)
    assert built.backbone == "resnet18" and built.model.fc.out_features == 2
    assert torch.equal(built.model.layer3[0].conv1.weight, earlier.model.layer3[0].conv1.weight)
    record = built.pretrained
    assert record is not None and record.name == "chest-xray-pretask@1.2.0"
    assert record.sha256 == sha(tmp_path / "artifact" / "weights" / "final.safetensors")

    with pytest.raises(WeightsError, match="not 'resnet50'"):
        create_model("resnet50", weights=choice, in_channels=1, num_classes=2)
    (tmp_path / "artifact" / "TAMPERED").touch()
    with pytest.raises(ArtifactIntegrityError):
        create_model("artifact", weights=choice, in_channels=1, num_classes=2)


def test_an_ensemble_artifact_lends_its_best_fold_model(monkeypatch, tmp_path) -> None:
    """No refit model: the fold model with the best tuning AUROC is the starting point, and the record says so."""
    fake_artifacts_module(monkeypatch)
    folder = tmp_path / "artifact"
    write_artifact(folder, create_model("resnet18", weights="none", in_channels=1, num_classes=2))
    (folder / "weights" / "final.safetensors").unlink()
    (folder / "metrics").mkdir()
    states = {}
    for fold, tune_auc in enumerate([0.81, 0.93, 0.88]):
        states[fold] = randomise(create_model("resnet18", weights="none", in_channels=1, num_classes=2)
                                 .model.state_dict(), seed=fold + 10)  # fmt: skip
        save_file({k: v.contiguous() for k, v in states[fold].items()}, folder / "weights" / f"fold{fold}.safetensors")
        (folder / "metrics" / f"fold{fold}.json").write_text(json.dumps({"fold": fold, "best_tune_auc": tune_auc}))
    choice = {"source": "artifact", "path": folder}
    built = create_model("artifact", weights=choice, in_channels=1, num_classes=2)
    assert built.pretrained.path_name == "weights/fold1.safetensors"
    loaded = built.model.state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], states[1]["layer1.0.conv1.weight"])
    for name in list(folder.glob("weights/*")):
        name.unlink()
    with pytest.raises(WeightsError, match="holds no model weights"):
        create_model("artifact", weights=choice, in_channels=1, num_classes=2)


def test_artifact_backbone_requires_the_artifact_source() -> None:
    with pytest.raises(ConfigError, match="source: artifact"):
        create_model("artifact", weights="none", in_channels=1, num_classes=2)


@pytest.mark.slow
def test_artifact_source_with_the_real_artifacts_module(tmp_path, monkeypatch) -> None:
    artifacts = pytest.importorskip(
        "medtl.artifacts", reason="medtl.artifacts is not in this tree yet; the artifact source is tested with a stub"
    )
    from medtl.contracts.artifact import ArtifactMetadata

    if "model" not in ArtifactMetadata.model_fields:
        pytest.skip("the artifact_metadata contract has no `model` field yet, so no artifact can carry its model spec")
    earlier = create_model("resnet18", weights="none", in_channels=1, num_classes=5)
    folder = tmp_path / "artifact"
    builder = artifacts.ArtifactBuilder(folder)
    builder.add_weights("final", earlier.model.state_dict())
    environment = artifacts.environment_text()
    provenance = artifacts.collect_provenance(
        manifest_hash="a" * 64, fingerprint_hash="b" * 64, split_hash="c" * 64, pretrained=earlier.provenance(),
        seed=0, started_at="2025-01-02T03:04:05.000Z", finished_at="2025-01-02T03:14:05.000Z", environment=environment,
    )  # fmt: skip
    builder.add_metadata({
        "model_id": "pretask", "model_version": "1.0.0", "model": earlier.spec,
        "task": {"kind": "multiclass", "classes": list("abcde")}, "intended_use": "test",
        "input": {"modalities": ["CT"], "image_kind": "image2d", "channels": 1, "spatial_shape": [32, 32],
                  "value_range": (0.0, 1.0)},
        "output": {"probability": "softmax"}, "preprocessing_hash": "d" * 64, "config_hash": "e" * 64,
        "provenance": provenance,
    })  # fmt: skip
    builder.add_environment(environment)
    builder.seal(signing_key=None, allow_unsigned=True, phi_terms=artifacts.PhiTerms.empty())
    monkeypatch.setenv("MEDTL_ALLOW_UNSIGNED", "1")
    built = create_model("artifact", weights={"source": "artifact", "path": folder}, in_channels=1, num_classes=2)
    assert torch.equal(built.model.layer2[0].conv2.weight, earlier.model.layer2[0].conv2.weight)
    weights = folder / "weights" / "final.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(ArtifactIntegrityError):
        create_model("artifact", weights={"source": "artifact", "path": folder}, in_channels=1, num_classes=2)


# ---- no pretraining ------------------------------------------------------------------------------------------------


def test_weights_none_is_explicit_and_recorded() -> None:
    built = create_model("resnet18", weights={"source": "none"}, in_channels=1, num_classes=2)
    assert built.pretrained is None and built.pretrained_params == []
    assert built.provenance() == {"source": "none", "name": "none", "sha256": None, "license": None}
    assert not (Path(os.environ["TORCH_HOME"])).exists()  # nothing was looked up or written


def test_bundle_copy_elsewhere_keeps_its_pin(tmp_path) -> None:
    """Pins of bundle files are keyed by bundle name, so a copied bundle folder verifies at its new place."""
    state = {"w": torch.ones(2)}
    model_file = _write_bundle(tmp_path / "a", state)
    pin = register_file(tmp_path / "a")
    assert pin.key == "toy_densenet_classifier/models/model.pt" and pin.sha256 == sha(model_file)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(WeightsError, match="do not fit"):  # verified (pin found), then refused for its keys
        create_model("monai_densenet121", weights={"source": "monai_bundle", "path": tmp_path / "b"}, in_channels=1,
                     num_classes=2)  # fmt: skip
