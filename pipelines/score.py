"""The scoring flow: verify the artifact, ingest the new scans with its spec, score chunks as tasks, merge.

Chunk tasks are independent (each writes its own part file), so a Dask task runner can spread them over workers
(`pipelines.runners.on_dask`); in one process they run one after another, since each batch already uses every core
or the GPU. A re-run of the flow scores only what is not in scores.parquet or a part yet.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from medtl.artifacts import resolve_trust
from medtl.contracts.evaluation import ScoreRow
from medtl.identity import pseudonymizer_from_env
from medtl.io.allocator import heap_for_arrays
from medtl.scoring.score import (
    STAGING,
    Scorer,
    check_policy,
    finish,
    pending_scans,
    prepare,
    save_part,
    score_chunk,
    stage_inputs,
)
from pipelines.common import retry_on_io_only
from pipelines.monitor import monitor_after_scoring


class ScoreParameters(BaseModel):
    """Validated before any scan is read. Source folders: site-level inboxes, not patient-named folders."""

    model_config = ConfigDict(extra="forbid")

    artifact: Path
    sources: list[Path] = Field(min_length=1)
    out: Path
    allow_unapproved: bool = False
    policy: str = Field("flag", pattern="^(flag|abstain)$")
    tta: bool = False
    sr: bool = False
    chunk_size: int = Field(256, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=4096)
    allow_development_key: bool = False
    allow_untrusted: bool = Field(
        False, description="development only: no trust anchor (MEDTL_TRUSTED_KEYS) needed; outputs say UNTRUSTED"
    )
    registry: Path | None = Field(None, description="service registry: score only if the artifact is in service")
    monitor_out: Path | None = Field(
        None, description="monitor the scores folder after scoring (`medtl monitor`): the run fails on a drift alert"
    )


@task(name="verify-artifact")
def verify_artifact(params: ScoreParameters) -> Scorer:
    trust = resolve_trust(allow_untrusted=params.allow_untrusted)
    return prepare(params.artifact, allow_unapproved=params.allow_unapproved, trust=trust, registry=params.registry)


@task(name="ingest-new-scans", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_only)
def ingest_new(params: ScoreParameters, scorer: Scorer) -> pd.DataFrame:
    pseudonymizer = pseudonymizer_from_env(allow_development_key=params.allow_development_key)
    return stage_inputs(scorer, params.sources, params.out, pseudonymizer=pseudonymizer)


@task(name="score-chunk", task_run_name="score-chunk-{index}")
def score_one_chunk(params: ScoreParameters, scorer: Scorer, chunk: pd.DataFrame, index: int) -> list[dict]:
    with heap_for_arrays():  # on a Dask worker: see medtl/io/allocator.py
        rows = score_chunk(
            scorer, params.out / STAGING, chunk, policy=params.policy, tta=params.tta, batch_size=params.batch_size
        )
    save_part(params.out, rows)
    return rows


@flow(name="medtl-score", validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def score_flow(params: ScoreParameters) -> dict:
    check_policy(params.policy)
    # Chunks receive the verified scorer as a future: on Dask it is then shipped to each worker once, not per chunk.
    verified = verify_artifact.submit(params)
    scorer = verified.result()
    manifest = ingest_new(params, scorer)
    pending = pending_scans(scorer, manifest, params.out)
    futures = [
        score_one_chunk.submit(params, verified, pending.iloc[start : start + params.chunk_size], number)
        for number, start in enumerate(range(0, len(pending), params.chunk_size))
    ]
    rows = [row for future in futures for row in future.result()]
    new = pd.DataFrame(rows, columns=list(ScoreRow.model_fields))
    result = finish(
        scorer, params.out, manifest, new, sources=params.sources, sr=params.sr, policy=params.policy,
        tta=params.tta, already=len(manifest) - len(pending),
    )  # fmt: skip
    summary = {
        "scored": result.scored,
        "already_scored": result.skipped_existing,
        "flagged": result.flagged,
        "abstained": result.abstained,
        "approved": result.approved,
        "trusted": result.trusted,
        "chunks": len(futures),
    }
    create_markdown_artifact(
        key="scoring-summary",
        markdown="# Scoring\n\n"
        + ", ".join(f"{k}: {v}" for k, v in summary.items())
        + ("" if result.approved else "\n\n**UNAPPROVED artifact: decisions are provisional.**")
        + ("" if result.trusted else "\n\n**UNTRUSTED artifact (no trust anchor): development only.**"),
    )
    if params.monitor_out is not None:  # after the scoring summary: an alert fails the run, the scores stay
        summary["monitoring"] = monitor_after_scoring(
            params.artifact, params.out, params.monitor_out, allow_untrusted=params.allow_untrusted
        )
    return summary
