"""The ingest flow: `medtl.ingest.pipeline.ingest_sources` as one Prefect task, with a QC summary in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from medtl.contracts.task import TaskDeclaration
from medtl.identity import pseudonymizer_from_env
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.preprocess import load_spec
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
    }


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
