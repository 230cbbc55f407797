"""The ingest flow: `medtl.ingest.pipeline.ingest_sources` as one Prefect task, with a QC summary in the UI.

On the default task runner the series are decoded by local worker processes inside that task. Under a Dask task
runner (`pipelines.runners.on_dask(ingest_flow)`) the same task submits the series, in batches bounded by bytes, as
plain Dask tasks that the Dask workers run (medtl/ingest/batches.py); headers, the merge, labels and
preprocessing stay in the flow's process, and the manifest is the one a local run writes. The workers must see the
sources and the dataset folder at the same paths (a shared volume).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from medtl.contracts.task import TaskDeclaration
from medtl.identity import pseudonymizer_from_env
from medtl.ingest.batches import (
    BATCH_BYTES,
    BATCH_SERIES,
    ItemRunner,
    batch_items,
    isolate_failures,
    run_batch,
    series_per_batch,
)
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.preprocess import load_spec
from medtl.ingest.worker import WorkItem, WorkResult
from medtl.io.limits import IngestLimits
from pipelines.common import counts_table, retry_on_io_only


class IngestParameters(BaseModel):
    """Validated before any work starts. Source folders should be site-level locations (an inbox, an export), not
    folders named after patients: flow parameters are stored by Prefect and shown in its UI."""

    model_config = ConfigDict(extra="forbid")

    sources: list[Path] = Field(min_length=1, description="folders or files with DICOM / NIfTI scans")
    out: Path = Field(description="dataset folder to write")
    labels: Path | None = Field(None, description="labels.csv (data_contracts/labels.v1.schema.json)")
    spec: Path | None = Field(None, description="preprocessing spec YAML/JSON; default: derived from the data")
    workers: int = Field(0, ge=0, le=256, description="worker processes; 0 = one per CPU core")
    allow_development_key: bool = Field(
        False, description="use the public development pseudonym key (synthetic or public data only)"
    )
    limits: IngestLimits = Field(
        default_factory=IngestLimits, description="size limits for hostile input (README, Ingest limits)"
    )
    task: TaskDeclaration | None = Field(
        None,
        description="the declared task type and class order (ordinal must be declared); checked against the labels "
        "and written as the dataset's task.json",
    )
    full: bool = Field(False, description="read every file again, not only those new or changed since the last run")


@task(name="ingest", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_only)
def run_ingest(params: IngestParameters) -> dict:
    """Returns only counts and hashes: the task result is stored by Prefect too."""
    pseudonymizer = pseudonymizer_from_env(allow_development_key=params.allow_development_key)
    result = ingest_sources(
        params.sources,
        out=params.out,
        labels=params.labels,
        spec=load_spec(params.spec) if params.spec else None,
        workers=params.workers,
        pseudonymizer=pseudonymizer,
        limits=params.limits,
        task=params.task,
        incremental=not params.full,
        runner=_task_runner_decoding(),
    )
    report, fingerprint = result.report, result.fingerprint
    return {
        "counts": dict(report.counts),
        "reasons": dict(report.reasons),
        "n_scans": fingerprint.n_scans,
        "n_patients": fingerprint.n_patients,
        "labels": dict(fingerprint.labels),
        "manifest_hash": fingerprint.manifest_hash,
        "pseudonym_key_id": fingerprint.pseudonym_key_id,
        "dataset": str(params.out),
        "task_kind": result.task.kind if result.task else None,
        "files_read": report.changes.files_read if report.changes else None,
    }


def _task_runner_decoding() -> ItemRunner | None:
    """Decode on the Dask cluster when the flow has a Dask task runner; else None: local processes, which threads
    of one process could not match."""
    context = FlowRunContext.get()
    if context is None or isinstance(context.task_runner, ThreadPoolTaskRunner):
        return None
    client = getattr(context.task_runner, "client", None)
    if client is None:  # a runner without a Dask client (e.g. Ray): local processes
        return None
    return partial(_decode_on_dask, client, slots=_worker_threads(client))


def _worker_threads(client: Any) -> int:
    """Task slots of the Dask cluster (1 when it cannot say)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except (AttributeError, OSError):
        return 1


