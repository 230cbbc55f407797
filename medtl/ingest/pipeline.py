"""`medtl ingest`: sources + labels -> manifest, fingerprint, report, cache. Every input file is accounted for.

Steps: discover and read headers (parallel, header_pass.py) -> group DICOM into scans -> decode, check and cache
each scan (parallel, series by series; execution.py) -> join labels -> choose or validate the preprocessing spec
and fill the preprocessed cache (preprocess_pass.py) -> write the contract files (and task.json, when a task was
declared: it is checked against the labels before any scan is decoded). Identifiers become pseudonyms here and in
accounting.py, which records every file's fate, and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.contracts import ManifestRow, PreprocessingSpec, read_json, write_json, write_rows
from medtl.contracts.ingest import FileRecords, FileRecordValues, Fingerprint, GroupStats, IngestReport
from medtl.contracts.ingest_state import IngestState
from medtl.contracts.task import TaskDeclaration, findings_of
from medtl.errors import ConfigError, IngestError
from medtl.identity import Pseudonymizer
from medtl.ingest.accounting import (
    Collected,
    ensure_all_accounted,
    file_records,
    record_decoded,
    without_failed,
    work_items,
)
from medtl.ingest.batches import ItemRunner, item_bytes
from medtl.ingest.cache import ScanCache
from medtl.ingest.declaration import complete_declaration, suggestion
from medtl.ingest.discover import InputFile, walk_sources
from medtl.ingest.execution import (
    Decoding,
    is_broken,
    long_lived_objects,
    process_pool,
    start_workers,
)
from medtl.ingest.expected import expected_spec
from medtl.ingest.fingerprint import build_fingerprint, group_stats, row_digests
from medtl.ingest.header_pass import read_headers
from medtl.ingest.incremental import (
    STATE,
    ChangeSet,
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
from medtl.ingest.labels import LabelIndex, join_labels, keyed_labels, labels_summary, read_labels
from medtl.ingest.preprocess import default_spec, spec_hash
from medtl.ingest.preprocess_pass import preprocess_missing
from medtl.ingest.privacy import PrivateRecords
from medtl.ingest.report import build_report, ingest_timings, qc_summary_markdown
from medtl.ingest.worker import WorkItem, worker_count
from medtl.io.dicom.grouping import group_headers
from medtl.io.limits import DEFAULT_LIMITS, IngestLimits
from medtl.progress import Progress
from medtl.timing import Laps, merge

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
FINGERPRINT = "fingerprint.json"
TASK_DECLARATION = "task.json"  # optional: the declared task type and class order (contracts/task.py)
REPORT = "ingest_report.json"
QC_SUMMARY = "qc_summary.md"
PREPROCESSING = "preprocessing.json"


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
            listing = _listed_ahead(executor, sources, pseudonymizer, n_workers)
            previous, full_reason = (
                load_previous(out, settings) if incremental else (None, "a full re-read was asked for")
            )
            # written last: an interrupted run leaves no state, and the next run reads everything
            (out / STATE).unlink(missing_ok=True)
            changes = ChangeSet(previous, verify=verify)
            found = (
                listed(merged_listing(sources, (piece.result() for piece in listing)))
                if listing is not None
                else iter_listed(walk_sources(sources), pseudonymizer)
            )
            read: dict[str, InputFile] = {}  # by listed location
            files = read_headers(executor, n_workers, bar, changes.fresh_of(found), limits, read)
            if previous is not None:
                again = changes.regroup(previous, files, _unit(pseudonymizer))
                files += read_headers(executor, n_workers, bar, again, limits, read)
            laps.lap("discovery_and_headers")
            grouping = group_headers([f.header for f in files if f.header is not None])
            items, identities = work_items(files, grouping.plans, out, limits)
            expected = spec  # else the last run's choice, or the one this run will make, foreseen from the headers
            if expected is None and previous is not None:
                expected = _last_spec(out)
            elif expected is None:
                has_nifti = any(item.nifti_path is not None for item in items)
                expected = expected_spec(
                    grouping.plans, has_nifti=has_nifti, choose=_default_spec, executor=executor, n_workers=n_workers
                )
            _expect_spec(items, expected)
            settle()
            laps.lap("grouping")
            for identity in identities.values():
                private.add_identifiers(identity.patient, identity.accession)
            # biggest series first: with the largest last, one worker finishes it alone while the others idle;
            # results are put back in item order afterwards, so the order of work never shows in the outputs
            ordered = sorted(items, key=item_bytes, reverse=True)
            decoding = Decoding(executor, ordered, n_workers)  # does nothing until iterated
            by_location = {str(f.path): f for f in files}
            records: dict[str, FileRecordValues] = {}  # of the files read this time, by the path's text
            collected = Collected(items, identities, pseudonymizer)
            results = []
            for result in bar.track(decoding if runner is None else runner(ordered), "decoding scans", len(items)):
                results.append(result)
                merge(steps, result.timings)
                record_decoded(result, collected.add(result, by_location), by_location, records, private)
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
                    preprocess_missing(pool, out, rows, chosen_spec, n_workers, steps, failed)
                    if chosen_spec
                    else iter(())
                )

                def assembled() -> tuple[Fingerprint, IngestState]:
                    digests = row_digests(rows, known_rows)
                    fingerprint = build_fingerprint(
                        rows, groups, pseudonym_key_id=pseudonymizer.key_id, preprocessing_hash=key, digests=digests
                    )
                    return fingerprint, build_state(settings, started, entries, scans, digests)

                # The workers make the tensors while this process accounts for every file and assembles the outputs;
                # nothing is written until the tensors are made, so a failed run leaves no manifest behind.
                file_records(files, grouping.fates, by_location, records, private)
                ensure_all_accounted(files, records)
                entries = state_entries(changes.listed, changes, previous, read, records, pseudonymizer)
                fingerprint, state = assembled()
                list(bar.track(tensors, "preprocessing", len(rows)))
                if failed:  # rare: assembled again without them
                    rows, scans, kept_records = without_failed(failed, rows, scans, intensities, records,
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
    """The workers walk and stat the sources, in pieces: on a re-run while this process loads the last run's
    records (most files will not be read, so nothing is gained by handing them on one by one as they are found);
    on a first run too, before they read the headers: walked here, the listing overlapped the header pass but was
    ~0.1 ms of this process's time per file, and this process's own per-file work is what bounds how many workers
    an ingest keeps busy. In pieces: listing is a re-run's floor on a large archive, and it scales with the workers."""
    if executor is None:
        return None
    # a missing source stops the run here, before the last run's records are loaded; pieces of unequal size even
    # out when each worker takes several
    return submit_listing(executor, sources, pseudonymizer, pieces=4 * n_workers)


# -- work and spec -------------------------------------------------------------------------------------------------


def _unit(pseudonymizer: Pseudonymizer) -> Callable[[InputFile], str]:
    return lambda file: unit_of(file, pseudonymizer)


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
