"""Self-supervised objectives for any registry backbone, 2D or 3D: what is learned from scans without labels.

Why these two, and from where:
- `simclr` (contrastive; Chen et al. 2020): two random views of each scan must be recognised as a pair among all
  the batch's other views. The loss is NT-Xent, the value of MONAI's `ContrastiveLoss` (the one MONAI's own
  self-supervised tutorials use, and the reference in the tests), written as a cross-entropy over the views'
  similarity matrix: MONAI's builds a (2B, 2B, features) tensor to get that matrix, which made the loss cost more
  than both passes through a ResNet-18 on the CPU. The views come from medtl's batched augmentation, on the model's
  device (CUDA when present). It needs nothing from the architecture but its pooled features, so every backbone
  works.
- `masked` (masked image modelling; SimMIM, Xie et al. 2022): random patches are hidden and the network predicts
  their pixels from the visible rest, with an L1 loss on the hidden patches only. MONAI's masked autoencoder
  (`MaskedAutoEncoderViT`) needs a ViT; the registry's backbones are convolutional, so the objective is SimMIM's,
  whose decoder is one convolution and a pixel shuffle (MONAI's N-dimensional `pixelshuffle`), working on the
  last stage's feature map of any CNN in 2D and 3D.
Lightly and nnssl were considered: lightly's transforms work on PIL images one at a time (CPU, 2D), and nnssl
targets 3D MRI with its own training framework; neither fits a pipeline step that runs 2D and 3D on one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from monai.networks.utils import pixelshuffle
from torch import nn
from torch.nn import functional as F

from medtl.errors import ConfigError
from medtl.models.backbones import get_backbone
from medtl.models.heads import headless
from medtl.models.records import BuiltModel
from medtl.training.augment import AugmentConfig, BatchAugmenter


@torch.no_grad()
def feature_size(encoder: nn.Module, sample: torch.Tensor) -> int:
    was_training = encoder.training
    encoder.eval()
    size = int(encoder(sample[:2]).flatten(1).shape[1])
    encoder.train(was_training)
    return size


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over a batch of pairs: each view's partner must stand out among the other 2B - 2 views by cosine
    similarity / temperature; the mean over all 2B views (as monai.losses.ContrastiveLoss)."""
    views = torch.cat([first, second])
    views = F.normalize(views.to(torch.promote_types(views.dtype, torch.float32)), dim=1)  # half precision: float32
    logits = views @ views.T / temperature
    logits = logits.masked_fill(torch.eye(len(views), dtype=torch.bool, device=views.device), float("-inf"))
    n = len(first)
    partners = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    return F.cross_entropy(logits, partners)


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, features: int, *, spatial_dims: int, views: AugmentConfig,
                 projection_dim: int, temperature: float) -> None:  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.projector = nn.Sequential(
            nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, projection_dim)
        )
        self.augment = BatchAugmenter(views, spatial_dims)
        self.temperature = temperature
        self.details = {
            "loss": "NT-Xent (the value of monai.losses.ContrastiveLoss)",
            "temperature": temperature,
            "projection": f"MLP {features}-{features}-{projection_dim}, dropped after pretraining",
            "views": "two draws of medtl's batched augmentation per scan, on the model's device",
        }

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        first, second = self.augment(batch), self.augment(batch)
        return nt_xent(
            self.projector(self.encoder(first).flatten(1)),
            self.projector(self.encoder(second).flatten(1)),
            self.temperature,
        )


def mask_patch_sizes(shape: tuple[int, ...], feature_shape: tuple[int, ...]) -> tuple[int, ...]:
    """SimMIM masks patches of the network's total stride; on small inputs (where that stride covers most of the
    image) a patch is kept between an eighth and a quarter of each side, so some context always stays visible."""
    sizes = []
    for size, features in zip(shape, feature_shape, strict=True):
        stride = math.ceil(size / features)
        sizes.append(int(min(max(stride, size / 8), size / 4)) or 1)
    return tuple(max(1, s) for s in sizes)


