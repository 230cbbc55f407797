"""ACS convolutions: each channel group is the 2D convolution run on the planes of one view, with the 2D weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from model_helpers import fake_artifacts_module, randomise, sha, write_artifact
from safetensors.torch import save_file
from torch import nn

from medtl.errors import ConfigError
from medtl.models import ModelConfig, create_model, create_model_from_config, rebuild_model
from medtl.models.adapt import ACSConv, convert_to_acs


def _planes_reference(conv: nn.Conv2d, x: torch.Tensor, rows: slice, axis: int, flat_padding: int) -> torch.Tensor:
    """The 2D layer's output channels `rows`, computed plane by plane across 3D axis `axis` (2: D, 3: H, 4: W).

    A plane keeps the other two axes in order, so the 2D kernel's (kh, kw) lies on (H, W), (D, W) or (D, H). The flat
    axis is zero-padded by `flat_padding` and every stride-th plane is used.
    """
    pad = [0] * 6
    pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = flat_padding
    planes = F.pad(x, pad).movedim(axis, 0)[:: conv.stride[0]]
    depthwise = conv.groups > 1  # in == out == groups here: output channel c reads input channel c
    inputs = rows if depthwise else slice(None)
    groups = rows.stop - rows.start if depthwise else 1
    bias = conv.bias[rows] if conv.bias is not None else None
    outputs = [
        F.conv2d(plane[:, inputs], conv.weight[rows], bias, conv.stride, conv.padding, conv.dilation, groups)
        for plane in planes
    ]
    return torch.stack(outputs, dim=axis)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "groups", "split", "flat_padding"),
    [
        (4, 7, 3, 2, 1, 1, 1, (3, 2, 2), 0),  # strided; the remainder goes to the first group
        (3, 5, 3, 1, 2, 2, 1, (2, 2, 1), 0),  # dilated
        (6, 6, 3, 2, 1, 1, 6, (2, 2, 2), 0),  # depthwise: split by whole groups
        (2, 4, 5, 1, 3, 1, 1, (2, 1, 1), 1),  # over-padded: the flat axis is padded to keep the output sizes equal
        (3, 8, 7, 2, 3, 1, 1, (3, 3, 2), 0),  # a ResNet stem
    ],
)
def test_each_channel_group_is_the_2d_conv_on_the_planes_of_its_view(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    split: tuple[int, int, int],
    flat_padding: int,
) -> None:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias=True)
    nn.init.normal_(conv.bias)
    acs = ACSConv.from_conv2d(conv)
    assert acs.split == split and acs.flat_padding == flat_padding
    assert torch.equal(acs.weight, conv.weight) and acs.weight.shape == conv.weight.shape

    x = torch.randn(2, in_channels, 9, 10, 11)  # D, H, W all different, so a swapped axis cannot pass
    with torch.no_grad():
        out = acs(x)
        start = 0
        for axis, size in zip((2, 3, 4), split, strict=True):  # axial: planes across D; coronal: H; sagittal: W
            rows = slice(start, start + size)
            expected = _planes_reference(conv, x, rows, axis, flat_padding)
            torch.testing.assert_close(out[:, rows], expected, rtol=1e-5, atol=1e-5)
            start += size
    assert start == out.shape[1] == out_channels


def test_a_volume_varying_only_across_slices_meets_each_view_as_the_paper_describes() -> None:
    """Identical axial slices: the axial group gives the 2D response of that slice at every depth."""
    conv = nn.Conv2d(2, 6, 3, padding=1)
    acs = ACSConv.from_conv2d(conv)
    image = torch.randn(1, 2, 8, 8)
    volume = image.unsqueeze(2).repeat(1, 1, 5, 1, 1)
    with torch.no_grad():
        axial = acs(volume)[:, :2]
        for depth in range(5):
            torch.testing.assert_close(axial[:, :, depth], conv(image)[:, :2], rtol=1e-5, atol=1e-6)


def test_convolutions_whose_views_would_disagree_are_refused() -> None:
    with pytest.raises(ConfigError, match="ACS needs square kernel"):
        ACSConv(3, 4, 3, padding=0)  # valid padding: the flat axis would keep 2 more outputs than the kernel axes
    with pytest.raises(ConfigError, match="ACS needs square kernel"):
        ACSConv(3, 4, (1, 3), padding=(0, 1))
    acs = ACSConv(3, 4, 3, padding=1)
    with pytest.raises(ConfigError, match=r"expects \(N, C, D, H, W\)"):
        acs(torch.randn(1, 3, 8, 8))


def test_acs_resnet18_has_the_2d_parameters_and_keeps_their_values() -> None:
    reference = tvm.resnet18(weights=None)
    reference.load_state_dict(randomise(reference.state_dict()))
    converted = convert_to_acs(copy.deepcopy(reference))
    expected = reference.state_dict()
    state = converted.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)  # BN statistics included
    modules = list(converted.modules())
    assert sum(isinstance(m, ACSConv) for m in modules) == 20 and not any(isinstance(m, nn.Conv3d) for m in modules)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in modules) == 20
    assert not any(isinstance(m, nn.BatchNorm2d | nn.MaxPool2d | nn.AdaptiveAvgPool2d) for m in modules)

    acs = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=3, adapt_3d="acs")
    flat = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    shapes = {name: tuple(p.shape) for name, p in acs.model.named_parameters()}
    assert shapes == {name: tuple(p.shape) for name, p in flat.model.named_parameters()}
    assert sum(p.numel() for p in acs.model.parameters()) == sum(p.numel() for p in flat.model.parameters())
    assert shapes["conv1.weight"] == (64, 1, 7, 7)
    assert acs.stage_names == flat.stage_names and acs.stages == flat.stages


def _weights_file(folder: Path) -> dict:
    path = folder / "resnet18-2d.safetensors"
    save_file({k: v.contiguous() for k, v in randomise(tvm.resnet18(weights=None).state_dict(), seed=3).items()}, path)
    return {"source": "file", "path": path, "sha256": sha(path)}


def test_2d_weights_load_into_acs_exactly_without_inflation(tmp_path: Path) -> None:
    weights = _weights_file(tmp_path)
    acs = create_model("resnet18", weights=weights, in_channels=1, num_classes=3, spatial_dims=3, adapt_3d="acs")
    flat = create_model("resnet18", weights=weights, in_channels=1, num_classes=3, spatial_dims=2)
    body = [key for key in flat.model.state_dict() if not key.startswith("fc.")]
    acs_state, flat_state = acs.model.state_dict(), flat.model.state_dict()
    assert all(torch.equal(acs_state[key], flat_state[key]) for key in body)
    assert acs.load_report["adapted"] == {"conv1.weight": "input channels 3->1 (sum)"}  # grey stem; nothing inflated
    assert not any("inflated" in how for how in acs.load_report["adapted"].values())
    assert acs.pretrained_params == flat.pretrained_params and acs.new_params == ["fc.weight", "fc.bias"]

    assert acs.adaptation["mode"] == "acs" and "inflation" not in acs.adaptation
    assert acs.adaptation["acs"]["axis_groups"][0].startswith("axial (1, kh, kw)")
    assert "2D weights unchanged" in acs.adaptation["acs"]["weights"]
    assert acs.spec["adapt_3d"] == "acs"


def test_forward_and_backward_on_a_volume_reach_every_view_of_the_stem(tmp_path: Path) -> None:
    built = create_model("resnet18", weights=_weights_file(tmp_path), in_channels=1, num_classes=3, spatial_dims=3,
                         adapt_3d="acs")  # fmt: skip
    model = built.model.train()
    volume = torch.randn(2, 1, 16, 16, 16)
    logits = model(volume)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    grad = model.conv1.weight.grad
    assert grad is not None and grad.shape == (64, 1, 7, 7)
    for rows in (slice(0, 22), slice(22, 43), slice(43, 64)):  # axial, coronal, sagittal groups of the stem
        assert grad[rows].abs().sum() > 0
    with pytest.raises(ConfigError, match=r"expects \(N, C, D, H, W\)"):
        model(torch.randn(2, 1, 16, 16))


def test_config_accepts_acs_and_rejects_other_values() -> None:
    section = {"backbone": "resnet18", "weights": "none", "adapt_3d": "acs"}
    assert ModelConfig.model_validate(section).adapt_3d == "acs"
    built = create_model_from_config(section, in_channels=1, num_classes=2, spatial_dims=3)
    assert built.adaptation["mode"] == "acs"
    with pytest.raises(ConfigError, match=r"adapt_3d: Input should be 'inflate', '2\.5d' or 'acs'"):
        create_model_from_config({**section, "adapt_3d": "axial"}, in_channels=1, num_classes=2, spatial_dims=3)
    with pytest.raises(ConfigError, match=r"adapt_3d must be one of \['inflate', '2\.5d', 'acs'\], got 'ACS'"):
        create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=3, adapt_3d="ACS")
    flat = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2, adapt_3d="acs")
    assert flat.adaptation["mode"] == "2d" and "acs" not in flat.adaptation  # adapt_3d only concerns volumes


def test_backbones_that_cannot_be_converted_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="LayerNorm") as caught:
        convert_to_acs(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm(4)))
    assert "2.5d" in (caught.value.fix or "")
    for name in ("convnext_tiny", "monai_resnet18"):
        with pytest.raises(ConfigError, match="cannot be converted to ACS") as caught:
            create_model(name, weights="none", in_channels=1, num_classes=2, spatial_dims=3, adapt_3d="acs")
        assert "2.5d" in (caught.value.fix or "") and "inflate" in (caught.value.fix or "")


def test_an_acs_model_rebuilds_from_its_spec_and_transfers_from_its_artifact(monkeypatch, tmp_path: Path) -> None:
    earlier = create_model("resnet18", weights=_weights_file(tmp_path), in_channels=1, num_classes=5, spatial_dims=3,
                           adapt_3d="acs")  # fmt: skip
    again = rebuild_model(json.loads(json.dumps(earlier.spec)))
    assert again.adaptation["mode"] == "acs" and isinstance(again.model.conv1, ACSConv)
    again.model.load_state_dict(earlier.model.state_dict(), strict=True)

    fake_artifacts_module(monkeypatch)
    write_artifact(tmp_path / "artifact", earlier)
    choice = {"source": "artifact", "path": tmp_path / "artifact"}
    built = create_model("artifact", weights=choice, in_channels=1, num_classes=2, spatial_dims=3, adapt_3d="acs")
    assert built.backbone == "resnet18" and built.adaptation["mode"] == "acs" and built.load_report["adapted"] == {}
    state, source = built.model.state_dict(), earlier.model.state_dict()
    assert all(torch.equal(state[key], source[key]) for key in state if not key.startswith("fc."))
