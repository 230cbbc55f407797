"""Change detection between ingests of the same sources: read only what is new or changed.

Why per group and not per file: a scan is assembled from all files of its series (DICOM) or from a NIfTI file and
its sidecar, so a new slice changes its series. A file that is new, changed (other size or modification time) or
gone marks its group for re-assembly; every file of such a group is read again, and every other group's manifest
rows and file records are taken from the last run unread. The result equals a full re-ingest; the record of what
was read is ingest_state.json (contract: ingest_state).

Why also hashes: a file rewritten within the timestamp resolution of its file system keeps size and time. A file
whose recorded time is that close to the start of the run that recorded it is hashed again ("racy", as git does),
and `verify=True` hashes every file, so neither relies on timestamps alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from stat import S_ISLNK
from typing import Any, NamedTuple

from medtl import __version__
from medtl.contracts import ManifestRow, read_json, read_rows
from medtl.contracts.ingest import FileRecords, FileRecordValues, IngestChanges, IngestReport
from medtl.contracts.ingest_state import FileState, IngestState, ScanState, as_tuples
from medtl.errors import MedTLError
from medtl.hashing import sha256_file, sha256_json
from medtl.identity import Pseudonymizer
from medtl.ingest.cache import ScanCache
from medtl.ingest.discover import InputFile, WalkPart, walk_parts, walked_part
from medtl.ingest.intensity import IntensitySummary, load_summaries, save_summaries, summarize
from medtl.ingest.privacy import PrivateRecords
from medtl.ingest.worker import DECODER_VERSION
from medtl.io.limits import IngestLimits
from medtl.io.nifti import NIFTI_SUFFIXES

STATE = "ingest_state.json"
INTENSITIES = "cache/intensities.npz"  # every scan's intensity summary: carried-over scans need no cache read
LEGACY_SAMPLES = "cache/samples.npz"
RACY_WINDOW_NS = 2_000_000_000  # coarsest common timestamp resolution (FAT: 2 s)


class Listed(NamedTuple):
    """One file found under the sources, with the stat that decides whether it changed (nothing read yet).

    A tuple, not a dataclass: a re-run lists every file of an archive (in a worker process, whose list is sent
    back) and reads few of them."""

    index: int
    location: str  # the path as a string: most listed files are never read, and a Path each costs more than a stat
    relative: str
    root: Path
    file_id: str
    size: int
    mtime_ns: int

    @property  # made for the files that are read
    def path(self) -> Path:
        return Path(self.location)

    @property
    def walked(self) -> tuple[int, str, str, Path]:
        """What a header reader is sent: the path as text (a worker makes its own Path; this process makes one only
        for a file that is read, in `header_pass.read_headers`)."""
        return self.index, self.location, self.relative, self.root


def iter_listed(walked: Iterable[tuple[int, str, str, Path]], pseudonymizer: Pseudonymizer) -> Iterator[Listed]:
    """Stat every file as it is walked. A symbolic link or a file that cannot be stat'ed gets time -1: always read
    again."""
    for index, path, relative, root in walked:
        try:
            stat = os.lstat(path)
            size, mtime = (0, -1) if S_ISLNK(stat.st_mode) else (stat.st_size, stat.st_mtime_ns)
        except OSError:
            size, mtime = 0, -1
        file_id = pseudonymizer.file(f"{index}/{relative}")
        yield tuple.__new__(Listed, (index, path, relative, root, file_id, size, mtime))  # no Python call per file


def list_parts(parts: Sequence[WalkPart], pseudonymizer: Pseudonymizer) -> tuple[list[tuple], dict[int, str | None]]:
    """The files of some walk parts, stat'ed and keyed: what each worker does on a re-run while this process loads
    the last run's records. Plain tuples (`listed` makes them Listed again): a named tuple unpickles through a
    Python call per file. Also each link's real path by position (None: recorded, not followed), for
    `merged_listing`; a plain file's real path follows from its source's."""
    walked, links = [], {}
    bases: dict[str, Path] = {}  # one Path per source: an archive split into pieces has thousands of parts
    for part in parts:
        base = bases.get(part.base) or bases.setdefault(part.base, Path(part.base))
        for path, relative, real, is_link in walked_part(part):
            if is_link:
                links[len(walked)] = real
            walked.append((part.index, path, relative, base))
    return [tuple(item) for item in iter_listed(walked, pseudonymizer)], links


def submit_listing(
    executor: Executor, sources: Sequence[Path], pseudonymizer: Pseudonymizer, pieces: int
) -> list[Future[tuple[list[tuple], dict[int, str | None]]]]:
    """The walk of the sources cut into about `pieces` jobs for the workers (`merged_listing` puts them back)."""
    parts = walk_parts(sources, pieces=pieces)
    size = -(-len(parts) // max(1, pieces))
    return [executor.submit(list_parts, parts[i : i + size], pseudonymizer) for i in range(0, len(parts), size)]


def merged_listing(sources: Sequence[Path], pieces: Iterable[tuple[list[tuple], dict[int, str | None]]]) -> list[tuple]:
    """The listed pieces of `list_parts` in order, each real file once, as one walk lists them (walk_sources).

    Files can meet twice only through a followed link or sources that overlap; otherwise the pieces are joined as
    they are. When they can, a plain file's real path is its source's real folder plus its relative path."""
    pieces = list(pieces)
    if not any(links for _, links in pieces) and not _overlapping(sources):
        return [entry for entries, _ in pieces for entry in entries]
    real_bases: dict[int, str] = {}
    seen: set[str] = set()
    kept = []
    for entries, links in pieces:
        for position, entry in enumerate(entries):
            index, _, relative, base = entry[:4]
            if position in links:
                real = links[position]
                if real is None:
                    kept.append(entry)
                    continue
            else:
                if index not in real_bases:
                    real_bases[index] = os.path.realpath(base)
                real = os.path.join(real_bases[index], relative.replace("/", os.sep))
            if real not in seen:
                seen.add(real)
                kept.append(entry)
    return kept


def _overlapping(sources: Sequence[Path]) -> bool:
    """Whether one source is, or lies inside, another (the same files would be walked twice)."""
    reals = sorted(os.path.join(os.path.realpath(source), "") for source in sources)
    return any(later.startswith(earlier) for earlier, later in pairwise(reals))


def listed(entries: Iterable[tuple]) -> list[Listed]:
    return as_tuples(Listed, entries)


def settings_hash(sources: Sequence[Path], pseudonymizer: Pseudonymizer, limits: IngestLimits) -> str:
    """What makes every earlier result invalid: other sources, another key, other limits, another decoder."""
    roots = [pseudonymizer.file(f"source:{Path(source).resolve()}") for source in sources]
    return sha256_json(
        {
            "sources": roots,
            "key": pseudonymizer.key_id,
            "limits": limits.model_dump(mode="json"),
            "decoder": DECODER_VERSION,
            "medtl": __version__,
        }
    )


def unit_of(file: InputFile, pseudonymizer: Pseudonymizer) -> str:
    """The group a file is assembled with; the same for the old and the new version of an unchanged file."""
    header = file.header
    if header is not None:
        return pseudonymizer.series(header.series_uid or f"no-series:{header.sop_instance_uid}")
    stem = _nifti_stem(file.relative)
    if stem is not None:  # a NIfTI file and its JSON sidecar (whose fate depends on the NIfTI being there)
        return pseudonymizer.file(f"nifti:{file.source_index}/{stem}")
    return pseudonymizer.file(f"{file.source_index}/{file.relative}")


def _nifti_stem(relative: str) -> str | None:
    for suffix in (*NIFTI_SUFFIXES, ".json"):
        if relative.endswith(suffix):
            return relative[: -len(suffix)]
    return None


@dataclass
class Previous:
    """The last run's state, report and manifest; loaded only when its settings equal this run's."""

    state: IngestState
    files: dict[str, FileState]
    records: FileRecords
    record_at: dict[str, int]  # file id -> position in records
    rows: dict[str, dict[str, Any]]
    scans: list[ScanState]
    row_digests: dict[str, str]  # scan id -> the digest recorded for its row


def load_previous(out: Path, settings: str) -> tuple[Previous | None, str | None]:
    """(the last run, None), or (None, why every file is read this time)."""
    if not (out / STATE).is_file():
        return None, "no earlier ingest state in this folder"
    try:
        state = read_json(IngestState, out / STATE)
        if state.settings_hash != settings:
            return None, "the sources, pseudonym key, limits or medtl version differ from the last ingest"
        report = read_json(IngestReport, out / "ingest_report.json")
        manifest = read_rows(ManifestRow, out / "manifest.parquet")
    except MedTLError:
        return None, "the last ingest's state, report or manifest is missing, unreadable or from an older medtl"
    rows = {row["scan_id"]: row for row in manifest}
    scans = state.scan_states()
    if any(scan.scan_id not in rows for scan in scans):
        return None, "the last ingest's manifest does not match its state"
    files = {entry.file_id: entry for entry in state.file_states()}
    return Previous(state, files, report.files, report.files.positions(), rows, scans, state.row_digests()), None


class ChangeSet:
    """The files of this run sorted by what must be read, as they are listed; `regroup` adds the rest of each
    touched group once all are listed.

    Why sorted one file at a time: `fresh_of` hands each file to be read on as soon as it is listed, so where the
    sources are walked in this process (no worker pool) the header pass starts while they are still being walked.
    """

    def __init__(self, previous: Previous | None, *, verify: bool = False) -> None:
        self.previous, self.verify = previous, verify
        self.racy_from = previous.state.started_ns - RACY_WINDOW_NS if previous is not None else 0
        self.listed: list[Listed] = []  # every file found, in walk order
        self.fresh: list[Listed] = []  # new or changed: classify, hash, ingest
        self.unchanged: list[Listed] = []
        self.vanished: list[str] = []
        self.n_new = self.n_changed = 0
        self.n_hashed = 0  # unchanged-looking files hashed to be sure (racy or verify)
        self.n_rechecked = 0  # unchanged-looking files without a recorded hash, classified again (racy or verify)
        self.affected: set[str] = set()
        self.kept: list[Listed] = []  # unchanged, in an untouched group: not read at all

    def fresh_of(self, listing: Iterable[Listed]) -> Iterator[Listed]:
        """Every listed file that must be read, as it comes; once the listing ends, the vanished ones are known."""
        for item in listing:
            self.listed.append(item)
            if self._is_fresh(item):
                self.fresh.append(item)
                yield item
            else:
                self.unchanged.append(item)
        if self.previous is not None:
            seen = {item.file_id for item in self.listed}
            self.vanished = [file_id for file_id in self.previous.files if file_id not in seen]

    def _is_fresh(self, item: Listed) -> bool:
        """Compare the file's stat with the last run's; without a last run, every file is new."""
        previous = self.previous
        before = previous.files.get(item.file_id) if previous is not None else None
        if previous is None or before is None or item.file_id not in previous.record_at:
            self.n_new += 1
            return True
        same = item.mtime_ns >= 0 and (before.size_bytes, before.mtime_ns) == (item.size, item.mtime_ns)
        if same and (self.verify or before.mtime_ns >= self.racy_from):
            if before.sha256 is None:  # never read whole (e.g. not an image): sniffed again, nothing to compare
                self.n_rechecked += 1
                return True
            self.n_hashed += 1
            same = _hash(item.path) == before.sha256
        if not same:
            self.n_changed += 1
        return not same

    def regroup(
        self, previous: Previous, classified: Sequence[InputFile], unit: Callable[[InputFile], str]
    ) -> list[Listed]:
        """Mark the groups of new, changed and vanished files; return their unchanged members to read again."""
        self.affected = {unit(file) for file in classified}
        self.affected |= {previous.files[item.file_id].unit for item in self.fresh if item.file_id in previous.files}
        self.affected |= {previous.files[file_id].unit for file_id in self.vanished}
        again = [item for item in self.unchanged if previous.files[item.file_id].unit in self.affected]
        self.kept = [item for item in self.unchanged if previous.files[item.file_id].unit not in self.affected]
        return again

    def summary(self, *, mode: str, full_reason: str | None, files_read: int) -> IngestChanges:
        return IngestChanges(
            mode=mode,  # type: ignore[arg-type]
            full_reason=full_reason,
            files_new=self.n_new,
            files_changed=self.n_changed,
            files_unchanged=len(self.unchanged) + self.n_rechecked,
            files_vanished=sorted(self.vanished),
            files_read=files_read + self.n_hashed,
            groups_reassembled=len(self.affected),
        )


def _hash(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def build_state(
    settings: str,
    started_ns: int,
    files: Sequence[FileState],
    scans: Sequence[ScanState],
    row_digests: dict[str, str],
) -> IngestState:
    return IngestState.of(
        medtl_version=__version__,
        settings_hash=settings,
        started_ns=started_ns,
        files=files,
        scans=scans,
        row_digests=row_digests,
    )


def save_intensities(out: Path, intensities: dict[str, IntensitySummary]) -> None:
    save_summaries(out / INTENSITIES, intensities)
    (out / LEGACY_SAMPLES).unlink(missing_ok=True)  # what versions before the summaries kept: raw voxel samples


def now_ns() -> int:
    return time.time_ns()


@dataclass
class Carried:
    """What an incremental run takes from the last one for the groups it did not touch."""

    rows: list[dict[str, Any]]
    scans: list[ScanState]
    records: FileRecords
    known_rows: dict[str, tuple[dict[str, Any], str]]  # scan id -> (its row as read, its recorded digest)


def carry_over(
    previous: Previous,
    changes: ChangeSet,
    private: PrivateRecords,
    intensities: dict[str, IntensitySummary],
    out: Path,
) -> Carried:
    """The last run's rows, records and intensity summaries for every group this run did not touch (no input read)."""
    positions = [previous.record_at[item.file_id] for item in changes.kept]
    statuses = previous.records.columns.status
    private.keep(
        (item.file_id, item.index, item.relative, statuses[position])
        for item, position in zip(changes.kept, positions, strict=True)
    )
    # in the last report's order, which is the order this report lists them in: merged with the few new records,
    # they are sorted again almost for free (as listed, they would be shuffled: file ids are keyed hashes)
    records = previous.records.take(sorted(positions))
    private.carry_terms()
    cache = ScanCache(out)
    kept_scans = [scan for scan in previous.scans if scan.unit not in changes.affected]
    known = {scan.scan_id: (previous.rows[scan.scan_id], previous.row_digests[scan.scan_id]) for scan in kept_scans}
    rows = [dict(row) for row, _ in known.values()]  # copies: labels are joined again
    stored = load_summaries(out / INTENSITIES, [row["scan_id"] for row in rows])
    for row in rows:
        summary = stored.get(row["scan_id"])
        intensities[row["scan_id"]] = (
            summary if summary is not None else summarize(cache.load_array(row["cache_path"], mmap=True))
        )
    return Carried(rows, kept_scans, records, known)


def state_entries(
    listed: Sequence[Listed],
    changes: ChangeSet,
    previous: Previous | None,
    read: dict[str, InputFile],
    records: dict[str, FileRecordValues],
    pseudonymizer: Pseudonymizer,
) -> list[FileState]:
    """Every listed file's state: the last run's entry for a file not read (its stat is unchanged, so the entry
    is too), as found for the others (`read`: by listed location). The kept entries come first, in the last
    state's order (by file id), which is the order the state is written in."""
    kept = {item.file_id for item in changes.kept}
    entries = [entry for file_id, entry in previous.files.items() if file_id in kept] if previous is not None else []
    for item in listed:
        if item.file_id in kept:
            continue
        file = read[item.location]
        digest = records[str(file.path)].sha256
        if digest is None and file.header is not None:  # a DICOM file left out of its series (a localizer, a copy):
            digest = _hash(file.path)  # hashed now, or every racy check would re-read its series
        entries.append(
            FileState(
                file_id=item.file_id,
                size_bytes=item.size,
                mtime_ns=item.mtime_ns,
                sha256=digest,
                unit=unit_of(file, pseudonymizer),
            )
        )
    return entries
