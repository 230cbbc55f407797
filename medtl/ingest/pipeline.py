"""`medtl ingest`: sources + labels -> manifest, fingerprint, report, cache. Every input file is accounted for.

Steps: discover and read headers (parallel) -> group DICOM into scans -> decode, check and cache each scan
(parallel, series by series) -> join labels -> choose or validate the preprocessing spec and fill the
preprocessed cache -> write the contract files (and task.json, when a task was declared: it is checked against the
labels before any scan is decoded). Identifiers become pseudonyms here and nowhere else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from medtl.contracts import ManifestRow, PreprocessingSpec, read_json, write_json, write_rows
from medtl.contracts.ingest import FileRecord, FileRecords, Fingerprint, GroupStats, IngestReport
from medtl.contracts.ingest_state import IngestState, ScanState
from medtl.contracts.task import TaskDeclaration, findings_of
from medtl.errors import ConfigError, IngestError
from medtl.identity import Pseudonymizer
from medtl.ingest.batches import ItemRunner
from medtl.ingest.cache import ScanCache
from medtl.ingest.declaration import complete_declaration, suggestion
from medtl.ingest.discover import InputFile, classify_file, portable, restored, walk_sources
from medtl.ingest.execution import (
    WORKER_CRASHED,
    Decoding,
    is_broken,
    long_lived_objects,
    process_pool,
    run_alone,
    start_workers,
    surviving,
)
from medtl.ingest.expected import expected_spec
from medtl.ingest.fingerprint import build_fingerprint, group_stats, row_digests
from medtl.ingest.incremental import (
    STATE,
    ChangeSet,
    Listed,
    build_state,
    carry_over,
    iter_listed,
    listed,
    load_previous,
    merged_listing,
    now_ns,
    save_intensities,
    settings_hash,
    state_entries,
    submit_listing,
    unit_of,
)
from medtl.ingest.intensity import IntensitySummary
from medtl.ingest.labels import LabelIndex, join_labels, keyed_labels, labels_summary, read_labels
from medtl.ingest.preprocess import default_spec, spec_hash
from medtl.ingest.privacy import PrivateRecords
from medtl.ingest.report import build_report, ingest_timings, qc_summary_markdown
from medtl.ingest.worker import WorkItem, WorkResult, preprocess_records, worker_count
from medtl.io.dicom.grouping import FileFate, ScanPlan, group_headers
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.progress import Progress
from medtl.timing import Laps, collecting, merge

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

MANIFEST = "manifest.parquet"
FINGERPRINT = "fingerprint.json"
TASK_DECLARATION = "task.json"  # optional: the declared task type and class order (contracts/task.py)
REPORT = "ingest_report.json"
QC_SUMMARY = "qc_summary.md"
PREPROCESSING = "preprocessing.json"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_HEADER_CHUNK = 64


@dataclass
class IngestResult:
    out: Path
    report: IngestReport
    fingerprint: Fingerprint
    spec: PreprocessingSpec | None
    task: TaskDeclaration | None = None
    notes: tuple[str, ...] = ()  # about the task: a declared class without scans, labels that look like grades

    def describe(self) -> str:
        counts = self.report.counts
        text = (
            f"ingested {counts['ingested']} files, skipped {counts['skipped']}, quarantined {counts['quarantined']}; "
            f"{self.fingerprint.n_scans} scans from {self.fingerprint.n_patients} patients "
            f"(labels: {self.fingerprint.labels or 'none'})\n"
            f"wrote {self.out / MANIFEST}, {self.out / REPORT}, {self.out / QC_SUMMARY}"
        )
        if self.task is not None:
            text += f", {self.out / TASK_DECLARATION} ({self.task.kind}: {', '.join(self.task.classes or [])})"
        changes = self.report.changes
        if changes is not None and changes.mode == "incremental":
            text += (
                f"\nread {changes.files_read} file(s): {changes.files_new} new, {changes.files_changed} changed, "
                f"{len(changes.files_vanished)} gone, {changes.files_unchanged} unchanged; "
                f"{changes.groups_reassembled} series re-assembled (--full reads everything)"
            )
        return text + "".join(f"\nnote: {note}" for note in self.notes)


@dataclass
class _Identity:
    patient: str
    study: str | None  # as a labels file names it: StudyInstanceUID, or a NIfTI study folder's name
    accession: str | None
    series: str
    scan_prefix: str
    study_scope: str | None = None  # the study pseudonym's source where `study` is unique only within a patient

    @property
    def study_key(self) -> str | None:
        return self.study_scope or self.study


def ingest_sources(
    sources: Sequence[Path],
    *,
    out: Path,
    pseudonymizer: Pseudonymizer,
    labels: Path | None = None,
    spec: PreprocessingSpec | None = None,
    workers: int = 0,
    progress: bool = False,
    limits: IngestLimits | None = None,
    task: TaskDeclaration | None = None,
    incremental: bool = True,
    verify: bool = False,
    runner: ItemRunner | None = None,
) -> IngestResult:
    """Ingest every file under `sources` into the dataset folder `out`; one bad file or series never stops the run.

    `limits` (default: IngestLimits()) bounds what a file may declare or decompress to; over a limit, the file or
    series is quarantined with the limit's name in the reason. `task` (the declared task type and class order) is
    checked against the labels file first and written as task.json, with its classes listed.

    A re-run into the same folder over the same sources reads only new and changed files and re-assembles only
    their series (medtl/ingest/incremental.py); `incremental=False` reads everything, `verify=True` also hashes
    every unchanged-looking file. Either way the manifest equals a full re-ingest's.

    `runner` decodes the series somewhere else (e.g. as tasks on a Dask cluster, medtl/ingest/batches.py) instead of
    the local worker processes; headers and preprocessing stay here. The manifest is the same either way.
    """
    limits = limits or DEFAULT_LIMITS
    if not sources:
        raise IngestError("no input given", fix="pass one or more folders or files with DICOM / NIfTI scans")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label_table = read_labels(labels) if labels is not None else None
    if task is not None:
        if label_table is None:
            raise ConfigError("a task declaration needs --labels", fix="pass the labels file, or leave out the task")
        task = complete_declaration(task, [row.label for row in label_table.rows], where=Path(str(labels)).name)
    laps = Laps()
    steps: dict[str, float] = {}  # seconds per step inside the workers, summed over them
    private = PrivateRecords(out, pseudonymizer)
    n_workers = worker_count(workers)
    started = now_ns()
    settings = settings_hash(sources, pseudonymizer, limits)
    with long_lived_objects() as settle:  # until the outputs are written: see execution.long_lived_objects
        with process_pool(n_workers) as executor, Progress(progress) as bar:
            start_workers(executor, n_workers)
            laps.lap("start_workers")
            listing = (
                _listed_ahead(executor, sources, pseudonymizer, n_workers)
                if incremental and (out / STATE).is_file()
                else None
            )
            previous, full_reason = (
                load_previous(out, settings) if incremental else (None, "a full re-read was asked for")
            )
            # written last: an interrupted run leaves no state, and the next run reads everything
            (out / STATE).unlink(missing_ok=True)
            changes = ChangeSet(previous, verify=verify)
            # on a first run the workers read headers while the sources are still being walked and listed here
            found = (
                listed(merged_listing(sources, (piece.result() for piece in listing)))
                if listing is not None
                else iter_listed(walk_sources(sources), pseudonymizer)
            )
            read: dict[str, InputFile] = {}  # by listed location
            files = _read_headers(executor, n_workers, bar, changes.fresh_of(found), limits, read)
            if previous is not None:
                again = changes.regroup(previous, files, _unit(pseudonymizer))
                files += _read_headers(executor, n_workers, bar, again, limits, read)
            laps.lap("discovery_and_headers")
            grouping = group_headers([f.header for f in files if f.header is not None])
            items, identities = _work_items(files, grouping.plans, out, limits)
            expected = spec  # else the last run's choice, or the one this run will make, foreseen from the headers
            if expected is None and previous is not None:
                expected = _last_spec(out)
            elif expected is None:
                has_nifti = any(item.nifti_path is not None for item in items)
                expected = expected_spec(grouping.plans, has_nifti=has_nifti, choose=_default_spec)
            _expect_spec(items, expected)
            settle()
            laps.lap("grouping")
            for identity in identities.values():
                private.add_identifiers(identity.patient, identity.accession)
            ordered = _largest_first(items, files)
            decoding = Decoding(executor, ordered, n_workers)  # does nothing until iterated
            by_location = {str(f.path): f for f in files}
            records: dict[Path, FileRecord] = {}  # of the files read this time
            collected = _Collected(items, identities, pseudonymizer)
            results = []
            for result in bar.track(decoding if runner is None else runner(ordered), "decoding scans", len(items)):
                results.append(result)
                merge(steps, result.timings)
                _record_decoded(result, collected.add(result, by_location), by_location, records, private)
            laps.lap("decode")
            rows, intensities, scans = collected.in_item_order()
            kept_records = FileRecords.of(())
            known_rows = None  # rows carried over unread, with their recorded digests (none: every row is hashed)
            if previous is not None:
                carried = carry_over(previous, changes, private, intensities, out)
                rows, scans, kept_records = carried.rows + rows, carried.scans + scans, carried.records
                known_rows = None if verify else carried.known_rows
            label_index = LabelIndex(keyed_labels(label_table, pseudonymizer)) if label_table is not None else None
            conflicts = join_labels(rows, scans, label_index)
            groups = group_stats(rows, intensities)
            chosen_spec = spec or _default_spec(groups)
            key = spec_hash(chosen_spec) if chosen_spec else None
            laps.lap("collect")
            fresh = is_broken(executor) and chosen_spec is not None  # a crashed decoder or header reader broke it
            failed: dict[str, str] = {}  # scans whose preprocessing raised: left out, their files quarantined
            with process_pool(n_workers) if fresh else nullcontext(executor) as pool:
                tensors = (
                    _preprocess(pool, out, rows, chosen_spec, n_workers, steps, failed) if chosen_spec else iter(())
                )

                def assembled() -> tuple[Fingerprint, IngestState]:
                    digests = row_digests(rows, known_rows)
                    fingerprint = build_fingerprint(
                        rows, groups, pseudonym_key_id=pseudonymizer.key_id, preprocessing_hash=key, digests=digests
                    )
                    return fingerprint, build_state(settings, started, entries, scans, digests)

                # The workers make the tensors while this process accounts for every file and assembles the outputs;
                # nothing is written until the tensors are made, so a failed run leaves no manifest behind.
                _file_records(files, grouping.fates, by_location, records, private)
                _ensure_all_accounted(files, records)
                entries = state_entries(changes.listed, changes, previous, read, records, pseudonymizer)
                fingerprint, state = assembled()
                list(bar.track(tensors, "preprocessing", len(rows)))
                if failed:  # rare: assembled again without them
                    rows, scans, kept_records = _without_failed(failed, rows, scans, intensities, records,
                                                                kept_records, private)  # fmt: skip
                    groups = group_stats(rows, intensities)
                    fingerprint, state = assembled()
            laps.lap("preprocess")
        laps.lap("stop_workers")
        mode = "incremental" if previous is not None else "full"
        summary_of_changes = changes.summary(mode=mode, full_reason=full_reason, files_read=len(files))
        write_rows(ManifestRow, rows, out / MANIFEST)
        write_json(fingerprint, out / FINGERPRINT)
        if chosen_spec is not None:
            write_json(chosen_spec, out / PREPROCESSING)
        summary = labels_summary(label_index, label_table, rows, conflicts) if label_table is not None else None
        laps.lap("write_outputs")
        report = build_report(
            FileRecords.concat(kept_records, FileRecords.checked(records.values())),
            n_sources=len(sources),
            n_scans=len(rows),
            key_id=pseudonymizer.key_id,
            labels=summary,
        ).model_copy(update={"changes": summary_of_changes, "timings": ingest_timings(laps, steps, n_workers)})
        write_json(report, out / REPORT)
        notes = _task_notes(task, rows)
        if task is not None:
            write_json(task, out / TASK_DECLARATION)
        spec_text = chosen_spec.model_dump_json(indent=2) if chosen_spec else "{}"
        (out / QC_SUMMARY).write_text(qc_summary_markdown(report, rows, fingerprint, spec_text), encoding="utf-8")
        private.write(sources, label_table)
        save_intensities(out, intensities)
        ScanCache(out).remember(
            ((result.source_key, result.scans) for result in results if result.source_key and result.scans
             and not result.from_cache),
            in_use={row["pixel_hash"] for row in rows},
        )  # fmt: skip
        write_json(state, out / STATE)
    return IngestResult(out, report, fingerprint, chosen_spec, task, notes)


def _task_notes(task: TaskDeclaration | None, rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """What a reader should know about the task after the join: a declared class that no ingested scan carries
    (its rows matched no scan), or labels that look like grades but were not declared."""
    labels = {row["label"] for row in rows if row["label"] is not None}
    if task is None:
        hint = suggestion(labels)
        return (hint,) if hint else ()
    found = {name for label in labels for name in findings_of(label)} if task.kind == "multilabel" else labels
    missing = [name for name in task.classes or [] if name not in found]
    if not missing:
        return ()
    log.warning("declared classes without an ingested scan: %s", missing)
    return (f"declared class(es) {missing} have no ingested scan (their label rows matched no scan)",)


# -- discovery ---------------------------------------------------------------------------------------------------


def _listed_ahead(
    executor: Executor | None, sources: Sequence[Path], pseudonymizer: Pseudonymizer, n_workers: int
) -> list[Future[tuple[list[tuple], dict[int, str | None]]]] | None:
    """On a re-run, the workers walk and stat the sources, in pieces, while this process loads the last run's
    records; most files will not be read, so nothing is gained by handing them on one by one as they are found.
    In pieces: listing is a re-run's floor on a large archive, and it then scales with the workers."""
    if executor is None:
        return None
    # a missing source stops the run here, before the last run's records are loaded; pieces of unequal size even
    # out when each worker takes several
    return submit_listing(executor, sources, pseudonymizer, pieces=4 * n_workers)


