"""Ingest scale-out: the ingest flow decodes series as tasks on a 2-worker Dask cluster (a real `prefect server
start` on loopback) and writes the manifest a local run writes, re-runs included."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from medtl.datasets.synth.archive import SOURCE, ArchiveOptions, iter_expected, make_archive
from medtl.ingest.pipeline import ingest_sources
from pipelines.ingest import IngestParameters, ingest_flow
from pipelines.runners import on_dask
from pipelines.server import local_prefect_server
from support.outcomes import fates_by_path, sorted_manifest
from support.trained import DEV_PSEUDONYMIZER

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_ingest_on_two_dask_workers_equals_a_local_run_and_so_does_its_rerun(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream

    archive = tmp_path / "archive"
    make_archive(archive, ArchiveOptions(series=14, seed=11, slices=(3, 6), matrix=32, bad_fraction=0.25))
    source = archive / SOURCE
    an_hour_ago = time.time() - 3600  # older than the runs that read them: no racy re-hashing
    for path in source.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    expected = {row["relative_path"]: (row["status"], row["reason_code"]) for row in iter_expected(archive)}
    assert {status for status, _ in expected.values()} == {"ingested", "skipped", "quarantined"}

    def params() -> IngestParameters:
        return IngestParameters(sources=[source], out=tmp_path / "on-dask", workers=1, allow_development_key=True)

    def local(name: str):
        return ingest_sources([source], out=tmp_path / name, pseudonymizer=DEV_PSEUDONYMIZER, workers=2)

    with (
        local_prefect_server(tmp_path / "prefect-home") as url,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as observer,
        get_task_stream(observer) as stream,  # every task the workers ran, with the worker that ran it
    ):
        monkeypatch.setenv("PREFECT_API_URL", url)  # the worker processes read it from their environment
        with temporary_settings(updates={PREFECT_API_URL: url}):
            first = on_dask(ingest_flow, address=cluster.scheduler_address)(params())
            # a re-run after one slice vanished: only that series is read again, on the workers
            gone = next(path for path, (status, _) in sorted(expected.items()) if status == "ingested")
            (source / gone).unlink()
            second = on_dask(ingest_flow, address=cluster.scheduler_address)(params())
            monkeypatch.delenv("PREFECT_API_URL")
    decoded = [task for task in stream.data if str(task["key"]).startswith("medtl-decode-")]  # collected on exit
    keys = {str(task["key"]) for task in decoded}
    assert len({key.rsplit("-", 1)[0] for key in keys}) == 2  # each run's batches under keys of its own
    assert len(keys) >= 8  # about 4 batches per worker in the first run, the changed series in the second
    assert len({task["worker"] for task in decoded}) == 2
    assert first["files_read"] == len(expected)
    assert 0 < second["files_read"] < len(expected) // 2

    reference = local("local")
    pd.testing.assert_frame_equal(sorted_manifest(tmp_path / "on-dask"), sorted_manifest(tmp_path / "local"))
    assert second["manifest_hash"] == reference.fingerprint.manifest_hash
    del expected[gone]
    assert fates_by_path(tmp_path / "on-dask") == fates_by_path(tmp_path / "local") == expected


class _Future:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def result(self):
        raise self.error


def test_a_batch_whose_workers_died_counts_as_lost_and_any_other_failure_is_raised():
    from distributed import KilledWorker

    from pipelines.ingest import _outcome

    assert _outcome(_Future(KilledWorker("medtl-decode-0123456789ab-3", "tcp://127.0.0.1:1", 3))) is None
    with pytest.raises(ZeroDivisionError):  # a bug stays a bug: never quarantined as worker_crashed
        _outcome(_Future(ZeroDivisionError()))
