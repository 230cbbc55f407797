"""Content-addressed cache of decoded and preprocessed arrays.

Keys are content hashes, never paths: a decoded scan is stored under the hash of its pixels, a preprocessed tensor
under (pixel hash, spec hash), and the decode step itself is remembered under the hash of the input files. A
changed file or a changed spec therefore always misses, and an unchanged one is never decoded twice.

Why few files: creating a file costs far more than writing its bytes on common virtual machines' disks (measured
0.1-2 ms of system time per create and rename, against 0.1 ms to write 250 KB), so each scan gets its array and its
tensor and nothing else; what was decoded from which files is one index for the whole dataset folder
(`decoded.tsv`), appended to by the ingest process once per run. A decoded array is still written while it is
hashed for its name (into cache/arrays, then renamed into its folder): on large scans the write then costs no more
than the hash, which outweighs the cheaper rename a hash-first write would allow (measured both ways).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model

from medtl.contracts import ManifestRow
from medtl.contracts.base import atomic_write_bytes
from medtl.hashing import canonical_json
from medtl.timing import timed

T = TypeVar("T")
CACHE_DIR = "cache"
DECODED_INDEX = "decoded.tsv"  # under cache/: one line per decode, "<source key>\t<JSON list of scan records>"
LEGACY_DECODED = "decoded"  # what versions before the index kept: a JSON file per series, under cache/
# A decoded scan's record is its manifest row without what ingest adds from identities and labels.
_ADDED = {"scan_id", "patient_id", "study_id", "series_id", "source_format", "site", "label", "split"}
DecodedScan = create_model(
    "DecodedScan",
    __config__=ConfigDict(extra="forbid"),
    **{name: (info.annotation, info) for name, info in ManifestRow.model_fields.items() if name not in _ADDED},
)
_DECODED_RECORDS = TypeAdapter(list[DecodedScan])
COMPACT_BYTES_PER_SCAN, COMPACT_SLACK = 8192, 1000  # a decode's line is ~1 KB per scan: compact at ~8x
MAX_INDEX_BYTES = 1 << 30  # past this (about a million series), lookups miss rather than read it whole
_known_folders: set[str] = set()  # folders this process made or found: not asked for again
_index_memo: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}  # index path: (size, mtime), key: JSON
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class ScanCache:
    def __init__(self, dataset_root: Path) -> None:
        self.dataset_root = Path(dataset_root)
        self.root = self.dataset_root / CACHE_DIR

    def array_relpath(self, pixel_hash: str) -> str:
        return f"{CACHE_DIR}/arrays/{pixel_hash[:2]}/{pixel_hash}.npy"

    def preprocessed_relpath(self, pixel_hash: str, spec_hash: str) -> str:
        return f"{CACHE_DIR}/preprocessed/{spec_hash[:16]}/{pixel_hash[:2]}/{pixel_hash}.npy"

    def lookup(self, source_key: str) -> list[dict[str, Any]] | None:
        """The records of a decode done before, if the index holds them, they pass their checks, and every array
        they name is still there; None otherwise (the series is decoded again).

        The index is written by someone else as far as this process knows: a record that is not a manifest row's
        decoded part, or whose array path is not the one its pixel hash gives, is a miss, never an error."""
        text = _decoded_index(self.root / DECODED_INDEX).get(source_key)
        if text is None:
            return None
        try:
            records = [record.model_dump() for record in _DECODED_RECORDS.validate_json(text)]
        except ValidationError:
            return None
        named = all(record["cache_path"] == self.array_relpath(record["pixel_hash"]) for record in records)
        return records if named and all(self.has(record["cache_path"]) for record in records) else None

    def remember(self, decoded: Iterable[tuple[str, list[dict[str, Any]]]], in_use: Collection[str]) -> None:
        """Append what this run decoded (source key, scan records) to the index: one write per run, by the ingest
        process. A line cut short by an interrupted run is skipped when read. The per-series files of earlier
        versions go (their series are decoded once more, then indexed here).

        `in_use`: the pixel hashes of the dataset's scans now. An index grown past COMPACT_BYTES_PER_SCAN per scan
        in use (plus COMPACT_SLACK scans) is rewritten with only the decodes of scans in use, so a folder ingested
        night after night does not keep every decode it ever made; a decode dropped is redone if ever needed."""
        lines = [f"{key}\t{canonical_json(records).decode('utf-8')}\n" for key, records in decoded]
        path = self.root / DECODED_INDEX
        if lines:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as index:
                index.write("".join(lines))
        if (self.root / LEGACY_DECODED).is_dir():
            shutil.rmtree(self.root / LEGACY_DECODED, ignore_errors=True)
        if path.is_file() and path.stat().st_size > COMPACT_BYTES_PER_SCAN * (len(in_use) + COMPACT_SLACK):
            used = set(in_use)
            kept = [f"{key}\t{text}\n" for key, text in _decoded_index(path).items() if _pixels_of(text) <= used]
            atomic_write_bytes(path, "".join(kept).encode("utf-8"))

    def save_array(self, relpath: str, array: np.ndarray) -> None:
        target = os.path.join(self.dataset_root, relpath)
        if os.path.isfile(target):
            return
        handle, tmp = _temporary_in(os.path.dirname(target))  # beside the target: a rename within one folder
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
        GIL, so the two overlap even in one process: on a large scan, the write costs nothing more than its hash.
        A failure of either leaves no file behind and is raised."""
        handle, tmp = _temporary_in(str(self.root / "arrays"))
        pending = PendingWrite(handle, array)
        pending.start()
        try:
            try:
                yield pending
            finally:
                with timed("cache_write"):  # the part of the write the block did not hide
                    pending.join()
            if pending.error is not None:
                raise pending.error
            if pending.relpath is None:
                raise RuntimeError("a cache write was never named")
            target = os.path.join(self.dataset_root, pending.relpath)
            if os.path.isfile(target):  # the same content is there already
                os.unlink(tmp)
                return
            _in_folder(os.path.dirname(target), lambda: os.replace(tmp, target))
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


