"""Adaptation: channel mapping keeps the response, inflation keeps it on depth-constant volumes, 2.5D likewise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from model_helpers import randomise, sha
from safetensors.torch import save_file
from torch import nn

from medtl.errors import ConfigError
from medtl.models import create_model
from medtl.models.adapt import adapt_in_channels, convert_to_3d, inflate_kernel


def _weights_file(model: nn.Module, folder: Path, seed: int = 2) -> dict:
    path = folder / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in randomise(model.state_dict(), seed=seed).items()}, path)
    return {"source": "file", "path": path, "sha256": sha(path)}


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channel_adaptation_keeps_the_response_to_a_replicated_image(channels: int) -> None:
    weight = torch.randn(8, 3, 3, 3)
    grey = torch.randn(1, 1, 12, 12)
    reference = F.conv2d(grey.repeat(1, 3, 1, 1), weight)
    adapted = adapt_in_channels(weight, channels, "sum")
    assert adapted.shape == (8, channels, 3, 3)
    torch.testing.assert_close(F.conv2d(grey.repeat(1, channels, 1, 1), adapted), reference)


def test_mean_is_sum_divided_by_the_channel_ratio() -> None:
    weight = torch.randn(4, 3, 7, 7)
    torch.testing.assert_close(adapt_in_channels(weight, 1, "mean"), weight.mean(dim=1, keepdim=True))
    torch.testing.assert_close(adapt_in_channels(weight, 1, "sum"), weight.sum(dim=1, keepdim=True))


def test_inflated_kernel_on_identical_slices_equals_the_2d_kernel() -> None:
    weight = torch.randn(5, 2, 3, 3)
    image = torch.randn(1, 2, 9, 9)
    volume = image.unsqueeze(2).repeat(1, 1, 3, 1, 1)
    inflated = inflate_kernel(weight, 3)
    torch.testing.assert_close(F.conv3d(volume, inflated)[:, :, 0], F.conv2d(image, weight))


@pytest.mark.parametrize(("backbone", "side", "depth"), [("resnet18", 32, 8), ("efficientnet_b0", 16, 4)])
def test_inflated_network_on_a_depth_constant_volume_equals_the_2d_network(
    backbone: str, side: int, depth: int, tmp_path: Path
) -> None:
    weights = _weights_file(getattr(tvm, backbone)(weights=None), tmp_path)
    flat = create_model(backbone, weights=weights, in_channels=1, num_classes=3, spatial_dims=2)
    deep = create_model(backbone, weights=weights, in_channels=1, num_classes=3, spatial_dims=3)
    head = {k: v for k, v in flat.model.state_dict().items() if k in deep.new_params}
    deep.model.load_state_dict(head, strict=False)  # same random head in both, so whole outputs compare
    assert deep.adaptation["inflation"]["depth_padding"] == "replicate"
    assert "inflated" in deep.adaptation["adapted_tensors"][deep.pretrained_params[0]]

    image = torch.randn(2, 1, side, side)
    volume = image.unsqueeze(2).repeat(1, 1, depth, 1, 1)
    flat.model.eval()
    deep.model.eval()
    with torch.no_grad():
        expected = flat.model(image)
        assert (expected[0] - expected[1]).abs().max() > 1e-3  # the network does respond to its input
        torch.testing.assert_close(deep.model(volume), expected, rtol=1e-4, atol=1e-5)

    # Plain zero padding in depth (the classic I3D choice) changes the edge slices and hence the pooled output.
    zeros = create_model(backbone, weights=weights, in_channels=1, num_classes=3, spatial_dims=3, depth_padding="zeros")
    zeros.model.load_state_dict(head, strict=False)
    zeros.model.eval()
    with torch.no_grad():
        assert not torch.allclose(zeros.model(volume), expected, rtol=1e-4, atol=1e-5)


def test_2_5d_on_identical_slices_equals_the_2d_network_on_one_slice(tmp_path: Path) -> None:
    weights = _weights_file(tvm.resnet18(weights=None), tmp_path)
    stacked = create_model("resnet18", weights=weights, in_channels=1, num_classes=2, spatial_dims=3,
                           adapt_3d="2.5d", slices=3)  # fmt: skip
    rgb = create_model("resnet18", weights=weights, in_channels=3, num_classes=2, spatial_dims=2)
    rgb.model.load_state_dict({k.removeprefix("net."): v for k, v in stacked.model.state_dict().items()})
    assert stacked.adaptation["input_channels"]["method"] is None  # 3 slices of grey = the RGB stem, unchanged
    assert stacked.adaptation["slices_2_5d"] == {
        "slices": 3,
        "step": 3,
        "aggregate": "mean of logits over slice groups",
    }
    assert "net.conv1.weight" in stacked.pretrained_params and stacked.new_params == ["net.fc.weight", "net.fc.bias"]

    image = torch.randn(2, 1, 32, 32)
    volume = image.unsqueeze(2).repeat(1, 1, 7, 1, 1)  # 7 slices -> 2 groups of 3, the last slice unused
    stacked.model.eval()
    rgb.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(stacked.model(volume), rgb.model(image.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"smaller than the 2\.5D slice group"):
        stacked.model(torch.randn(1, 1, 2, 32, 32))


def test_modules_of_unknown_dimensionality_are_not_inflated_silently() -> None:
    with pytest.raises(ConfigError, match="LayerNorm"):
        convert_to_3d(nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm(4)))


def test_more_channels_than_rgb_repeat_the_kernels(tmp_path: Path) -> None:
    weights = _weights_file(tvm.resnet18(weights=None), tmp_path)
    built = create_model("resnet18", weights=weights, in_channels=5, num_classes=2)
    source = built.model.conv1.weight.detach()
    assert source.shape[1] == 5
    torch.testing.assert_close(source[:, 3], source[:, 0])
    assert built.adaptation["adapted_tensors"]["conv1.weight"] == "input channels 3->5 (sum)"