def _read_headers(
    executor: Executor | None,
    n_workers: int,
    bar: Progress,
    to_read: Iterable[Listed],
    limits: IngestLimits,
    read: dict[str, InputFile],
) -> list[InputFile]:
    """Every file of `to_read` classified (headers read by the workers), each also entered in `read` by its listed
    location."""

    def files() -> Iterator[InputFile]:
        for chunk, described in _classified(executor, n_workers, _chunks(to_read, _HEADER_CHUNK), limits):
            for item, portable_file in zip(chunk, described, strict=True):
                file = read[item.location] = restored(item.path, item.index, item.relative, portable_file,
                                                      file_id=item.file_id)  # fmt: skip
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
    return [
        portable(classify_file(index, Path(location), relative, root, limits=limits))
        for index, location, relative, root in (item.walked for item in chunk)
    ]


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# -- work items and identity ---------------------------------------------------------------------------------------


def _work_items(
    files: list[InputFile], plans: list[ScanPlan], out: Path, limits: IngestLimits
) -> tuple[list[WorkItem], dict[int, _Identity]]:
    items: list[WorkItem] = []
    identities: dict[int, _Identity] = {}
    for plan in plans:
        first = plan.headers[0]
        item = WorkItem(len(items), out, plan=plan, limits=limits)
        series = first.series_uid or f"instance:{first.sop_instance_uid}"
        identities[item.item_id] = _Identity(
            patient=first.patient_id,
            study=first.study_uid,
            accession=first.accession_number or None,
            series=series,
            scan_prefix=f"{series}|{plan.handling}|{plan.volume_index}",
        )
        items.append(item)
    for file in files:
        if file.kind == "nifti" and file.status is None:
            item = WorkItem(len(items), out, nifti_path=file.path, limits=limits)
            identities[item.item_id] = _nifti_identity(file)
            items.append(item)
    return items, identities


