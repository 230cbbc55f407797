"""Scheduled scoring against a PACS: pull what is new since the last run, score it, send the SR back.

One run: verify the artifact -> ask the PACS for the query's series -> drop those this artifact already finished
(the watermark in OUT/pull-state) -> per staging batch: ingest with the artifact's spec, score, write one SR per
series, store the SRs into their studies (STOW-RS or C-STORE), mark the batch done, delete its files. A re-run with
nothing new pulls nothing; a run cut off by the PACS going away resumes with the unfinished series.

One hostile series never fails the batch night after night: when a batch raises, its series are scored one by one,
and a series that raises on its own -- or whose SR cannot be written -- is counted like a series the PACS could not
deliver (tried again on later runs, quarantined after max_attempts) while the others are done. Errors that are
about the run, not a series (the PACS gone, configuration, the artifact, the disk), still stop it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from medtl.artifacts import TrustSettings
from medtl.errors import ArtifactIntegrityError, ConfigError, MedTLError, NotApprovedError, SourceError
from medtl.identity import Pseudonymizer
from medtl.ingest.pipeline import REPORT
from medtl.outputs import clear_for, mark, remove_if_made_by
from medtl.scoring.score import SCORES, STAGING, Scorer, ScoreResult, check_policy, prepare, record_scored, score_inputs
from medtl.scoring.score import describe_sr as describe_reports
from medtl.scoring.sr_output import source_files_by_series
from medtl.sources.location import SourceLocation
from medtl.sources.pull import GIB, STAGING_OWNER, Batch, Puller, open_remote
from medtl.sources.query import PacsQuery
from medtl.sources.remote import RemoteSource, RetryPolicy
from medtl.sources.state import PullState

log = logging.getLogger(__name__)
PULL_STATE = "pull-state"
PULL_STAGING = "staging"
INGEST_REPORTS = "ingest-reports"
# Failures of the run rather than of one series: they stop it, as before (a transient one is retried by the flow).
RUN_ERRORS = (SourceError, ConfigError, ArtifactIntegrityError, NotApprovedError, OSError, MemoryError)


@dataclass
class PacsScoreResult:
    out: Path
    source: str
    new_series: int
    already_done: int
    quarantined_before: int
    scored: int = 0
    skipped_existing: int = 0
    flagged: int = 0
    abstained: int = 0
    sent_back: int = 0
    sr_written: int = 0
    sr_omitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # series id -> attributes left out of its SR
    batches: int = 0
    failed: list[str] = field(default_factory=list)  # series / study keys that failed this run (retried next run)
    quarantined_now: list[str] = field(default_factory=list)
    peak_staging_bytes: int = 0
    approved: bool = False
    trusted: bool = False

    def describe(self) -> str:
        problems = ""
        if self.failed:
            problems += f"\n{len(self.failed)} series or studies failed (tried again next run)"
        if self.quarantined_now:
            problems += f"\n{len(self.quarantined_now)} series quarantined after repeated failures (see pull-state)"
        problems += describe_reports(self.sr_omitted, {})  # SRs not written are among the failed series above
        note = "" if self.approved else " (UNAPPROVED artifact: decisions are provisional)"
        note += "" if self.trusted else " (UNTRUSTED artifact: development only)"
        return (
            f"{self.source}: {self.new_series} new series ({self.already_done} done before, "
            f"{self.quarantined_before} quarantined); scored {self.scored} scan(s) in {self.batches} batch(es), "
            f"{self.flagged} flagged, {self.abstained} abstained; {self.sent_back} SR(s) sent back{note}{problems}\n"
            f"wrote {self.out / SCORES}"
        )


def score_from_pacs(
    artifact: Path,
    source: str | SourceLocation,
    query: PacsQuery,
    *,
    out: Path,
    pseudonymizer: Pseudonymizer,
    allow_unapproved: bool = False,
    policy: str = "flag",
    tta: bool = False,
    send_back: bool = True,
    max_staging_bytes: int = 2 * GIB,
    max_attempts: int = 3,
    retry: RetryPolicy | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    today: date | None = None,
    progress: bool = False,
    trust: TrustSettings | None = None,
    registry: Path | None = None,
) -> PacsScoreResult:
    check_policy(policy)
    out = Path(out)
    scorer = prepare(artifact, allow_unapproved=allow_unapproved, trust=trust, registry=registry)
    for folder in (PULL_STAGING, STAGING):  # before anything is pulled: a folder of someone else's files is refused
        clear_for(out / folder, owner=STAGING_OWNER, what=f"PACS scoring's {folder} folder", dry_run=True)
    remote = open_remote(source, retry)
    state = PullState.open(out / PULL_STATE, remote.location, scorer.artifact.manifest_hash, max_attempts=max_attempts)
    puller = Puller(remote, out / PULL_STAGING, state=state, max_staging_bytes=max_staging_bytes)
    plan = puller.plan(query, today=today)
    result = PacsScoreResult(
        out=out, source=remote.location.display, new_series=len(plan.new), already_done=plan.already_done,
        quarantined_before=plan.quarantined, approved=scorer.approved, trusted=scorer.artifact.trusted,
    )  # fmt: skip
    try:
        for batch in puller.batches(plan):
            results, failed = _score_batch(
                scorer, remote, batch, out=out, pseudonymizer=pseudonymizer, policy=policy, tta=tta,
                send_back=send_back, batch_size=batch_size, chunk_size=chunk_size, progress=progress,
            )  # fmt: skip
            for key, reason in failed.items():
                puller.fail_after_retrieval(batch, key, reason)
            puller.commit(batch)
            for scored in results:
                _add(result, scored, sent=len(scored.reports) if send_back else 0)
            log.info("batch %d: %d series done, %d failed, %d scan(s) scored", batch.number, len(batch.series),
                     len(failed), sum(scored.scored for scored in results))  # fmt: skip
    finally:  # a failed run records what it finished: the audit log and the watermark agree
        puller.release()
        summary = puller.summary
        result.batches = summary.batches
        result.failed = [key for key, _ in summary.failed]
        result.quarantined_now = list(summary.quarantined_now)
        result.peak_staging_bytes = summary.peak_staging_bytes
        state.finish_run()
        if result.batches:
            _record(scorer, out, result, policy=policy, tta=tta, query=plan.query)
    return result


def _score_batch(
    scorer: Scorer, remote: RemoteSource, batch: Batch, *, out: Path, send_back: bool, **options
) -> tuple[list[ScoreResult], dict[str, str]]:
    """Score one staged batch; returns its results and the series (by key) that failed, with a reason.

    The whole batch first (one ingest, the common case); if that raises, each series alone, so that the one that
    raises is found and the others still get their results."""
    try:
        scored, failed = _score_folder(scorer, remote, batch.folder, batch.folder, out=out, send_back=send_back,
                                       **options)  # fmt: skip
        return [scored], failed
    except RUN_ERRORS:
        raise
    except Exception as error:
        if len(batch.series) == 1:
            return [], {batch.series[0].key: _reason(error)}
        log.warning("batch %d failed (%s): scoring its %d series one by one", batch.number, type(error).__name__,
                    len(batch.series))  # fmt: skip
    results: list[ScoreResult] = []
    failures: dict[str, str] = {}
    for series in batch.series:
        try:
            scored, failed = _score_folder(scorer, remote, batch.folder / series.key, batch.folder, out=out,
                                           send_back=send_back, **options)  # fmt: skip
        except RUN_ERRORS:
            raise
        except Exception as error:
            failures[series.key] = _reason(error)
            continue
        results.append(scored)
        failures.update(failed)
    return results, failures


def _score_folder(
    scorer: Scorer, remote: RemoteSource, folder: Path, batch_folder: Path, *, out: Path, send_back: bool, **options
) -> tuple[ScoreResult, dict[str, str]]:
    """Score what FOLDER holds, store its SRs, and name (by series key) the series that got no SR. Its ingest folder
    goes with it; what stays: scores.parquet, scan_inputs.parquet, the SRs, and the ingest report (every pulled
    file: ingested, skipped or quarantined, with its reason) in OUT/ingest-reports."""
    clear_for(out / STAGING, owner=STAGING_OWNER, what="the scoring staging folder")  # a killed run's is cleared
    mark(out / STAGING, owner=STAGING_OWNER)
    try:
        scored = score_inputs(scorer, [folder], out=out, sr=True, **options)
        if send_back:
            remote.store(scored.reports)
        failed = {}
        if scored.sr_failed:
            sources = source_files_by_series(out / STAGING, [folder])
            failed = {
                sources[series].relative_to(batch_folder).parts[0]: f"no SR could be written: {reason}"
                for series, reason in scored.sr_failed.items()
            }
    finally:
        report = out / STAGING / REPORT
        if report.exists():
            kept = out / INGEST_REPORTS / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{folder.name}.json"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(report, kept)
        remove_if_made_by(out / STAGING, STAGING_OWNER)
    return scored, failed


def _reason(error: Exception) -> str:
    """For the pull-state and the log: medtl's messages carry no file values; other libraries' may, so only the type."""
    if isinstance(error, MedTLError):
        return f"scoring failed after retrieval: {error.what}"
    return f"scoring failed after retrieval: {type(error).__name__} (details withheld: they may quote file values)"


def _add(result: PacsScoreResult, scored: ScoreResult, *, sent: int) -> None:
    result.scored += scored.scored
    result.skipped_existing += scored.skipped_existing
    result.flagged += scored.flagged
    result.abstained += scored.abstained
    result.sent_back += sent
    result.sr_written += len(scored.reports)
    result.sr_omitted.update(scored.sr_omitted)


def _record(scorer: Scorer, out: Path, result: PacsScoreResult, *, policy: str, tta: bool, query: str) -> None:
    totals = ScoreResult(
        out=out, scored=result.scored, skipped_existing=result.skipped_existing, abstained=result.abstained,
        flagged=result.flagged, approved=result.approved, sr_omitted=result.sr_omitted,
    )  # fmt: skip
    record_scored(scorer, out, totals, policy=policy, tta=tta, source=result.source, query=query,
                  series_pulled=result.new_series - len(result.failed), sent_back=result.sent_back,
                  sr_written=result.sr_written)  # fmt: skip
