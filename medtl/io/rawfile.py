"""Reading input files with few system calls: each file of an archive is opened twice (its head to classify it,
then whole to hash and decode it), so what Python's file objects add per open counts.

Why not `open()`: a buffered file object costs about nine system calls per whole read (a stat before it, then
open, fstat, a terminal check, seek, read, read, close); the functions here cost four or five (open, fstat, the
reads, close), and the size checked is that of the very file read, not of whatever the name pointed to a moment
earlier.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK)  # what opening a link with O_NOFOLLOW raises (Linux; BSD)


class IsLink(Exception):
    """The path is a symbolic link and was not followed."""


def open_file(path: str | Path, *, follow_links: bool = True) -> int:
    """A read-only descriptor; with follow_links=False, IsLink when `path` itself is a symbolic link (checked by
    the open itself where the platform can, so a link put in place after a check is never followed)."""
    if follow_links or not _NO_FOLLOW:
        if not follow_links and os.path.islink(path):  # a platform without O_NOFOLLOW: checked before the open
            raise IsLink
        return os.open(path, os.O_RDONLY)
    try:
        return os.open(path, os.O_RDONLY | _NO_FOLLOW)
    except OSError as error:
        if error.errno in _LINK_ERRORS:
            raise IsLink from None
        raise


def file_size(fd: int) -> int:
    return os.fstat(fd).st_size


def read_head(fd: int, n: int, size: int) -> bytes:
    """The first min(n, size) bytes, fewer only if the file ended sooner; `size` is the file's size as fstat gave
    it, so the usual case is one read."""
    head = os.read(fd, n)
    while len(head) < min(n, size):
        more = os.read(fd, n - len(head))
        if not more:
            break
        head += more
    return head


def read_rest(fd: int, size: int) -> bytes:
    """Everything from the current position to the end; `size` (fstat's) makes it one read plus the read that
    finds the end, and a file that grew or shrank meanwhile is still read whole."""
    parts = [os.read(fd, size + 1)]
    while parts[-1]:
        parts.append(os.read(fd, max(size, 1 << 16)))
    return b"".join(parts) if len(parts) > 2 else parts[0]
