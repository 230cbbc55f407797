"""A tiny on-disk task (2D, learnable) for unit tests of the training loop, without going through ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.contracts import PreprocessingSpec
from medtl.training.data import TaskData


def make_task(root: Path, n_patients: int = 24, size: int = 16, seed: int = 0) -> TaskData:
    """Class 1 images carry a bright square; class 0 do not. One scan per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_patients):
        label = index % 2
        image = rng.random((1, size, size), dtype=np.float32) * 0.3
        if label:
            image[:, 4:10, 4:10] += 0.6
        relative = f"tensors/{index:03d}.npy"
        (root / "tensors").mkdir(parents=True, exist_ok=True)
        np.save(root / relative, image)
        rows.append(
            {
                "scan_id": f"X-{index:016x}",
                "patient_id": f"P-{index:016x}",
                "study_id": None,
                "label": str(label),
                "target": label,
                "split": None,
                "modality": "DX",
                "tensor_path": relative,
            }
        )
    spec = PreprocessingSpec(spatial_dims=2, target_shape=[size, size])
    return TaskData(
        dataset=root,
        scans=pd.DataFrame(rows),
        classes=["0", "1"],
        positive_class="1",
        spec=spec,
        spec_hash="c" * 64,
        manifest_hash="d" * 64,
        fingerprint_hash="e" * 64,
    )


@pytest.fixture
def tiny_task(tmp_path: Path) -> TaskData:
    return make_task(tmp_path)
