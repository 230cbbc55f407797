"""The artifact's model, ready to predict: verified weights in the architecture the artifact records.

Shared by evaluation and scoring so that both use exactly what was sealed: the refit model, or the mean of the
fold models' probabilities when the artifact is a fold ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medtl.artifacts import VerifiedArtifact, open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts import PreprocessingSpec
from medtl.contracts.task import TaskKind
from medtl.models.factory import rebuild_with_weights
from medtl.models.heads import probabilities
from medtl.models.mirrored import mirrored_mean


@dataclass
class LoadedModel:
    artifact: VerifiedArtifact
    networks: list[nn.Module]
    classes: list[str]
    positive_class: str | None
    spec: PreprocessingSpec
    device: torch.device
    task_kind: TaskKind = "binary"
    flip_axes: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return "refit" if len(self.networks) == 1 else f"ensemble of {len(self.networks)}"

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> np.ndarray:
        """Class (or finding) probabilities (N, K) for preprocessed inputs (N, C, *spatial), averaged over the
        ensemble and over the mirror views the artifact records."""
        inputs = batch.to(self.device, non_blocking=True)
        total = None
        for network in self.networks:
            predicted = mirrored_mean(lambda x, net=network: probabilities(net(x), self.task_kind), inputs,
                                      self.flip_axes)  # fmt: skip
            total = predicted if total is None else total + predicted
        return (total / len(self.networks)).cpu().numpy()


def load_model(
    artifact: Path | VerifiedArtifact, *, device: torch.device | None = None, allow_unsigned: bool = False
) -> LoadedModel:
    verified = (
        artifact if isinstance(artifact, VerifiedArtifact) else open_verified(artifact, allow_unsigned=allow_unsigned)
    )
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    contents = ArtifactContents(verified)
    names = (
        ["final"]
        if "final" in verified.weight_names
        else sorted(n for n in verified.weight_names if n.startswith("fold"))
    )
    networks = []
    for name in names:
        network = rebuild_with_weights(verified.metadata["model"], verified.load_weights(name))
        networks.append(network.to(device).eval())
    task = contents.task
    return LoadedModel(
        verified,
        networks,
        list(task.classes),
        task.positive_class,
        contents.preprocessing,
        device,
        task_kind=task.kind,
        flip_axes=tuple(verified.metadata_model().prediction_flip_axes),
    )
