"""Content-addressed cache of decoded and preprocessed arrays.

Keys are content hashes, never paths: a decoded scan is stored under the hash of its pixels, a preprocessed tensor
under (pixel hash, spec hash), and the decode step itself is remembered under the hash of the input files. A
changed file or a changed spec therefore always misses, and an unchanged one is never decoded twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medtl.contracts.base import atomic_write_bytes

CACHE_DIR = "cache"


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

    def load_array(self, relpath: str, *, mmap: bool = False) -> np.ndarray:
        return np.load(self.dataset_root / relpath, allow_pickle=False, mmap_mode="r" if mmap else None)

    def has(self, relpath: str) -> bool:
        return (self.dataset_root / relpath).is_file()
