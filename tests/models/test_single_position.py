"""Convolutions with a one-position output computed as a linear layer: the same values and gradients as the
convolution, taken only where it applies, and in every model medtl builds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medtl.models.adapt import DepthPaddedConv3d
from medtl.models.factory import create_model
from medtl.models.single_position import (
    _FASTER,
    single_position,
    use_single_position_shortcut,
    without_single_position_shortcut,
)

# (dims, in size, kernel, stride, padding, dilation): each gives a single output position
ONE_POSITION = [
    (2, 1, 3, 1, 1, 1),  # ResNet's last stage on a 1 x 1 map: only the centre tap sees data
    (2, 2, 3, 2, 1, 1),  # the stage's first, strided convolution: 2 x 2 -> 1 x 1, four taps
    (2, 2, 1, 2, 0, 1),  # its 1 x 1 downsampling shortcut
    (2, 3, 3, 1, 0, 1),  # no padding: every tap
    (2, 2, 7, 2, 3, 1),  # a large kernel, strided (the stem of a ResNet on a 2 x 2 image)
    (2, 1, 3, 1, 2, 2),  # dilated
    (3, 1, 3, 1, 1, 1),
    (3, 2, 3, 2, 1, 1),
]


def _pair(dims: int, size: int, kernel: int, stride: int, padding: int, dilation: int, bias: bool):
    torch.manual_seed(size * 31 + kernel)
    conv_class = nn.Conv2d if dims == 2 else nn.Conv3d
    plain = conv_class(6, 5, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    fast = copy.deepcopy(plain)
    use_single_position_shortcut(fast)
    x = torch.randn(4, 6, *(size,) * dims, dtype=torch.float64)
    return plain, fast, x


def _outputs_and_gradients(conv: nn.Module, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    out = conv(x)
    (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", ONE_POSITION)
def test_a_one_position_convolution_equals_the_convolution_with_its_gradients(case, bias):
    plain, fast, x = _pair(*case, bias=bias)
    assert single_position(fast, x, fast.weight, fast.bias) is not None  # the shortcut is taken
    expected, expected_grads = _outputs_and_gradients(plain, x)
    assert expected.shape[2:] == (1,) * case[0]  # the case has one output position
    out, grads = _outputs_and_gradients(fast, x)
    assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize(
    "settings, size",
    [
        ({"kernel_size": 3, "padding": 1}, 2),  # a 2 x 2 output
        ({"kernel_size": 3, "padding": 1, "groups": 2}, 1),  # grouped
        ({"kernel_size": 3, "padding": 1, "padding_mode": "reflect"}, 2),
        ({"kernel_size": 3, "padding": "same"}, 1),
    ],
)
def test_everything_else_runs_the_convolution(settings, size):
    conv = nn.Conv2d(4, 4, **settings)
    x = torch.randn(2, 4, size, size)
    assert single_position(conv, x, conv.weight, conv.bias) is None
    fast = use_single_position_shortcut(copy.deepcopy(conv))
    assert torch.equal(fast(x), conv(x))


def test_predictions_keep_the_stock_convolution():
    torch.manual_seed(4)
    plain = nn.Conv2d(64, 32, 3, padding=1)
    fast = use_single_position_shortcut(copy.deepcopy(plain))
    batch = torch.randn(7, 64, 1, 1)
    with torch.no_grad():
        assert torch.equal(fast(batch), plain(batch))  # the stock convolution, bit for bit
    frozen = copy.deepcopy(fast).requires_grad_(False)
    assert torch.equal(frozen(batch), plain(batch).detach())  # frozen weights and input: no backward, no shortcut
    assert not torch.equal(fast(batch), plain(batch))  # with a backward to come: the linear layer (other rounding)


def test_a_depth_padded_convolution_keeps_its_replicated_depth():
    torch.manual_seed(3)
    plain = DepthPaddedConv3d(3, 4, 3, padding=(0, 1, 1), depth_pad=1).double()
    fast = use_single_position_shortcut(copy.deepcopy(plain))
    assert type(fast).__name__ == "SinglePositionDepthPaddedConv3d"
    x = torch.randn(2, 3, 1, 1, 1, dtype=torch.float64)
    expected, expected_grads = _outputs_and_gradients(plain, x)
    out, grads = _outputs_and_gradients(fast, x)
    assert torch.allclose(out, expected, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize(
    "spatial_dims, adapt_3d, shape",
    [(2, "inflate", (3, 1, 28, 28)), (3, "inflate", (2, 1, 28, 28, 28)), (2, "inflate", (2, 1, 64, 64))],
)
def test_every_built_model_has_the_shortcut_and_gives_the_same_outputs_and_gradients(spatial_dims, adapt_3d, shape):
    torch.manual_seed(0)
    built = create_model(
        "resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=spatial_dims, adapt_3d=adapt_3d
    )
    model = built.model.double().train()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    assert convs and all(type(m) in _FASTER.values() for m in convs)
    plain = without_single_position_shortcut(model)
    assert not any(type(m) in _FASTER.values() for m in plain.modules())
    assert model.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(*shape, dtype=torch.float64)
    expected, expected_grads = _outputs_and_gradients(plain, x)
    out, grads = _outputs_and_gradients(model, x)
    assert torch.allclose(out, expected, atol=1e-9)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-9)
