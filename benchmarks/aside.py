"""Outputs of timed runs set aside during a benchmark and deleted after it.

Why not delete each run's output before the next run: on ext4 without a journal (the file system of the 2-core
machines these benchmarks run on), the kernel does not reuse a freed inode for a few minutes after its deletion, and
every file created meanwhile scans past the freed ones first. An ingest that follows the deletion of another's
output (some 1,700 files) then spends up to ~1 s more CPU creating its own ~1,600 cache files, while the bare read
it is compared with creates none (measured: 0.07 s to create 1,600 files on a quiet file system, 0.9-1.3 s
minutes after a benchmark's deletions). Renaming frees no inode; the set-aside outputs are deleted once the timing
is over.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

RESERVE_BYTES = 4 * 1024**3  # below this much free disk, outputs are deleted at once after all (and it is said)


class SetAside:
    """`put(path)` moves a finished run's output into a folder beside it; leaving the block deletes them all.
    With `delete`, `put` deletes the output at once instead (to measure what that costs the next run); so does a
    disk with less than RESERVE_BYTES free, with a warning, rather than fill it."""

    def __init__(self, work: Path, *, delete: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="set-aside-", dir=work))
        self.delete = delete
        self._count = 0

    def __enter__(self) -> SetAside:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def put(self, path: Path) -> None:
        if not self.delete and shutil.disk_usage(self.folder).free < RESERVE_BYTES:
            print("set-aside: the disk is nearly full; outputs are deleted between runs from now on", file=sys.stderr)
            self.delete = True
        if self.delete:
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            self._count += 1
            os.rename(path, self.folder / f"{self._count}-{path.name}")
        os.sync()  # this run's writes reach the disk now, not during the next run's timing
