"""What a built model is made of: which weights it started from and which layers are pretrained or new.

Why a record and not just a module: the artifact's provenance must answer, months later, "which weights, with which
hash and licence, went into this model, and what was changed on the way" — so everything here is JSON-serialisable and
holds file names only, never absolute paths (which can reveal user names or hospital share layouts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from medtl.models.checkpoint import StateDict


@dataclass(frozen=True)
class WeightRecord:
    """One verified pretrained-weight file, as it goes into the artifact's provenance."""

    source: str  # weight-source kind: torchvision, medicalnet, monai_bundle, file, artifact
    name: str  # e.g. "ResNet18_Weights.IMAGENET1K_V1", "resnet_10_23dataset", "my_bundle@0.2.1"
    path_name: str  # file name (or path relative to a bundle / artifact folder), never absolute
    sha256: str  # full SHA-256 of the bytes that were loaded
    license: str  # what the publisher states, verbatim-ish, or "unknown ..." when nothing is stated
    verified_by: str  # how the hash was checked: full pin, config hash, torchvision file-name prefix, artifact
    details: dict[str, str] = field(default_factory=dict)  # small extra facts: url, bundle version, ...

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def provenance(self) -> dict[str, Any]:
        """The subset that `contracts.artifact.PretrainedSource` holds."""
        return {"source": self.source, "name": self.name, "sha256": self.sha256, "license": self.license}


@dataclass
class ResolvedWeights:
    """A verified, decoded state dict and its provenance record."""

    state: StateDict
    record: WeightRecord
    model_spec: dict[str, Any] | None = None  # artifact sources: the spec the weights were trained with


NO_PRETRAINING = {"source": "none", "name": "none", "sha256": None, "license": None}


@dataclass
class BuiltModel:
    """A model ready for fine-tuning plus the record of how it was made.

    `stages` are parameter-name groups ordered from input to output; the last one is always the new head
    (`stage_names[-1] == "head"`). Every parameter of `model` is in exactly one stage. `spec` holds the keyword
    arguments that rebuild the same architecture (`rebuild_model(spec)`); training stores it in the artifact as
    `metadata["model"]`.
    """

    model: nn.Module
    backbone: str
    spec: dict[str, Any]
    pretrained: WeightRecord | None
    pretrained_params: list[str]
    new_params: list[str]
    stages: list[list[str]]
    stage_names: list[str]
    adaptation: dict[str, Any]
    load_report: dict[str, Any] = field(default_factory=dict)

    @property
    def head_params(self) -> list[str]:
        return list(self.stages[-1])

    def provenance(self) -> dict[str, Any]:
        """`PretrainedSource`-shaped record; `weights: none` is recorded explicitly, not left empty."""
        return self.pretrained.provenance() if self.pretrained else dict(NO_PRETRAINING)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the module, JSON-serialisable, for the artifact's resolved config / provenance."""
        return {
            "backbone": self.backbone,
            "spec": dict(self.spec),
            "pretrained": self.pretrained.as_dict() if self.pretrained else None,
            "pretrained_params": list(self.pretrained_params),
            "new_params": list(self.new_params),
            "stages": {name: list(params) for name, params in zip(self.stage_names, self.stages, strict=True)},
            "adaptation": self.adaptation,
            "load_report": self.load_report,
        }
