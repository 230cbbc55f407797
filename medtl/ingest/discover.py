"""Find every input file and tell DICOM from NIfTI from everything else by content, never by name.

Each file found here ends in exactly one of ingested / skipped / quarantined later; discovery itself settles the
files that are neither DICOM nor NIfTI (skipped) and those that cannot be read at all (quarantined).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from medtl.errors import IngestError, LimitExceededError, ReadError
from medtl.io.dicom.budget import header_pixel_bytes
from medtl.io.dicom.fastheader import HEAD_BYTES, fast_header
from medtl.io.dicom.headers import DicomHeader, header_at, read_header, values_of
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.io.nifti import NIFTI_SUFFIXES, is_nifti_bytes
from medtl.io.rawfile import IsLink, file_size, open_file, read_head


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
    file_id: str | None = None  # the keyed id the run's listing gave it (None: classified outside a run)


def portable(file: InputFile) -> tuple:
    """What a worker sends back about a file it classified: everything but the path, which the ingest process
    holds already (see headers.header_at for why)."""
    header = None if file.header is None else values_of(file.header)
    return file.size, file.kind, header, file.status, file.reason_code, file.reason


def restored(path: Path, source_index: int, relative: str, sent: tuple, *, file_id: str | None = None) -> InputFile:
    """The InputFile `portable` described, at `path` (the ingest process's own object, so dict lookups by it hit),
    with the keyed id its listing gave it (not computed again for its records)."""
    size, kind, header, status, reason_code, reason = sent
    return InputFile(
        path, source_index, relative, size, kind, None if header is None else header_at(path, header), status,
        reason_code, reason, file_id,
    )  # fmt: skip


def check_sources(sources: Sequence[Path]) -> None:
    """All of them before the first file is walked: nothing is read in vain."""
    for index, source in enumerate(sources):
        if not Path(source).exists():
            raise IngestError(f"input does not exist: source #{index + 1}", fix="check the SRC arguments")


class WalkPart(NamedTuple):
    """A piece of the walk of the sources. Walked apart (each in a worker) and put back in order, the pieces list
    the same files in the same order as one walk (`walk_parts`); only the "each real file once" rule needs them all,
    and `walk_sources` or `incremental.merged_listing` applies it."""

    index: int  # which source
    base: str  # the folder relative paths start from
    path: str  # the folder walked, or the file named as a source
    real: str  # its real path
    kind: Literal["tree", "own", "file"]  # the folder and all below it; only its files and linked folders; a file


def walk_sources(sources: Sequence[Path]) -> Iterator[tuple[int, str, str, Path]]:
    """Yield (source index, path, relative path, source root) for every file, each real file once. The path is a
    string: a re-run lists every file of an archive and reads few, and a Path per file costs more than its stat.

    Symbolic links are never followed out of a source: a link whose target lies outside its source folder (or
    nowhere) is still yielded, so that classify_file records it as skipped; a link to a file inside the same
    source is followed, and that file is read once however many links point at it. Linked folders are not
    walked; one that points outside is recorded like a linked file. A plain file's real path is its folder's
    real path plus its name (one resolve per source, not per file: a re-run lists large archives often).
    """
    seen: set[str] = set()
    for part in walk_parts(sources):
        base = Path(part.base)
        for path, relative, real, _ in walked_part(part):
            if real is not None:  # None: a link recorded, never followed
                if real in seen:
                    continue
                seen.add(real)
            yield part.index, path, relative, base


def walk_parts(sources: Sequence[Path], pieces: int = 1) -> list[WalkPart]:
    """One part per source, or, with `pieces` > 1, folders split into their own files and their subfolders' trees
    (breadth first, a few levels at most) until there are at least that many trees: the walk of an archive spread
    over worker processes. Splitting costs one folder listing per split folder, here."""
    check_sources(sources)
    parts = []
    for index, source in enumerate(sources):
        root = Path(source)
        if root.is_file():  # a file named on the command line is used as given, link or not
            base = os.path.dirname(str(root))  # "" for a file in the working folder: its relative path is its name
            parts.append(WalkPart(index, base, str(root), os.path.join(os.path.realpath(base), root.name), "file"))
        else:
            parts.append(WalkPart(index, str(root), str(root), os.path.realpath(root), "tree"))
    for _ in range(_SPLIT_LEVELS):
        if sum(part.kind == "tree" for part in parts) >= pieces:
            break
        split = [piece for part in parts for piece in (_split(part) if part.kind == "tree" else [part])]
        if len(split) == len(parts):
            break
        parts = split
    return parts


_SPLIT_LEVELS = 3


def _split(part: WalkPart) -> list[WalkPart]:
    """A tree as its folder's own entries followed by each subfolder's tree, in the order one walk takes them."""
    listing = _listing(part.path)
    if listing is None:
        return [part]
    folders, _ = listing
    trees = [
        WalkPart(part.index, part.base, entry.path, os.path.join(part.real, entry.name), "tree")
        for entry in folders
        if not entry.is_symlink()
    ]
    return [part._replace(kind="own"), *trees]


def walked_part(part: WalkPart) -> Iterator[tuple[str, str, str | None, bool]]:
    """(path, relative path, real path, is a link) of every file of the part; the real path is None for a link
    that is recorded and not followed (out of its source, or broken)."""
    prefix = os.path.join(part.base, "")  # every path found starts with it
    for path, real, is_link in _candidates(part):
        relative = path[len(prefix) :].replace(os.sep, "/")
        if is_link and part.kind != "file" and link_fate(Path(path), Path(part.base)) is not None:
            yield path, relative, None, True
            continue
        yield path, relative, os.path.realpath(path) if is_link else real, is_link


def _candidates(part: WalkPart) -> Iterator[tuple[str, str, bool]]:
    if part.kind == "file":
        return iter([(part.path, part.real, Path(part.path).is_symlink())])
    if part.kind == "tree":
        return _walk(part.path, part.base, part.real)
    listing = _listing(part.path)
    return _own(listing, part.base, part.real) if listing is not None else iter(())


def _listing(directory: str) -> tuple[list[os.DirEntry], list[os.DirEntry]] | None:
    """A folder's (subfolders, other entries), sorted by name; None when it cannot be listed."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:  # an unreadable folder is skipped, as os.walk does
        return None
    folders, others = [], []
    for entry in entries:
        try:
            is_folder = entry.is_dir()  # follows links, as os.walk does when it sorts names
        except OSError:
            is_folder = False
        (folders if is_folder else others).append(entry)
    return folders, others


def _own(
    listing: tuple[list[os.DirEntry], list[os.DirEntry]], root: str, real_directory: str
) -> Iterator[tuple[str, str, bool]]:
    """A folder's linked subfolders that point out of the source, then its files (links included)."""
    folders, others = listing
    for entry in folders:
        if entry.is_symlink() and link_fate(Path(entry.path), Path(root)) is not None:
            yield entry.path, "", True
    for entry in others:
        if entry.is_symlink():
            yield entry.path, "", True
        elif entry.is_file():
            yield entry.path, os.path.join(real_directory, entry.name), False


def _walk(directory: str, root: str, real_directory: str) -> Iterator[tuple[str, str, bool]]:
    """(path, real path, is a symbolic link) for every file under `directory`, folders and names in sorted order,
    top down. Plain strings throughout, the source root too: on an archive, a Path per file or folder costs more
    than its listing.

    os.scandir's entries know their type without a system call per file on common file systems. A folder that is
    walked is never a link, so its real path is its parent's plus its name: one resolve per source, not per folder.
    """
    listing = _listing(directory)
    if listing is None:
        return
    yield from _own(listing, root, real_directory)
    for entry in listing[0]:
        if not entry.is_symlink():
            yield from _walk(entry.path, root, os.path.join(real_directory, entry.name))


def link_fate(path: Path, root: Path) -> tuple[str, str] | None:
    """(reason code, reason) for a link that must not be read; None for a link that stays inside `root`."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop of links
        return "broken_symlink", "a symbolic link to nothing readable"
    if not target.is_relative_to(Path(root).resolve()):
        return "symlink_outside_source", "a symbolic link to a file outside the source folder is not followed"
    if target.is_dir():
        return None
    return None if target.is_file() else ("broken_symlink", "a symbolic link to something that is not a file")


def classify_file(
    index: int, path: Path, relative: str, root: Path | None = None, *, limits: IngestLimits = DEFAULT_LIMITS
) -> InputFile:
    """Sniff one file and, for DICOM, read its header (first pass, no pixels). Never raises."""
    try:
        return _classify(index, path, relative, root, limits)
    except Exception as error:  # MemoryError or a library's own failure: this file only, never the run
        reason = f"reading this file raised {type(error).__name__}"
        return InputFile(path, index, relative, 0, "other", None, "quarantined", "unexpected_error", reason)


def _classify(index: int, path: Path, relative: str, root: Path | None, limits: IngestLimits) -> InputFile:
    try:
        try:  # a file found under a source is opened only if it is no link, or a link that stays inside the source
            fd = open_file(path, follow_links=root is None)
        except IsLink:
            fate = link_fate(path, root) if root is not None else None
            if fate is not None:
                return InputFile(path, index, relative, 0, "other", None, "skipped", *fate)
            fd = open_file(path)
        try:
            size = file_size(fd)
            head = read_head(fd, HEAD_BYTES, size)  # enough to sniff, and the whole header of most DICOM files
        finally:
            os.close(fd)
    except OSError as error:
        return InputFile(path, index, relative, 0, "other", None, "quarantined", "unreadable_file", str(error.strerror))
    dicom_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    if dicom_preamble or is_nifti_bytes(head) or _looks_like_raw_dicom(head):
        try:
            limits.check_file(size)
        except LimitExceededError as error:
            return InputFile(path, index, relative, size, "other", None, "quarantined", error.reason_code, error.what)
    if dicom_preamble:
        return _dicom(index, path, relative, size, force=False, limits=limits, head=head)
    if is_nifti_bytes(head):
        return InputFile(path, index, relative, size, "nifti")
    if _looks_like_raw_dicom(head):
        return _dicom(index, path, relative, size, force=True, limits=limits)
    if relative.endswith(".json") and _has_nifti_twin(path):
        return InputFile(path, index, relative, size, "other", None, "skipped", "nifti_sidecar", "read with its NIfTI")
    if relative.endswith(NIFTI_SUFFIXES):
        return InputFile(path, index, relative, size, "other", None, "quarantined", "corrupt_nifti", "not valid NIfTI")
    return InputFile(path, index, relative, size, "other", None, "skipped", "not_an_image", "neither DICOM nor NIfTI")


def _dicom(
    index: int, path: Path, relative: str, size: int, *, force: bool, limits: IngestLimits, head: bytes = b""
) -> InputFile:
    try:
        header = fast_header(path, size, head) if head else None  # None: pydicom reads it, as before
        header = header or read_header(path, force=force, limits=limits)
        header_pixel_bytes(header, limits)
    except LimitExceededError as error:  # too large whatever it is: never "not an image"
        return InputFile(path, index, relative, size, "other", None, "quarantined", error.reason_code, error.what)
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
