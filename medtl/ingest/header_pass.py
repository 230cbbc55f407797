"""The header pass: every listed file classified by the workers (DICOM header, NIfTI, or neither), in chunks.

Why in chunks and in order: a file's header is small and the pass touches every file of an archive, so one job
per file would cost more in process round trips than the reading; results come back in listing order, so the
run's outputs do not depend on which worker read what. A file that kills its worker is found and quarantined
without stopping the run (`_classified`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from pathlib import Path

from medtl.ingest.discover import InputFile, classify_file, portable, restored
from medtl.ingest.execution import in_chunks, run_alone, surviving
from medtl.ingest.incremental import Listed
from medtl.ingest.worker import WORKER_CRASHED
from medtl.io.dicom.headers import DicomHeader
from medtl.io.limits import IngestLimits
from medtl.progress import Progress

_HEADER_CHUNK = 64


def read_headers(
    executor: Executor | None,
    n_workers: int,
    bar: Progress,
    to_read: Iterable[Listed],
    limits: IngestLimits,
    read: dict[str, InputFile],
) -> list[InputFile]:
    """Every file of `to_read` classified (headers read by the workers), each also entered in `read` by its listed
    location."""

    folders: dict[str, Path] = {}

    def path_of(location: str) -> Path:
        """The file's Path as its folder's Path and its name: only the name is parsed (a Path parsed whole is most
        of this process's time per file in this pass, and a folder holds many files)."""
        folder, name = os.path.split(location)
        parent = folders.get(folder)
        if parent is None:
            parent = folders[folder] = Path(folder)
        return parent / name

    def files() -> Iterator[InputFile]:
        for chunk, described in _classified(executor, n_workers, in_chunks(to_read, _HEADER_CHUNK), limits):
            for item, portable_file in zip(chunk, described, strict=True):
                file = read[item.location] = restored(path_of(item.location), item.index, item.relative,
                                                      portable_file, file_id=item.file_id)  # fmt: skip
                yield file

    return list(bar.track(files(), "reading headers", None))


def _classified(
    executor: Executor | None, n_workers: int, chunks: Iterator[list[Listed]], limits: IngestLimits
) -> Iterator[tuple[list[Listed], list[tuple]]]:
    """Each chunk with its files as classified, in order. A worker that dies reading headers (pure Python, but a
    hostile file may still find a way) breaks the pool: the chunks it may have held are classified again each in a
    process of its own, file by file when that dies too, and the file that kills its process alone is quarantined
    (`worker_crashed`); the rest go on in a new pool. Later passes see the broken pool and start their own."""
    jobs = ((chunk, limits) for chunk in chunks)
    window = 2 * n_workers
    for (chunk, _), described in surviving(executor, _classify_chunk, jobs, n_workers, _chunk_alone, window=window):
        yield chunk, described


def _chunk_alone(job: tuple[list[Listed], IngestLimits]) -> list[tuple]:
    chunk, limits = job
    described = run_alone(_classify_chunk, job)
    return described if described is not None else [_classified_alone(item, limits) for item in chunk]


def _classified_alone(item: Listed, limits: IngestLimits) -> tuple:
    described = run_alone(_classify_chunk, ([item], limits))
    if described is not None:
        return described[0]
    reason = "reading this file's header crashed its worker process; the file is quarantined, the run goes on"
    return portable(InputFile(item.path, item.index, item.relative, item.size, "other", None, "quarantined",
                              WORKER_CRASHED, reason))  # fmt: skip


def _classify_chunk(job: tuple[list[Listed], IngestLimits]) -> list[tuple]:
    chunk, limits = job
    described = [
        portable(classify_file(index, Path(location), relative, root, limits=limits))
        for index, location, relative, root in (item.walked for item in chunk)
    ]
    return _shared(described)


def _shared(described: list[tuple]) -> list[tuple]:
    """The chunk's header values with equal values made one object: pickle then sends a repeated value once and
    refers back to it, so the ingest process unpickles (and keeps, for the whole run) one string per series,
    patient or transfer syntax instead of one per file. The files of a chunk are mostly one series, and the
    ingest process's per-file work bounds how many workers an ingest keeps busy (600 series, 9,467 files: that
    process's CPU time 0.63 s -> 0.56 s)."""
    seen: dict = {}
    shared = []
    for size, kind, header, *rest in described:
        if header is not None:
            values = list(header)
            for i in _SHARED_POSITIONS:
                values[i] = seen.setdefault(values[i], values[i])
            header = tuple(values)
        shared.append((size, kind, header, *rest))
    return shared


# The header fields a series' files mostly share (texts, and tuples the reader makes of floats or of texts, so
# equal values are of one type and either may stand for the other), by position in `values_of`.
_SHARED_FIELDS = (
    "sop_class_uid", "transfer_syntax_uid", "patient_id", "study_uid", "series_uid", "accession_number",
    "patient_name", "birth_date", "modality", "manufacturer", "manufacturer_model", "body_part", "sex", "patient_age",
    "study_date", "image_type", "photometric", "orientation", "pixel_spacing", "imager_pixel_spacing",
    "patient_orientation",
)  # fmt: skip
_SHARED_POSITIONS = tuple(DicomHeader._fields.index(name) - 1 for name in _SHARED_FIELDS)
