"""Small real datasets for the planner: MedMNIST-format archives made here, imported and ingested as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.medmnist_like import make_dataset


@pytest.fixture(scope="session")
def dataset_2d(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("plan2d"), "breastmnist")


@pytest.fixture(scope="session")
def dataset_3d_masks(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("plan3d"), "adrenalmnist3d", sizes={"train": 24, "val": 4, "test": 6})
