"""The evaluation flow: `medtl.evaluation.evaluate.evaluate` as one task, the headline numbers in the UI.

Approval is deliberately not part of it: a clinician reads the report and runs `medtl approve` with their own key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from medtl.artifacts import resolve_trust
from medtl.errors import ConfigError
from medtl.evaluation.evaluate import evaluate
from medtl.evaluation.operating_point import parse_rule
from pipelines.common import retry_on_io_only


def _checked_rule(rule: str) -> str:
    try:
        parse_rule(rule)
    except ConfigError as error:  # pydantic reports ValueErrors with the field's name
        raise ValueError(str(error)) from error
    return rule


OperatingRule = Annotated[str, AfterValidator(_checked_rule)]


class EvaluateParameters(BaseModel):
    """Validated before the artifact is opened; a misspelt rule fails here, not after the bootstrap."""

    model_config = ConfigDict(extra="forbid")

    artifact: Path
    out: Path = Field(description="report folder: report.html, report.pdf, metrics.json")
    test: Path | None = Field(None, description="locked test dataset, scored once")
    dataset: Path | None = Field(None, description="the training dataset, for out-of-fold failure cases")
    rule: OperatingRule = Field("youden", description="youden, sensitivity>=X or specificity>=X")
    temperature_scaling: bool = False
    pdf: bool = True
    n_boot: int = Field(2000, ge=100, le=100_000, description="patient bootstrap resamples")
    allow_untrusted: bool = Field(
        False, description="development only: no trust anchor (MEDTL_TRUSTED_KEYS) needed; outputs say UNTRUSTED"
    )
    replicates: list[Path] = Field(
        default_factory=list, description="artifacts of the same recipe trained with other seeds: the seed spread"
    )


@task(name="evaluate", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_only)
def run_evaluation(params: EvaluateParameters) -> dict:
    """Returns headline numbers and hashes only: the task result is stored by Prefect too."""
    result = evaluate(
        params.artifact,
        out=params.out,
        test=params.test,
        dataset=params.dataset,
        rule=params.rule,
        temperature_scaling=params.temperature_scaling,
        pdf=params.pdf,
        n_boot=params.n_boot,
        trust=resolve_trust(allow_untrusted=params.allow_untrusted),
        replicates=params.replicates,
    )
    headline = {}
    for evaluation in result.metrics.evaluations:
        named = {e.name: e for e in evaluation.estimates}
        headline[evaluation.evaluated_on] = {
            name: [named[name].value, named[name].ci_low, named[name].ci_high]
            for name in ("auroc", "sensitivity", "specificity")
            if name in named
        }
    point = result.metrics.evaluations[0].operating_point  # chosen on the out-of-fold predictions, then frozen
    return {
        "report": str(params.out),
        "files": result.files,
        "threshold": point.threshold if point is not None else None,
        "headline": headline,
    }


@flow(name="medtl-evaluate", validate_parameters=True)
def evaluate_flow(params: EvaluateParameters) -> dict:
    """Metrics with patient-level CIs, calibration, operating point, subgroups, transfer; the report to sign."""
    summary = run_evaluation(params)
    create_markdown_artifact(
        key="evaluation-summary", markdown=summary_markdown(summary), description="medtl evaluation headline (no PHI)"
    )
    return summary


def summary_markdown(summary: dict) -> str:
    lines = ["# Evaluation", ""]
    for where, numbers in summary["headline"].items():
        shown = [
            f"{name} {v:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else "")
            for name, (v, lo, hi) in numbers.items()
            if v is not None
        ]
        lines.append(f"- **{where}**: " + ", ".join(shown))
    if summary["threshold"] is not None:
        lines += ["", f"Operating point: threshold {summary['threshold']:.4f}, chosen on out-of-fold predictions."]
    lines += ["", f"Report: `{summary['report']}`. Not for clinical use until a clinician runs `medtl approve`."]
    return "\n".join(lines)
