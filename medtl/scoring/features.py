"""Penultimate-layer features and a Mahalanobis reference: is a new scan like the ones the model was trained on?

At training, the features of every training scan (from the network that scoring will use first) give a mean and a
shrunk covariance (Ledoit-Wolf: stable with fewer scans than feature dimensions) and the distance that 99% of
them stay under. At scoring, a scan whose distance exceeds that threshold is flagged `feature_outlier`. The
threshold is calibrated on the training scans themselves, which the network has fitted: it errs towards flagging.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

REFERENCE_QUANTILE = 0.99


def head_module(network: nn.Module, head_params: Iterable[str]) -> nn.Module:
    """The module that holds the head's parameters: its input is the penultimate representation."""
    names = {name.rsplit(".", 1)[0] for name in head_params}
    modules = dict(network.named_modules())
    # the deepest common module of the head's parameters (a Linear, or a small Sequential ending in one)
    candidates = sorted(names, key=len)
    return modules[candidates[0]]


@torch.no_grad()
def penultimate_features(network: nn.Module, head: nn.Module, batch: torch.Tensor) -> np.ndarray:
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    try:
        network.eval()
        network(batch)
    finally:
        handle.remove()
    return captured[0].flatten(1).float().cpu().numpy()


@dataclass
class FeatureReference:
    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    n: int

    def distances(self, features: np.ndarray) -> np.ndarray:
        centred = features - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, self.precision, centred), 0.0))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "precision": torch.from_numpy(self.precision.astype(np.float32)),
        }

    def summary(self) -> dict[str, float | int | str]:
        return {"threshold": self.threshold, "n": self.n, "quantile": REFERENCE_QUANTILE, "metric": "mahalanobis"}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], summary: dict) -> FeatureReference:
        return cls(
            mean=tensors["mean"].numpy().astype(np.float64),
            precision=tensors["precision"].numpy().astype(np.float64),
            threshold=float(summary["threshold"]),
            n=int(summary["n"]),
        )


def fit_reference(features: np.ndarray) -> FeatureReference:
    from sklearn.covariance import LedoitWolf

    estimator = LedoitWolf().fit(features)
    reference = FeatureReference(estimator.location_, estimator.precision_, 0.0, len(features))
    reference.threshold = float(np.quantile(reference.distances(features), REFERENCE_QUANTILE))
    return reference
