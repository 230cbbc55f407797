"""Adapting pretrained networks to medical inputs: input channels, 2D → 3D inflation, ACS convolutions, 2.5D stacks.

Channels. A grey image shown to an RGB network is normally replicated to (x, x, x); the first convolution then
responds with Σ_c w_c · x. Summing the RGB kernels (`sum`, the default) reproduces exactly that response, so the
pretrained BatchNorm statistics right after the stem still fit — which matters most for a linear probe, whose BN
layers stay in eval mode. `mean` divides by 3: the kernel keeps the magnitude of one colour kernel, but activations
shrink threefold against the frozen statistics. For C > 3 channels the kernels are repeated cyclically and scaled by
3 / C, which again preserves the response to an input replicated on all channels (exactly when C is a multiple of 3).
In general, going from S to T channels: T < S folds channel s onto s mod T (`sum`; `mean` also scales by T / S);
T > S repeats channel t mod S, scaled by S / T.

Inflation (I3D). A 2D kernel k×k becomes k×k×k with the weights divided by k at every depth, strides and pools
become cubic. On a volume made of identical slices every depth position then sees k copies of the same slice, so the
3D network reproduces the 2D response — except at the first and last slices, where zero padding in depth would show
the kernel fewer copies. `depth_padding="replicate"` (default) pads depth by repeating the edge slice (in-plane
padding stays zero), which makes the equality exact for the whole network; `"zeros"` is the plain I3D choice.
Max-pool padding is -inf and never wins, so pools need no change.

ACS (Yang et al., IEEE JBHI 2021). Every 2D convolution keeps its (out, in, kh, kw) weights exactly; its output
channels are split in three groups (≈ out/3 each, the remainder to the first groups) and each group is a 3D
convolution with the 2D kernel made flat along one axis: axial (1, kh, kw) over the H×W planes, coronal (kh, 1, kw)
over D×W, sagittal (kh, kw, 1) over D×H; the outputs are concatenated. Each group thus runs the pretrained 2D filters
on one anatomical view, slice by slice, so nothing is rescaled or made up, pretrained files load without inflation and
the parameter count is the 2D network's. Strides and pools are cubic as in inflation (the flat axis takes the 2D
stride, so the three groups give the same output size); BatchNorm keeps its parameters and statistics. Grouped
(depthwise) convolutions are split by whole groups.

2.5D. The 2D network sees `slices` neighbouring slices as channels (slices × C input channels): with one grey channel
and 3 slices the RGB stem is reused unchanged, slice i-1, i, i+1 in place of R, G, B. The volume is cut into groups
every `step` slices (a trailing remainder shorter than a group is not seen) and the logits are averaged over groups;
for a linear head that equals classifying the averaged features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medtl.errors import ConfigError

ChannelMethod = Literal["sum", "mean"]


def adapt_in_channels(weight: torch.Tensor, channels: int, method: ChannelMethod = "sum") -> torch.Tensor:
    """Map a convolution kernel (out, S, *k) to `channels` input channels, preserving the replicated-input response."""
    source = weight.shape[1]
    if channels == source:
        return weight.clone()
    if channels < source:
        folded = torch.stack([weight[:, list(range(t, source, channels))].sum(dim=1) for t in range(channels)], dim=1)
        return folded * (channels / source) if method == "mean" else folded
    index = [t % source for t in range(channels)]
    return weight[:, index] * (source / channels)


def inflate_kernel(weight: torch.Tensor, depth: int) -> torch.Tensor:
    """(out, in, kh, kw) → (out, in, depth, kh, kw), weights divided by depth (I3D)."""
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


class DepthPaddedConv3d(nn.Conv3d):
    """A Conv3d that pads depth by repeating the edge slices and pads in-plane with zeros, like its 2D original."""

    def __init__(self, *args, depth_pad: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.depth_pad = depth_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_pad:
            x = F.pad(x, (0, 0, 0, 0, self.depth_pad, self.depth_pad), mode="replicate")
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth_pad={self.depth_pad} (replicate)"


def acs_split(units: int) -> tuple[int, int, int]:
    """Sizes of the axial, coronal and sagittal groups: ≈ units / 3 each, the remainder to the first groups."""
    base, extra = divmod(units, 3)
    return (base + (extra > 0), base + (extra > 1), base)


ACS_VIEWS = ("axial (1, kh, kw) over H x W", "coronal (kh, 1, kw) over D x W", "sagittal (kh, kw, 1) over D x H")


def _with(pair: tuple[int, ...], axis: int, value: int) -> tuple[int, int, int]:
    """A 2D (h, w) setting placed on the two 3D axes other than `axis`, which gets `value`."""
    first, second = pair
    return (value, first, second) if axis == 0 else (first, value, second) if axis == 1 else (first, second, value)


class ACSConv(nn.Conv2d):
    """A Conv2d that convolves volumes the ACS way; its parameters are those of the 2D layer, unchanged.

    Output channel group i (axial, coronal, sagittal) is a 3D convolution with the 2D kernel unsqueezed at 3D axis i
    (D, H, W); the flat axis gets the 2D stride and the padding that keeps all groups' output sizes equal.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        (kernel, kernel_w), (stride, stride_w), (dilation, dilation_w) = self.kernel_size, self.stride, self.dilation
        padding = self.padding
        # Output size on the flat axis (kernel 1) equals that on a kernel axis iff 2 * flat_pad = 2 * p - d * (k - 1).
        reach = dilation * (kernel - 1)
        if (
            isinstance(padding, str)
            or self.padding_mode != "zeros"
            or (kernel, stride, dilation, padding[0]) != (kernel_w, stride_w, dilation_w, padding[1])
            or reach % 2
            or 2 * padding[0] < reach
        ):
            raise ConfigError(
                f"cannot make an ACS convolution of {nn.Conv2d.extra_repr(self)}: ACS needs square kernel, stride, "
                "dilation and explicit zero padding of at least half the kernel's reach",
                fix="use adapt_3d: inflate or 2.5d for this backbone",
            )
        self.flat_padding = padding[0] - reach // 2
        # (axis, output rows, input channels, groups) per view; a grouped conv is split by whole groups.
        grouped = self.groups > 1
        units = self.groups if grouped else self.out_channels
        rows_per_unit, inputs_per_unit = self.out_channels // units, self.in_channels // self.groups
        self.split = tuple(size * rows_per_unit for size in acs_split(units))
        self.views: list[tuple[int, slice, slice, int]] = []
        if kernel == 1:  # a 1x1 kernel is (1, 1, 1) in every view: one convolution computes all three groups
            self.views.append((0, slice(None), slice(None), self.groups))
            return
        start = 0
        for axis, size in enumerate(acs_split(units)):
            if size:
                rows = slice(start * rows_per_unit, (start + size) * rows_per_unit)
                inputs = slice(start * inputs_per_unit, (start + size) * inputs_per_unit) if grouped else slice(None)
                self.views.append((axis, rows, inputs, size if grouped else 1))
                start += size

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d) -> ACSConv:
        """The ACS form of `conv`, with a copy of its weights."""
        acs = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        acs.load_state_dict(conv.state_dict())
        return acs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ConfigError(f"an ACS convolution expects (N, C, D, H, W) volumes, got shape {tuple(x.shape)}")
        parts = []
        for axis, rows, inputs, groups in self.views:
            parts.append(
                F.conv3d(
                    x[:, inputs],
                    self.weight[rows].unsqueeze(2 + axis),
                    None if self.bias is None else self.bias[rows],
                    _with(self.stride, axis, self.stride[0]),
                    _with(self.padding, axis, self.flat_padding),  # type: ignore[arg-type]
                    _with(self.dilation, axis, 1),
                    groups,
                )
            )
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", acs_split={self.split} (axial, coronal, sagittal)"


