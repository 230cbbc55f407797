"""Scheduled scoring against a PACS: pull what is new since the last run, score it, send the SR back.

One run: verify the artifact -> ask the PACS for the query's series -> drop those this artifact already finished
(the watermark in OUT/pull-state) -> per staging batch: ingest with the artifact's spec, score, write one SR per
series, store the SRs into their studies (STOW-RS or C-STORE), mark the batch done, delete its files. A re-run with
nothing new pulls nothing; a run cut off by the PACS going away resumes with the unfinished series.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from medtl.artifacts import TrustSettings
from medtl.identity import Pseudonymizer
from medtl.ingest.pipeline import REPORT
from medtl.scoring.score import SCORES, STAGING, Scorer, ScoreResult, check_policy, prepare, record_scored, score_inputs
from medtl.sources.location import SourceLocation
from medtl.sources.pull import GIB, Puller, open_remote
from medtl.sources.query import PacsQuery
from medtl.sources.remote import RemoteSource, RetryPolicy
from medtl.sources.state import PullState

log = logging.getLogger(__name__)
PULL_STATE = "pull-state"
PULL_STAGING = "staging"
INGEST_REPORTS = "ingest-reports"


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
) -> PacsScoreResult:
    check_policy(policy)
    out = Path(out)
    scorer = prepare(artifact, allow_unapproved=allow_unapproved, trust=trust)
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
            scored = _score_batch(
                scorer, remote, batch.folder, out=out, pseudonymizer=pseudonymizer, policy=policy, tta=tta,
                send_back=send_back, batch_size=batch_size, chunk_size=chunk_size, progress=progress,
            )  # fmt: skip
            puller.commit(batch)
            _add(result, scored, sent=len(scored.reports) if send_back else 0)
            log.info("batch %d: %d series, %d scan(s) scored", batch.number, len(batch.series), scored.scored)
    finally:  # a failed run records what it finished: the audit log and the watermark agree
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
    scorer: Scorer, remote: RemoteSource, folder: Path, *, out: Path, send_back: bool, **options
) -> ScoreResult:
    """Score one staged batch; its ingest folder goes with it. What stays: scores.parquet, the SRs, and the batch's
    ingest report (every pulled file: ingested, skipped or quarantined, with its reason) in OUT/ingest-reports."""
    try:
        scored = score_inputs(scorer, [folder], out=out, sr=True, **options)
        if send_back:
            remote.store(scored.reports)
    finally:
        report = out / STAGING / REPORT
        if report.exists():
            kept = out / INGEST_REPORTS / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{folder.name}.json"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(report, kept)
        shutil.rmtree(out / STAGING, ignore_errors=True)
    return scored


def _add(result: PacsScoreResult, scored: ScoreResult, *, sent: int) -> None:
    result.scored += scored.scored
    result.skipped_existing += scored.skipped_existing
    result.flagged += scored.flagged
    result.abstained += scored.abstained
    result.sent_back += sent


def _record(scorer: Scorer, out: Path, result: PacsScoreResult, *, policy: str, tta: bool, query: str) -> None:
    totals = ScoreResult(
        out=out, scored=result.scored, skipped_existing=result.skipped_existing, abstained=result.abstained,
        flagged=result.flagged, approved=result.approved,
    )  # fmt: skip
    record_scored(scorer, out, totals, policy=policy, tta=tta, source=result.source, query=query,
                  series_pulled=result.new_series - len(result.failed), sent_back=result.sent_back)  # fmt: skip
