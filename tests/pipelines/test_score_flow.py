"""The scoring flow: chunks as tasks, the same rows as the library, nothing scored twice."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from medtl.artifacts import generate_signing_key
from medtl.contracts import PreprocessingSpec
from medtl.datasets.synth import make_cohort
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from medtl.training.config import TrainConfig
from medtl.training.train import train
from pipelines.score import ScoreParameters, score_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-flow")
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


def test_flow_scores_in_chunks_and_a_rerun_scores_nothing(artifact):
    params = ScoreParameters(artifact=artifact / "artifact", sources=[artifact / "dev" / "dicom"],
                             out=artifact / "scores", allow_unapproved=True, chunk_size=4,
                             allow_development_key=True)  # fmt: skip
    first = score_flow(params)
    rows = pd.read_parquet(artifact / "scores" / "scores.parquet")
    assert first["scored"] == len(rows) > 4 and first["chunks"] == -(-len(rows) // 4)
    assert rows.scan_id.is_unique and not list((artifact / "scores" / "parts").glob("*.parquet"))
    second = score_flow(params)
    assert second["scored"] == 0 and second["already_scored"] == len(rows) and second["chunks"] == 0


def test_bad_parameters_fail_before_any_scan_is_read(artifact, tmp_path):
    with pytest.raises(ValueError):
        ScoreParameters(artifact=artifact / "artifact", sources=[], out=tmp_path / "x")
    with pytest.raises(ValueError):
        ScoreParameters(artifact=artifact / "artifact", sources=[tmp_path], out=tmp_path / "x", policy="guess")
