"""A real Orthanc per test (it starts in about a second) and synthetic cohorts to upload into it."""

from __future__ import annotations

import pytest

from medtl.datasets.synth import make_cohort
from support.orthanc import orthanc, pacs_credentials  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six patients of synthetic CT (with scouts) and DX, all valid DICOM, and labels with accession numbers."""
    root = tmp_path_factory.mktemp("pacs-cohort")
    make_cohort(root, patients=6, seed=7)
    return root