def _cube(value: int | tuple[int, ...]) -> tuple[int, int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    return (pair[0], pair[0], pair[1])


def _conv3d_from(conv: nn.Conv2d, depth_padding: str) -> nn.Conv3d:
    if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
        raise ConfigError(
            f"cannot inflate {conv}: only explicit zero padding is supported",
            fix="use adapt_3d: 2.5d for this backbone",
        )
    kernel, stride, dilation, padding = (_cube(v) for v in (conv.kernel_size, conv.stride, conv.dilation, conv.padding))
    common = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=kernel,
        stride=stride,
        dilation=dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    if depth_padding == "replicate":
        return DepthPaddedConv3d(padding=(0, padding[1], padding[2]), depth_pad=padding[0], **common)
    return nn.Conv3d(padding=padding, **common)


def _pool3d_from(pool: nn.Module) -> nn.Module:
    if isinstance(pool, nn.MaxPool2d):
        return nn.MaxPool3d(
            _cube(pool.kernel_size),
            _cube(pool.stride),
            _cube(pool.padding),
            _cube(pool.dilation),
            ceil_mode=pool.ceil_mode,
        )
    if isinstance(pool, nn.AvgPool2d):
        return nn.AvgPool3d(
            _cube(pool.kernel_size),
            _cube(pool.stride),
            _cube(pool.padding),
            ceil_mode=pool.ceil_mode,
            count_include_pad=pool.count_include_pad,
        )
    size = pool.output_size
    target = _cube(size) if size is not None else None
    return nn.AdaptiveAvgPool3d(target) if isinstance(pool, nn.AdaptiveAvgPool2d) else nn.AdaptiveMaxPool3d(target)


def _bn3d_from(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(
        bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats
    )


_POOLS_2D = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Leaf modules whose computation does not depend on the number of spatial dimensions.
_DIMS_AGNOSTIC = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    nn.Linear,
)


def _convert(
    module: nn.Module,
    conv: Callable[[nn.Conv2d], nn.Module],
    norm: Callable[[nn.BatchNorm2d], nn.Module],
    verb: str,
    fix: str,
) -> nn.Module:
    """Replace convolutions, BatchNorms and pools below `module` in place; unknown leaf modules are an error."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            replacement = conv(child)
        elif isinstance(child, nn.BatchNorm2d):
            replacement = norm(child)
        elif isinstance(child, _POOLS_2D):
            replacement = _pool3d_from(child)
        elif any(True for _ in child.children()):
            _convert(child, conv, norm, verb, fix)
            continue
        elif isinstance(child, _DIMS_AGNOSTIC) or type(child).__name__ == "StochasticDepth":
            continue
        else:
            raise ConfigError(f"cannot {verb} module {name!r} of type {type(child).__name__} to 3D", fix=fix)
        setattr(module, name, replacement)
    return module


def convert_to_3d(module: nn.Module, *, depth_padding: str = "replicate") -> nn.Module:
    """Replace 2D convolutions, BatchNorms and pools by their 3D counterparts, in place (weights are not copied).

    Leaf modules must be known: an unknown one may hold 2D-only logic, so it is an error rather than a silent
    mismatch. Container forward() code is not inspected; backbones declare whether they can be inflated.
    """
    return _convert(
        module,
        lambda conv: _conv3d_from(conv, depth_padding),
        _bn3d_from,
        "inflate",
        "use adapt_3d: 2.5d for this backbone, or a natively 3D backbone",
    )


def _bn3d_keeping_state(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    bn3d = _bn3d_from(bn)
    bn3d.load_state_dict(bn.state_dict())
    return bn3d


def convert_to_acs(module: nn.Module) -> nn.Module:
    """ACS: convolutions become `ACSConv`, BatchNorms 3D and pools cubic, in place; every weight and statistic is kept.

    The same leaf rules as `convert_to_3d`: an unknown leaf module is an error.
    """
    return _convert(
        module,
        ACSConv.from_conv2d,
        _bn3d_keeping_state,
        "convert (ACS)",
        "use adapt_3d: 2.5d for this backbone, or a natively 3D backbone",
    )


def replace_first_conv(model: nn.Module, path: str, in_channels: int, *, init: str = "kaiming_fan_out") -> None:
    """Give the stem convolution `in_channels` inputs (fresh weights; pretrained ones are adapted at load time)."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{path} is {type(old).__name__}, expected Conv2d")
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
        old.padding_mode,
    )
    if init == "trunc_normal":
        nn.init.trunc_normal_(new.weight, std=0.02)
    else:
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, attr, new)


class SliceStack(nn.Module):
    """2.5D: run a 2D network on groups of neighbouring slices (as channels) and average its logits over groups."""

    def __init__(self, net: nn.Module, slices: int, step: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.slices = slices
        self.step = step or slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ConfigError(f"2.5D model expects (N, C, D, H, W) volumes, got shape {tuple(x.shape)}")
        n, c, depth, h, w = x.shape
        if depth < self.slices:
            raise ConfigError(
                f"volume depth {depth} is smaller than the 2.5D slice group ({self.slices} slices)",
                fix="lower `slices` or resample volumes to more slices",
            )
        groups = x.unfold(2, self.slices, self.step)  # N, C, G, H, W, k
        count = groups.shape[2]
        stacked = groups.permute(0, 2, 1, 5, 3, 4).reshape(n * count, c * self.slices, h, w)
        return self.net(stacked).reshape(n, count, -1).mean(dim=1)

    def extra_repr(self) -> str:
        return f"slices={self.slices}, step={self.step}"
