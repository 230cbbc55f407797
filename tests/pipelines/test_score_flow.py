"""The scoring flow: chunks as tasks, the same rows as the library, nothing scored twice."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.score import ScoreParameters, score_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flow_scores_in_chunks_and_a_rerun_scores_nothing(trained):
    root = trained
    params = ScoreParameters(artifact=root / "artifact", sources=[root / "dev" / "dicom"],
                             out=root / "scores", allow_unapproved=True, chunk_size=4,
                             allow_development_key=True)  # fmt: skip
    first = score_flow(params)
    rows = pd.read_parquet(root / "scores" / "scores.parquet")
    assert first["scored"] == len(rows) > 4 and first["chunks"] == -(-len(rows) // 4)
    assert rows.scan_id.is_unique and not list((root / "scores" / "parts").glob("*.parquet"))
    second = score_flow(params)
    assert second["scored"] == 0 and second["already_scored"] == len(rows) and second["chunks"] == 0


def test_bad_parameters_fail_before_any_scan_is_read(trained, tmp_path):
    root = trained
    with pytest.raises(ValueError):
        ScoreParameters(artifact=root / "artifact", sources=[], out=tmp_path / "x")
    with pytest.raises(ValueError):
        ScoreParameters(artifact=root / "artifact", sources=[tmp_path], out=tmp_path / "x", policy="guess")
