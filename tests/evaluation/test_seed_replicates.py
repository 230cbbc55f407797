"""Seed replicates: only an artifact of the same recipe with another seed is accepted, and the spread is right."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from medtl.contracts.artifact import ArtifactMetadata
from medtl.contracts.evaluation import Estimate, SeedRun
from medtl.errors import ConfigError
from medtl.evaluation.replicates import check_replicates, replicate_differences, spread_summary

CONFIG = {"seed": 0, "epochs": 3, "model": {"backbone": "resnet18"}, "cv": {"n_folds": 2}}


def _metadata(**changes: Any) -> ArtifactMetadata:
    provenance = {
        "medtl_version": "0.1.0", "code_version": "package:0.1.0", "code": {"kind": "package", "version": "0.1.0"},
        "python": "3.12", "packages": {"torch": "2.4.0"}, "manifest_hash": "a" * 64, "fingerprint_hash": "b" * 64,
        "split_hash": "c" * 64, "seed": 0, "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:10:00Z",
        "hardware": {"platform": "linux", "machine": "x86_64", "cpu": "cpu", "cpu_count": 2},
        "pretrained": {"source": "none", "name": "none"},
    }  # fmt: skip
    provenance.update(changes.pop("provenance", {}))
    data = {
        "model_id": "m", "model_version": "1.0.0", "intended_use": "research",
        "task": {"kind": "binary", "classes": ["0", "1"], "positive_class": "1"},
        "input": {"modalities": ["CT"], "image_kind": "volume", "channels": 1, "spatial_shape": [16, 16, 8],
                  "value_range": [0, 1]},
        "output": {"probability": "P(1)"}, "model": {"backbone": "resnet18"}, "preprocessing_hash": "d" * 64,
        "config_hash": "e" * 64, "provenance": provenance,
    }  # fmt: skip
    data.update(changes)
    return ArtifactMetadata.model_validate(data)


def _contents(name: str, *, config: dict[str, Any] | None = None, manifest: str | None = None, **changes: Any):
    """What the replicate check reads of an opened artifact: its metadata, task, config.yaml and manifest hash."""
    metadata = _metadata(**changes)
    verified = SimpleNamespace(
        folder=Path(name), manifest_hash=manifest or name[0] * 64,
        read_yaml=lambda _name: dict(config or {**CONFIG, "seed": metadata.provenance.seed}),
    )  # fmt: skip
    return SimpleNamespace(metadata=metadata, task=metadata.task, verified=verified)


def test_an_artifact_differing_only_in_seed_and_split_is_a_replicate():
    reference = _contents("a")
    other = _contents("b", provenance={"seed": 1, "split_hash": "f" * 64})
    assert replicate_differences(reference, other) == []
    check_replicates(reference, [other])


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"provenance": {"seed": 1, "manifest_hash": "9" * 64}}, "the data manifest"),
        ({"provenance": {"seed": 1, "fingerprint_hash": "9" * 64}}, "the dataset fingerprint"),
        ({"provenance": {"seed": 1}, "preprocessing_hash": "9" * 64}, "the preprocessing"),
        ({"provenance": {"seed": 1, "code_version": "package:0.2.0"}}, "the code version"),
        (
            {
                "provenance": {
                    "seed": 1,
                    "pretrained": {"source": "file", "name": "w", "sha256": "9" * 64, "license": "CC0"},
                }
            },
            "the pretrained weights",
        ),
        (
            {"provenance": {"seed": 1}, "task": {"kind": "binary", "classes": ["0", "1"], "positive_class": "0"}},
            "the task",
        ),
        ({"provenance": {"seed": 1}, "config": {**CONFIG, "seed": 1, "epochs": 4}}, "the training config"),
    ],
)
def test_a_replicate_trained_on_anything_else_is_refused_naming_what_differs(changes, named):
    other = _contents("b", **changes)
    with pytest.raises(ConfigError, match=f"not a seed replicate.*{named}") as caught:
        check_replicates(_contents("a"), [other])
    assert caught.value.where == "b" and "only `seed`" in caught.value.fix


def test_the_same_seed_twice_and_the_artifact_itself_are_refused():
    with pytest.raises(ConfigError, match="seed 0 appears twice"):
        check_replicates(_contents("a"), [_contents("b")])
    with pytest.raises(ConfigError, match="the evaluated artifact itself"):
        check_replicates(_contents("a"), [_contents("a2", manifest="a" * 64, provenance={"seed": 1})])


def test_spread_summary_is_median_range_and_sample_sd():
    runs = [
        SeedRun(seed=s, model_version="1", artifact_manifest_hash="a" * 64,
                estimates=[Estimate(name="auroc", value=v)] + ([Estimate(name="brier", value=0.1)] if s == 0 else []))
        for s, v in ((0, 0.70), (1, 0.80), (2, 0.90), (3, 0.86))
    ]  # fmt: skip
    (auroc,) = spread_summary(runs)  # the Brier score of one run has no spread
    assert auroc.name == "auroc" and auroc.n_runs == 4
    assert auroc.median == pytest.approx(0.83) and (auroc.minimum, auroc.maximum) == (0.70, 0.90)
    mean = (0.70 + 0.80 + 0.90 + 0.86) / 4
    sd = (sum((v - mean) ** 2 for v in (0.70, 0.80, 0.90, 0.86)) / 3) ** 0.5
    assert auroc.sd == pytest.approx(sd)
