"""The pretraining configuration (`pretrain.yaml`): one pydantic model, validated before any data is read.

Defaults are a recipe that works without any file from outside the site: a ResNet-18 from random initialisation
(inflated to 3D for volumes, the same network `medtl plan` picks), SimCLR views drawn by medtl's batched augmentation
on the model's device, and a cosine schedule over a fixed number of epochs that a time budget may shorten (the
record then says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medtl.contracts import PreprocessingSpec
from medtl.models.config import ModelConfig
from medtl.training.augment import AugmentConfig
from medtl.training.config import load_yaml_model

Method = Literal["simclr", "masked"]


def contrastive_views() -> AugmentConfig:
    """Stronger than the fine-tuning default: two views of one scan must differ enough that matching them needs
    anatomy, not pixel coincidences (zoom and shift stand in for SimCLR's random resized crop)."""
    return AugmentConfig(
        rotate_degrees=15.0,
        scale=(0.75, 1.25),
        translate=0.1,
        p_affine=0.9,
        p_gamma=0.5,
        p_contrast=0.5,
        contrast=(0.75, 1.25),
        p_noise=0.5,
        noise_std=0.05,
    )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScanFilter(_Section):
    """Which ingested scans are pretrained on (labels are never read)."""

    modalities: list[str] | None = Field(None, description="e.g. [CT]; default: every modality of the spec's kind")
    exclude_flags: list[str] = Field(
        default_factory=lambda: ["constant_image", "possible_label_map"],
        description="scans with any of these QC flags are left out (and counted in the record); left unset, a "
        "default flag carried by most of a dataset's scans (e.g. possible_label_map on a dataset of shape masks) "
        "describes that dataset and does not exclude its scans (the record says so)",
    )


class PretrainConfig(_Section):
    model_id: str = Field("medtl-pretrained", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model_version: str = Field("0.1.0", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    method: Method = Field(
        "simclr",
        description="simclr: contrastive, two augmented views of each scan (NT-Xent); masked: SimMIM-style masked "
        "image modelling, the masked patches reconstructed from the visible ones",
    )
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig(backbone="resnet18", weights="none"),
        description="the backbone; weights may start it from another source (e.g. ImageNet) before pretraining",
    )
    preprocessing: PreprocessingSpec | None = Field(
        None, description="default: the first dataset's preprocessing.json (every dataset is read through it)"
    )
    scans: ScanFilter = Field(default_factory=ScanFilter)
    epochs: int = Field(100, ge=1, le=10_000)
    time_budget_minutes: float | None = Field(
        None, gt=0, description="stop within this wall time: after the first epoch the schedule is shortened to fit"
    )
    batch_size: int = Field(128, ge=4, description="contrastive learning needs several negatives per batch")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    temperature: float = Field(0.2, gt=0, le=10, description="simclr: NT-Xent temperature")
    projection_dim: int = Field(128, ge=8, le=4096, description="simclr: output size of the projection head")
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="masked: share of patches hidden from the encoder")
    augmentation: AugmentConfig = Field(
        default_factory=contrastive_views, description="views (simclr) or the augmentation before masking (masked)"
    )
    exclude_patients_of: list[Path] = Field(
        default_factory=list,
        description="datasets (e.g. an external test set) whose patients are never pretrained on, in addition to "
        "every locked-test patient of the pretraining datasets",
    )
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off"] = Field("auto", description="mixed precision on CUDA (bf16 where supported)")
    num_workers: int = Field(0, ge=0)
    checkpoint_every_s: float = Field(120.0, ge=0, description="resume checkpoint at most this often; 0: each epoch")
    allow_unsigned: bool = Field(False, description="seal the artifact without a signature (development only)")


def load_pretrain_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """pretrain.yaml + command-line overrides (those left unset do not override) -> PretrainConfig."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    fix = "see README 'Pretraining on unlabelled scans' for every key and its default"
    return load_yaml_model(PretrainConfig, path, given, what="pretraining config", fix=fix)
