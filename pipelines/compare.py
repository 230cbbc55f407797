"""The champion/challenger flow: `medtl.evaluation.compare.compare` as one task, the verdict in the UI.

The weekly retraining flow runs it after evaluation when a model is in service (the service registry says which);
the reviewer is asked to sign off only for a challenger the comparison proposes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from medtl.artifacts import resolve_trust
from pipelines.common import retry_on_io_only


class CompareParameters(BaseModel):
    """Validated before either artifact is opened: the margin is declared here, before any test patient is seen."""

    model_config = ConfigDict(extra="forbid")

    champion: Path = Field(description="the artifact in service")
    challenger: Path = Field(description="the new artifact")
    test: Path = Field(description="locked test dataset neither artifact trained on")
    out: Path = Field(description="new folder: comparison.json, comparison.html")
    margin: float = Field(0.02, ge=0, le=0.2, description="non-inferiority margin on the AUROC")
    decision_margin: float | None = Field(None, ge=0, le=0.2, description="margin on sensitivity/specificity")
    n_boot: int = Field(2000, ge=100, le=100_000)
    allow_untrusted: bool = Field(False, description="development only: outputs say UNTRUSTED")


@task(name="compare", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_only)
def run_comparison(params: CompareParameters) -> dict:
    """Returns the verdict and hashes only: the task result is stored by Prefect too."""
    from medtl.evaluation.compare import compare

    result = compare(
        params.champion, params.challenger, test=params.test, out=params.out, margin=params.margin,
        decision_margin=params.decision_margin, n_boot=params.n_boot,
        trust=resolve_trust(allow_untrusted=params.allow_untrusted),
    )  # fmt: skip
    c = result.comparison
    return {
        "comparison": str(params.out / "comparison.json"),
        "sha256": result.sha256,
        "verdict": c.verdict,
        "proposed": c.proposed,
        "margin": c.margin,
        "auroc_difference": [c.auroc.difference.value, c.auroc.difference.ci_low, c.auroc.difference.ci_high],
        "reasons": c.reasons,
    }


@flow(name="medtl-compare", validate_parameters=True)
def compare_flow(params: CompareParameters) -> dict:
    summary = run_comparison(params)
    create_markdown_artifact(
        key="comparison-summary", markdown=comparison_markdown(summary), description="champion/challenger (no PHI)"
    )
    return summary


def comparison_markdown(summary: dict) -> str:
    lines = ["# Champion/challenger", "", *(f"- {reason}" for reason in summary["reasons"]), ""]
    lines.append(
        "**Proposed for sign-off.**" if summary["proposed"] else "**Not proposed:** the model in service stays."
    )
    return "\n".join(lines)
