"""Penultimate-layer features and a Mahalanobis reference: is a new scan like the ones the model was trained on?

(Artifacts sealed since the multi-layer nearest-neighbour rule, medtl/training/feature_ood.py, flag with that rule;
this reference is still stored beside it and flags for artifacts sealed before it. `feature_rule` loads the new one.)

At training, the features of every training scan (from the network that scoring will use first) are reduced to a
few principal components, where a shrunk covariance (Ledoit-Wolf) is stable even with few scans; the threshold is
the distance that 99% of training scans stay under when they are left out of the fit (cross-fitted), because
in-sample distances are too small. At scoring, a scan beyond that distance is flagged `feature_outlier`. The
network has fitted its training scans, so their features are tighter than new ones: the flag errs towards flagging.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medtl.contracts.handoff import OodReferenceSummary
from medtl.errors import ContractProblem, DataContractError
from medtl.models.records import BuiltModel
from medtl.training.feature_ood import PREFIX, KnnReference, stage_modules

REFERENCE_QUANTILE = 0.99


def head_module(network: nn.Module, head_params: Iterable[str]) -> nn.Module:
    """The module that holds the head's parameters: its input is the penultimate representation."""
    names = {name.rsplit(".", 1)[0] for name in head_params}
    modules = dict(network.named_modules())
    # the deepest common module of the head's parameters (a Linear, or a small Sequential ending in one)
    candidates = sorted(names, key=len)
    return modules[candidates[0]]


@dataclass
class FeatureReference:
    """Mahalanobis distance in a low-dimensional (PCA) view of the penultimate features, with its threshold."""

    mean: np.ndarray  # feature mean (d,)
    components: np.ndarray  # PCA axes (k, d)
    location: np.ndarray  # mean in PCA space (k,)
    precision: np.ndarray  # Ledoit-Wolf precision in PCA space (k, k)
    threshold: float
    n: int

    def distances(self, features: np.ndarray) -> np.ndarray:
        projected = (features - self.mean) @ self.components.T - self.location
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", projected, self.precision, projected), 0.0))

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("mean", "components", "location", "precision")
        return {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name), dtype=np.float32)) for name in names}

    def summary(self) -> dict[str, float | int | str]:
        return {
            "threshold": self.threshold,
            "n": self.n,
            "components": int(self.components.shape[0]),
            "quantile": REFERENCE_QUANTILE,
            "metric": "mahalanobis in PCA space, threshold from out-of-sample distances",
        }

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], summary: dict) -> FeatureReference:
        arrays = {
            name: tensors[name].numpy().astype(np.float64) for name in ("mean", "components", "location", "precision")
        }
        return cls(**arrays, threshold=float(summary["threshold"]), n=int(summary["n"]))


def _fit(features: np.ndarray, k: int) -> FeatureReference:
    from sklearn.covariance import LedoitWolf

    mean = features.mean(axis=0)
    _, _, axes = np.linalg.svd(features - mean, full_matrices=False)
    components = axes[:k]
    projected = (features - mean) @ components.T
    estimator = LedoitWolf().fit(projected)
    return FeatureReference(mean, components, estimator.location_, estimator.precision_, 0.0, len(features))


def fit_reference(features: np.ndarray, *, max_components: int = 16, folds: int = 5, seed: int = 0) -> FeatureReference:
    """Fit on all training features; set the threshold from distances of scans left out of the fit.

    In-sample distances are too small (the fit has seen those points), which would flag almost every new scan;
    distances of held-out scans behave like those of new in-distribution scans.
    """
    k = int(max(1, min(max_components, len(features) // 4, features.shape[1])))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))
    held_out = []
    for part in np.array_split(order, min(folds, max(2, len(features) // 4))):
        rest = np.setdiff1d(order, part)
        if len(rest) > k + 1:
            held_out.append(_fit(features[rest], k).distances(features[part]))
    reference = _fit(features, k)
    distances = np.concatenate(held_out) if held_out else reference.distances(features)
    reference.threshold = float(np.quantile(distances, REFERENCE_QUANTILE))
    return reference


def feature_rule(
    artifact: str, built: BuiltModel, tensors: dict[str, torch.Tensor], summary: OodReferenceSummary
) -> KnnReference | None:
    """The nearest-neighbour rule, with its stages' modules found in the rebuilt architecture (module paths are
    never taken from a file). None when the artifact predates it: the Mahalanobis rule then sets the flag."""
    if summary.flag != "knn_multilayer" or summary.knn is None:
        return None
    modules = stage_modules(built.model, built.stages, built.stage_names)
    missing = sorted(set(summary.knn.stages) - set(modules))
    absent = sorted(
        f"{PREFIX}{name}"
        for name in summary.knn.stages
        if f"{PREFIX}{name}" not in tensors
        or tensors[f"{PREFIX}{name}"].ndim != 2
        or tensors[f"{PREFIX}{name}"].shape[0] != summary.knn.bank
    )
    if missing or absent:
        raise DataContractError(
            OodReferenceSummary.schema_filename(),
            [
                ContractProblem(
                    "$.knn.stages",
                    "stage(s) not in the model, or whose bank is missing or misshapen",
                    ", ".join(missing + absent),
                )
            ],
            where=artifact,
            fix="the artifact's feature reference does not match its model: retrain it with this medtl",
        )
    knn = KnnReference.from_parts(tensors, summary.knn.model_dump())
    knn.modules = {name: modules[name] for name in knn.banks}
    return knn
