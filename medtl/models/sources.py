"""Weight sources: each one resolves a weights choice to a local file, checks its SHA-256, then decodes it.

Nothing here downloads. A missing file is a `WeightsError` that names the exact file, the folder it must be in, the
hash it must have and where to get it, so that an air-gapped site can copy it in. Expected hashes come from, in
order: the config (`sha256:`), the user's pins (`medtl weights register`), and — for torchvision only, when no pin
exists — the hash prefix torchvision puts in its file names (the same check torch.hub does after a download).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import torch

from medtl.errors import ConfigError
from medtl.models.artifact_source import ArtifactSource
from medtl.models.backbones import BackboneSpec
from medtl.models.bundle import MonaiBundleSource
from medtl.models.checkpoint import (
    PIN_HINT,
    check_hash,
    expected_hash,
    hash_prefix_of,
    load_state_dict_file,
    read_file,
    refuse_unverifiable,
    rename_legacy_densenet,
    require_file,
    strip_prefix,
)
from medtl.models.pins import PinStore, medtl_home
from medtl.models.records import ResolvedWeights, WeightRecord
from medtl.registry import Registry

TORCHVISION_LICENSE = (
    "torchvision code: BSD-3-Clause. Weights: torchvision states that its pre-trained models 'may have their own "
    "licenses or terms and conditions derived from the dataset used for training'; these were trained on ImageNet-1K, "
    "whose terms of access allow non-commercial research and educational use."
)
MEDICALNET_LICENSE = "MIT (Tencent/MedicalNet); pretrained on 23 public medical datasets, each under its own terms"


class WeightSource(Protocol):
    kind: str
    summary: str

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights | None: ...


SOURCES: Registry[WeightSource] = Registry("weight source")


def register_source(source: WeightSource) -> WeightSource:
    return SOURCES.register(source.kind, source)


# ---- torchvision ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchvisionCheckpoint:
    """Where torchvision itself caches one ImageNet checkpoint, and the hash prefix its file name carries."""

    backbone: str
    weights_name: str  # e.g. ResNet18_Weights.IMAGENET1K_V1
    url: str
    file_name: str
    hash_prefix: str | None
    license: str
    meta: dict[str, Any]

    @property
    def directory(self) -> Path:
        # Exactly torch.hub's folder: honours TORCH_HOME, XDG_CACHE_HOME and torch.hub.set_dir().
        return Path(torch.hub.get_dir()) / "checkpoints"

    @property
    def path(self) -> Path:
        return self.directory / self.file_name

    def obtain(self) -> str:
        member = self.weights_name.split(".")[-1]
        return (
            f'on a machine with internet run `python -c "import torchvision; torchvision.models.{self.backbone}'
            f"(weights='{member}')\"` and copy the file from its $TORCH_HOME/hub/checkpoints/ "
            f"(default ~/.cache/torch/hub/checkpoints/), or download {self.url}; set TORCH_HOME to use another "
            f"folder; then optionally {PIN_HINT}"
        )


def torchvision_checkpoint(spec: BackboneSpec, name: str = "DEFAULT") -> TorchvisionCheckpoint:
    enum = spec.torchvision_weights
    if enum is None:
        raise ConfigError(
            f"backbone {spec.name!r} has no torchvision ImageNet weights",
            where="weights.source",
            fix="use a torchvision backbone (resnet18, resnet50, densenet121, efficientnet_b0, convnext_tiny)",
        )
    member_name = name.split(".")[-1] if name.startswith(enum.__name__ + ".") else name
    try:
        member = enum.DEFAULT if member_name == "DEFAULT" else enum[member_name]
    except KeyError:
        known = ", ".join(m.name for m in enum)
        raise ConfigError(
            f"{enum.__name__} has no member {name!r}", where="weights.name", fix=f"use one of: {known}"
        ) from None
    file_name = Path(urlparse(member.url).path).name
    meta = {k: v for k, v in member.meta.items() if k in ("recipe", "num_params", "_metrics", "_file_size")}
    return TorchvisionCheckpoint(
        backbone=spec.name,
        weights_name=f"{enum.__name__}.{member.name}",
        url=member.url,
        file_name=file_name,
        hash_prefix=hash_prefix_of(file_name),
        license=member.meta.get("license") or TORCHVISION_LICENSE,
        meta=meta,
    )


class TorchvisionSource:
    kind = "torchvision"
    summary = "ImageNet weights in torchvision's cache: $TORCH_HOME/hub/checkpoints/<name>-<sha256 prefix>.pth"

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights:
        ckpt = torchvision_checkpoint(spec, choice.name)
        full, label = expected_hash(ckpt.file_name, ckpt.file_name, None)
        shown = full or f"starting with {ckpt.hash_prefix}"
        require_file(ckpt.path, what=f"torchvision weights {ckpt.weights_name}", expected=shown, obtain=ckpt.obtain())
        content = read_file(ckpt.path)
        where = str(ckpt.path)
        check_hash(
            content,
            where=where,
            expected=full,
            prefix=ckpt.hash_prefix,
            fix=f"delete {ckpt.file_name} and copy the published file again ({ckpt.url})",
        )
        if full is None and ckpt.hash_prefix is None:
            refuse_unverifiable(content, ckpt.path, ckpt.file_name)
        verified_by = label or f"SHA-256 prefix {ckpt.hash_prefix} in the torchvision file name; {PIN_HINT}"
        state = rename_legacy_densenet(load_state_dict_file(content, where=where))
        record = WeightRecord(
            source=self.kind,
            name=ckpt.weights_name,
            path_name=ckpt.file_name,
            sha256=content.sha256,
            license=ckpt.license,
            verified_by=verified_by,
            details={"url": ckpt.url, "hash_prefix": ckpt.hash_prefix or ""},
        )
        return ResolvedWeights(state=state, record=record)


# ---- MedicalNet ----------------------------------------------------------------------------------------------------


def medicalnet_directory() -> Path:
    return medtl_home() / "weights" / "medicalnet"


def medicalnet_file_name(depth: int) -> str:
    return f"resnet_{depth}_23dataset.pth"  # the name MONAI fetches from TencentMedicalNet/MedicalNet-Resnet<depth>


def medicalnet_obtain(depth: int) -> str:
    return (
        f"download {medicalnet_file_name(depth)} from the Hugging Face repository "
        f"TencentMedicalNet/MedicalNet-Resnet{depth} (what MONAI's resnet{depth}(pretrained=True) fetches) "
        f"or from Tencent/MedicalNet's release, copy it here, then {PIN_HINT} or give sha256 in the config"
    )


class MedicalNetSource:
    kind = "medicalnet"
    summary = "Tencent MedicalNet 3D ResNet checkpoints ({'state_dict': {'module.*': ...}}) for monai_resnet10/18/50"

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights:
        depth = spec.medicalnet_depth
        if depth is None:
            raise ConfigError(
                f"MedicalNet weights do not fit backbone {spec.name!r}",
                where="weights.source",
                fix="use monai_resnet10, monai_resnet18 or monai_resnet50",
            )
        default_name = medicalnet_file_name(depth)
        path = choice.path if choice.path is not None else medicalnet_directory()
        path = Path(path).expanduser()
        if path.is_dir() or choice.path is None:
            path = path / default_name
        full, label = expected_hash(path.name, path.name, choice.sha256)
        require_file(
            path,
            what=f"MedicalNet weights for {spec.name}",
            obtain=medicalnet_obtain(depth),
            expected=full or "unknown until you pin it",
        )
        content = read_file(path)
        if full is None:
            refuse_unverifiable(content, path, path.name)
        check_hash(content, where=str(path), expected=full)
        state = load_state_dict_file(content, where=str(path))
        record = WeightRecord(
            source=self.kind,
            name=Path(path.name).stem,
            path_name=path.name,
            sha256=content.sha256,
            license=MEDICALNET_LICENSE,
            verified_by=label,
            details={"origin": f"TencentMedicalNet/MedicalNet-Resnet{depth}"},
        )
        return ResolvedWeights(state=state, record=record)


# ---- any local file ------------------------------------------------------------------------------------------------


class FileSource:
    kind = "file"
    summary = "any local state-dict file (.safetensors/.pt/.pth) with an explicit or pinned SHA-256"

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights:
        path = Path(choice.path).expanduser()
        full, label = expected_hash(choice.name or path.name, path.name, choice.sha256)
        require_file(
            path,
            what="weight file",
            expected=full or "unknown until you pin it",
            obtain="copy the file there or correct weights.path",
        )
        content = read_file(path)
        if full is None:
            refuse_unverifiable(content, path, choice.name or path.name)
        check_hash(content, where=str(path), expected=full)
        state = load_state_dict_file(content, where=str(path))
        if choice.strip_prefix:
            state = strip_prefix(state, choice.strip_prefix)
        pin = PinStore().find(choice.name or path.name, path.name)
        licence = choice.license or (pin.license if pin else None) or "unknown (local file; no licence stated)"
        record = WeightRecord(
            source=self.kind,
            name=choice.name or path.stem,
            path_name=path.name,
            sha256=content.sha256,
            license=licence,
            verified_by=label,
        )
        return ResolvedWeights(state=state, record=record)


class NoSource:
    kind = "none"
    summary = "no pretrained weights: random initialisation, chosen explicitly with `weights: none`"

    def resolve(self, choice: Any, spec: BackboneSpec) -> None:
        return None


for _source in (
    NoSource(),
    TorchvisionSource(),
    MedicalNetSource(),
    MonaiBundleSource(),
    FileSource(),
    ArtifactSource(),
):
    register_source(_source)
