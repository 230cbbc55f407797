"""One temporary Prefect server for the whole pipelines test session (it takes 8-14 s to start), and one small
trained artifact shared by the flows that need one (tests that change it work on a copy)."""

from __future__ import annotations

import os

import pytest

from medtl.artifacts import generate_signing_key
from medtl.contracts import PreprocessingSpec
from medtl.datasets.synth import make_cohort
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from medtl.training.config import TrainConfig
from medtl.training.train import train


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    previous = {key: os.environ.get(key) for key in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """ROOT with dev/ (synthetic DICOM), dev-data/ (ingested) and artifact/ (signed with ROOT/key.pem)."""
    root = tmp_path_factory.mktemp("trained")
    generate_signing_key(root / "key.pem")
    previous = os.environ.get("MEDTL_SIGNING_KEY")
    os.environ["MEDTL_SIGNING_KEY"] = str(root / "key.pem")
    make_cohort(root / "dev", patients=12, seed=41)
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[3.0, 3.0, 6.0], target_shape=[16, 16, 8])
    ingest_sources([root / "dev" / "dicom"], out=root / "dev-data", labels=root / "dev" / "labels.csv", spec=spec,
                   pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"), workers=1)  # fmt: skip
    config = TrainConfig.model_validate(
        {"model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full"}, "arms": [],
         "epochs": 1, "batch_size": 8, "cv": {"n_folds": 2}, "early_stopping": {"min_epochs": 1}}
    )  # fmt: skip
    train(root / "dev-data", config, root / "artifact")
    yield root
    if previous is None:
        os.environ.pop("MEDTL_SIGNING_KEY", None)
    else:
        os.environ["MEDTL_SIGNING_KEY"] = previous
