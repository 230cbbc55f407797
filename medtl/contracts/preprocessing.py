"""Contract for the preprocessing spec: the deterministic path from decoded pixels to network input.

Why a declared object: the same spec must run at training and at scoring (it travels inside the artifact), and
its hash keys the preprocessed-tensor cache so that a changed spec is never served stale.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from medtl.contracts.base import ContractModel, Strict


class WindowIntensity(Strict):
    """Fixed window in physical units (e.g. CT Hounsfield units): reproducible across scanners."""

    kind: Literal["window"] = "window"
    center: float
    width: float = Field(gt=0)


class PercentileIntensity(Strict):
    """Per-scan percentile range: for MR and other modalities without absolute units."""

    kind: Literal["percentile"] = "percentile"
    lower: float = Field(0.5, ge=0, le=100)
    upper: float = Field(99.5, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> PercentileIntensity:
        if self.lower >= self.upper:
            raise ValueError("lower percentile must be below upper percentile")
        return self


class RangeIntensity(Strict):
    """Fixed value range (e.g. 0..255 for 8-bit photographs and MedMNIST)."""

    kind: Literal["range"] = "range"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> RangeIntensity:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


Intensity = Annotated[WindowIntensity | PercentileIntensity | RangeIntensity, Field(discriminator="kind")]


class PreprocessingSpec(ContractModel):
    """Resample (volumes) → resize → scale intensities to [0, 1]. Random augmentation is not part of it."""

    contract_name: ClassVar[str] = "preprocessing"
    contract_title: ClassVar[str] = "preprocessing.json: how decoded scans become network inputs"

    spatial_dims: Literal[2, 3]
    target_spacing: list[float] | None = Field(
        None, description="mm per axis; volumes are resampled to it before resizing; null = keep native spacing"
    )
    target_shape: list[int] = Field(description="network input size per spatial axis")
    intensity: Intensity = Field(default_factory=PercentileIntensity)
    channels: int = Field(1, ge=1, description="channels of the preprocessed tensor (grey = 1)")

    @model_validator(mode="after")
    def _dims(self) -> PreprocessingSpec:
        if len(self.target_shape) != self.spatial_dims or any(size < 1 for size in self.target_shape):
            raise ValueError(f"target_shape must have {self.spatial_dims} positive sizes")
        spacing = self.target_spacing
        if spacing is not None and (len(spacing) != self.spatial_dims or any(s <= 0 for s in spacing)):
            raise ValueError(f"target_spacing must have {self.spatial_dims} positive values")
        return self
