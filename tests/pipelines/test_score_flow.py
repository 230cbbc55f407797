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


def test_chunks_scored_in_parallel_threads_equal_the_library_run(trained, tmp_path):
    """Chunks share one model; running them at once must not mix one chunk's features into another's flags."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from medtl.scoring.score import score
    from support.trained import DEV_PSEUDONYMIZER

    sources = [trained / "dev" / "dicom"]
    score(trained / "artifact", sources, out=tmp_path / "library", pseudonymizer=DEV_PSEUDONYMIZER,
          allow_unapproved=True, workers=1)  # fmt: skip
    parallel = score_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=4))
    params = ScoreParameters(artifact=trained / "artifact", sources=sources, out=tmp_path / "threads",
                             allow_unapproved=True, chunk_size=2, batch_size=2, allow_development_key=True)  # fmt: skip
    parallel(params)

    def rows(name: str) -> pd.DataFrame:
        table = pd.read_parquet(tmp_path / name / "scores.parquet")
        return table[["scan_id", "probability", "decision", "flags"]].sort_values("scan_id", ignore_index=True)

    library, threads = rows("library"), rows("threads")
    assert library.scan_id.tolist() == threads.scan_id.tolist() and len(library) > 4
    assert (library.probability.fillna(-1) - threads.probability.fillna(-1)).abs().max() < 1e-5
    assert [list(f) for f in library["flags"]] == [list(f) for f in threads["flags"]]
    assert library.decision.tolist() == threads.decision.tolist()
