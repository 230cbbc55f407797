"""The backbone registry: names, duplicates, did-you-mean, and every backbone's output shape in 2D and 3D."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models as tvm

from medtl.errors import ConfigError, DuplicateNameError, UnknownNameError
from medtl.models import (
    create_model,
    get_backbone,
    list_backbones,
    model_structure,
    rebuild_model,
    rebuild_with_weights,
    register_backbone,
)

REQUIRED = {
    "resnet18", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny",
    "monai_densenet121", "monai_resnet10", "monai_resnet18", "monai_resnet50", "artifact",
}  # fmt: skip

# (backbone, spatial_dims, in_channels, input side). Every backbone in 2D and, where supported, 3D; 1 and 3 channels.
CASES = [
    (name, dims, channels)
    for name in sorted(REQUIRED - {"artifact"})
    for dims in (2, 3)
    for channels in (1, 3)
    if not (name == "convnext_tiny" and dims == 3)
]
SLOW = {"densenet121", "monai_densenet121", "resnet50", "monai_resnet50", "convnext_tiny"}


def _side(name: str, dims: int) -> int:
    return 32 if dims == 2 or "densenet" in name else 16  # DenseNets downsample 32x and need 32^3


def test_registry_lists_the_required_backbones() -> None:
    assert set(list_backbones()) >= REQUIRED


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(DuplicateNameError, match="resnet18"):
        register_backbone(get_backbone("resnet18"))


def test_unknown_backbone_suggests_the_closest_names() -> None:
    with pytest.raises(UnknownNameError) as caught:
        create_model("resnet19", weights="none", in_channels=1, num_classes=2)
    assert "'resnet18'" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "dims", "channels"),
    [pytest.param(*case, marks=pytest.mark.slow if case[0] in SLOW else ()) for case in CASES],
)
def test_each_backbone_builds_and_gives_the_expected_output_shape(name: str, dims: int, channels: int) -> None:
    built = create_model(name, weights="none", in_channels=channels, num_classes=3, spatial_dims=dims)
    side = _side(name, dims)
    built.model.eval()
    with torch.no_grad():
        out = built.model(torch.randn(1, channels, *([side] * dims)))
    assert out.shape == (1, 3)
    assert built.stage_names[-1] == "head" and built.pretrained is None
    every = [n for n, _ in built.model.named_parameters()]
    assert sorted(n for stage in built.stages for n in stage) == sorted(every)  # each parameter in exactly one stage
    assert built.new_params == every and built.pretrained_params == []
    json.dumps(built.as_dict())


def test_convnext_cannot_be_inflated_but_works_as_2_5d() -> None:
    with pytest.raises(ConfigError, match=r"2\.5d"):
        create_model("convnext_tiny", weights="none", in_channels=1, num_classes=2, spatial_dims=3)
    built = create_model(
        "convnext_tiny", weights="none", in_channels=1, num_classes=2, spatial_dims=3, adapt_3d="2.5d", slices=3
    )
    built.model.eval()
    with torch.no_grad():
        assert built.model(torch.randn(1, 1, 7, 32, 32)).shape == (1, 2)
    assert all(name.startswith("net.") for stage in built.stages for name in stage)


def test_weights_must_be_chosen_explicitly() -> None:
    with pytest.raises(TypeError):
        create_model("resnet18", in_channels=1, num_classes=2)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="weights: none"):
        create_model("resnet18", weights=None, in_channels=1, num_classes=2)


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("resnet18", weights="none", in_channels=0, num_classes=2)
    with pytest.raises(ConfigError, match="spatial_dims"):
        create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=4)


def test_rebuild_from_spec_gives_the_same_architecture() -> None:
    built = create_model("resnet18", weights="none", in_channels=2, num_classes=4, spatial_dims=3)
    again = rebuild_model(json.loads(json.dumps(built.spec)))
    shapes = {k: v.shape for k, v in built.model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.model.state_dict().items()}
    again.model.load_state_dict(built.model.state_dict(), strict=True)


@pytest.mark.parametrize(
    ("backbone", "dims", "adapt"),
    [("resnet18", 2, "inflate"), ("resnet18", 3, "inflate"), ("resnet18", 3, "acs"), ("resnet18", 3, "2.5d"),
     ("efficientnet_b0", 2, "inflate"), ("monai_resnet10", 3, "inflate"), ("monai_densenet121", 3, "inflate")],
)  # fmt: skip
def test_a_network_rebuilt_around_its_weights_computes_what_the_trained_one_does(backbone, dims, adapt) -> None:
    """Built on the meta device and handed the weights (no random initialisation first): same outputs, same
    parameters and buffers, nothing left on the meta device; the structure alone allocates nothing."""
    torch.manual_seed(0)
    built = create_model(backbone, weights="none", in_channels=1, num_classes=3, spatial_dims=dims, adapt_3d=adapt)
    spec = json.loads(json.dumps(built.spec))
    built.model.train()
    x = torch.randn(2, 1, *[_side(backbone, dims)] * dims)
    built.model(x)  # moves BatchNorm running statistics away from their initial values
    weights = {name: tensor.clone() for name, tensor in built.model.state_dict().items()}
    rebuilt = rebuild_with_weights(spec, weights)
    assert not any(t.is_meta for t in [*rebuilt.parameters(), *rebuilt.buffers()])
    built.model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), built.model(x), rtol=0, atol=0)
    structure = model_structure(spec)
    assert structure.head_params == built.head_params and structure.stage_names == built.stage_names
    assert all(t.is_meta for t in structure.model.parameters())
    head = next(iter(built.head_params))
    with pytest.raises(RuntimeError, match=f'Missing key.*"{head}"'):  # strict, as load_state_dict is
        rebuild_with_weights(spec, {k: v for k, v in weights.items() if k != head})


def test_densenet_forward_matches_torchvision_in_2d() -> None:
    built = create_model("densenet121", weights="none", in_channels=3, num_classes=5)
    reference = tvm.densenet121(weights=None, num_classes=5)
    reference.load_state_dict(built.model.state_dict())
    built.model.eval()
    reference.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(built.model(x), reference(x))


def test_monai_resnets_use_the_medicalnet_layout() -> None:
    """MedicalNet: ResNet-10/50 use 1x1-conv shortcuts without bias, ResNet-18 the parameter-free shortcut A."""
    keys10 = create_model("monai_resnet10", weights="none", in_channels=1, num_classes=2, spatial_dims=3).model
    keys18 = create_model("monai_resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=3).model
    state10, state18 = keys10.state_dict(), keys18.state_dict()
    assert "layer2.0.downsample.0.weight" in state10 and "layer2.0.downsample.0.bias" not in state10
    assert not any("downsample" in key for key in state18)
    assert keys10.conv1.stride == (2, 2, 2) and keys10.conv1.kernel_size == (7, 7, 7)
