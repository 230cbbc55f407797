"""Random augmentation of whole batches on the model's device (CUDA when present, CPU in tests).

Why here and not in the data loader: preprocessing is deterministic and stays in ingest's cache; what is random is
applied to the batch that the loader already produced, on the device that trains the model, so that a GPU box is not
starved by two CPU workers that transform one image at a time.

Why kornia for the geometry: it draws random parameters per sample and applies a whole batch of different flips
and affine transforms in one batched operation (one `grid_sample` for the affine part), in 2D and in 3D, on any
device. Why plain torch for the intensity part: gamma, contrast and noise are elementwise, so a few broadcast
operations with per-sample parameters of shape (B, 1, 1, ...) do it for any number of dimensions with no dependency.

Randomness: every random number comes from torch's global generators, so `torch.manual_seed(seed)` makes a run
repeatable. Per-sample parameters (flip/affine/gamma/contrast/noise level, elastic seed) are drawn on the CPU
generator, so one seed gives the same geometry on every device; the noise field itself is drawn on the batch's
device. CUDA kernels (e.g. `grid_sample`) may still not be bit-for-bit deterministic between runs on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medtl.errors import ConfigError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]

_COMPUTE_DTYPES = (torch.float32, torch.float64)


class AugmentConfig(BaseModel):
    """The `augmentation:` section of the training YAML. Every transform is drawn independently for each sample.

    Spatial axes are counted from 0 over the spatial dimensions of the network input: (rows, columns) for 2D
    images as displayed, (x, y, z) for 3D volumes in ingest's canonical RAS order (axis 0 is left-right).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    # geometric
    flip_axes: list[int] | None = Field(
        None, description="spatial axes to flip; None = left-right only (axis 0 of a RAS volume, the last axis in 2D)"
    )
    p_flip: Probability = Field(0.5, description="probability of a flip, per sample and per axis")
    rotate_degrees: float = Field(
        10.0, ge=0.0, le=180.0, description="max rotation; in 3D each axis-angle component is drawn in ±this"
    )
    scale: tuple[Positive, Positive] = Field((0.9, 1.1), description="isotropic zoom range")
    translate: float = Field(0.05, ge=0.0, le=1.0, description="max shift per axis, as a fraction of the size")
    p_affine: Probability = 0.5
    elastic: bool = Field(
        False, description="3D only: MONAI Rand3DElastic, one sample at a time (several times the affine's cost)"
    )
    p_elastic: Probability = 0.2
    elastic_sigma: tuple[Positive, Positive] = Field((5.0, 8.0), description="smoothing of the field, in voxels")
    elastic_magnitude: tuple[NonNegative, NonNegative] = Field(
        (50.0, 150.0), description="scale of the smoothed random field (MONAI's magnitude_range)"
    )
    # intensity (inputs are preprocessed to [0, 1])
    gamma: tuple[Positive, Positive] = Field((0.8, 1.25), description="x ** gamma, gamma log-uniform in the range")
    p_gamma: Probability = 0.3
    noise_std: Positive = Field(0.02, description="Gaussian noise, std drawn uniformly in [0, noise_std]")
    p_noise: Probability = 0.3
    contrast: tuple[NonNegative, NonNegative] = Field(
        (0.9, 1.1), description="factor applied around each sample's mean"
    )
    p_contrast: Probability = 0.3

    @field_validator("scale", "gamma", "contrast", "elastic_sigma", "elastic_magnitude")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"range must be (low, high) with low <= high, got {value}")
        return value

    @field_validator("flip_axes")
    @classmethod
    def _axes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if any(axis < 0 for axis in value):
            raise ValueError(f"spatial axes are counted from 0, got {value}")
        if len(set(value)) != len(value):
            raise ValueError(f"an axis is listed twice: {value}")
        return value


def resolve_flip_axes(config: AugmentConfig, spatial_dims: int) -> tuple[int, ...]:
    """The spatial axes that may be flipped: the configured ones, else left-right only.

    Left-right is axis 0 of a canonical RAS volume and the last (column) axis of a 2D image. Head-foot or
    front-back flips make anatomy no scanner produces, so they are opt-in; tasks about laterality should set
    `flip_axes: []`.
    """
    if config.flip_axes is None:
        return (0,) if spatial_dims == 3 else (spatial_dims - 1,)
    bad = [axis for axis in config.flip_axes if axis >= spatial_dims]
    if bad:
        raise ConfigError(
            f"flip axes {bad} do not exist in {spatial_dims}D inputs",
            where="augmentation.flip_axes",
            fix=f"use axes between 0 and {spatial_dims - 1}, or omit flip_axes for the default",
        )
    return tuple(sorted(config.flip_axes))


