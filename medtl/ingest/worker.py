"""Work done per series in a worker process: hash inputs, decode (or reuse the cache), check, cache, preprocess.

Arrays never travel back to the parent process: they are written to the cache here and only small records return,
so memory stays bounded by the largest series, not the cohort.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtl.contracts import PreprocessingSpec
from medtl.errors import ReadError
from medtl.hashing import sha256_array, sha256_bytes, sha256_file, sha256_json
from medtl.ingest.cache import ScanCache, WriteBehind
from medtl.ingest.intensity import IntensitySummary, summarize
from medtl.ingest.preprocess import applies_to, preprocess_array
from medtl.ingest.qc import check_scan, intensity_stats
from medtl.io.dicom.grouping import ScanPlan
from medtl.io.dicom.reader import read_plan
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.io.nifti import read_nifti
from medtl.io.quiet import FLAG as QUIET_FLAG
from medtl.io.quiet import Muted, muted_library_messages
from medtl.io.rawfile import file_size, open_file, read_rest
from medtl.io.scan import Scan
from medtl.timing import collecting, timed

# Bump when decoding changes what arrays come out, so old cache entries are not reused.
DECODER_VERSION = "1"
# Bytes of one series kept in memory between hashing and decoding (so each file is read once); beyond it, re-read.
PREFETCH_BUDGET_BYTES = 256 * 1024 * 1024


WORKER_CRASHED = "worker_crashed"  # the reason code of input whose reading killed its process, even alone
ROW_DECIMALS = 6  # a manifest row's spacing and affine, rounded (ingest/expected.py foresees the same values)


@dataclass
class WorkItem:
    item_id: int
    dataset_root: Path
    plan: ScanPlan | None = None  # DICOM
    nifti_path: Path | None = None  # NIfTI
    limits: IngestLimits = DEFAULT_LIMITS
    # The spec ingest expects to choose (pipeline.py): each scan is preprocessed while its array is in memory.
    spec: PreprocessingSpec | None = None
    spec_key: str | None = None


@dataclass
class FileResult:
    """One input file's outcome. Its path as text: a result per input file crosses back to the ingest process,
    which looks the file up by that text; a `Path` would be rebuilt from its parts there, file by file."""

    location: str
    sha256: str | None
    error: str | None = None
    code: str | None = None  # reason code when error is set; None means decode_failed

    def __reduce__(self) -> tuple:
        """Pickled as plain values: a dataclass's pickled state (a dict) takes longer to load."""
        return FileResult, (self.location, self.sha256, self.error, self.code)


@dataclass
class WorkResult:
    item_id: int
    scans: list[dict[str, Any]] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    intensities: list[IntensitySummary] = field(default_factory=list)  # one per scan, for dataset statistics
    error: str | None = None  # the whole item failed (all its files quarantined with this reason)
    error_code: str | None = None
    from_cache: bool = False
    source_key: str | None = None  # the decode's key in the cache's index (set when it decoded or was served)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step in the worker (medtl/timing.py)


def run_item(item: WorkItem) -> WorkResult:
    """Never raises: every failure, bad data or a library's own exception (MemoryError included), is in the result.

    One hostile series must cost the run that series only; so anything raised here quarantines this item's files
    with a reason code, and library messages (which quote header values) are muted while it runs.
    """
    result = WorkResult(item.item_id)
    with collecting() as result.timings, muted_library_messages() as muted:
        try:
            _run_item(item, result, muted)
        except MemoryError:
            fail_item(item, result, "out_of_memory", "reading this scan ran out of memory although its declared sizes "
                  "are within the limits; run with fewer --workers or lower the ingest limits")  # fmt: skip
        except Exception as error:  # a library failed in a way nothing above anticipated: this item only
            fail_item(item, result, "unexpected_error", f"reading this scan raised {type(error).__name__}; the files "
                  "are quarantined, the rest of the run goes on")  # fmt: skip
    return result


def fail_item(item: WorkItem, result: WorkResult, code: str, reason: str) -> None:
    hashes = {f.location: f.sha256 for f in result.files}
    paths = [h.path for h in item.plan.headers] if item.plan else [item.nifti_path]
    result.scans, result.intensities = [], []
    result.error, result.error_code = reason, code
    locations = [str(path) for path in paths if path is not None]
    result.files = [FileResult(location, hashes.get(location), reason, code) for location in locations]


def without_early_preprocessing(item: WorkItem) -> WorkItem | None:
    """`item` without its optional preprocessing while decoding (None: it has none).

    Why: a process that died on an item alone may have died in that step, not in decoding. Decoded again without
    it, the scan reaches the preprocessing pass, which accounts for it as a scan whose preprocessing failed,
    instead of its files being blamed on their decoder."""
    return replace(item, spec=None, spec_key=None) if item.spec is not None else None


