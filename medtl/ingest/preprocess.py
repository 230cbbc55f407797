"""Apply a PreprocessingSpec with MONAI transforms, and choose a sensible default spec from the data.

The same function runs at training and at scoring time with the spec stored in the artifact, so the two can never
drift apart. Order: intensity scaling on the native grid (percentiles then describe the real scan), resampling to
the target spacing, then resize (2D) or centre pad/crop (3D, which keeps the physical scale of every scan equal).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from medtl.contracts import PreprocessingSpec, validate_document
from medtl.contracts.preprocessing import PercentileIntensity, WindowIntensity
from medtl.errors import ConfigError
from medtl.hashing import sha256_json

# Soft-tissue window: the usual starting point for body CT; set another window in the spec for lung or bone.
CT_DEFAULT_WINDOW = WindowIntensity(center=40.0, width=400.0)
MAX_DEFAULT_SIZE_3D = 128
DEFAULT_SIZE_2D_BOUNDS = (64, 224)


def spec_hash(spec: PreprocessingSpec) -> str:
    return sha256_json(spec.model_dump(mode="json"))


def load_spec(path: Path) -> PreprocessingSpec:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the preprocessing spec ({type(error).__name__})", where=str(path)) from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("contract", "contract_version")}
    return validate_document(PreprocessingSpec, data, where=Path(path).name)


def default_spec(
    *, image_kind: str, modality: str, median_spacing: Sequence[float], median_shape: Sequence[int]
) -> PreprocessingSpec:
    """A spec for the dominant kind of scan in a dataset (nnU-Net-style: median spacing, median extent)."""
    intensity = CT_DEFAULT_WINDOW if modality == "CT" else PercentileIntensity()
    if image_kind == "volume":
        shape = [min(MAX_DEFAULT_SIZE_3D, _round_up(int(size), 8)) for size in median_shape]
        spacing = [round(float(value), 3) for value in median_spacing]
        return PreprocessingSpec(spatial_dims=3, target_spacing=spacing, target_shape=shape, intensity=intensity)
    low, high = DEFAULT_SIZE_2D_BOUNDS
    size = int(np.clip(_round_up(int(max(median_shape)), 32), low, high))
    return PreprocessingSpec(spatial_dims=2, target_spacing=None, target_shape=[size, size], intensity=intensity)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, ((value + multiple - 1) // multiple) * multiple)


def applies_to(spec: PreprocessingSpec, image_kind: str) -> bool:
    return (spec.spatial_dims == 3) == (image_kind == "volume")


def preprocess_array(array: np.ndarray, affine: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Decoded scan -> float32 (channels, *target_shape) in [0, 1]."""
    import torch
    from monai.data import MetaTensor

    if array.ndim != spec.spatial_dims:
        raise ConfigError(
            f"the preprocessing spec is {spec.spatial_dims}D but the scan is {array.ndim}D",
            fix="use a spec whose spatial_dims matches the scans (2 for projection images, 3 for volumes)",
        )
    affine_nd = _affine_for(affine, spec.spatial_dims)
    data = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None], affine=affine_nd)
    for transform in _transforms(spec.model_dump_json()):
        data = transform(data)
    out = data.as_tensor().numpy().astype(np.float32, copy=False)
    if spec.channels > 1:
        out = np.repeat(out, spec.channels, axis=0)
    return np.ascontiguousarray(out)


def _affine_for(affine: np.ndarray, spatial_dims: int):
    import torch

    if spatial_dims == 3:
        return torch.as_tensor(affine, dtype=torch.float64)
    # MONAI's 2D resampling wants a 3x3 affine of the image plane.
    plane = np.eye(3)
    plane[:2, :2] = affine[:2, :2]
    plane[:2, 2] = affine[:2, 3]
    return torch.as_tensor(plane, dtype=torch.float64)


@lru_cache(maxsize=8)
def _transforms(spec_json: str) -> tuple:
    """Build the MONAI chain once per spec per process."""
    from monai.transforms import (
        Resize,
        ResizeWithPadOrCrop,
        ScaleIntensityRange,
        ScaleIntensityRangePercentiles,
        Spacing,
    )

    spec = PreprocessingSpec.model_validate_json(spec_json)
    chain: list = []
    intensity = spec.intensity
    if intensity.kind == "window":
        low, high = intensity.center - intensity.width / 2, intensity.center + intensity.width / 2
        chain.append(ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    elif intensity.kind == "range":
        chain.append(ScaleIntensityRange(a_min=intensity.low, a_max=intensity.high, b_min=0.0, b_max=1.0, clip=True))
    else:
        chain.append(
            ScaleIntensityRangePercentiles(
                lower=intensity.lower, upper=intensity.upper, b_min=0.0, b_max=1.0, clip=True
            )
        )
    if spec.target_spacing is not None:
        chain.append(Spacing(pixdim=tuple(spec.target_spacing), mode="bilinear", padding_mode="border"))
    if spec.spatial_dims == 3:
        chain.append(ResizeWithPadOrCrop(spatial_size=tuple(spec.target_shape), mode="constant"))
    else:
        chain.append(Resize(spatial_size=tuple(spec.target_shape), mode="bilinear", anti_aliasing=True))
    return tuple(chain)
