"""The small trained artifact several test areas need: a synthetic cohort, ingested at 16x16x8, a ResNet-18 trained
for a step or two, signed with a key made for the test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision.models as tvm
import yaml
from safetensors.torch import save_file

from medtl.artifacts import generate_signing_key
from medtl.contracts import PreprocessingSpec
from medtl.datasets.synth import make_cohort
from medtl.hashing import sha256_file
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from medtl.training.config import TrainConfig

TINY_SPEC = PreprocessingSpec(spatial_dims=3, target_spacing=[3.0, 3.0, 6.0], target_shape=[16, 16, 8])
DEV_PSEUDONYMIZER = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration, then put the previous values back."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def signing_key(path: Path) -> Iterator[Path]:
    """A fresh pipeline key in MEDTL_SIGNING_KEY, its public key as the trust anchor (MEDTL_TRUSTED_KEYS), and a
    reviewer's own key (MEDTL_REVIEWER_KEY, its public key in MEDTL_APPROVER_KEYS) for the duration."""
    generate_signing_key(path)
    reviewer = path.with_name(path.stem + "-reviewer.pem")
    generate_signing_key(reviewer)
    with environment(
        MEDTL_SIGNING_KEY=str(path), MEDTL_TRUSTED_KEYS=f"{path}.pub", MEDTL_REVIEWER_KEY=str(reviewer),
        MEDTL_APPROVER_KEYS=f"{reviewer}.pub",
    ):  # fmt: skip
        yield path


TINY_SETTINGS = {
    "model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full"}, "arms": [], "epochs": 1,
    "batch_size": 8, "cv": {"n_folds": 2}, "early_stopping": {"min_epochs": 1},
}  # fmt: skip


def tiny_config(**overrides: object) -> TrainConfig:
    return TrainConfig.model_validate({**TINY_SETTINGS, **overrides})


def write_tiny_config(path: Path, **overrides: object) -> Path:
    """The same settings as a train.yaml, for flows that take a config file."""
    path.write_text(yaml.safe_dump({**TINY_SETTINGS, **overrides}), encoding="utf-8")
    return path


def ingested_cohort(root: Path, name: str, *, patients: int, seed: int, **cohort: object) -> Path:
    """ROOT/NAME (synthetic DICOM + labels) ingested into ROOT/NAME-data, which is returned."""
    make_cohort(root / name, patients=patients, seed=seed, **cohort)
    ingest_sources([root / name / "dicom"], out=root / f"{name}-data", labels=root / name / "labels.csv",
                   spec=TINY_SPEC, pseudonymizer=DEV_PSEUDONYMIZER, workers=1)  # fmt: skip
    return root / f"{name}-data"


def pretrained_file(folder: Path, seed: int = 5) -> dict[str, str]:
    """A local resnet18 state dict (torchvision's keys, random values) as a `file` weight source: a config using it
    counts as pretrained, so its comparison arms (linear probe, scratch) are trained."""
    torch.manual_seed(seed)
    path = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in tvm.resnet18(weights=None).state_dict().items()}, path)
    return {"source": "file", "path": str(path), "sha256": sha256_file(path)}