def crashed(item: WorkItem) -> WorkResult:
    """The result of an item whose worker process died even when it ran alone: its files are quarantined."""
    result = WorkResult(item.item_id)
    fail_item(item, result, WORKER_CRASHED, "decoding this scan crashed its worker process (a decoder failed inside "
              "native code); the files are quarantined, the rest of the run goes on")  # fmt: skip
    return result


def _run_item(item: WorkItem, result: WorkResult, muted: Muted) -> None:
    paths = [h.path for h in item.plan.headers] if item.plan else [item.nifti_path]
    prefetched = _prefetch(paths, result)
    hashes = {path: digest for path, (_, digest) in prefetched.items()}
    cache = ScanCache(item.dataset_root)
    source_key = sha256_json(
        {
            "decoder": DECODER_VERSION,
            "files": sorted(hashes.values()),
            "handling": item.plan.handling if item.plan else "nifti",
            "volume": item.plan.volume_index if item.plan else 0,
        }
    )
    result.source_key = source_key
    cached = cache.lookup(source_key)
    if cached is not None:
        result.from_cache = True
        result.files.extend(FileResult(str(path), digest) for path, digest in hashes.items())
        for record in cached:
            result.scans.append(record)
            result.intensities.append(summarize(cache.load_array(record["cache_path"], mmap=True)))
            preprocess_early(item, cache, record, None)
        return
    try:
        scans, outcomes = _decode(item, prefetched)
    except ReadError as error:
        result.error, result.error_code = error.what, error.reason_code
        result.files.extend(
            FileResult(str(path), digest, error.what, error.reason_code) for path, digest in hashes.items()
        )
        return
    result.files.extend(outcomes)
    warned = muted.count > 0 or any(h.value_warnings for h in (item.plan.headers if item.plan else []))
    good = sorted(f.sha256 for f in outcomes if f.error is None)  # the prefetched hash: a mismatch is an error
    source_hash = sha256_json(good)
    for scan in scans:
        if warned:
            scan.flag(QUIET_FLAG)
        try:
            record, array = _store(scan, cache, source_hash, n_files=len(good))
        except ReadError as error:
            result.error, result.error_code = error.what, "scan_rejected"
            result.files = [FileResult(f.location, f.sha256, f.error or error.what, f.code) for f in result.files]
            return
        result.scans.append(record)
        result.intensities.append(summarize(scan.array))
        preprocess_early(item, cache, record, array)


def preprocess_early(item: WorkItem, cache: ScanCache, record: dict[str, Any], array: np.ndarray | None) -> None:
    """The scan's tensor under the spec ingest expects (`item.spec`), from the array still in memory (None: read
    from the cache). A failure here changes nothing: the preprocessing pass makes what is missing and reports it."""
    if item.spec is None or item.spec_key is None or not applies_to(item.spec, record["image_kind"]):
        return
    with contextlib.suppress(Exception):  # the preprocessing pass redoes this scan and reports its error
        preprocess_cached(
            cache, record["pixel_hash"], record["cache_path"], record["affine"], item.spec, item.spec_key, array=array
        )


def _prefetch(paths: list[Path], result: WorkResult) -> dict[Path, tuple[bytes | None, str]]:
    """Read and hash every file once; keep the bytes for decoding while they fit the budget, else re-read later."""
    prefetched: dict[Path, tuple[bytes | None, str]] = {}
    kept = 0
    for path in paths:
        try:
            with timed("read"):
                fd = open_file(path)
                try:
                    size = file_size(fd)
                    data = read_rest(fd, size) if kept + size <= PREFETCH_BUDGET_BYTES else None
                finally:
                    os.close(fd)
            with timed("hash"):
                if data is not None:
                    kept += len(data)
                    prefetched[path] = (data, sha256_bytes(data))
                else:
                    prefetched[path] = (None, sha256_file(path))
        except OSError as error:
            result.files.append(FileResult(str(path), None, f"cannot read file ({error.strerror})"))
    return prefetched


def _decode(item: WorkItem, prefetched: dict[Path, tuple[bytes | None, str]]) -> tuple[list[Scan], list[FileResult]]:
    if item.plan is not None:
        plan_result = read_plan(item.plan, prefetched, item.limits)
        outcomes = [FileResult(str(o.header.path), o.sha256, o.error, o.code) for o in plan_result.files]
        return plan_result.scans, outcomes
    if item.nifti_path is None or item.nifti_path not in prefetched:
        raise ReadError("cannot read file")
    scans, digest = read_nifti(item.nifti_path, item.limits)
    if digest != prefetched[item.nifti_path][1]:
        raise ReadError("the file changed while ingest was reading it")
    return scans, [FileResult(str(item.nifti_path), digest)]


