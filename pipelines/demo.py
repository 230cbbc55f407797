"""`medtl demo` as one Prefect flow: the end-to-end flow for a source model (only when no MedicalNet / ImageNet
weights are present locally), the end-to-end flow that transfers to the target cohort and evaluates, a demo
reviewer's sign-off and promotion of the model into a service registry, then the scoring flow on a fresh batch,
scoring only with the model in service and monitoring its scores.

It runs offline. Without a Prefect server configured it starts a temporary local one (8-14 s); with PREFECT_API_URL
set, the runs appear in that server's UI like any scheduled run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from medtl.artifacts import verify
from medtl.artifacts.service import promote
from medtl.demo import DEMO_OWNER, DemoPlan, demo_trust, pdf_available, prepare_demo
from medtl.evaluation.approve import approve
from medtl.outputs import mark
from pipelines.end_to_end import EndToEndParameters, end_to_end_flow
from pipelines.score import ScoreParameters, score_flow


class DemoParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path = Path("demo-output")
    patients: int = Field(40, ge=12, le=2000, description="target cohort; the source cohort has twice as many")
    seed: int = Field(0, ge=0)
    epochs: int = Field(18, ge=1, le=500)


@task(name="synthesize-cohorts")
def synthesize(params: DemoParameters) -> DemoPlan:
    return prepare_demo(params.out, patients=params.patients, seed=params.seed, epochs=params.epochs)


@task(name="demo-sign-off")
def sign_off(artifact: Path, report: Path, reviewer_key: Path) -> str:
    """A demo reviewer signs with their own key, exactly as a clinician would with `medtl approve`."""
    event = approve(
        artifact, reviewer="Demo Reviewer", role="demonstration only", decision="approve", report=report,
        comment="synthetic demonstration data; not a clinical approval", key=reviewer_key,
    )  # fmt: skip
    threshold = event.payload["statement"]["threshold"]
    return f"{event.kind} by {event.actor}, threshold {'none' if threshold is None else f'{threshold:.3f}'}"


@task(name="demo-promotion")
def put_in_service(registry: Path, artifact: Path, reviewer_key: Path) -> str:
    """The same reviewer puts the approved model into service: a signed event in the site's registry."""
    event = promote(registry, artifact, reason="demonstration: first model in service", reviewer_key=reviewer_key)
    mark(registry, owner=DEMO_OWNER)  # a re-run of the demo may replace it
    return f"{event.kind} {event.payload['model_id']} {event.payload['model_version']}"


@flow(name="medtl-demo", validate_parameters=True)
def demo_flow(params: DemoParameters) -> dict[str, object]:
    logger = get_run_logger()
    plan = synthesize(params)
    reviewer_key = demo_trust(params.out)
    if plan.signing_key_made:
        logger.warning("signing artifacts with a demo key made here: %s", plan.signing_key_made)
    logger.warning("pseudonyms use the public development key: synthetic data only")
    common = {"spec": plan.spec, "allow_development_key": True, "workers": 0}
    source = None
    if plan.transfer.kind == "source-model":
        source = end_to_end_flow(EndToEndParameters(
            sources=[plan.source_cohort / "dicom"], labels=plan.source_cohort / "labels.csv",
            workdir=params.out / "source", config=plan.source_config, evaluate=False, **common,
        ))["artifact"]  # fmt: skip
    logger.info("transfer from %s", plan.transfer.description)
    target = end_to_end_flow(EndToEndParameters(
        sources=[plan.target_cohort / "dicom"], labels=plan.target_cohort / "labels.csv",
        workdir=params.out / "target", config=plan.target_config, n_boot=1000, pdf=pdf_available(), **common,
    ))  # fmt: skip
    decision = sign_off(target["artifact"], target["report"], reviewer_key)
    registry = params.out / "registry"
    promotion = put_in_service(registry, target["artifact"], reviewer_key)
    scores = params.out / "scores"
    scored = score_flow(ScoreParameters(
        artifact=target["artifact"], sources=[plan.incoming / "dicom"], out=scores, sr=True,
        allow_development_key=True, registry=registry, monitor_out=params.out / "monitoring",
    ))  # fmt: skip
    return {
        "source": source, "transfer": plan.transfer.description, "target": target["artifact"],
        "dataset": target["dataset"],
        "report": target["report"], "scores": scores, "sign_off": decision, "scored": scored,
        "registry": registry, "promotion": promotion, "monitoring": params.out / "monitoring",
        "training": target.get("training", {}), "verified": verify(target["artifact"]),
    }  # fmt: skip