def _nifti_identity(file: InputFile) -> _Identity:
    """Patient = first folder under the source root (or the file stem), study = second folder (within that
    patient), series = the file.

    A file stem that is a DICOM UID is used as the SeriesInstanceUID (a study folder named by a UID, as the
    StudyInstanceUID), so NIfTI exported from DICOM (one file per series, named by its UID) gets the same
    pseudonyms as the DICOM it came from. A dcm2niix-style sidecar with
    PatientID / StudyInstanceUID / SeriesInstanceUID overrides all of this.
    """
    from medtl.io.nifti import sidecar_for

    parts = file.relative.split("/")
    name = parts[-1]
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
    sidecar = sidecar_for(file.path)
    patient = str(sidecar.get("PatientID") or (parts[0] if len(parts) > 1 else stem))
    study_uid = sidecar.get("StudyInstanceUID")
    folder = parts[1] if len(parts) > 2 else None
    # A folder name such as "study1" is unique only within its patient: the pseudonym is derived from both, or
    # patA/study1 and patB/study1 would become one study. A folder named by a StudyInstanceUID is unique as it is
    # and keeps the DICOM study's pseudonym.
    scoped = folder is not None and not study_uid and not _UID.match(folder)
    scope = f"nifti-study:{patient}/{folder}" if scoped else None
    series = sidecar.get("SeriesInstanceUID") or (stem if _UID.match(stem) else f"nifti:{file.relative}")
    study = str(study_uid) if study_uid else folder
    return _Identity(patient, study, None, str(series), f"{series}|nifti", study_scope=scope)


