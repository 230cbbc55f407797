"""Pull series from a PACS into a local staging folder, in batches of bounded size, for a consumer to process.

    puller = Puller(source, staging, state=state)
    plan = puller.plan(query)
    for batch in puller.batches(plan):
        process(batch.folder)      # ingest, score, send results back
        puller.commit(batch)       # only now are its series done; the folder is removed

Disk use: a batch closes as soon as its series reach `max_staging_bytes`, so staging holds at most that plus one
series (sizes are unknown before retrieval). A series the PACS cannot deliver -- or a study whose series it cannot
list -- is recorded as failed and skipped; after `max_attempts` runs it is quarantined with its reason instead of
being retried every night. A series that arrives but then fails in the consumer (ingest or writing its result
raises for it) is reported with `fail_after_retrieval` and counts exactly the same way. If the PACS itself stops
answering, the run stops with SourceUnavailableError: committed batches stay done, the open batch is discarded.

The staging folder is medtl's alone: it is marked when made, a run clears only a marked one (the leftovers of an
interrupted run), and a staging folder holding anything else is refused before a byte is pulled.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from medtl.errors import SourceError, SourceUnavailableError
from medtl.outputs import clear_for, mark, remove_if_made_by
from medtl.sources.location import SourceLocation, parse_location
from medtl.sources.query import PacsQuery, RemoteSeries
from medtl.sources.remote import RemoteSource, RetryPolicy, SeriesFailed
from medtl.sources.state import PullState

log = logging.getLogger(__name__)
GIB = 1024**3
STAGING_OWNER = "medtl PACS staging"


def open_remote(location: SourceLocation | str, retry: RetryPolicy | None = None) -> RemoteSource:
    """The protocol client for a PACS location (an explicit table: adding a protocol is one line)."""
    from medtl.sources.dicomweb import DicomWebSource
    from medtl.sources.dimse import DimseSource

    location = parse_location(location) if isinstance(location, str) else location
    kinds: dict[str, type[RemoteSource]] = {"dicomweb": DicomWebSource, "dimse": DimseSource}
    if location.kind not in kinds:
        raise SourceError("a folder is read in place, not pulled", where=location.display,
                          fix="pass the folder to ingest / score directly")  # fmt: skip
    return kinds[location.kind](location, retry)


@dataclass
class PullPlan:
    new: list[RemoteSeries]
    already_done: int
    quarantined: int
    query: str

    def describe(self) -> str:
        return (f"{len(self.new)} new series to pull ({self.already_done} already processed, "
                f"{self.quarantined} quarantined) for query: {self.query}")  # fmt: skip


@dataclass
class Batch:
    number: int
    folder: Path
    series: list[RemoteSeries] = field(default_factory=list)
    bytes: int = 0


@dataclass
class PullSummary:
    pulled: int = 0
    batches: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (series key, reason)
    quarantined_now: list[str] = field(default_factory=list)
    peak_staging_bytes: int = 0


class Puller:
    def __init__(
        self,
        source: RemoteSource,
        staging: Path,
        *,
        state: PullState | None = None,
        max_staging_bytes: int = 2 * GIB,
    ) -> None:
        self.source = source
        self.staging = Path(staging)
        self.state = state
        self.max_staging_bytes = max_staging_bytes
        self.summary = PullSummary()

    def plan(self, query: PacsQuery, *, today: date | None = None) -> PullPlan:
        found = self.source.find_series(query, today=today, studies_to_skip=self if self.state else None)
        record = self.state.record if self.state else None
        new = [s for s in found if self.state is None or self.state.is_new(s.key)]
        done = sum(1 for s in found if record and s.key in record.done)
        quarantined = sum(1 for s in found if record and s.key in record.quarantined)
        plan = PullPlan(new=new, already_done=done, quarantined=quarantined, query=query.describe())
        log.info("%s: %s", self.source.location.display, plan.describe())
        return plan

    def batches(self, plan: PullPlan) -> Iterator[Batch]:
        """Retrieve PLAN's series batch by batch. Leftovers of an interrupted run are cleared first."""
        clear_for(self.staging, owner=STAGING_OWNER, what="PACS staging")
        mark(self.staging, owner=STAGING_OWNER)
        batch = self._new_batch(0)
        pending = iter(plan.new)
        try:
            while True:
                full = False
                with self.source.retrieving():  # one connection per stretch, closed while the caller works
                    for series in pending:
                        if self._retrieve_into(batch, series) and batch.bytes >= self.max_staging_bytes:
                            full = True
                            break
                if not full:
                    break
                yield batch
                batch = self._new_batch(batch.number + 1)
            if batch.series:
                yield batch
        finally:
            self.release()

    def release(self) -> None:
        """Remove the staging folder, if it is the one this puller made (callers may call it again in a finally:
        a generator's own cleanup runs only when it is closed)."""
        remove_if_made_by(self.staging, STAGING_OWNER)

    def skip(self, key: str) -> bool:
        """A study quarantined by earlier runs is not queried again (StudyFilter)."""
        return self.state is not None and key in self.state.record.quarantined

    def failed(self, key: str, reason: str) -> None:
        """A study whose series the PACS could not list: counted like a failing series (StudyFilter)."""
        self._record_failure(key, reason)

    def listed(self, key: str) -> None:
        """A study that failed before answers again: its count starts afresh (StudyFilter)."""
        if self.state is not None and key in self.state.record.failures:
            self.state.record.failures.pop(key)
            self.state.save()

    def fail_after_retrieval(self, batch: Batch, key: str, reason: str) -> None:
        """The consumer could not finish series KEY of BATCH: not done, but counted like a series the PACS could
        not deliver (tried again next run, quarantined after max_attempts). REASON must name no file value."""
        batch.series = [series for series in batch.series if series.key != key]
        self._record_failure(key, reason)

    def commit(self, batch: Batch) -> None:
        """The consumer is finished with BATCH: record its series as done and free its disk space."""
        if self.state is not None:
            self.state.mark_done([s.key for s in batch.series])
        self.summary.pulled += len(batch.series)
        self.summary.batches += 1
        shutil.rmtree(batch.folder, ignore_errors=True)

    def _new_batch(self, number: int) -> Batch:
        folder = self.staging / f"batch-{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        return Batch(number=number, folder=folder)

    def _retrieve_into(self, batch: Batch, series: RemoteSeries) -> bool:
        target = batch.folder / series.key
        try:
            size = self.source.retrieve_series(series, target)
        except (SeriesFailed, SourceUnavailableError) as error:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(error, SourceUnavailableError) and not self.source.answers():
                raise  # the PACS is down, not this series: stop here and resume next run
            self._record_failure(series.key, error.what)
            return False
        batch.series.append(series)
        batch.bytes += size
        self.summary.bytes += size
        self.summary.peak_staging_bytes = max(self.summary.peak_staging_bytes, batch.bytes)
        if size > self.max_staging_bytes:
            log.warning("series %s alone (%.1f MiB) exceeds the staging limit", series.key, size / 2**20)
        return True

    def _record_failure(self, key: str, reason: str) -> None:
        self.summary.failed.append((key, reason))
        quarantined = self.state.mark_failed(key, reason) if self.state is not None else False
        if quarantined:
            self.summary.quarantined_now.append(key)
            log.error("%s quarantined after repeated failures: %s", key, reason)
        else:
            log.warning("%s failed (tried again next run): %s", key, reason)
