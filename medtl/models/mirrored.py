"""Predictions averaged over mirror images: the input and its flips along the axes the network was trained to treat
as symmetric.

Why: a network trained on randomly flipped copies gives two estimates of one answer for an image and its mirror;
their mean has less variance than either (nnU-Net mirrors at inference by default). The axes are the training
augmentation's flip axes, recorded in the artifact, so that out-of-fold predictions (which choose the operating
point and the calibration), the locked test and scoring all average over exactly the same views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch

FIRST_SPATIAL_DIM = 2  # inputs are (N, C, *spatial)


def mirror_views(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of the spatial axes, the unflipped input first: 2 views for one axis, 8 for three."""
    ordered = sorted(set(axes))
    return [view for size in range(len(ordered) + 1) for view in combinations(ordered, size)]


def mirrored_mean(
    forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, axes: Sequence[int]
) -> torch.Tensor:
    """Mean of `forward` (probabilities, never logits) over the input's mirror views; `forward(inputs)` when `axes`
    is empty."""
    total: torch.Tensor | None = None
    views = mirror_views(axes)
    for view in views:
        flipped = torch.flip(inputs, [FIRST_SPATIAL_DIM + axis for axis in view]) if view else inputs
        predicted = forward(flipped)
        total = predicted if total is None else total + predicted
    assert total is not None  # the unflipped view is always there
    return total / len(views)
