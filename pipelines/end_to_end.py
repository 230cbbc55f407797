"""The end-to-end flow: ingest -> train (one task per fold; the artifact is packaged and sealed) -> evaluate ->
when a model is in service, compare with it on the locked test -> optionally pause for the clinician's sign-off
(only for a challenger the comparison proposes). Scoring is its own flow (`pipelines.score`), run on a schedule.

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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medtl.artifacts import open_verified, resolve_trust
from medtl.artifacts.service import REGISTRY_FILE, open_registry
from medtl.contracts import read_json
from medtl.contracts.comparison import Comparison
from medtl.contracts.task import TaskDeclaration
from medtl.errors import ConfigError
from medtl.identity import pseudonymizer_from_env
from pipelines import stages
from pipelines.approval import request_approval
from pipelines.compare import CompareParameters, compare_flow
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
    registry: Path | None = Field(
        None, description="the site's service registry: when a model is in service, the new one is compared with it"
    )
    champion: Path | None = Field(
        None, description="the folder of the artifact in service (checked against the registry by its manifest hash)"
    )
    test: Path | None = Field(None, description="locked test dataset for the comparison; neither model trained on it")
    margin: float = Field(0.02, ge=0, le=0.2, description="non-inferiority margin on the AUROC, declared up front")
    decision_margin: float | None = Field(None, ge=0, le=0.2, description="margin on sensitivity/specificity")

    @model_validator(mode="after")
    def _comparison_inputs(self) -> EndToEndParameters:
        if self.registry is not None and (self.champion is None or self.test is None):
            raise ValueError("with a registry, give champion (the artifact in service) and test (the locked test set)")
        return self


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
        comparison = _compare_with_champion(artifact, work, params, logger) if params.registry is not None else None
        summary["comparison"] = comparison
        review = sign_off(artifact, report, params, comparison, logger)
        if review is not None:
            summary["review"] = review
    logger.info("end-to-end finished; skipped (inputs unchanged): %s", ", ".join(summary["skipped"]) or "none")
    return summary


def sign_off(
    artifact: Path, report: Path, params: EndToEndParameters, comparison: dict | None, logger
) -> dict[str, object] | None:
    """Ask the reviewer only for a challenger the comparison proposes (or for the first model, with no comparison):
    a model not shown non-inferior to the one in service ends the run with the verdict, and nobody is asked."""
    if comparison is not None and not comparison["proposed"]:
        logger.warning(
            "the new model was not shown non-inferior to the one in service (%s, margin %g): no sign-off is "
            "requested and the model in service stays",
            comparison["verdict"], comparison["margin"],
        )  # fmt: skip
        return {"decision": "not requested: " + comparison["verdict"], "approved": False}
    return _review(artifact, report, params) if params.approval == "pause" else None


def _compare_with_champion(artifact: Path, work: Path, params: EndToEndParameters, logger) -> dict | None:
    """The comparison with the model in service (None when nothing is in service yet: the first model is signed
    off on its evaluation alone); re-runs reuse it while both artifacts, the test data and the margins are the same."""
    assert params.registry is not None and params.champion is not None and params.test is not None  # validator
    trust = resolve_trust(allow_untrusted=params.allow_untrusted)
    current = (
        open_registry(params.registry, trust=trust).in_service if (params.registry / REGISTRY_FILE).exists() else None
    )
    if current is None:
        return None
    champion = open_verified(params.champion, trust=trust)
    if champion.manifest_hash != current.artifact_manifest_hash:
        raise ConfigError(
            f"the champion folder {params.champion.name} is not the artifact in service ({current.artifact_name})",
            where=params.champion.name,
            fix="point `champion` at the folder of the artifact the registry has in service (`medtl service status`)",
        )
    out = work / "comparison"
    compare_params = CompareParameters(
        champion=params.champion, challenger=artifact, test=params.test, out=out, margin=params.margin,
        decision_margin=params.decision_margin, n_boot=params.n_boot, allow_untrusted=params.allow_untrusted,
    )  # fmt: skip
    key = stages.content_key(values=[
        champion.manifest_hash, stages.sealed_digest(artifact, "manifest.json"),
        stages.sealed_digest(params.test, "fingerprint.json"), params.margin, params.decision_margin, "compare-v1",
    ])  # fmt: skip
    if stages.is_done(work, "compare", key, [out / "comparison.json"]):
        found = read_json(Comparison, out / "comparison.json")
        return {"verdict": found.verdict, "proposed": found.proposed, "margin": found.margin, "reused": True}
    _set_aside(out, logger, "comparison")
    summary = compare_flow(compare_params)
    stages.mark_done(work, "compare", key)
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
