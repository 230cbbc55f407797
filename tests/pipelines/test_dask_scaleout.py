"""Scale-out: CV folds and scoring chunks on a Dask cluster (a real `prefect server start` on loopback and a
LocalCluster with two worker processes) really run on the workers and give the same results as in one process."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from prefect import flow, task
from prefect.settings import PREFECT_API_URL, temporary_settings

from medtl.scoring.score import score
from pipelines.runners import GPU, needs_gpu, on_dask
from pipelines.score import ScoreParameters, score_flow
from pipelines.server import local_prefect_server
from pipelines.train import TrainParameters, train_flow
from support.trained import DEV_PSEUDONYMIZER, write_tiny_config

DaskTaskRunner = pytest.importorskip("prefect_dask").DaskTaskRunner
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_url(tmp_path_factory):
    """One real Prefect server for the module's tests: starting one takes ~10 s."""
    with local_prefect_server(tmp_path_factory.mktemp("prefect-home")) as url:
        yield url


def test_folds_run_on_both_workers_and_equal_a_sequential_run(trained, prefect_url, tmp_path, monkeypatch):
    write_tiny_config(tmp_path / "train.yaml", cv={"n_folds": 3}, seed=5, final_model="ensemble")
    dataset = trained / "dev-data"

    def params(name: str) -> TrainParameters:
        return TrainParameters(dataset=dataset, out=tmp_path / name, config=tmp_path / "train.yaml")

    scoring = ScoreParameters(artifact=trained / "artifact", sources=[trained / "dev" / "dicom"],
                              out=tmp_path / "scores-dask", allow_unapproved=True, chunk_size=3,
                              allow_development_key=True)  # fmt: skip
    monkeypatch.setenv("PREFECT_API_URL", prefect_url)  # the worker processes read it from their environment
    with temporary_settings(updates={PREFECT_API_URL: prefect_url}):
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


@task
def hold(seconds: float) -> tuple[float, float]:
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


@flow
def two_tasks(on_gpu: bool) -> list[tuple[float, float]]:
    with needs_gpu(on_gpu):
        futures = [hold.submit(2.0) for _ in range(2)]
    return [future.result() for future in futures]


def test_gpu_tasks_take_the_gpu_resource_so_one_gpu_runs_one_at_a_time(prefect_url, monkeypatch):
    """One worker with two threads and one GPU: plain tasks overlap, GPU-annotated tasks queue for the GPU."""
    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": 1, "threads_per_worker": 2, "processes": False, "resources": {GPU: 1}, "dashboard_address": None,
    })  # fmt: skip
    monkeypatch.setenv("PREFECT_API_URL", prefect_url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_url}):
        plain = two_tasks.with_options(task_runner=runner)(False)
        on_gpu = two_tasks.with_options(task_runner=runner.duplicate())(True)

    def overlap(spans: list[tuple[float, float]]) -> float:
        first, second = sorted(spans)
        return first[1] - second[0]  # seconds both were running

    assert overlap(plain) > 1.0  # two threads, no resource: both at once
    assert overlap(on_gpu) <= 0.05  # one GPU: the second waits for the first