# -- collecting results ----------------------------------------------------------------------------------------------


class _Collected:
    """Manifest rows (labels joined later, over all rows), intensity summaries and each scan's group and join keys,
    gathered result by result as the series are decoded, and given in item order (the order of work never shows).

    Why as they arrive: the ingest process waits for the workers meanwhile, so accounting for a series there
    costs no time, where after the last series it would hold up the run's end."""

    def __init__(self, items: list[WorkItem], identities: dict[int, _Identity], pseudo: Pseudonymizer) -> None:
        self.items, self.identities, self.pseudo = items, identities, pseudo
        self._by_item: dict[int, tuple[list[dict[str, Any]], list[IntensitySummary], list[ScanState]]] = {}

    def add(self, result: WorkResult, by_location: dict[str, InputFile]) -> tuple[str, list[str]]:
        """The result's rows; returns its series pseudonym and scan ids (for its files' records)."""
        pseudo, identity, item = self.pseudo, self.identities[result.item_id], self.items[result.item_id]
        first = item.plan.headers[0].path if item.plan else item.nifti_path
        unit = unit_of(by_location[str(first)], pseudo)
        series_id = pseudo.series(identity.series)
        rows, scans, scan_ids = [], [], []
        for scan in result.scans:
            scan_id = pseudo.pseudonym("scan", f"{identity.scan_prefix}|{scan['volume_index']}")
            scan_ids.append(scan_id)
            scans.append(
                ScanState(
                    scan_id=scan_id,
                    unit=unit,
                    patient_key=pseudo.patient(identity.patient),
                    study_key=pseudo.study(identity.study) if identity.study else None,
                    accession_key=pseudo.study(identity.accession) if identity.accession else None,
                    series_key=pseudo.series(identity.series),
                )
            )
            rows.append(
                {
                    **scan,
                    "scan_id": scan_id,
                    "patient_id": pseudo.patient(identity.patient),
                    "study_id": pseudo.study(identity.study_key) if identity.study_key else None,
                    "series_id": series_id,
                    "source_format": "nifti" if item.nifti_path else "dicom",
                    "site": None,
                    "label": None,
                    "split": None,
                }
            )
        self._by_item[result.item_id] = (rows, list(result.intensities), scans)
        return series_id, scan_ids

    def in_item_order(self) -> tuple[list[dict[str, Any]], dict[str, IntensitySummary], list[ScanState]]:
        rows: list[dict[str, Any]] = []
        intensities: dict[str, IntensitySummary] = {}
        scans: list[ScanState] = []
        for item_id in sorted(self._by_item):
            item_rows, item_intensities, item_scans = self._by_item[item_id]
            rows += item_rows
            scans += item_scans
            intensities.update(zip((row["scan_id"] for row in item_rows), item_intensities, strict=True))
        return rows, intensities, scans