def _decode_on_dask(client: Any, items: list[WorkItem], *, slots: int) -> Iterator[WorkResult]:
    """The batches as plain Dask tasks, results as they are done.

    Why not Prefect tasks: each Prefect task run is several calls to the Prefect server (created, running,
    completed), ~0.1-0.3 s a batch, serialised at the server; on a 100-series archive that made the Dask route as
    slow with two workers as with one (decode 1.5 s against 0.3-0.6 s locally). The ingest task and its flow still
    show in Prefect; the batches show on the Dask dashboard, named medtl-decode-RUN-N.
    """
    from distributed import as_completed  # the dask extra: present wherever a Dask runner is

    # about 4 batches per worker thread, so that at the end no worker waits long for a straggler
    per_batch = series_per_batch(len(items), slots, batches_per_slot=4, most=BATCH_SERIES)
    batches = batch_items(items, max_bytes=BATCH_BYTES, max_series=per_batch)
    run = uuid.uuid4().hex[:12]  # keys unique to this run: Dask would hand back an earlier run's results under a key
    futures = [client.submit(run_batch, batch, key=f"medtl-decode-{run}-{number}")
               for number, batch in enumerate(batches)]  # fmt: skip
    position = {future.key: number for number, future in enumerate(futures)}
    done = ((position[future.key], _outcome(future)) for future in as_completed(futures, loop=client.loop))
    yield from isolate_failures(batches, done, partial(_one_per_task, client, run))


def _one_per_task(client: Any, run: str, items: list[WorkItem]) -> Iterable[WorkResult | None]:
    """Each series of the lost batches as a task of its own; one lost again is tried once more with nothing else of
    this run in flight. Why: a worker that dies takes the tasks queued on it along (Dask counts them as suspects of
    its death), so a series that merely shared a worker with the one that crashes could be lost with it; alone on
    the cluster, only the series that kills its worker is (None: quarantined as worker_crashed)."""
    futures = [client.submit(run_batch, [item], key=f"medtl-decode-{run}-alone-{item.item_id}")
               for item in items]  # fmt: skip
    outcomes = [_outcome(future) for future in futures]  # all settled before any series runs again
    for item, results in zip(items, outcomes, strict=True):
        if results is None:
            results = _outcome(client.submit(run_batch, [item], key=f"medtl-decode-{run}-only-{item.item_id}"))
        yield results[0] if results else None


def _outcome(future: Any) -> list[WorkResult] | None:
    """The batch's results, or None when its worker died (Dask gives up on a task that killed its workers)."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return None


@flow(name="medtl-ingest", validate_parameters=True)
def ingest_flow(params: IngestParameters) -> dict:
    """Discover, check, decode, preprocess and cache scans; every input file ingested, skipped or quarantined."""
    summary = run_ingest(params)
    counts = summary["counts"]
    create_markdown_artifact(
        key="ingest-summary",
        markdown=(
            f"# Ingest\n\n{summary['n_scans']} scans from {summary['n_patients']} patients; files ingested "
            f"{counts['ingested']}, skipped {counts['skipped']}, quarantined {counts['quarantined']}.\n\n"
            f"Manifest sha256 `{summary['manifest_hash']}`; pseudonym key id `{summary['pseudonym_key_id']}`.\n\n"
            f"Details: `qc_summary.md` and `ingest_report.json` in the dataset folder."
        ),
        description="medtl ingest summary (counts and hashes only)",
    )
    if summary["reasons"]:
        create_table_artifact(
            key="ingest-reasons",
            table=counts_table(summary["reasons"], key="reason", value="files"),
            description="files skipped or quarantined, by reason",
        )
    return summary
