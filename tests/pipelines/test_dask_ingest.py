"""Ingest scale-out: the ingest flow decodes series as tasks on a 2-worker Dask cluster (a real `prefect server
start` on loopback) and writes the manifest a local run writes, re-runs included."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

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


@pytest.mark.slow
def test_a_series_that_kills_its_dask_worker_costs_that_series_only(tmp_path):
    """The batch whose worker died runs again one series per task; the series that kills its worker alone too is
    quarantined as worker_crashed, and every other series is ingested as in a local run."""
    import dask
    from distributed import Client, LocalCluster

    from pipelines.ingest import _decode_on_dask
    from support.crashing_worker import CrashOnPatient
    from support.hostile_files import good_series

    src = tmp_path / "src"
    for name in ("a", "b", "crash", "c", "d", "e"):
        good_series(src / name, patient_id=f"P{name.upper()}01")
    # A task that kills one worker is lost at once, and every task goes to the worker when submitted: each dies
    # with the worker as a suspect, as bystanders of a crash on a busy cluster can.
    settings = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": "inf"}
    with (
        dask.config.set(settings),
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(CrashOnPatient("PCRASH01"))
        ingest_sources([src], out=tmp_path / "out", pseudonymizer=DEV_PSEUDONYMIZER, workers=1,
                       runner=partial(_decode_on_dask, client, slots=2))  # fmt: skip
    fates = fates_by_path(tmp_path / "out")
    crashed = sorted(path for path, (status, code) in fates.items() if code == "worker_crashed")
    assert [Path(path).parent.name for path in crashed] == ["crash"] * 4
    assert {status for path, (status, _) in fates.items() if path not in crashed} == {"ingested"}
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 5


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