def random_mask(batch: int, shape: tuple[int, ...], patch: tuple[int, ...], ratio: float,
                device: torch.device) -> torch.Tensor:  # fmt: skip
    """(B, 1, *shape) of 0/1: exactly round(ratio * patches) patches hidden per sample, drawn on the CPU generator
    (one seed, the same masks on every device)."""
    grid = tuple(math.ceil(s / p) for s, p in zip(shape, patch, strict=True))
    count = math.prod(grid)
    hidden = max(1, min(count - 1, round(ratio * count)))
    order = torch.rand(batch, count).argsort(dim=1)
    mask = torch.zeros(batch, count)
    mask.scatter_(1, order[:, :hidden], 1.0)
    mask = mask.view(batch, 1, *grid)
    for axis, size in enumerate(patch):
        mask = mask.repeat_interleave(size, dim=2 + axis)
    return mask[(slice(None), slice(None), *(slice(0, s) for s in shape))].contiguous().to(device)


class MaskedImage(nn.Module):
    def __init__(self, encoder: nn.Module, built: BuiltModel, sample: torch.Tensor, *, spatial_dims: int,
                 augmentation: AugmentConfig, ratio: float) -> None:  # fmt: skip
        super().__init__()
        if built.adaptation.get("mode") == "2.5d":
            raise ConfigError(
                "masked pretraining needs one feature map per scan; a 2.5D model sees slice groups",
                where="method",
                fix="use method: simclr for 2.5D, or adapt_3d: inflate / a 3D backbone",
            )
        self.encoder = encoder
        self.spatial_dims = spatial_dims
        self.augment = BatchAugmenter(augmentation, spatial_dims)
        self.ratio = ratio
        last_stage = get_backbone(built.backbone).stages[-1][1][-1]
        self._captured: list[torch.Tensor] = []
        encoder.get_submodule(last_stage).register_forward_hook(self._capture)
        with torch.no_grad():
            was_training = encoder.training
            encoder.eval()
            encoder(sample[:2])
            encoder.train(was_training)
        feature_map = self._captured.pop()
        self.shape = tuple(sample.shape[2:])
        self.patch = mask_patch_sizes(self.shape, tuple(feature_map.shape[2:]))
        self.scale = max(math.ceil(s / f) for s, f in zip(self.shape, feature_map.shape[2:], strict=True))
        channels = int(sample.shape[1])
        conv: Callable[..., nn.Module] = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.decoder = conv(int(feature_map.shape[1]), channels * self.scale**spatial_dims, kernel_size=1)
        self.details: dict[str, Any] = {
            "loss": "L1 on the hidden patches (SimMIM)",
            "mask_ratio": ratio,
            "mask_patch": list(self.patch),
            "feature_stage": last_stage,
            "decoder": f"1x1 convolution + pixel shuffle x{self.scale} (monai.networks.utils.pixelshuffle), dropped "
            "after pretraining",
        }

    def _capture(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._captured.append(output)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        images = self.augment(batch)
        mask = random_mask(images.shape[0], self.shape, self.patch, self.ratio, images.device)
        self._captured.clear()
        self.encoder(images * (1.0 - mask))
        feature_map = self._captured.pop()
        restored = pixelshuffle(self.decoder(feature_map), self.spatial_dims, self.scale)
        restored = restored[(slice(None), slice(None), *(slice(0, s) for s in self.shape))]
        hidden = mask.expand_as(images)
        return ((restored.float() - images.float()).abs() * hidden).sum() / hidden.sum().clamp_min(1.0)


def make_method(name: str, built: BuiltModel, sample: torch.Tensor, config: Any) -> nn.Module:
    """The objective around the head-less backbone; `config` is the PretrainConfig."""
    spatial_dims = sample.dim() - 2
    encoder = headless(built)
    if name == "simclr":
        return SimCLR(
            encoder,
            feature_size(encoder, sample),
            spatial_dims=spatial_dims,
            views=config.augmentation,
            projection_dim=config.projection_dim,
            temperature=config.temperature,
        )
    if name == "masked":
        return MaskedImage(
            encoder, built, sample, spatial_dims=spatial_dims, augmentation=config.augmentation, ratio=config.mask_ratio
        )
    raise ConfigError(f"unknown pretraining method {name!r}", fix="use simclr or masked")
