"""Fixtures for the artifact tests: signing keys, provenance, and a complete sealed artifact built once per session.

Tests that tamper with the artifact work on a copy (`artifact`). Helpers live in artifact_support.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from artifact_support import PHI, Built, write_contents

from medtl.artifacts import ArtifactBuilder, collect_provenance, environment_text, generate_signing_key


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    main_hex = generate_signing_key(folder / "signer.pem")
    other_hex = generate_signing_key(folder / "other.pem")
    return {
        "private": folder / "signer.pem",
        "public": folder / "signer.pem.pub",
        "hex": main_hex,
        "other_private": folder / "other.pem",
        "other_public": folder / "other.pem.pub",
        "other_hex": other_hex,
    }


@pytest.fixture(scope="session")
def environment() -> str:
    return environment_text()


@pytest.fixture(scope="session")
def provenance(environment: str) -> dict[str, Any]:
    return collect_provenance(
        manifest_hash="a" * 64,
        fingerprint_hash="b" * 64,
        split_hash="c" * 64,
        pretrained={"source": "file", "name": "tiny-pretrained", "sha256": "d" * 64, "license": "CC0-1.0"},
        seed=7,
        seeds={"split": 7, "init": 8, "loader": 9, "augment": 10},
        started_at="2025-01-02T03:04:05.000Z",
        finished_at="2025-01-02T03:14:05.000Z",
        flow_run_id=None,
        environment=environment,
    )


@pytest.fixture(scope="session")
def build(provenance: dict[str, Any], environment: str) -> Callable[..., Built]:
    """build(folder, signing_key=..., phi_terms=PHI, allow_unsigned=False, extra=callable(builder)) -> Built."""

    def _build(
        folder: Path, *, seal: bool = True, extra: Callable[[ArtifactBuilder], None] | None = None, **seal_args: Any
    ) -> Built:
        builder = ArtifactBuilder(folder)
        built = write_contents(builder, provenance, environment)
        if extra is not None:
            extra(builder)
        if seal:
            seal_args.setdefault("phi_terms", PHI)
            seal_args.setdefault("actor", "ci-pipeline")
            built.manifest_hash = builder.seal(**seal_args)
        return built

    return _build


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory, build: Callable[..., Built], keys: dict[str, Any]) -> Built:
    return build(tmp_path_factory.mktemp("pristine") / "artifact", signing_key=keys["private"])


@pytest.fixture
def artifact(tmp_path: Path, pristine: Built) -> Path:
    """A fresh copy of the signed artifact, free to tamper with."""
    target = tmp_path / "copy" / "artifact"
    shutil.copytree(pristine.folder, target)
    return target


@pytest.fixture(autouse=True)
def _key_environment(monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any]) -> None:
    """The site's configuration: the test signer is the artifact anchor; nothing else is set."""
    for name in (
        "MEDTL_SIGNING_KEY", "MEDTL_ALLOW_UNSIGNED", "MEDTL_ALLOW_UNTRUSTED", "MEDTL_APPROVER_KEYS",
        "MEDTL_REVIEWER_KEY", "PREFECT__FLOW_RUN_ID",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDTL_TRUSTED_KEYS", str(keys["public"]))


@pytest.fixture
def reviewer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clinician's own key, listed as an approver where artifacts are read."""
    key = tmp_path / "keys" / "reviewer.pem"
    generate_signing_key(key)
    monkeypatch.setenv("MEDTL_APPROVER_KEYS", f"{key}.pub")
    return key


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A report folder whose report.html an evaluation can list and a reviewer can approve."""
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.html").write_text("<html>AUROC 0.91</html>")
    return folder
