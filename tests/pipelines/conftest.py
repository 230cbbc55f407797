"""One temporary Prefect server for the whole pipelines test session (it takes 8-14 s to start), and one small
trained artifact shared by the flows that need one (tests that change it work on a copy)."""

from __future__ import annotations

import os

import pytest

from medtl.training.train import train
from support.environment import environment_restored
from support.orthanc import orthanc, pacs_credentials  # noqa: F401 - fixtures for the PACS flow test
from support.trained import ingested_cohort, signing_key, tiny_config


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with environment_restored(("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")):
        os.environ["PREFECT_HOME"] = str(home)
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """ROOT with dev/ (synthetic DICOM), dev-data/ (ingested) and artifact/ (signed with ROOT/key.pem)."""
    root = tmp_path_factory.mktemp("trained")
    with signing_key(root / "key.pem"):
        train(ingested_cohort(root, "dev", patients=12, seed=41), tiny_config(), root / "artifact")
        yield root
