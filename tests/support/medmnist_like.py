"""Small real datasets in MedMNIST's format: archives made here, imported and ingested as a user would (official
train/val/test splits included, so the test split is a locked test set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtl.contracts import PreprocessingSpec
from medtl.datasets.medmnist import image_size, import_medmnist
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources

SIZES = {"train": 48, "val": 8, "test": 16}


def _images_2d(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Class 1 carries a bright square in a random place; class 0 does not."""
    images = rng.integers(0, 90, size=(len(labels), 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        if label:
            row, col = rng.integers(2, 16, size=2)
            images[index, row : row + 9, col : col + 9] = 230
    return images


def _masks_3d(rng: np.random.Generator, labels: np.ndarray, side: int = 28) -> np.ndarray:
    """Binary shape masks (every scan looks like a label map): class 1 is the larger blob."""
    grid = np.indices((side,) * 3).transpose(1, 2, 3, 0) - (side - 1) / 2
    volumes = np.zeros((len(labels), side, side, side), dtype=np.uint8)
    scale = side / 28
    for index, label in enumerate(labels):
        radius = ((8.0 if label else 5.0) + rng.uniform(-1, 1)) * scale
        volumes[index] = (np.linalg.norm(grid, axis=-1) < radius).astype(np.uint8) * 255
    return volumes


def make_dataset(root: Path, name: str, *, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """A MedMNIST-format archive of a learnable task, imported with `import_medmnist` and ingested at the size its
    name promises (e.g. adrenalmnist3d_64: 64 voxels a side)."""
    rng = np.random.default_rng(seed)
    side = image_size(name)
    volumes = "3d" in name
    arrays = {}
    for split, n in (sizes or SIZES).items():
        labels = (np.arange(n) % 3 == 0).astype(np.uint8)  # a third positive: an imbalanced task
        rng.shuffle(labels)
        images = _masks_3d(rng, labels, side) if volumes else _images_2d(rng, labels)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    archive = root / f"{name}.npz"
    np.savez_compressed(archive, **arrays)
    files = root / f"{name}-files"
    import_medmnist(name, source=str(archive), out=files, progress=False)
    dims = 3 if volumes else 2
    spec = PreprocessingSpec(
        spatial_dims=dims, target_spacing=None, target_shape=[side] * dims,
        intensity={"kind": "range", "low": 0.0, "high": 255.0},
    )  # fmt: skip
    dataset = root / f"{name}-dataset"
    ingest_sources(
        [files], out=dataset, labels=files / "labels.csv", spec=spec,
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
    )  # fmt: skip
    return dataset
