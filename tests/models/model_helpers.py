"""Helpers for the model tests: distinctive random state dicts and file hashes."""

from __future__ import annotations

from pathlib import Path

import torch

from medtl.hashing import sha256_file


def randomise(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Distinctive values for every tensor (BN statistics included), so a load that skips a tensor is visible.

    Kernels get He-scaled noise and norm layers values near their identity, so deep networks still respond to their
    input (tiny uniform noise everywhere would make the output constant and equality tests vacuous).
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=generator) if value.is_floating_point() else None
        if noise is None:
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            out[key] = noise * 0.1
        elif value.ndim == 1:  # norm-layer scale
            out[key] = 1 + noise * 0.1
        else:
            out[key] = noise * (2.0 / (value.numel() / value.shape[0])) ** 0.5
    return out


def sha(path: Path) -> str:
    return sha256_file(path)