def _record_decoded(
    result: WorkResult,
    outcome: tuple[str, list[str]],
    by_location: dict[str, InputFile],
    records: dict[Path, FileRecord],
    private: PrivateRecords,
) -> None:
    """The records of one decoded series' files (by their path's text, as decoding results name them)."""
    series_id, scan_ids = outcome
    for file_result in result.files:
        file = by_location[file_result.location]
        if file_result.error is not None or not scan_ids:
            reason = file_result.error or result.error or "no scan could be formed from this file"
            fallback = "decode_failed" if file_result.error and not result.error else "scan_rejected"
            code = file_result.code or result.error_code or fallback
            records[file.path] = private.record(file, "quarantined", code, reason, sha256=file_result.sha256)
        else:
            records[file.path] = private.record(
                file, "ingested", None, None, sha256=file_result.sha256, series_id=series_id, scan_ids=scan_ids
            )


def _file_records(
    files: list[InputFile],
    fates: Sequence[FileFate],
    by_location: dict[str, InputFile],
    records: dict[Path, FileRecord],
    private: PrivateRecords,
) -> None:
    """Every read file registered, and the records of those whose fate discovery or grouping decided (the
    decoded ones are recorded as their series come back, `_record_decoded`)."""
    for file in files:
        private.register(file)
        if file.status is not None:
            records[file.path] = private.record(file, file.status, file.reason_code, file.reason)
    for fate in fates:
        file = by_location[str(fate.header.path)]
        records[file.path] = private.record(file, fate.status, fate.reason_code, fate.reason)


