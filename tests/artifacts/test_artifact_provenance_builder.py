"""Provenance collection (git, environment, hardware, Prefect run id) and the builder's rules for names and formats."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from artifact_support import PHI

from medtl.artifacts import ArtifactBuilder, collect_provenance, environment_lock, seal
from medtl.artifacts.provenance import code_version
from medtl.errors import ConfigError, DataContractError

GIT = shutil.which("git")


def _provenance(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "manifest_hash": "a" * 64,
        "fingerprint_hash": "b" * 64,
        "split_hash": "c" * 64,
        "pretrained": {
            "source": "torchvision",
            "name": "resnet18.IMAGENET1K_V1",
            "sha256": "e" * 64,
            "license": "BSD-3-Clause",
        },
        "seed": 3,
        "started_at": "2025-01-01T00:00:00Z",
        "environment": "x==1\n",
    }
    args.update(overrides)
    return collect_provenance(**args)


def test_provenance_fields() -> None:
    record = _provenance(seeds={"split": 3})
    assert record["seed"] == 3 and record["seeds"] == {"split": 3}
    assert set(record["packages"]) >= {
        "torch",
        "torchvision",
        "monai",
        "numpy",
        "pydicom",
        "nibabel",
        "scikit-learn",
        "prefect",
        "medtl",
    }
    assert record["packages"]["numpy"] != "not installed"
    assert record["hardware"]["cpu_count"] >= 1 and record["hardware"]["cpu"]
    assert record["hardware"]["gpu"] is None or record["hardware"]["cuda"]
    assert record["flow_run_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*", record["finished_at"])
    assert record["pretrained"]["sha256"] == "e" * 64
    assert record["code_version"].startswith(("git:", "package:"))


def test_flow_run_id_from_environment_or_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "1b2c3d4e-run")
    assert _provenance()["flow_run_id"] == "1b2c3d4e-run"
    assert _provenance(flow_run_id="explicit")["flow_run_id"] == "explicit"


def test_pretrained_weights_need_hash_and_license() -> None:
    with pytest.raises(DataContractError, match="sha256 and a license"):
        _provenance(pretrained={"source": "torchvision", "name": "resnet18"})
    assert _provenance(pretrained={"source": "none", "name": "scratch"})["pretrained"]["sha256"] is None


def test_environment_lock_lists_installed_distributions() -> None:
    lock = environment_lock()
    assert lock == sorted(lock) and all(re.fullmatch(r"[a-z0-9-]+==\S+", line) for line in lock)
    assert any(line.startswith("torch==") for line in lock) and any(line.startswith("medtl==") for line in lock)


@pytest.mark.skipif(GIT is None, reason="git not installed")
def test_code_version_from_a_git_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "module.py").write_text("x = 1\n")
    git("add", "module.py")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "init")
    clean = code_version(tmp_path)
    assert clean["kind"] == "git" and re.fullmatch(r"[0-9a-f]{40}", clean["commit"]) and clean["dirty"] is False
    (tmp_path / "module.py").write_text("x = 2\n")
    assert code_version(tmp_path)["dirty"] is True
    (tmp_path / "sub").mkdir()
    assert code_version(tmp_path / "sub")["kind"] == "package"  # inside a repository is not the repository


def test_the_library_does_not_import_prefect() -> None:
    code = (
        "import sys, medtl.artifacts as a\n"
        "a.collect_provenance(manifest_hash='a'*64, fingerprint_hash='b'*64, split_hash='c'*64,"
        " pretrained={'source': 'none', 'name': 'scratch'}, seed=1, started_at='2025-01-01T00:00:00Z')\n"
        "assert 'prefect' not in sys.modules, 'prefect imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    "name",
    [
        "../escape.json",
        "/abs.json",
        ".hidden.json",
        "a b.json",
        "dir//x.json",
        "manifest.json",
        "audit.jsonl",
        "signature.bin",
        "model.pt",
        "model.pth",
        "learner.pkl",
        "arrays.npz",
        "tool.exe",
        "noext",
        "x\\y.json",
    ],
)
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        ArtifactBuilder(tmp_path / "a").add_json(name, {})


def test_builder_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        ArtifactBuilder(tmp_path / "a")


def test_builder_values_are_plain_json(tmp_path: Path) -> None:
    builder = ArtifactBuilder(tmp_path / "a")
    with pytest.raises(ConfigError, match="null"):
        builder.add_json("metrics/pooled.json", {"auroc": float("nan")})
    with pytest.raises(ConfigError, match="weights name"):
        builder.add_weights("../x", {"w": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"\.parquet"):
        builder.add_table("table.csv", pd.DataFrame({"a": [1]}))


def test_shared_tensors_are_stored_as_copies(tmp_path: Path) -> None:
    builder = ArtifactBuilder(tmp_path / "a")
    shared = torch.arange(4.0)
    builder.add_weights("tied", {"a": shared, "b": shared, "view": shared[1:3]})
    from safetensors.torch import load_file

    loaded = load_file(tmp_path / "a" / "weights" / "tied.safetensors")
    assert torch.equal(loaded["view"], torch.tensor([1.0, 2.0])) and torch.equal(loaded["a"], loaded["b"])


def test_seal_requires_metadata_and_weights(tmp_path: Path, keys: dict[str, Any]) -> None:
    builder = ArtifactBuilder(tmp_path / "a")
    builder.add_json("notes.json", {})
    with pytest.raises(ConfigError, match=r"metadata\.json"):
        builder.seal(signing_key=keys["private"], phi_terms=PHI)
    with pytest.raises(ConfigError, match="add_metadata"):
        builder.add_model_card()


def test_seal_checks_the_environment_hash(tmp_path: Path, build: Any, keys: dict[str, Any]) -> None:
    built = build(tmp_path / "a", seal=False)
    (built.folder / "environment.txt").write_text("something==else\n")
    with pytest.raises(ConfigError, match=r"environment\.txt"):
        seal(built.folder, signing_key=keys["private"], phi_terms=PHI)


def test_seal_accepts_a_phi_terms_path(tmp_path: Path, build: Any, keys: dict[str, Any]) -> None:
    terms = tmp_path / "private" / "phi_terms.json"
    terms.parent.mkdir()
    terms.write_text(json.dumps(PHI.model_dump()))
    built = build(tmp_path / "a", signing_key=keys["private"], phi_terms=terms)
    assert len(built.manifest_hash) == 64
