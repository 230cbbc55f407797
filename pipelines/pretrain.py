"""The pretraining flow: self-supervised pretraining on unlabelled scans as one task, then a summary artifact.

One task, not one per epoch: the library's own checkpoints make a re-run of a failed or cancelled flow continue
where it stopped (the work folder beside the artifact), and a Prefect task per epoch would only add overhead.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from medtl.pretraining.config import Method, load_pretrain_config
from medtl.pretraining.pretrain import pretrain


class PretrainParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasets: list[Path] = Field(min_length=1, description="dataset folders written by ingest (labels ignored)")
    out: Path = Field(description="pretrained artifact folder to write")
    config: Path | None = Field(None, description="pretrain.yaml; default: the built-in recipe")
    method: Method | None = Field(None, description="overrides the config's method")
    budget_minutes: float | None = Field(None, gt=0, description="overrides the config's time budget")


@task(name="pretrain-backbone")
def pretrain_backbone(params: PretrainParameters, flow_run_id: str | None) -> dict:
    config = load_pretrain_config(
        params.config, {"method": params.method, "time_budget_minutes": params.budget_minutes}
    )
    result = pretrain(params.datasets, config, params.out, flow_run_id=flow_run_id)
    record = result.record
    return {
        "artifact": str(result.artifact),
        "manifest_hash": result.manifest_hash,
        "method": record.method,
        "scans": record.scans,
        "excluded_patients": len(record.exclusion.patients),
        "epochs": record.epochs_done,
        "stopped_by": record.stopped_by,
        "first_loss": record.curve[0].loss,
        "last_loss": record.curve[-1].loss,
    }


@flow(name="medtl-pretrain", validate_parameters=True)
def pretrain_flow(params: PretrainParameters) -> dict:
    """Pretrain a backbone on the datasets' scans (locked-test patients excluded) and seal the artifact."""
    summary = pretrain_backbone(params, flow_run.get_id())
    create_markdown_artifact(
        key="pretraining-summary",
        markdown=f"# Pretraining\n\n{summary['method']} on {summary['scans']} scans "
        f"({summary['excluded_patients']} patients excluded), {summary['epochs']} epochs "
        f"(stopped by {summary['stopped_by']}); loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}.\n\n"
        f"Artifact manifest sha256 `{summary['manifest_hash']}`.",
    )
    return summary