def _largest_first(items: list[WorkItem], files: list[InputFile]) -> list[WorkItem]:
    """Biggest series first (by bytes): with the largest last, one worker finishes it alone while the others idle.
    Results are put back in item order afterwards, so the order of work never shows in the outputs."""
    nifti_sizes = {file.path: file.size for file in files if file.kind == "nifti"}  # a DICOM header has its own

    def size(item: WorkItem) -> int:
        if item.plan is not None:
            return sum(header.size for header in item.plan.headers)
        return nifti_sizes.get(item.nifti_path, 0) if item.nifti_path is not None else 0

    return sorted(items, key=size, reverse=True)


def _unit(pseudonymizer: Pseudonymizer) -> Callable[[InputFile], str]:
    return lambda file: unit_of(file, pseudonymizer)


def _without_failed(
    failed: dict[str, str],
    rows: list[dict[str, Any]],
    scans: list[ScanState],
    intensities: dict[str, IntensitySummary],
    records: dict[Path, FileRecord],
    kept_records: FileRecords,
    private: PrivateRecords,
) -> tuple[list[dict[str, Any]], list[ScanState], FileRecords]:
    """Leave out the scans whose preprocessing raised. A file none of whose scans is left is quarantined with the
    reason (`preprocess_failed`); a file that still has scans keeps them."""
    for scan_id in failed:
        intensities.pop(scan_id, None)

    def amended(record: FileRecord) -> FileRecord:
        lost = [scan_id for scan_id in record.scan_ids if scan_id in failed]
        if not lost:
            return record
        left = [scan_id for scan_id in record.scan_ids if scan_id not in failed]
        if left:
            return record.model_copy(update={"scan_ids": left})
        private.restatus(record.file_id, "quarantined")
        update = {"status": "quarantined", "reason_code": "preprocess_failed", "reason": failed[lost[0]],
                  "series_id": None, "scan_ids": []}  # fmt: skip
        return record.model_copy(update=update)

    for path, record in records.items():
        records[path] = amended(record)
    return (
        [row for row in rows if row["scan_id"] not in failed],
        [scan for scan in scans if scan.scan_id not in failed],
        FileRecords.of(amended(record) for record in kept_records),
    )