class BatchAugmenter(torch.nn.Module):
    """Augments a (B, C, *spatial) batch of [0, 1] inputs in training mode; identity in eval mode or when disabled.

    Geometric part (kornia): independent flips per configured axis, then one random affine (rotation, isotropic
    zoom, shift) with bilinear resampling. What moves in from outside the image is zeros: inputs are scaled so that
    0 is background / air, so a zero border adds no artificial edge, and the same rule holds in 2D and 3D (kornia's
    3D affine only pads with zeros). Optional elastic deformation in 3D uses MONAI's `Rand3DElastic`, which has no
    batched version: it runs one selected sample at a time on the batch's device, and draws its full-resolution
    random field with numpy on the CPU, so it costs several times the affine; it is off by default.

    Intensity part (torch): gamma (log-uniform), contrast around each sample's mean, additive Gaussian noise; the
    result is clamped to [0, 1]. The output has the input's shape, dtype and device; half-precision inputs are
    processed in float32 and cast back. No gradient flows through the augmentation.

    The kornia modules are deliberately kept out of this module's children, so that `.to(device)` leaves their
    random generators on the CPU: parameters are drawn there (cheap, no device synchronisation, the same values for
    one seed on every device) and the transforms run on the batch's device.
    """

    def __init__(self, config: AugmentConfig | Mapping[str, Any], spatial_dims: int) -> None:
        super().__init__()
        if not isinstance(config, AugmentConfig):
            config = AugmentConfig.model_validate(config)
        if spatial_dims not in (2, 3):
            raise ConfigError(
                f"augmentation supports 2D images and 3D volumes, got spatial_dims={spatial_dims}",
                where="augmentation",
                fix="use spatial_dims 2 or 3",
            )
        if config.elastic and spatial_dims != 3:
            raise ConfigError(
                "elastic deformation is implemented for 3D volumes only",
                where="augmentation.elastic",
                fix="set elastic: false for 2D inputs",
            )
        self.config = config
        self.spatial_dims = spatial_dims
        self.flip_axes = resolve_flip_axes(config, spatial_dims) if config.p_flip > 0 else ()
        self._geometric = _build_geometric(config, spatial_dims, self.flip_axes) if config.enabled else []
        self._elastic_transform: Any = None
        self._elastic_device: torch.device | None = None

    def extra_repr(self) -> str:
        steps = ", ".join(type(step).__name__ for step in self._geometric) or "no geometry"
        return f"spatial_dims={self.spatial_dims}, enabled={self.config.enabled}, geometric=[{steps}]"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if not (self.config.enabled and self.training) or batch.shape[0] == 0:
            return batch
        self._check(batch)
        work = batch if batch.dtype in _COMPUTE_DTYPES else batch.float()
        with torch.no_grad():
            for step in self._geometric:
                work = step(work)
            if self.config.elastic and self.config.p_elastic > 0:
                work = self._elastic(work)
            work = self._intensity(work)
        return work.to(batch.dtype)

    def _check(self, batch: torch.Tensor) -> None:
        if not batch.is_floating_point():
            raise TypeError(f"augmentation expects a floating-point batch in [0, 1], got {batch.dtype}")
        if batch.ndim != self.spatial_dims + 2:
            raise ConfigError(
                f"expected a (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W) batch for "
                f"{self.spatial_dims}D augmentation, got shape {tuple(batch.shape)}",
                where="augmentation",
                fix="build the augmenter with the spatial_dims of the dataset's network inputs",
            )

    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        gamma_on, contrast_on = cfg.p_gamma > 0, cfg.p_contrast > 0
        noise_on = cfg.p_noise > 0
        if not (gamma_on or contrast_on or noise_on):
            return x
        # One CPU draw for all per-sample parameters: repeatable across devices, one small copy to the device.
        draws = torch.rand(x.shape[0], 6, dtype=torch.float64)
        apply = draws[:, 0::2] < torch.tensor([cfg.p_gamma, cfg.p_contrast, cfg.p_noise], dtype=torch.float64)
        log_lo, log_hi = math.log(cfg.gamma[0]), math.log(cfg.gamma[1])
        params = torch.stack(
            [
                torch.exp(log_lo + draws[:, 1] * (log_hi - log_lo)),
                cfg.contrast[0] + draws[:, 3] * (cfg.contrast[1] - cfg.contrast[0]),
                torch.where(apply[:, 2], draws[:, 5] * cfg.noise_std, 0.0),
            ],
            dim=1,
        )
        params = params.to(device=x.device, dtype=x.dtype, non_blocking=True)
        apply = apply.to(device=x.device, non_blocking=True)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        x = x.clamp(0.0, 1.0)
        if gamma_on:
            x = torch.where(apply[:, 0].view(shape), x.pow(params[:, 0].view(shape)), x)
        if contrast_on:
            mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            x = torch.where(apply[:, 1].view(shape), (x - mean) * params[:, 1].view(shape) + mean, x)
        if noise_on:
            x = x + torch.randn_like(x) * params[:, 2].view(shape)
        return x.clamp_(0.0, 1.0)

    def _elastic(self, x: torch.Tensor) -> torch.Tensor:
        selected = torch.nonzero(torch.rand(x.shape[0]) < self.config.p_elastic).flatten().tolist()
        if not selected:
            return x
        transform = self._elastic_for(x.device)
        transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,))))
        out = x.clone()
        for index in selected:  # MONAI has no batched elastic transform
            warped = transform(x[index])
            out[index] = warped.as_tensor() if hasattr(warped, "as_tensor") else warped
        return out

    def _elastic_for(self, device: torch.device) -> Any:
        if self._elastic_transform is None or self._elastic_device != device:
            try:
                from monai.transforms import Rand3DElastic
            except ImportError as error:
                raise ConfigError(
                    f"elastic augmentation needs MONAI, which cannot be imported ({error})",
                    where="augmentation.elastic",
                    fix="install medtl's dependencies (pip install monai), or set elastic: false",
                ) from None
            self._elastic_transform = Rand3DElastic(
                sigma_range=self.config.elastic_sigma,
                magnitude_range=self.config.elastic_magnitude,
                prob=1.0,
                mode="bilinear",
                padding_mode="zeros",
                device=device,
            )
            self._elastic_device = device
        return self._elastic_transform


