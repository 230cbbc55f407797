"""Content hashes: the identity of files, arrays and JSON documents across stages.

Why content, not paths: caches, splits and artifacts must notice when a file changes under the same name, and must
not depend on where a dataset happens to live on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Serialise so that equal content always gives equal bytes (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sha256_json(obj: Any) -> str:
    return sha256_bytes(canonical_json(obj))


def sha256_array(array: np.ndarray) -> str:
    """Hash dtype, shape and values in Fortran (column-major) order, the order NIfTI and medtl's cache store voxels.

    Equal arrays hash equally whatever their memory layout, and a reshaped or re-typed array never collides with
    the original. Arrays in another layout are hashed one sub-array at a time, never copied whole.
    """
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{array.shape}|F|".encode())
    if array.flags.f_contiguous or array.ndim < 2:
        digest.update(memoryview(np.asfortranarray(array).T).cast("B"))
    else:
        for index in range(array.shape[-1]):
            digest.update(memoryview(np.asfortranarray(array[..., index]).T).cast("B"))
    return digest.hexdigest()
