"""`medtl demo` transfers from the best pretrained network present on the machine, and says which: MedicalNet's
3D ResNet-10, else ImageNet ResNet-18 inflated to 3D, else a source model it trains itself. Weight files are built
here in each source's on-disk format (random values); only files that pass their hash check count."""

from __future__ import annotations

import torch
import torchvision.models as tvm
import yaml
from model_helpers import install_torchvision_file, randomise

from medtl.demo import DEMO_SPEC, choose_transfer, prepare_demo
from medtl.models import create_model, get_backbone
from medtl.models.catalog import register_file
from medtl.models.sources import medicalnet_directory
from medtl.training.config import TrainConfig


def write_medicalnet10():
    state = get_backbone("monai_resnet10").build(1, 2, 3).state_dict()
    state = randomise({k: v for k, v in state.items() if not k.startswith("fc.")}, seed=4)
    folder = medicalnet_directory()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "resnet_10_23dataset.pth")
    return folder / "resnet_10_23dataset.pth"


def built_from(config_path):
    model = TrainConfig.model_validate(yaml.safe_load(config_path.read_text())).model
    return create_model(model.backbone, weights=model.weights, in_channels=1, num_classes=2,
                        spatial_dims=DEMO_SPEC.spatial_dims)  # fmt: skip


def test_without_weights_the_demo_trains_its_own_source_model(tmp_path):
    choice = choose_transfer()
    assert choice.kind == "source-model" and "medtl weights list" in choice.description


def test_imagenet_then_medicalnet_are_preferred_once_present_and_verified(tmp_path, monkeypatch):
    path = write_medicalnet10()
    assert choose_transfer().kind == "source-model"  # present but not pinned: MedicalNet files carry no hash

    install_torchvision_file(randomise(tvm.resnet18(weights=None).state_dict()), monkeypatch,
                             tvm.ResNet18_Weights.IMAGENET1K_V1, "resnet18")  # fmt: skip
    imagenet = choose_transfer()
    assert (imagenet.kind, imagenet.backbone) == ("imagenet", "resnet18") and "inflated to 3D" in imagenet.description
    inflated = create_model("resnet18", weights=imagenet.weights, in_channels=1, num_classes=2, spatial_dims=3)
    assert inflated.pretrained.source == "torchvision" and inflated.model.conv1.weight.ndim == 5

    register_file(path)  # pinned: now verified
    medicalnet = choose_transfer()
    assert (medicalnet.kind, medicalnet.backbone) == ("medicalnet", "monai_resnet10")
    assert "resnet_10_23dataset.pth" in medicalnet.description

    plan = prepare_demo(tmp_path / "demo", patients=12, seed=0, epochs=1)
    assert plan.transfer == medicalnet and not plan.source_cohort.exists()  # no source model to train
    built = built_from(plan.target_config)
    assert built.pretrained is not None and built.pretrained.source == "medicalnet"
    assert built.new_params == ["fc.weight", "fc.bias"]
