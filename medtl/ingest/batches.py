"""Series work items in batches bounded by bytes: for the local pool (execution.Decoding) and for a runner
outside this process (Dask).

Why this is possible: decoding a series is a pure function of its files (`run_item`): it reads them, writes
content-addressed cache files into the dataset folder (atomic renames, so two writers of the same array are
harmless) and returns small records. Any runner that can call `run_batch` where the files and the dataset folder
are visible gives the same WorkResults as the local process pool, and ingest merges them in item order, so the
manifest is the same row for row.

Why batches bounded by bytes: one task per series costs a scheduler round trip per series (thousands of small
series), one task per many series makes stragglers; a batch holds series up to a byte budget (and a count), and a
worker decodes one series at a time, so its memory stays bounded by the largest series whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from medtl.ingest.worker import WorkItem, WorkResult, crashed, run_item, without_early_preprocessing
from medtl.io.allocator import heap_for_arrays

# A runner gets every work item of the run and yields each one's WorkResult, in any order (ingest sorts them).
ItemRunner = Callable[[list[WorkItem]], Iterable[WorkResult]]

BATCH_BYTES = 256 * 1024 * 1024
BATCH_SERIES = 64


def item_bytes(item: WorkItem) -> int:
    """Bytes the item's files take on disk: a DICOM header knows its file's size; a NIfTI file is stat'ed (0 when
    it cannot be: its item fails on its own). Orders the work (largest first) and bounds the batches."""
    if item.plan is not None:
        return sum(header.size for header in item.plan.headers)
    if item.nifti_path is None:
        return 0
    try:
        return item.nifti_path.stat().st_size
    except OSError:
        return 0


def series_per_batch(n_items: int, slots: int, *, batches_per_slot: int, most: int) -> int:
    """How many series a batch holds so that each worker slot gets about `batches_per_slot` batches (the last
    ones even out the slots' finishing times), at most `most` and at least one."""
    return max(1, min(most, -(-n_items // (batches_per_slot * max(1, slots)))))


def batch_items(
    items: list[WorkItem],
    *,
    max_bytes: int = BATCH_BYTES,
    max_series: int = BATCH_SERIES,
) -> list[list[WorkItem]]:
    """Consecutive items grouped up to `max_bytes` of input files and `max_series` items; a larger item alone."""
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    size = 0
    for item in items:
        weight = item_bytes(item)
        if current and (size + weight > max_bytes or len(current) >= max_series):
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += weight
    if current:
        batches.append(current)
    return batches


def run_batch(items: list[WorkItem]) -> list[WorkResult]:
    """The task body a remote runner calls: each series in turn, never raising (run_item quarantines instead).
    Large arrays come from the heap meanwhile where the process's allocator was tuned to map each one apart (a
    Dask worker's: medtl/io/allocator.py)."""
    with heap_for_arrays():
        return [run_item(item) for item in items]


def isolate_failures(
    batches: list[list[WorkItem]],
    outcomes: Iterable[tuple[int, list[WorkResult] | None]],
    run_alone: Callable[[list[WorkItem]], Iterable[WorkResult | None]],
) -> Iterator[WorkResult]:
    """Results of every batch; a batch whose task failed (None: its worker died) is run again one series per
    task through `run_alone`, and a series that fails alone too is quarantined as `worker_crashed`."""
    failed: list[WorkItem] = []
    for index, results in outcomes:
        if results is None:
            failed.extend(batches[index])
        else:
            yield from results
    if not failed:
        return
    alone = dict(zip((item.item_id for item in failed), run_alone(failed), strict=True))
    plain = [p for item in failed if alone[item.item_id] is None and (p := without_early_preprocessing(item))]
    if plain:  # died alone with its preprocessing while decoding: decoded once more without it
        alone.update(zip((item.item_id for item in plain), run_alone(plain), strict=True))
    for item in failed:
        result = alone[item.item_id]
        yield result if result is not None else crashed(item)
