"""A scan's preprocessed tensor, checked before use: what training, pretraining and scoring read from a folder
that, as far as they know, someone else wrote.

A tensor that is truncated, of another shape, or whose header declares more than the file holds fails only when
it is loaded, after the work before it (and numpy first tries to allocate what the header declares). Checked by
its header, a damaged tensor is made again from the scan's cached array, once that array's content hash is the
one ingest recorded; a scan whose array is damaged too has no tensor, and the caller decides: training stops
before its first fold, scoring abstains on that scan.
"""

from __future__ import annotations

from medtl.contracts import PreprocessingSpec
from medtl.hashing import sha256_array
from medtl.ingest.cache import ScanCache
from medtl.ingest.worker import preprocess_cached


def checked_tensor(
    cache: ScanCache, pixel_hash: str, cache_path: str, affine: list[float], spec: PreprocessingSpec, spec_key: str
) -> str | None:
    """The cache path of the scan's whole tensor under `spec` (made now if missing or damaged), or None when the
    scan's cached array is missing or damaged as well."""
    relpath = cache.preprocessed_relpath(pixel_hash, spec_key)
    if cache.holds_tensor(relpath, (spec.channels, *spec.target_shape)):
        return relpath
    (cache.dataset_root / relpath).unlink(missing_ok=True)
    if not array_intact(cache, pixel_hash, cache_path):
        return None
    return preprocess_cached(cache, pixel_hash, cache_path, affine, spec, spec_key)


def array_intact(cache: ScanCache, pixel_hash: str, cache_path: str) -> bool:
    """Whether the cached array is where its content hash says and still has that hash."""
    try:
        return (
            cache.array_relpath(pixel_hash) == cache_path and sha256_array(cache.load_array(cache_path)) == pixel_hash
        )
    except (OSError, ValueError):  # absent, not a .npy, a header that declares more than the file holds
        return False