# Below this size an array is written where it is made: starting and joining a thread costs more than the
# write it would hide (an archive of small series writes two arrays per scan).
BACKGROUND_WRITE_BYTES = 256 * 1024


class PendingWrite:
    """An array being written to a temporary file; `relpath` is set by whoever learns its name meanwhile."""

    def __init__(self, handle: int, array: np.ndarray) -> None:
        self.relpath: str | None = None
        self.error: BaseException | None = None
        self.handle, self.array = handle, array
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """On a background thread, or at once for a small array."""
        if self.array.nbytes < BACKGROUND_WRITE_BYTES:
            self._write(self.handle, self.array)
        else:
            self.thread = threading.Thread(target=self._write, args=(self.handle, self.array), daemon=True)
            self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

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
        if array.nbytes < BACKGROUND_WRITE_BYTES:  # a thread would cost more than the write
            self.cache.save_array(relpath, array)
            return
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


def _in_folder(folder: str, action: Callable[[], T]) -> T:
    """`action` (which creates something in `folder`), the folder made first unless this process made or found it
    before: a failed mkdir costs a system call and an exception per file, and an archive's scans share a few
    hundred cache folders. A folder removed since is made again."""
    if folder not in _known_folders:
        os.makedirs(folder, exist_ok=True)
        _known_folders.add(folder)
    try:
        return action()
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return action()


def _temporary_in(folder: str) -> tuple[int, str]:
    return _in_folder(folder, lambda: tempfile.mkstemp(dir=folder, suffix=".npy.tmp"))


def _decoded_index(path: Path) -> dict[str, str]:
    """Source key -> that line's JSON, read once per process while the file is unchanged; the JSON is parsed only
    for a key looked up. Lines that are not a key, a tab and a JSON list (cut short, edited) are left out, and so is an
    index larger than MAX_INDEX_BYTES (its size is checked before it is read)."""
    try:
        stat = os.stat(path)
    except OSError:
        return {}
    if stat.st_size > MAX_INDEX_BYTES:
        return {}
    signature = (stat.st_size, stat.st_mtime_ns)
    memo = _index_memo.get(str(path))
    if memo is not None and memo[0] == signature:
        return memo[1]
    try:
        with open(path, encoding="utf-8", errors="replace") as index:
            lines = index.read().splitlines()
    except OSError:
        return {}
    table = {}
    for line in lines:
        key, tab, text = line.partition("\t")
        if tab and len(key) == 64 and text.startswith("[") and text.endswith("]"):
            table[key] = text  # a later line for the same key wins
    _index_memo[str(path)] = (signature, table)
    return table


def _pixels_of(text: str) -> set[str]:
    """The pixel hashes an index line's records name (none for a line that is not such a list)."""
    try:
        records = json.loads(text)
        return {record["pixel_hash"] for record in records}
    except (ValueError, TypeError, KeyError):
        return {""}  # never in use: the line goes


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
