"""Find every input file and tell DICOM from NIfTI from everything else by content, never by name.

Each file found here ends in exactly one of ingested / skipped / quarantined later; discovery itself settles the
files that are neither DICOM nor NIfTI (skipped) and those that cannot be read at all (quarantined).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medtl.errors import IngestError, ReadError
from medtl.io.dicom.headers import DicomHeader, read_header
from medtl.io.nifti import NIFTI_SUFFIXES, is_nifti_bytes

_SNIFF_BYTES = 1024


@dataclass
class InputFile:
    path: Path
    source_index: int
    relative: str  # POSIX path relative to its source root (private: may contain names)
    size: int
    kind: str  # "dicom", "nifti" or "other"
    header: DicomHeader | None = None
    status: str | None = None  # set when discovery already decided the file's fate
    reason_code: str | None = None
    reason: str | None = None


def walk_sources(sources: Sequence[Path]) -> Iterator[tuple[int, Path, str]]:
    """Yield (source index, path, relative path) for every regular file, each real file once."""
    seen: set[Path] = set()
    for index, source in enumerate(sources):
        root = Path(source)
        if not root.exists():
            raise IngestError(f"input does not exist: source #{index + 1}", fix="check the SRC arguments")
        if root.is_file():
            candidates: Iterator[Path] = iter([root])
            base = root.parent
        else:
            candidates = _files_under(root)
            base = root
        for path in candidates:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            yield index, path, path.relative_to(base).as_posix()


def _files_under(root: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_file():
                yield path


def classify_file(index: int, path: Path, relative: str) -> InputFile:
    """Sniff one file and, for DICOM, read its header (first pass, no pixels)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as error:
        return InputFile(path, index, relative, 0, "other", None, "quarantined", "unreadable_file", str(error.strerror))
    if len(head) >= 132 and head[128:132] == b"DICM":
        return _dicom(index, path, relative, size, force=False)
    if is_nifti_bytes(head):
        return InputFile(path, index, relative, size, "nifti")
    if _looks_like_raw_dicom(head):
        return _dicom(index, path, relative, size, force=True)
    if relative.endswith(".json") and _has_nifti_twin(path):
        return InputFile(path, index, relative, size, "other", None, "skipped", "nifti_sidecar", "read with its NIfTI")
    if relative.endswith(NIFTI_SUFFIXES):
        return InputFile(path, index, relative, size, "other", None, "quarantined", "corrupt_nifti", "not valid NIfTI")
    return InputFile(path, index, relative, size, "other", None, "skipped", "not_an_image", "neither DICOM nor NIfTI")


def _dicom(index: int, path: Path, relative: str, size: int, *, force: bool) -> InputFile:
    try:
        header = read_header(path, force=force)
    except ReadError as error:
        status = "skipped" if force else "quarantined"
        code = "not_an_image" if force else "unreadable_dicom"
        return InputFile(path, index, relative, size, "other", None, status, code, error.what)
    return InputFile(path, index, relative, size, "dicom", header)


def _looks_like_raw_dicom(head: bytes) -> bool:
    """DICOM written without the 128-byte preamble starts with a group 0x0002 or 0x0008 tag (little endian)."""
    return len(head) >= 8 and head[0:2] in (b"\x02\x00", b"\x08\x00")


def _has_nifti_twin(path: Path) -> bool:
    stem = path.name[: -len(".json")]
    return any(path.with_name(stem + suffix).exists() for suffix in NIFTI_SUFFIXES)
