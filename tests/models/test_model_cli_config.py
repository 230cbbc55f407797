"""`medtl weights list / show / register`, and the weights / model sections of the train YAML."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from model_helpers import sha
from typer.testing import CliRunner

from medtl.errors import ConfigError, WeightsError
from medtl.models import ModelConfig, create_model_from_config, parse_weights
from medtl.models.cli import weights_app
from medtl.models.config import FileWeights, NoWeights, TorchvisionWeights

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(weights_app, list(args), env={"COLUMNS": "250"})


def test_list_shows_every_expected_file_and_where_it_goes() -> None:
    result = _invoke("list")
    assert result.exit_code == 0, result.output
    checkpoints = str(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints")
    for expected in ("resnet18-f37072fd.pth", "resnet50-11ad3fa6.pth", "densenet121-a639ec97.pth",
                     "efficientnet_b0_rwightman-7f5810bc.pth", "convnext_tiny-983f1562.pth",
                     "resnet_10_23dataset.pth", "resnet_50_23dataset.pth", "monai_bundle", "artifact"):  # fmt: skip
        assert expected in result.output, expected
    assert checkpoints in result.output.splitlines()  # one heading per folder, with the files that go into it
    assert str(Path(os.environ["MEDTL_HOME"]) / "weights" / "medicalnet") in result.output.splitlines()
    assert "missing" in result.output


def test_show_a_backbone_says_where_to_put_its_file() -> None:
    result = _invoke("show", "resnet18")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "resnet18-f37072fd.pth" in flat and "missing" in flat and "f37072fd" in flat
    assert "download.pytorch.org/models/resnet18-f37072fd.pth" in flat
    location = str(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert f"location:  {location}" in result.output  # whole, never wrapped, for copy and paste


def test_register_pins_a_file_and_refuses_a_wrong_hash(tmp_path: Path) -> None:
    weights = tmp_path / "site_model.pt"
    torch.save({"conv.weight": torch.ones(2, 2)}, weights)
    wrong = _invoke("register", str(weights), "--sha256", "0" * 64)
    assert isinstance(wrong.exception, WeightsError) and "not the" in str(wrong.exception)

    result = _invoke("register", str(weights), "--name", "site-ct-v1", "--license", "internal")
    assert result.exit_code == 0, result.output
    pins = json.loads((Path(os.environ["MEDTL_HOME"]) / "weights.json").read_text())
    assert pins["pins"]["site-ct-v1"]["sha256"] == sha(weights)
    assert pins["pins"]["site-ct-v1"]["license"] == "internal"

    shown = _invoke("show", "site-ct-v1")
    assert shown.exit_code == 0 and "verified" in shown.output
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert "mismatch" in _invoke("show", "site-ct-v1").output
    again = _invoke("register", str(weights), "--name", "site-ct-v1")
    assert isinstance(again.exception, WeightsError) and "--replace" in str(again.exception)
    assert _invoke("register", str(weights), "--name", "site-ct-v1", "--replace").exit_code == 0


def test_register_refuses_a_torchvision_file_whose_hash_prefix_is_wrong(tmp_path: Path) -> None:
    fake = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"fc.weight": torch.zeros(1)}, fake)
    result = _invoke("register", str(fake))
    assert isinstance(result.exception, WeightsError) and "f37072fd" in str(result.exception)


def test_show_an_unknown_name_suggests_list() -> None:
    result = _invoke("show", "resnet17")
    assert result.exception is not None and "medtl weights list" in str(result.exception)


# ---- configuration -------------------------------------------------------------------------------------------------


def test_weights_choices_from_yaml() -> None:
    assert isinstance(parse_weights("none"), NoWeights)
    assert isinstance(parse_weights(yaml.safe_load("weights: none")["weights"]), NoWeights)
    assert parse_weights({"source": "torchvision", "name": "IMAGENET1K_V1"}) == TorchvisionWeights(name="IMAGENET1K_V1")
    choice = parse_weights({"source": "file", "path": "w.safetensors", "sha256": "AB" * 32})
    assert isinstance(choice, FileWeights) and choice.sha256 == "ab" * 32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "weights: none"),
        ({"source": "torchvison"}, "source"),
        ({"source": "file", "path": "w.pt", "sha256": "123"}, "SHA-256"),
        ({"source": "torchvision", "name": "IMAGENET1K_V1", "url": "https://x"}, "url"),
    ],
)
def test_bad_weights_choices_are_config_errors(value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_weights(value)


def test_model_section_of_the_train_yaml() -> None:
    section = yaml.safe_load("backbone: resnet18\nweights: none\nchannel_adapt: mean\nadapt_3d: 2.5d\nslices: 3\n")
    built = create_model_from_config(section, in_channels=1, num_classes=2, spatial_dims=3)
    assert built.spec["adapt_3d"] == "2.5d" and built.spec["channel_adapt"] == "mean"
    with pytest.raises(ConfigError, match="weights"):  # no default: random init must be chosen explicitly
        create_model_from_config({"backbone": "resnet18"}, in_channels=1, num_classes=2, spatial_dims=2)
    assert ModelConfig.model_validate(section).weights == NoWeights()