def _store(scan: Scan, cache: ScanCache, source_hash: str, *, n_files: int) -> tuple[dict[str, Any], np.ndarray]:
    """The manifest record of a decoded scan, and the array as cached (written under its pixel hash)."""
    # Integer volumes (medtl/io/dicom/integral.py) stay integers: they hold the exact values the float path gives.
    array = scan.array if scan.array.dtype.kind in "iu" else np.asarray(scan.array, dtype=np.float32)
    with timed("checks"):
        stats = intensity_stats(array)
        check_scan(scan, stats)
    with timed("compact"):
        stored = compact_lossless(
            array, integral=bool(scan.meta.get("integral")), low=stats["intensity_min"], high=stats["intensity_max"]
        )
    with cache.writing(stored) as pending:  # written while it is hashed for its name
        with timed("pixel_hash"):
            pixel_hash = sha256_array(stored)
        relpath = pending.relpath = cache.array_relpath(pixel_hash)
    meta = scan.meta
    record = {
        "volume_index": scan.volume_index,
        "volumes_in_series": scan.volumes_in_series,
        "image_kind": scan.image_kind,
        "shape": [int(size) for size in array.shape],
        "spacing": [round(float(value), ROW_DECIMALS) for value in scan.spacing],
        "affine": [round(float(value), ROW_DECIMALS) for value in scan.affine.reshape(-1)],
        "orientation": scan.orientation,
        "modality": meta.get("modality") or "OT",
        "sop_class": meta.get("sop_class"),
        "transfer_syntax": meta.get("transfer_syntax"),
        "decoder": meta.get("decoder"),
        "manufacturer": meta.get("manufacturer"),
        "manufacturer_model": meta.get("manufacturer_model"),
        "body_part": meta.get("body_part"),
        "sex": meta.get("sex"),
        "age_band": meta.get("age_band"),
        "n_files": n_files,
        "pixel_hash": pixel_hash,
        "source_hash": source_hash,
        "cache_path": relpath,
        "qc_flags": list(scan.qc_flags),
        **stats,
    }
    return record, stored


def compact_lossless(array: np.ndarray, *, integral: bool, low: float, high: float) -> np.ndarray:
    """The smallest dtype that holds every value exactly: int16/uint16 for whole numbers in range, else float32.

    Decoded CT, MR and X-ray values are whole numbers in most cases; keeping them as 16-bit integers halves the
    cache on disk and the time to write and hash it. The rule depends on the values only, so equal arrays always
    get equal pixel hashes.
    """
    if integral:
        for dtype in (np.int16, np.uint16):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return array.astype(dtype, order="K", copy=False)
    return array


def preprocess_cached(
    cache: ScanCache,
    pixel_hash: str,
    cache_path: str,
    affine: list[float],
    spec: PreprocessingSpec,
    spec_key: str,
    writes: WriteBehind | None = None,
    array: np.ndarray | None = None,
) -> str:
    """Preprocessed tensor for one scan under one spec; computed once, then served from the cache. With `writes`,
    the tensor is written while the caller goes on (the caller waits for it by leaving the WriteBehind block);
    `array` is the cached array itself, when the caller still holds it."""
    relpath = cache.preprocessed_relpath(pixel_hash, spec_key)
    if not cache.has(relpath):
        if array is None:
            with timed("preprocess_load"):
                array = cache.load_array(cache_path, mmap=True)  # a crop reads only the pages it keeps
        with timed("preprocess"):
            tensor = preprocess_array(array, np.asarray(affine, dtype=float).reshape(4, 4), spec)
        if writes is not None:
            writes.save(relpath, tensor)
        else:
            with timed("preprocess_write"):
                cache.save_array(relpath, tensor)
    return relpath


def preprocess_records(
    dataset_root: Path, records: list[dict[str, Any]], spec: PreprocessingSpec, spec_key: str
) -> tuple[list[str | None], dict[str, str]]:
    """Worker entry point for a batch of scans: each tensor's cache path (None for scans of the other
    dimensionality), and the scans whose preprocessing raised, by scan id, with the reason.

    Why per scan: what one scan's data makes numpy or the resampling raise (or run out of memory) must cost that
    scan only; ingest leaves it out and quarantines its files. An OSError (a full disk, an unwritable cache) is the
    machine's, not the scan's, and still stops the run before any output is written.
    """
    cache = ScanCache(dataset_root)
    out: list[str | None] = []
    failed: dict[str, str] = {}
    with WriteBehind(cache) as writes:  # each tensor is written while the next one is computed
        for record in records:
            path = None
            if applies_to(spec, record["image_kind"]):
                try:
                    path = preprocess_cached(
                        cache, record["pixel_hash"], record["cache_path"], record["affine"], spec, spec_key, writes
                    )
                except OSError:
                    raise
                except MemoryError:
                    failed[record["scan_id"]] = "preprocessing this scan ran out of memory"
                except Exception as error:  # this scan's data, in a way nothing above anticipated
                    failed[record["scan_id"]] = f"preprocessing this scan raised {type(error).__name__}"
            out.append(path)
    return out, failed


def worker_count(requested: int) -> int:
    return requested if requested > 0 else max(1, os.cpu_count() or 1)
