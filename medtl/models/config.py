"""Configuration of the model section of the train YAML: which backbone, which weights, how to adapt them.

Why `weights` has no default: starting from random weights must be a visible decision (`weights: none`), never what
happens because a file or a key was missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from medtl.errors import ConfigError, describe_validation_error
from medtl.models.pins import normalise_sha256

ChannelMethod = Literal["sum", "mean"]
Adapt3D = Literal["inflate", "2.5d", "acs"]
DepthPadding = Literal["replicate", "zeros"]


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HashedChoice(_Choice):
    sha256: str | None = Field(None, description="full expected SHA-256; may be omitted when the file is pinned")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_sha256(value)
        except ConfigError as error:
            raise ValueError(error.what) from None


class NoWeights(_Choice):
    """Random initialisation, chosen explicitly."""

    source: Literal["none"] = "none"


class TorchvisionWeights(_Choice):
    """ImageNet weights in torchvision's cache layout (`$TORCH_HOME/hub/checkpoints/<file from the Weights enum>`)."""

    source: Literal["torchvision"] = "torchvision"
    name: str = Field("DEFAULT", description="member of the backbone's torchvision Weights enum, e.g. IMAGENET1K_V1")


class MedicalNetWeights(_HashedChoice):
    """A Tencent MedicalNet checkpoint (`{'state_dict': {'module.conv1.weight': ...}}`) for the MONAI 3D ResNets."""

    source: Literal["medicalnet"] = "medicalnet"
    path: Path | None = Field(None, description="the .pth file or its folder; default $MEDTL_HOME/weights/medicalnet")


class MonaiBundleWeights(_HashedChoice):
    """A MONAI bundle folder: configs/metadata.json + models/model.safetensors or models/model.pt."""

    source: Literal["monai_bundle"] = "monai_bundle"
    path: Path
    model_file: str | None = Field(None, description="path of the weights inside the bundle; default models/model.*")
    strip_prefix: str | None = Field(None, description="key prefix to remove, e.g. 'model.'")


class FileWeights(_HashedChoice):
    """Any local state-dict file (.safetensors / .pt / .pth) whose keys match the backbone."""

    source: Literal["file"] = "file"
    path: Path
    name: str | None = None
    license: str | None = None
    strip_prefix: str | None = None


class ArtifactWeights(_Choice):
    """The final weights of an earlier medtl artifact, verified through the artifact's own integrity check."""

    source: Literal["artifact"] = "artifact"
    path: Path


def _shorthand(value: Any) -> Any:
    """Accept `weights: none` and `weights: torchvision` as YAML shorthands; refuse an empty value."""
    if value is None:
        raise ValueError("weights must be chosen explicitly: write `weights: none` to train from random initialisation")
    if isinstance(value, str):
        return {"source": value.strip().lower()}
    return value


WeightsChoice = Annotated[
    NoWeights | TorchvisionWeights | MedicalNetWeights | MonaiBundleWeights | FileWeights | ArtifactWeights,
    Field(discriminator="source"),
    BeforeValidator(_shorthand),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(WeightsChoice)


def parse_weights(value: Any, *, where: str = "weights") -> Any:
    """Turn a YAML value, dict, shorthand string or choice object into a validated weights choice."""
    if isinstance(value, _Choice):
        return value
    if isinstance(value, Mapping):
        value = dict(value)
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as error:
        problems = describe_validation_error(error, root=where)
        raise ConfigError(
            f"invalid weights choice: {problems}",
            where=where,
            fix="use one of: none | {source: torchvision, name: IMAGENET1K_V1} | {source: medicalnet, path, sha256} "
            "| {source: monai_bundle, path} | {source: file, path, sha256} | {source: artifact, path}",
        ) from None


class ModelConfig(BaseModel):
    """The `model:` section of the train YAML. Input channels, classes and dimensionality come from the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str
    weights: WeightsChoice
    channel_adapt: ChannelMethod = "sum"
    adapt_3d: Adapt3D = "inflate"
    slices: int = Field(3, ge=1, description="2.5D: neighbouring slices stacked as channels")
    slice_step: int | None = Field(None, ge=1, description="2.5D: depth step between slice groups; default = slices")
    depth_padding: DepthPadding = "replicate"
