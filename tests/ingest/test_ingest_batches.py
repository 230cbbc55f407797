"""Decoding through a runner (what the ingest flow does on Dask): batches bounded by bytes, any order of results,
the same manifest and file fates as the local worker processes, re-runs included, and a batch whose worker died
re-run series by series."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from medtl.datasets.synth.archive import SOURCE, ArchiveOptions, make_archive
from medtl.ingest.batches import batch_items, isolate_failures, item_bytes, run_batch
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.worker import WORKER_CRASHED, WorkItem, WorkResult
from support.outcomes import fates_by_path, sorted_manifest
from support.trained import DEV_PSEUDONYMIZER


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batches") / "archive"
    make_archive(out, ArchiveOptions(series=10, seed=8, slices=(2, 4), matrix=32, bad_fraction=0.2))
    an_hour_ago = time.time() - 3600  # older than the runs that read them: no racy re-hashing
    for path in (out / SOURCE).rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    return out / SOURCE


def _ingest(source: Path, out: Path, **kwargs):
    return ingest_sources([source], out=out, pseudonymizer=DEV_PSEUDONYMIZER, workers=1, **kwargs)


class BackwardsInBatches:
    """A stand-in for the Dask runner: batches of two series, run last batch first, in this process."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items: list[WorkItem]) -> Iterator[WorkResult]:
        batches = batch_items(items, max_series=2)
        self.batches += [[item.item_id for item in batch] for batch in batches]
        for batch in reversed(batches):
            yield from run_batch(batch)


def test_a_runner_gives_the_manifest_and_fates_of_a_local_run_and_so_does_its_rerun(source, tmp_path):
    local = _ingest(source, tmp_path / "local")
    runner = BackwardsInBatches()
    remote = _ingest(source, tmp_path / "remote", runner=runner)
    assert len(runner.batches) == 5 and sorted(i for b in runner.batches for i in b) == list(range(10))
    pd.testing.assert_frame_equal(sorted_manifest(tmp_path / "remote"), sorted_manifest(tmp_path / "local"))
    assert remote.fingerprint.manifest_hash == local.fingerprint.manifest_hash
    assert fates_by_path(tmp_path / "remote") == fates_by_path(tmp_path / "local")

    rerun = BackwardsInBatches()
    again = _ingest(source, tmp_path / "remote", runner=rerun)
    assert rerun.batches == [] and again.report.changes.files_read == 0  # nothing changed: nothing decoded
    assert again.fingerprint.manifest_hash == local.fingerprint.manifest_hash


def test_batches_keep_to_the_byte_and_series_bounds(source, tmp_path):
    items = [WorkItem(n, tmp_path, nifti_path=path) for n, path in enumerate(sorted(source.rglob("*.dcm")))]
    sizes = [item_bytes(item) for item in items]
    budget = 3 * max(sizes)
    batches = batch_items(items, max_bytes=budget, max_series=5)
    assert [item for batch in batches for item in batch] == items  # all of them, in order
    assert all(len(batch) <= 5 and sum(map(item_bytes, batch)) <= budget for batch in batches)
    assert all(len(batch) == 1 for batch in batch_items(items, max_bytes=1))  # over budget alone: still one each
    assert item_bytes(WorkItem(0, tmp_path, nifti_path=tmp_path / "gone.nii")) == 0


def test_a_batch_whose_worker_died_is_run_series_by_series_and_only_the_crashing_one_quarantined(tmp_path):
    files = [tmp_path / f"{n}.nii" for n in range(5)]
    items = [WorkItem(n, tmp_path, nifti_path=path) for n, path in enumerate(files)]
    batches = [items[:2], items[2:]]
    alone: list[int] = []

    def run_alone(failed: list[WorkItem]) -> Iterable[WorkResult | None]:
        for item in failed:
            alone.append(item.item_id)
            yield None if item.item_id == 3 else WorkResult(item.item_id)

    outcomes = [(0, [WorkResult(0), WorkResult(1)]), (1, None)]
    results = {result.item_id: result for result in isolate_failures(batches, outcomes, run_alone)}
    assert alone == [2, 3, 4] and sorted(results) == [0, 1, 2, 3, 4]
    assert results[3].error_code == WORKER_CRASHED and results[3].files[0].location == str(files[3])
    assert all(results[n].error is None for n in (0, 1, 2, 4))


def test_a_series_that_dies_alone_is_decoded_once_more_without_its_early_preprocessing(tmp_path):
    """A worker may die in the optional preprocessing while decoding, not in the decoder: alone without that
    step, the series is decoded, and the preprocessing pass accounts for its tensor."""
    from medtl.contracts import PreprocessingSpec

    spec = PreprocessingSpec(spatial_dims=3, target_spacing=None, target_shape=[8, 8, 8])
    items = [WorkItem(n, tmp_path, nifti_path=tmp_path / f"{n}.nii", spec=spec, spec_key="k") for n in range(3)]
    runs: list[tuple[int, bool]] = []

    def run_alone(failed: list[WorkItem]) -> Iterable[WorkResult | None]:
        for item in failed:
            runs.append((item.item_id, item.spec is not None))
            dies = item.spec is not None or item.item_id == 2  # 2 dies in its decoder too
            yield None if dies else WorkResult(item.item_id)

    results = {result.item_id: result for result in isolate_failures([items], [(0, None)], run_alone)}
    assert runs == [(0, True), (1, True), (2, True), (0, False), (1, False), (2, False)]
    assert results[0].error is None and results[1].error is None and results[2].error_code == WORKER_CRASHED
