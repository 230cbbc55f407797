"""A real Orthanc per test (it starts in about a second) and synthetic cohorts to upload into it."""

from __future__ import annotations

import pytest

from medtl.datasets.synth import make_cohort
from support.orthanc import PASSWORD, USER, Orthanc


@pytest.fixture
def pacs_credentials(monkeypatch):
    monkeypatch.delenv("MEDTL_PACS_CREDENTIALS", raising=False)
    monkeypatch.delenv("MEDTL_PACS_TOKEN", raising=False)
    monkeypatch.setenv("MEDTL_PACS_USERNAME", USER)
    monkeypatch.setenv("MEDTL_PACS_PASSWORD", PASSWORD)


@pytest.fixture
def orthanc(tmp_path, pacs_credentials):
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six patients of synthetic CT (with scouts) and DX, all valid DICOM, and labels with accession numbers."""
    root = tmp_path_factory.mktemp("pacs-cohort")
    make_cohort(root, patients=6, seed=7)
    return root
