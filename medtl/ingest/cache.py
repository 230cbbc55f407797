"""Content-addressed cache of decoded and preprocessed arrays.

Keys are content hashes, never paths: a decoded scan is stored under the hash of its pixels, a preprocessed tensor
under (pixel hash, spec hash), and the decode step itself is remembered under the hash of the input files. A
changed file or a changed spec therefore always misses, and an unchanged one is never decoded twice.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from medtl.contracts.base import atomic_write_bytes
from medtl.timing import timed

CACHE_DIR = "cache"
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class ScanCache:
    def __init__(self, dataset_root: Path) -> None:
        self.dataset_root = Path(dataset_root)
        self.root = self.dataset_root / CACHE_DIR

    def array_relpath(self, pixel_hash: str) -> str:
        return f"{CACHE_DIR}/arrays/{pixel_hash[:2]}/{pixel_hash}.npy"

    def preprocessed_relpath(self, pixel_hash: str, spec_hash: str) -> str:
        return f"{CACHE_DIR}/preprocessed/{spec_hash[:16]}/{pixel_hash[:2]}/{pixel_hash}.npy"

    def _index_path(self, source_key: str) -> Path:
        return self.root / "decoded" / source_key[:2] / f"{source_key}.json"

    def lookup(self, source_key: str) -> list[dict[str, Any]] | None:
        """The records of a decode done before, if every array it produced is still there."""
        path = self._index_path(source_key)
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not all((self.dataset_root / record["cache_path"]).is_file() for record in records):
            return None
        return records

    def remember(self, source_key: str, records: list[dict[str, Any]]) -> None:
        payload = json.dumps(records, sort_keys=True).encode("utf-8")
        atomic_write_bytes(self._index_path(source_key), payload)

    def save_array(self, relpath: str, array: np.ndarray) -> None:
        target = self.dataset_root / relpath
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, array, allow_pickle=False)  # keeps the memory layout; no copy
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def writing(self, array: np.ndarray) -> Iterator[PendingWrite]:
        """Write `array` on a background thread while the block runs (typically: hashing it for its name), then
        give it the name the block chose (`pending.relpath`). numpy's file write and hashlib both release the
        GIL, so the two overlap even in one process. A failure of either leaves no file behind and is raised."""
        folder = self.root / "arrays"
        folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        pending = PendingWrite(handle, array)
        pending.thread.start()
        try:
            try:
                yield pending
            finally:
                with timed("cache_write"):  # the part of the write the block did not hide
                    pending.thread.join()
            if pending.error is not None:
                raise pending.error
            if pending.relpath is None:
                raise RuntimeError("a cache write was never named")
            target = self.dataset_root / pending.relpath
            if target.is_file():  # the same content is there already
                Path(tmp).unlink(missing_ok=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_array(self, relpath: str, *, mmap: bool = False) -> np.ndarray:
        """The cached array; ValueError for a file that is not a whole .npy (checked before numpy allocates the
        size its header declares)."""
        path = self.dataset_root / relpath
        _whole_npy_header(path)
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)

    def has(self, relpath: str) -> bool:
        return os.path.isfile(os.path.join(self.dataset_root, relpath))  # no Path: asked for every scan of a re-run

    def holds_tensor(self, relpath: str, shape: tuple[int, ...]) -> bool:
        """Whether `relpath` is a whole float32 .npy of exactly `shape`: its header read, nothing allocated.

        Why more than `has`: a dataset folder is written by someone else as far as a training run knows, and a
        truncated tensor, one of another shape, or a header declaring 10^12 values fails only when it is loaded,
        after the work before it. Checked up front, such a tensor is made again from the scan's cached array.
        """
        try:
            found, fortran_order, dtype = _whole_npy_header(self.dataset_root / relpath)
        except (OSError, ValueError):  # absent, unreadable, not a .npy, a malformed header, not whole
            return False
        return dtype == np.float32 and not fortran_order and tuple(found) == tuple(shape)


class PendingWrite:
    """An array being written to a temporary file; `relpath` is set by whoever learns its name meanwhile."""

    def __init__(self, handle: int, array: np.ndarray) -> None:
        self.relpath: str | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, args=(handle, array), daemon=True)

    def _write(self, handle: int, array: np.ndarray) -> None:
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, array, allow_pickle=False)
        except BaseException as error:  # handed to the waiting thread, which raises it
            self.error = error


class WriteBehind:
    """Writes of finished arrays on one background thread while the next one is computed; at most one waits, so
    memory stays bounded. Leaving the block waits for the last write and raises the first failure, so a failed
    write still fails the work it belongs to."""

    def __init__(self, cache: ScanCache) -> None:
        self.cache = cache
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self._join()
        except BaseException:
            if exc_type is None:  # the block's own failure, if any, is the one to report
                raise

    def save(self, relpath: str, array: np.ndarray) -> None:
        self._join()
        self._thread = threading.Thread(target=self._save, args=(relpath, array), daemon=True)
        self._thread.start()

    def _save(self, relpath: str, array: np.ndarray) -> None:
        try:
            self.cache.save_array(relpath, array)
        except BaseException as error:
            self._error = error

    def _join(self) -> None:
        if self._thread is not None:
            with timed("preprocess_write"):  # the part of the write the next computation did not hide
                self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _whole_npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from a .npy header, once the file is known to hold exactly the bytes the
    header declares; ValueError otherwise."""
    with open(path, "rb") as handle:
        shape, fortran_order, dtype, declared = read_npy_header(handle)
        held = os.fstat(handle.fileno()).st_size - handle.tell()
    if held != declared:
        raise ValueError("the file does not hold the array its header declares")
    return shape, fortran_order, dtype


def read_npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, bytes of data declared) from the .npy header at `handle`, read without
    allocating the array: callers compare the bytes declared with the bytes there before numpy trusts them.
    ValueError for a version medtl does not write or an object dtype (which would unpickle)."""
    read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
    if read_header is None:
        raise ValueError("a .npy version this cache does not write")
    shape, fortran_order, dtype = read_header(handle)
    if dtype.hasobject:
        raise ValueError("an object array")
    return shape, fortran_order, dtype, dtype.itemsize * math.prod(shape)