def _build_geometric(config: AugmentConfig, spatial_dims: int, flip_axes: tuple[int, ...]) -> list[Any]:
    """kornia modules in the order they run: one flip per axis, then the affine (skipped when it is the identity)."""
    try:
        import kornia.augmentation as K
    except ImportError as error:
        raise ConfigError(
            f"GPU augmentation needs kornia, which cannot be imported ({error})",
            where="augmentation",
            fix="install kornia (pip install kornia), or set augmentation.enabled: false",
        ) from None
    if spatial_dims == 2:
        flips = {0: K.RandomVerticalFlip, 1: K.RandomHorizontalFlip}
    else:
        flips = {0: K.RandomDepthicalFlip3D, 1: K.RandomVerticalFlip3D, 2: K.RandomHorizontalFlip3D}
    steps: list[Any] = [flips[axis](p=config.p_flip) for axis in flip_axes] if config.p_flip > 0 else []

    translate = config.translate if config.translate > 0 else None
    scale = config.scale if config.scale != (1.0, 1.0) else None
    if config.p_affine > 0 and (config.rotate_degrees > 0 or translate or scale):
        if spatial_dims == 2:
            steps.append(
                K.RandomAffine(
                    degrees=config.rotate_degrees,
                    translate=(translate, translate) if translate else None,
                    scale=scale,
                    padding_mode="zeros",
                    p=config.p_affine,
                )
            )
        else:
            steps.append(
                K.RandomAffine3D(
                    degrees=config.rotate_degrees,
                    translate=(translate, translate, translate) if translate else None,
                    scale=scale,
                    p=config.p_affine,
                )
            )
    return steps


__all__ = ["AugmentConfig", "BatchAugmenter", "resolve_flip_axes"]