def _ensure_all_accounted(files: list[InputFile], records: dict[Path, FileRecord]) -> None:
    missing = [f for f in files if f.path not in records]
    if missing:
        raise IngestError(
            f"{len(missing)} input file(s) have no recorded fate; this is a bug in medtl",
            fix="please report it with the ingest log; no output was written for this run",
        )


def _default_spec(groups: list[GroupStats]) -> PreprocessingSpec | None:
    if not groups:
        return None
    dominant = max(groups, key=lambda g: g.n_scans)
    return default_spec(
        image_kind=dominant.image_kind,
        modality=dominant.modality,
        median_spacing=[axis.median for axis in dominant.spacing],
        median_shape=[round(axis.median) for axis in dominant.shape],
    )


def _last_spec(out: Path) -> PreprocessingSpec | None:
    """The spec the last run into `out` chose, or None: a re-run over mostly the same scans chooses it again."""
    try:
        return read_json(PreprocessingSpec, out / PREPROCESSING)
    except Exception:  # none, or not readable: the new scans wait for the preprocessing pass
        return None


def _expect_spec(items: list[WorkItem], spec: PreprocessingSpec | None) -> None:
    """Let the workers preprocess each scan under `spec` while its decoded array is in memory: given, the last
    run's, or the one a first run will choose, foreseen from the headers (medtl/ingest/expected.py). The
    preprocessing pass then finds those tensors made, and reads back only the scans whose
    tensors are missing (all of them when the spec finally chosen differs); on an archive larger than memory,
    that read-back would come from disk.
    """
    if spec is not None:
        key = spec_hash(spec)
        for item in items:
            item.spec, item.spec_key = spec, key


def _preprocess(
    executor: Executor | None,
    out: Path,
    rows: list[dict[str, Any]],
    spec: PreprocessingSpec,
    n_workers: int,
    steps: dict[str, float],
    failed: dict[str, str],
) -> Iterator[str | None]:
    """Submits every scan whose tensor is missing now; iterating waits for them (and makes them, without workers)
    and fills `failed` with the scans whose preprocessing raised (scan id: reason)."""
    key = spec_hash(spec)
    cache = ScanCache(out)
    # Tensors already cached (a re-run's unchanged scans) cost a stat here, not a round trip to a worker.
    missing = [row for row in rows if not cache.has(cache.preprocessed_relpath(row["pixel_hash"], key))]
    chunk = max(1, min(16, len(missing) // max(1, 4 * n_workers)))
    jobs = ((out, batch, spec, key) for batch in _chunks(missing, chunk))
    work = surviving(executor, _preprocess_batch, jobs, n_workers, _preprocessed_alone)  # all submitted now

    def made() -> Iterator[str | None]:
        yield from [None] * (len(rows) - len(missing))
        for _, (paths, batch_failed, batch_steps) in work:
            merge(steps, batch_steps)
            failed.update(batch_failed)
            yield from paths

    return made()


_PreprocessJob = tuple[Path, list[dict[str, Any]], PreprocessingSpec, str]
_Preprocessed = tuple[list[str | None], dict[str, str], dict[str, float]]


def _preprocessed_alone(job: _PreprocessJob) -> _Preprocessed:
    """A batch whose worker died, again in a process of its own, scan by scan if that dies too: the scan whose
    process dies alone is left out like one whose preprocessing raised (its files quarantined, the run goes on)."""
    done = run_alone(_preprocess_batch, job)
    if done is not None:
        return done
    out, batch, spec, key = job
    if len(batch) == 1:
        reason = "preprocessing this scan crashed its worker process; its files are quarantined, the run goes on"
        return [None], {batch[0]["scan_id"]: reason}, {}
    paths: list[str | None] = []
    failed: dict[str, str] = {}
    steps: dict[str, float] = {}
    for row in batch:
        row_paths, row_failed, row_steps = _preprocessed_alone((out, [row], spec, key))
        paths += row_paths
        failed.update(row_failed)
        merge(steps, row_steps)
    return paths, failed, steps


def _preprocess_batch(job: _PreprocessJob) -> _Preprocessed:
    out, batch, spec, key = job
    with collecting() as steps:
        paths, failed = preprocess_records(out, batch, spec, key)
    return paths, failed, steps
