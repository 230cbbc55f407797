"""Running ingest work in worker processes, every pass surviving a worker that dies.

Why a module of its own: a hostile file can do worse than raise. A decoder written in C (JPEG, JPEG 2000, RLE) may
crash its whole process, and a process pool with a dead worker fails every task it holds. Each pass turns that
into one quarantined input: the work that was in flight runs again, each piece in a fresh process of its own, the
piece whose process dies again is quarantined, and the rest goes on in a new pool. `Decoding` does it for series
(in batches, results as they are done, at most two batches per worker in flight); `surviving` for the header pass
and preprocessing (results in order).
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import chain, islice
from multiprocessing import current_process, get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from typing import TypeVar

from medtl.ingest.batches import batch_items, run_batch, series_per_batch
from medtl.ingest.worker import WorkItem, WorkResult, crashed, run_item, without_early_preprocessing

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
_END = object()


@contextmanager
def process_pool(n_workers: int) -> Iterator[Executor | None]:
    """Worker processes, at least one: with one worker asked for, the files are still read in a process of its own,
    so that a decoder crashing on a hostile file costs its series (`Decoding`), not the run.

    None (the work runs in this process) only where this process may not start children: a daemonic process, such
    as another pool's worker. Then nothing isolates a crashing decoder, and a warning says so.

    Forked where the platform can (Linux): workers start at once with medtl already imported, and a user's script
    is not re-imported in every worker as it is with "spawn". The workers only run numpy / pydicom code, no
    torch and no threads of their own, which is what makes forking safe here.
    """
    if current_process().daemon:
        log.warning(
            "ingest runs inside a daemonic process, which may not start worker processes: files are read here, and "
            "a decoder that crashes on a file ends the run; run ingest from a regular process to isolate decoders"
        )
        yield None
        return
    with ProcessPoolExecutor(max_workers=max(1, n_workers), mp_context=_start_method()) as pool:
        yield pool


def _start_method() -> BaseContext:
    return get_context("fork" if "fork" in get_all_start_methods() else "spawn")


@contextmanager
def long_lived_objects() -> Iterator[Callable[[], None]]:
    """Keep the objects that live through a run out of the garbage collector's full passes; yields `settle`, to be
    called once more long-lived objects exist (an archive's headers and work items).

    Why: the collector's full passes walk every tracked object. Ingest holds a header per file for the whole run,
    and a 6,309-file archive cost the parent 0.36 s in collections; the worker processes, forked with the
    parent's modules, walk those too (and copy every page they touch). Frozen objects are still freed by
    reference counting; only cycles among them wait until the end of the run, when they are unfrozen.
    A process that froze objects itself (a preforking server) is left as it is.
    """
    if gc.get_freeze_count() > 0:
        yield lambda: None
        return
    gc.freeze()
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


def start_workers(executor: Executor | None, n_workers: int) -> None:
    """Fork the workers now, while this process is small: forked later, after a re-run has loaded the last run's
    records, every worker pays for copying the pages its garbage collector touches."""
    if executor is not None:
        list(executor.map(int, range(n_workers)))


def surviving(
    executor: Executor | None,
    func: Callable[[T], R],
    jobs: Iterable[T],
    n_workers: int,
    alone: Callable[[T], R],
    *,
    window: int | None = None,
) -> Iterator[tuple[T, R]]:
    """Each job with its result, in order, computed by the pool's workers, through a worker that dies.

    Why: a pool that loses a worker (a crash in native code on a hostile file) fails every job it holds. Then the
    jobs not done that the dead worker may have held (the first few: workers take jobs in order) run again, each in
    a process of its own through `alone`, which also decides what a job that kills that process too costs; the
    rest go on in a new pool. Jobs are submitted now, so the workers go on while the caller does other work:
    `window` of them ahead of the result asked for (bounding memory), or every one (None; small jobs only).
    Without an executor each job runs here when its result is asked for.
    """
    jobs = iter(jobs)
    if executor is None:
        return ((job, func(job)) for job in jobs)
    ahead: deque[tuple[T, Future[R] | None]] = deque()  # None: the pool refused the job (it was already broken)
    _submit(executor, func, jobs, ahead, window)
    return _in_order(executor, func, jobs, ahead, n_workers, alone, window)


def _submit(executor: Executor, func: Callable[[T], R], jobs: Iterator[T], ahead: deque, window: int | None) -> None:
    while window is None or len(ahead) < window:
        job = next(jobs, _END)
        if job is _END:
            return
        try:
            ahead.append((job, executor.submit(func, job)))
        except BrokenProcessPool:
            ahead.append((job, None))
            return


def _in_order(
    executor: Executor,
    func: Callable[[T], R],
    jobs: Iterator[T],
    ahead: deque,
    n_workers: int,
    alone: Callable[[T], R],
    window: int | None,
) -> Iterator[tuple[T, R]]:
    while ahead:
        job, future = ahead[0]
        try:
            if future is None:
                raise BrokenProcessPool
            result = future.result()
        except BrokenProcessPool:
            break
        ahead.popleft()
        yield job, result
        if ahead and ahead[-1][1] is None:
            continue  # the pool refused a job: submit nothing more
        _submit(executor, func, jobs, ahead, window)
    else:
        return
    # A worker died. It held one of the first jobs not done; a few more may have been lost in transit.
    quota = 2 * n_workers
    while ahead:
        job, future = ahead[0]
        failure = future.exception() if future is not None and future.done() else BrokenProcessPool()
        if failure is None:
            yield ahead.popleft()[0], future.result()
        elif not isinstance(failure, BrokenProcessPool):
            raise failure  # the job's own error (a full disk), not the lost worker's
        elif quota > 0:
            quota -= 1
            yield ahead.popleft()[0], alone(job)
        else:
            break
    rest = chain([job for job, _ in ahead], jobs)
    with process_pool(n_workers) as fresh:
        yield from surviving(fresh, func, rest, n_workers, alone, window=window)


def in_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last one shorter): jobs for the pool that each carry several items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def bounded(executor: Executor | None, func: Callable[[T], R], items: Iterable[T], limit: int) -> Iterator[R]:
    """Submit at most `limit` tasks at a time, in order, so memory stays bounded whatever the cohort size; results
    come as they are done."""
    if executor is None:
        yield from map(func, items)
        return
    iterator = iter(items)
    pending = {executor.submit(func, item) for item in islice(iterator, limit)}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            yield future.result()
            pending.update(executor.submit(func, item) for item in islice(iterator, 1))


class Decoding:
    """Iterates over the WorkResult of every item; a crash leaves the given pool broken (`is_broken`), and the
    caller uses a new one afterwards.

    Items go to the workers in batches of consecutive items (batches.batch_items), a few per worker at most: each
    job costs this process a round trip whatever its size (submitting, pickling, a wake-up, unpickling its result:
    ~0.7 ms), so an archive of thousands of small series made this process, not the workers, the limit on how many
    workers an ingest can keep busy. A worker still decodes one series at a time, so its memory stays bounded by
    the largest series.
    """

    def __init__(self, executor: Executor | None, items: list[WorkItem], n_workers: int) -> None:
        self.executor, self.items, self.n_workers = executor, items, n_workers

    def __iter__(self) -> Iterator[WorkResult]:
        yield from self._run(self.executor, list(self.items))

    def _run(self, executor: Executor | None, items: list[WorkItem]) -> Iterator[WorkResult]:
        per_batch = series_per_batch(
            len(items), self.n_workers, batches_per_slot=LOCAL_BATCHES_PER_WORKER, most=LOCAL_BATCH_SERIES
        )
        batches = batch_items(items, max_bytes=LOCAL_BATCH_BYTES, max_series=per_batch)
        limit = 2 * self.n_workers
        done: set[int] = set()  # a batch's results come back together: its first item stands for it
        try:
            for results in bounded(executor, run_batch, batches, limit):
                done.add(results[0].item_id)
                yield from results
            return
        except BrokenProcessPool:
            pass
        left = [batch for batch in batches if batch[0].item_id not in done]
        # submitted in order, at most `limit` at a time: the batch that crashed is among the first `limit` not done
        for batch in left[:limit]:
            results = run_alone(run_batch, batch)
            yield from results if results is not None else map(_isolated, batch)
        rest = [item for batch in left[limit:] for item in batch]
        if rest:
            with process_pool(self.n_workers) as fresh:
                yield from self._run(fresh, rest)


# Batches of the local pool: small enough that the largest series go alone and every worker gets several
# batches (the last ones, of the smallest series, even out the workers' finishing times), large enough that an
# archive of small series costs this process a round trip per ~16 series instead of one per series.
# (Smaller than the Dask route's batches, batches.BATCH_BYTES: a local round trip costs far less than a task's.)
LOCAL_BATCH_BYTES = 8 * 1024 * 1024
LOCAL_BATCH_SERIES = 16
LOCAL_BATCHES_PER_WORKER = 8


def _isolated(item: WorkItem) -> WorkResult:
    """One item in a process of its own: if that process dies, only this item is lost (quarantined)."""
    result = run_alone(run_item, item)
    if result is None and (plain := without_early_preprocessing(item)) is not None:
        result = run_alone(run_item, plain)
    return result if result is not None else crashed(item)


def is_broken(executor: Executor | None) -> bool:
    """Whether a worker of this pool died (the pool then refuses new work at once)."""
    if executor is None:
        return False
    try:
        executor.submit(int, 0)
    except BrokenProcessPool:
        return True
    return False


def run_alone(func: Callable[[T], R], arg: T) -> R | None:
    """`func(arg)` in a process of its own; None when that process died (a crash in native code)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=_start_method()) as single:
        try:
            return single.submit(func, arg).result()
        except BrokenProcessPool:
            return None
