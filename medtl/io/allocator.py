"""Array work at full speed in processes whose C allocator was tuned through the environment (Dask's workers).

Why: a Dask nanny starts its workers with `MALLOC_TRIM_THRESHOLD_=65536`, to hand freed memory back to the system
soon. Setting any such variable also switches off glibc's own adjustment of the size above which a block is
mapped from the system instead of taken from the heap, so every array or tensor over 128 KiB (a 64 x 64 x 20 float
stack) is mapped, zero-filled and unmapped again each time it is made. Measured (benchmarks/bench_allocator.py,
child processes with and without the variable): medtl's preprocessing 2.2x slower, ResNet-18 training steps on the
CPU 1.5x slower; inside `heap_for_arrays` 1.01x and 1.02x the untuned time. In the ingest flow on two Dask workers,
preprocessing 100 series took 0.23 s against 0.07 s in local processes.

`heap_for_arrays()` raises both sizes for the duration of a task (a batch of series, a fold, a chunk of scans),
then restores what the environment asked for and hands the memory the task kept back to the system
(`malloc_trim`), so the worker ends the task as lean as its settings want it. The settings are process-wide:
another task running meanwhile in the same worker keeps its freed memory a little longer too, never more than until
the last such block ends. Where the allocator is not glibc's, or nothing tuned it, nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_TUNING = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's fixed threshold once the environment switched its adjustment off
_GLIBC_TRIM_THRESHOLD = 128 * 1024
ARRAY_HEAP_BYTES = 64 * 1024 * 1024  # while a batch runs: arrays up to this size come from the heap


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        library.mallopt.argtypes, library.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        library.malloc_trim.argtypes, library.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl, macOS): no mallopt
        return None
    return library


def tuned_by_environment() -> bool:
    """Whether a variable in this process's environment fixed glibc's allocator thresholds."""
    return any(name in os.environ for name in _TUNING)


def _tuned_glibc() -> ctypes.CDLL | None:
    """glibc, where the environment tuned it; None where there is nothing to change."""
    return _glibc() if tuned_by_environment() else None


_lock = threading.Lock()
_active = 0  # blocks running now, in any thread: the settings are restored when the last one ends


@contextmanager
def heap_for_arrays() -> Iterator[None]:
    """Large arrays from the heap while the block runs, where the environment had made them mapped one by one."""
    global _active
    library = _tuned_glibc()
    if library is None:
        yield
        return
    with _lock:
        _active += 1
        if _active == 1:
            _raise_thresholds(library)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                library.mallopt(_M_MMAP_THRESHOLD, _setting("MALLOC_MMAP_THRESHOLD_", _GLIBC_MMAP_THRESHOLD))
                library.mallopt(_M_TRIM_THRESHOLD, _setting("MALLOC_TRIM_THRESHOLD_", _GLIBC_TRIM_THRESHOLD))
                library.malloc_trim(0)


def heap_for_arrays_from_now() -> None:
    """The same thresholds for the rest of this process's life: for a process medtl starts for its own work (a fold
    beside others), which inherits a Dask worker's environment and ends with that work."""
    library = _tuned_glibc()
    if library is not None:
        _raise_thresholds(library)


def _raise_thresholds(library: ctypes.CDLL) -> None:
    library.mallopt(_M_MMAP_THRESHOLD, ARRAY_HEAP_BYTES)
    library.mallopt(_M_TRIM_THRESHOLD, 2 * ARRAY_HEAP_BYTES)  # freed arrays stay for the next one


def _setting(name: str, default: int) -> int:
    """The environment's value for a threshold (what glibc read at start-up), or glibc's default."""
    try:
        return max(0, min(int(os.environ[name]), 2**31 - 1))
    except (KeyError, ValueError):
        return default
