"""Scale-out: CV folds and scoring chunks on a Dask cluster (a real `prefect server start` on loopback and a
LocalCluster with two worker processes) really run on the workers and give the same results as in one process."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from medtl.scoring.score import score
from pipelines.runners import on_dask
from pipelines.score import ScoreParameters, score_flow
from pipelines.server import local_prefect_server
from pipelines.train import TrainParameters, train_flow
from support.trained import DEV_PSEUDONYMIZER

pytest.importorskip("prefect_dask")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full"}, "arms": [], "epochs": 1,
    "batch_size": 8, "cv": {"n_folds": 3}, "early_stopping": {"min_epochs": 1}, "seed": 5, "final_model": "ensemble",
}  # fmt: skip


def test_folds_run_on_both_workers_and_equal_a_sequential_run(trained, tmp_path, monkeypatch):
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    dataset = trained / "dev-data"

    def params(name: str) -> TrainParameters:
        return TrainParameters(dataset=dataset, out=tmp_path / name, config=tmp_path / "train.yaml")

    scoring = ScoreParameters(artifact=trained / "artifact", sources=[trained / "dev" / "dicom"],
                              out=tmp_path / "scores-dask", allow_unapproved=True, chunk_size=3,
                              allow_development_key=True)  # fmt: skip
    with local_prefect_server(tmp_path / "prefect-home") as url:
        monkeypatch.setenv("PREFECT_API_URL", url)  # the worker processes read it from their environment
        with temporary_settings(updates={PREFECT_API_URL: url}):
            spread = on_dask(train_flow, n_workers=2)(params("on-dask"))
            scored = on_dask(score_flow, n_workers=2)(scoring)
    monkeypatch.delenv("PREFECT_API_URL")
    sequential = train_flow(params("sequential"))

    assert len(spread["folds"]) == 3
    assert len({fold["worker"] for fold in spread["folds"]}) == 2  # both worker processes trained folds
    assert {fold["worker"] for fold in sequential["folds"]} == {"local"}
    on_dask_oof = pd.read_parquet(tmp_path / "on-dask" / "predictions" / "oof.parquet").sort_values("scan_id")
    local_oof = pd.read_parquet(tmp_path / "sequential" / "predictions" / "oof.parquet").sort_values("scan_id")
    assert on_dask_oof.scan_id.tolist() == local_oof.scan_id.tolist()
    assert on_dask_oof.fold.tolist() == local_oof.fold.tolist()  # same patient-grouped split
    # Same seed, same folds: the same numbers up to float summation order (worker processes use fewer threads).
    assert (on_dask_oof.probability - local_oof.probability).abs().max() < 1e-4
    assert spread["oof_auc"] == pytest.approx(sequential["oof_auc"], abs=1e-3)

    # Scoring chunks on the workers give the rows the library gives in one process.
    score(trained / "artifact", scoring.sources, out=tmp_path / "scores-local", pseudonymizer=DEV_PSEUDONYMIZER,
          allow_unapproved=True, workers=1)  # fmt: skip
    on_workers = pd.read_parquet(tmp_path / "scores-dask" / "scores.parquet").sort_values("scan_id", ignore_index=True)
    local = pd.read_parquet(tmp_path / "scores-local" / "scores.parquet").sort_values("scan_id", ignore_index=True)
    assert scored["chunks"] > 2 and on_workers.scan_id.tolist() == local.scan_id.tolist()
    assert (on_workers.probability.fillna(-1) - local.probability.fillna(-1)).abs().max() < 1e-4
    assert [list(f) for f in on_workers["flags"]] == [list(f) for f in local["flags"]]
