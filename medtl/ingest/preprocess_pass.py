"""The preprocessing pass: every scan's tensor under the chosen spec that decoding did not already make.

Why per scan, and why a failure costs that scan only: what one scan's data makes the resampling raise, run out of
memory or crash in native code must not stop the run; the scan is left out and its files quarantined
(`preprocess_failed`), as `preprocess_records` reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from medtl.contracts import PreprocessingSpec
from medtl.ingest.cache import ScanCache
from medtl.ingest.execution import in_chunks, run_alone, surviving
from medtl.ingest.preprocess import spec_hash
from medtl.ingest.worker import preprocess_records
from medtl.timing import collecting, merge


def preprocess_missing(
    executor: Executor | None,
    out: Path,
    rows: list[dict[str, Any]],
    spec: PreprocessingSpec,
    n_workers: int,
    steps: dict[str, float],
    failed: dict[str, str],
) -> Iterator[str | None]:
    """Submits every scan whose tensor is missing now; iterating waits for them (and makes them, without workers)
    and fills `failed` with the scans whose preprocessing raised (scan id: reason)."""
    key = spec_hash(spec)
    cache = ScanCache(out)
    # Tensors already cached (a re-run's unchanged scans) cost a stat here, not a round trip to a worker.
    missing = [row for row in rows if not cache.has(cache.preprocessed_relpath(row["pixel_hash"], key))]
    chunk = max(1, min(16, len(missing) // max(1, 4 * n_workers)))
    jobs = ((out, batch, spec, key) for batch in in_chunks(missing, chunk))
    work = surviving(executor, _preprocess_batch, jobs, n_workers, _preprocessed_alone)  # all submitted now

    def made() -> Iterator[str | None]:
        yield from [None] * (len(rows) - len(missing))
        for _, (paths, batch_failed, batch_steps) in work:
            merge(steps, batch_steps)
            failed.update(batch_failed)
            yield from paths

    return made()


_PreprocessJob = tuple[Path, list[dict[str, Any]], PreprocessingSpec, str]
_Preprocessed = tuple[list[str | None], dict[str, str], dict[str, float]]


def _preprocessed_alone(job: _PreprocessJob) -> _Preprocessed:
    """A batch whose worker died, again in a process of its own, scan by scan if that dies too: the scan whose
    process dies alone is left out like one whose preprocessing raised (its files quarantined, the run goes on)."""
    done = run_alone(_preprocess_batch, job)
    if done is not None:
        return done
    out, batch, spec, key = job
    if len(batch) == 1:
        reason = "preprocessing this scan crashed its worker process; its files are quarantined, the run goes on"
        return [None], {batch[0]["scan_id"]: reason}, {}
    paths: list[str | None] = []
    failed: dict[str, str] = {}
    steps: dict[str, float] = {}
    for row in batch:
        row_paths, row_failed, row_steps = _preprocessed_alone((out, [row], spec, key))
        paths += row_paths
        failed.update(row_failed)
        merge(steps, row_steps)
    return paths, failed, steps


def _preprocess_batch(job: _PreprocessJob) -> _Preprocessed:
    out, batch, spec, key = job
    with collecting() as steps:
        paths, failed = preprocess_records(out, batch, spec, key)
    return paths, failed, steps
