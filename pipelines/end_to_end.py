"""The end-to-end flow: ingest -> train (one task per fold; the artifact is packaged and sealed) -> evaluate ->
optionally pause for the clinician's sign-off. Scoring is its own flow (`pipelines.score`), run on a schedule.

Each stage is one of the stage flows, run as a subflow, so the UI shows the same tasks and artifacts as when a stage
runs alone. A re-run skips every stage whose inputs' content is unchanged and whose outputs are still there
(`pipelines.stages`): after a crash in evaluation, running the flow again goes straight back to evaluation.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from medtl.artifacts import open_verified, resolve_trust
from medtl.contracts.task import TaskDeclaration
from medtl.identity import pseudonymizer_from_env
from pipelines import stages
from pipelines.approval import request_approval
from pipelines.evaluate import EvaluateParameters, OperatingRule, evaluate_flow, summary_markdown
from pipelines.ingest import IngestParameters, ingest_flow
from pipelines.train import TrainParameters, train_flow


class EndToEndParameters(BaseModel):
    """Validated before any file is read. WORKDIR receives dataset/, artifact/, report/ and stages.json."""

    model_config = ConfigDict(extra="forbid")

    sources: list[Path] = Field(min_length=1, description="site-level folders with DICOM / NIfTI scans")
    labels: Path = Field(description="labels.csv (data_contracts/labels.v1.schema.json)")
    workdir: Path
    spec: Path | None = Field(None, description="preprocessing spec; default: derived from the data")
    task: TaskDeclaration | None = Field(
        None,
        description="the declared task type and class order (graded data must be declared ordinal); default: "
        "inferred from the labels where unambiguous",
    )
    config: Path | None = Field(None, description="train.yaml or plan.yaml; default: plan the recipe now")
    budget_minutes: float | None = Field(None, gt=0, description="without a config: the plan's time budget")
    rule: OperatingRule = Field("youden", description="operating-point rule: youden, sensitivity>=X or specificity>=X")
    temperature_scaling: bool = False
    n_boot: int = Field(2000, ge=100, le=100_000)
    pdf: bool = True
    evaluate: bool = Field(True, description="False for a source model that is only a starting point")
    approval: Literal["none", "pause"] = Field(
        "none", description="pause: wait in Prefect's UI for the reviewer's decision after evaluation"
    )
    approval_timeout_s: int = Field(7 * 24 * 3600, ge=1, le=90 * 24 * 3600)
    approval_poll_s: int = Field(10, ge=1, le=3600)
    report_url: str | None = Field(
        None, description="where the reviewer opens the report (the site's published copy of WORKDIR/report)"
    )
    allow_untrusted: bool = Field(
        False, description="development only: no trust anchor (MEDTL_TRUSTED_KEYS) needed; outputs say UNTRUSTED"
    )
    workers: int = Field(0, ge=0, le=256)
    allow_development_key: bool = False


@flow(name="medtl-end-to-end", validate_parameters=True)
def end_to_end_flow(params: EndToEndParameters) -> dict:
    logger = get_run_logger()
    work = params.workdir
    work.mkdir(parents=True, exist_ok=True)
    dataset, artifact, report = work / "dataset", work / "artifact", work / "report"
    summary: dict[str, object] = {"dataset": dataset, "artifact": artifact, "report": None, "skipped": []}

    key_id = pseudonymizer_from_env(allow_development_key=params.allow_development_key).key_id
    declared = params.task.model_dump_json() if params.task else ""
    ingest_key = stages.content_key(
        trees=params.sources,
        files=[p for p in (params.labels, params.spec) if p],
        values=[key_id, "ingest-v1", declared],
    )
    if stages.is_done(work, "ingest", ingest_key, [dataset / "fingerprint.json", dataset / "manifest.parquet"]):
        summary["skipped"].append("ingest")
    else:
        ingest_params = IngestParameters(
            sources=params.sources, out=dataset, labels=params.labels, spec=params.spec, workers=params.workers,
            allow_development_key=params.allow_development_key, task=params.task,
        )  # fmt: skip
        ingest_flow(ingest_params)
        stages.mark_done(work, "ingest", ingest_key)

    train_key = stages.content_key(
        files=[p for p in (params.config,) if p],
        values=[
            stages.sealed_digest(dataset, "fingerprint.json"),
            "train-v1",
            f"budget={params.budget_minutes}",
            declared,
        ],
    )
    if stages.is_done(work, "train", train_key, [artifact / "manifest.json"]):
        summary["skipped"].append("train")
    else:
        _set_aside(artifact, logger, "training")
        summary["training"] = train_flow(
            TrainParameters(dataset=dataset, out=artifact, config=params.config, budget_minutes=params.budget_minutes)
        )
        stages.mark_done(work, "train", train_key)

    if params.evaluate:
        evaluate_params = EvaluateParameters(
            artifact=artifact, out=report, dataset=dataset, rule=params.rule,
            temperature_scaling=params.temperature_scaling, pdf=params.pdf, n_boot=params.n_boot,
            allow_untrusted=params.allow_untrusted,
        )  # fmt: skip
        settings = evaluate_params.model_dump(mode="json", exclude={"artifact", "out", "dataset"})
        evaluate_key = stages.content_key(
            values=[stages.sealed_digest(artifact, "manifest.json"), settings, "evaluate-v1"]
        )
        if stages.is_done(work, "evaluate", evaluate_key, [report / "report.html", report / "metrics.json"]):
            summary["skipped"].append("evaluate")
        else:
            _set_aside(report, logger, "evaluation")  # a report is never overwritten: it may be the approved one
            evaluation = evaluate_flow(evaluate_params)
            stages.mark_done(work, "evaluate", evaluate_key)
            create_markdown_artifact(key="end-to-end-evaluation", markdown=summary_markdown(evaluation))
        summary["report"] = report
        if params.report_url:
            create_link_artifact(key="evaluation-report", link=params.report_url,
                                 link_text="evaluation report (to review and sign)")  # fmt: skip
        if params.approval == "pause":
            summary["review"] = _review(artifact, report, params)
    logger.info("end-to-end finished; skipped (inputs unchanged): %s", ", ".join(summary["skipped"]) or "none")
    return summary


def _review(artifact: Path, report: Path, params: EndToEndParameters) -> dict[str, object]:
    """Ask only when the latest evaluation has no counted decision yet: a re-run must not ask the reviewer twice."""
    status = open_verified(artifact, trust=resolve_trust(allow_untrusted=params.allow_untrusted)).status
    if status.event is not None and status.evaluation == status.latest_evaluation:
        return {"decision": "already " + status.state, "approved": status.approved}
    return request_approval(artifact, report, timeout_s=params.approval_timeout_s, poll_s=params.approval_poll_s,
                            report_url=params.report_url)  # fmt: skip


def _set_aside(output: Path, logger, stage: str) -> None:
    """An artifact or report made from other inputs is kept (renamed), never overwritten: the artifact may already
    be in use, the report may be the one a clinician approved (the approval names its SHA-256)."""
    if not output.exists():
        return
    number = 1
    while output.with_name(f"{output.name}.superseded-{number}").exists():
        number += 1
    target = output.with_name(f"{output.name}.superseded-{number}")
    shutil.move(str(output), target)
    logger.warning("inputs changed since the last %s: the previous %s is kept as %s", stage, output.name, target.name)
