"""Convolutions whose output is a single position computed as one matrix product: the same result, far less time.

Why: small inputs (28 px images, 28^3 volumes: MedMNIST-sized scans, and every 2D image the budget keeps at its
native size) leave a ResNet's last stage with a 1 x 1 (x 1) map. A padded 3 x 3 convolution there touches one real
input position per output, yet oneDNN, PyTorch's CPU convolution, spends as long on it as on a large map: on 2 CPU
cores, forward and backward of ResNet-18's 512 -> 512 convolution on a batch of 16 took 38 ms, 25 times the
arithmetic. Those layers were half of a 28 px training step.

When a convolution's output has one position, every output value is a weighted sum of the input positions the
kernel's window covers (the window's other taps see zero padding). That sum is a linear layer over those positions
and the matching taps: `F.linear` computes it, and autograd gives the same gradients (zero for the taps that only
ever see padding, as the convolution's do). Only the order of the floating-point additions differs. Everything
else (other output sizes, grouped or depthwise convolutions, non-zero padding modes, ACS convolutions) runs the
convolution as before.

Only where a backward pass follows (gradients enabled, and the weights or the input need them): the slow part was
the convolution's backward; its forward costs a few milliseconds. Predictions (evaluation, scoring, the features
that scoring's outlier rule compares with its reference) keep the stock convolution, so they stay the values they
were before this shortcut existed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from medtl.models.adapt import DepthPaddedConv3d


def single_position(
    conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor | None:
    """The convolution of `x` as a linear layer when its output has one position; None when it does not apply."""
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    spatial = x.shape[2:]
    taps, inputs = [], []
    for size, kernel, stride, padding, dilation in zip(
        spatial, conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True
    ):
        if (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 != 1:
            return None
        # tap t reads input index t * dilation - padding; the taps inside the input form one contiguous run
        first = -(-padding // dilation)
        last = min(kernel - 1, (size - 1 + padding) // dilation)
        if first > last:  # the window sees only padding: the output is the bias alone (left to the convolution)
            return None
        taps.append(slice(first, last + 1))
        inputs.append(slice(first * dilation - padding, last * dilation - padding + 1, dilation))
    rows = x[(slice(None), slice(None), *inputs)].reshape(x.shape[0], -1)
    kernel_taps = weight[(slice(None), slice(None), *taps)].reshape(weight.shape[0], -1)
    return F.linear(rows, kernel_taps, bias).view(x.shape[0], weight.shape[0], *(1 for _ in spatial))


class _SinglePosition:
    """Mixed into a convolution class: `_conv_forward` (what `forward` calls) takes the shortcut when it applies and
    a backward pass follows."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        training = torch.is_grad_enabled() and (weight.requires_grad or input.requires_grad)
        out = single_position(self, input, weight, bias) if training else None  # type: ignore[arg-type]
        return out if out is not None else super()._conv_forward(input, weight, bias)  # type: ignore[misc]


class SinglePositionConv2d(_SinglePosition, nn.Conv2d):
    pass


class SinglePositionConv3d(_SinglePosition, nn.Conv3d):
    pass


class SinglePositionDepthPaddedConv3d(_SinglePosition, DepthPaddedConv3d):
    pass


_FASTER = {
    nn.Conv2d: SinglePositionConv2d,
    nn.Conv3d: SinglePositionConv3d,
    DepthPaddedConv3d: SinglePositionDepthPaddedConv3d,
}


def use_single_position_shortcut(model: nn.Module) -> nn.Module:
    """Give every plain convolution of `model` the shortcut, in place: the same parameters and state-dict keys."""
    for module in model.modules():
        faster = _FASTER.get(type(module))
        if faster is not None:
            module.__class__ = faster
    return model


def without_single_position_shortcut(model: nn.Module) -> nn.Module:
    """A copy of `model` with PyTorch's stock convolutions: the baseline the shortcut is measured and tested against."""
    plain = copy.deepcopy(model)
    stock = {faster: base for base, faster in _FASTER.items()}
    for module in plain.modules():
        base = stock.get(type(module))
        if base is not None:
            module.__class__ = base
    return plain
