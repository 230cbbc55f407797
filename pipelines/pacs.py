"""The nightly PACS scoring flow: what arrived since the last run is pulled, scored, and its SR sent back.

One task does the pull-score-send loop (medtl.scoring.from_pacs): its watermark makes a retry, or tomorrow's run,
continue exactly where a failed run stopped, so the task retries with backoff when the PACS was unreachable
(SourceUnavailableError is transient) and never on a data or configuration error. Parameters name the PACS by URI
(no password: credentials come from the worker's environment) and the query by dates and modality; an accession
list stays in its CSV file.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medtl.artifacts import resolve_trust
from medtl.errors import SourceError
from medtl.identity import pseudonymizer_from_env
from medtl.scoring.from_pacs import PacsScoreResult, score_from_pacs
from medtl.sources.location import parse_location
from medtl.sources.pull import GIB
from medtl.sources.query import PacsQuery
from pipelines.common import retry_on_io_only
from pipelines.monitor import monitor_after_scoring


class PacsScoreParameters(BaseModel):
    """Validated before anything is pulled."""

    model_config = ConfigDict(extra="forbid")

    artifact: Path
    source: str = Field(description="dicomweb+http(s)://host:port/root or dimse://PACS_AET@host:port?calling=OUR_AET")
    query: PacsQuery = Field(default_factory=lambda: PacsQuery(lookback_days=7))
    out: Path
    send_back: bool = True
    allow_unapproved: bool = False
    policy: str = Field("flag", pattern="^(flag|abstain)$")
    tta: bool = False
    max_staging_gb: float = Field(2.0, gt=0, le=10_000)
    max_attempts: int = Field(3, ge=1, le=100, description="runs before a failing series is quarantined")
    allow_development_key: bool = False
    allow_untrusted: bool = Field(
        False, description="development only: no trust anchor (MEDTL_TRUSTED_KEYS) needed; outputs say UNTRUSTED"
    )
    registry: Path | None = Field(None, description="service registry: score only if the artifact is in service")
    monitor_out: Path | None = Field(
        None, description="monitor the scores folder after scoring (`medtl monitor`): the run fails on a drift alert"
    )

    @field_validator("source")
    @classmethod
    def _remote(cls, value: str) -> str:
        try:
            location = parse_location(value)
        except SourceError as error:  # a password in the URI, an unknown scheme: a validation error like any other
            raise ValueError(error.what) from None
        if not location.is_remote:
            raise ValueError("the PACS flow needs a dicomweb+http(s):// or dimse:// source; folders use medtl-score")
        return value


@task(name="pull-score-send", retries=3, retry_delay_seconds=[60, 300, 900], retry_condition_fn=retry_on_io_only)
def pull_score_send(params: PacsScoreParameters) -> PacsScoreResult:
    return score_from_pacs(
        params.artifact,
        params.source,
        params.query,
        out=params.out,
        pseudonymizer=pseudonymizer_from_env(allow_development_key=params.allow_development_key),
        allow_unapproved=params.allow_unapproved,
        policy=params.policy,
        tta=params.tta,
        send_back=params.send_back,
        max_staging_bytes=int(params.max_staging_gb * GIB),
        max_attempts=params.max_attempts,
        trust=resolve_trust(allow_untrusted=params.allow_untrusted),
        registry=params.registry,
    )


@flow(name="medtl-score-pacs", validate_parameters=True)
def pacs_score_flow(params: PacsScoreParameters) -> dict:
    result = pull_score_send(params)
    summary = {
        "new_series": result.new_series,
        "already_done": result.already_done,
        "scored": result.scored,
        "flagged": result.flagged,
        "abstained": result.abstained,
        "sent_back": result.sent_back,
        "failed": len(result.failed),
        "quarantined_now": len(result.quarantined_now),
        "approved": result.approved,
        "trusted": result.trusted,
    }
    create_markdown_artifact(
        key="pacs-scoring-summary",
        markdown=f"# PACS scoring\n\nsource: `{result.source}`\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in summary.items())
        + ("" if result.approved else "\n\n**UNAPPROVED artifact: decisions are provisional.**")
        + ("" if result.trusted else "\n\n**UNTRUSTED artifact (no trust anchor): development only.**"),
    )
    if params.monitor_out is not None:  # after the scoring summary: an alert fails the run, the scores stay
        summary["monitoring"] = monitor_after_scoring(
            params.artifact, params.out, params.monitor_out, allow_untrusted=params.allow_untrusted
        )
    return summary
