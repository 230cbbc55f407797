"""The training flow: one Prefect task per (arm, fold), then one task that packages and seals the artifact.

A fold that fails fails its own task; the others still run, the flow reports which failed and stops before
packaging. Completed folds are kept in the artifact's work folder, so a re-run of the flow trains only what is left.
Folds run one at a time by default (one GPU, or all CPU cores, per fold), `concurrent_folds` at a time when the config
says so (a small model on one GPU); `pipelines.runners.on_dask(train_flow)` spreads them over a Dask cluster, one
fold per GPU worker.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from medtl.errors import MedTLError
from medtl.io.allocator import heap_for_arrays
from medtl.planning import PlanOptions
from medtl.planning.plan import plan_for_run, saved_plan_path, summary
from medtl.training.concurrent import train_concurrently
from medtl.training.config import MAX_CONCURRENT_FOLDS, TrainConfig, load_config
from medtl.training.cv import finished_outcome
from medtl.training.train import TrainingPlan, check_preconditions, finish_training, prepare_training, train_unit
from pipelines.common import retry_on_io_only
from pipelines.runners import needs_gpu, worker_name


class TrainParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Path = Field(description="dataset folder written by ingest")
    out: Path = Field(description="artifact folder to write")
    config: Path | None = Field(None, description="train.yaml or plan.yaml; default: plan the recipe now")
    budget_minutes: float | None = Field(None, gt=0, description="without a config: the plan's time budget")


class FoldFailed(MedTLError):
    """One or more folds failed; the artifact is not written."""


@task(name="plan-training", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_only)
def plan_training(params: TrainParameters) -> TrainingPlan:
    if params.config is not None:
        config = load_config(params.config)
    else:  # the same planner as `medtl plan`; its reasons travel in the artifact's config.yaml
        check_preconditions(TrainConfig(), params.out)
        config = plan_for_run(params.dataset, params.out, PlanOptions(budget_minutes=params.budget_minutes))
        get_run_logger().info("planned recipe:\n%s", summary(config))
    return prepare_training(params.dataset, config, params.out)


@task(name="train-fold", task_run_name="{arm}-fold{fold}")
def train_fold(plan: TrainingPlan, arm: str, fold: int) -> dict:
    if plan.fold_width > 1:  # beside other folds: in a process of its own (see concurrent_folds)
        train_concurrently(train_unit, plan, [(arm, fold)], 1, sharing=plan.fold_width)
        outcome = finished_outcome(plan.workdir, arm, fold)
    else:
        with heap_for_arrays():  # on a Dask worker: see medtl/io/allocator.py
            outcome = train_unit(plan, arm, fold)
    return {"arm": arm, "fold": fold, "best_epoch": outcome.best_epoch, "tune_auc": outcome.best_tune_auc,
            "seconds": outcome.seconds, "worker": worker_name()}  # fmt: skip


@task(name="package-artifact")
def package(plan: TrainingPlan, flow_run_id: str | None) -> dict:
    result = finish_training(plan, flow_run_id=flow_run_id)
    saved_plan_path(plan.out).unlink(missing_ok=True)  # sealed: the artifact's config.yaml holds the plan
    return {
        "artifact": str(result.artifact),
        "manifest_hash": result.manifest_hash,
        "oof_auc": {entry["arm"]: entry["oof_auc"] for entry in result.indicators},
    }


def _submitted(plan: TrainingPlan) -> dict[tuple[str, int], PrefectFuture]:
    """Every fold as a task: on this machine's threads `concurrent_folds` at a time (1: one GPU, or all CPU cores,
    per fold); on a Dask cluster all at once, its scheduler placing them one per free GPU worker."""
    width = plan.fold_width
    local = isinstance(FlowRunContext.get().task_runner, ThreadPoolTaskRunner)
    futures: dict[tuple[str, int], PrefectFuture] = {}
    with needs_gpu(plan.device.type == "cuda"):
        for arm, fold in plan.units:
            if local:  # the thread's own future: a task's Prefect state is read from the server and may lag
                running = [future.wrapped_future for future in futures.values() if not future.wrapped_future.done()]
                if len(running) >= width:
                    wait(running, return_when=FIRST_COMPLETED)
            futures[arm, fold] = train_fold.submit(plan, arm, fold)
    return futures


@flow(name="medtl-train", validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENT_FOLDS))
def train_flow(params: TrainParameters) -> dict:
    """Split by patient, train each arm's folds as separate tasks, then write and seal the artifact."""
    logger = get_run_logger()
    plan = plan_training(params)
    futures = _submitted(plan)
    for future in futures.values():
        future.wait()
    states = {unit: future.state for unit, future in futures.items()}
    failed = [f"{arm} fold {fold}" for (arm, fold), state in states.items() if not state.is_completed()]
    folds = [state.result() for state in states.values() if state.is_completed()]
    create_table_artifact(key="training-folds", table=folds, description="best epoch and tuning AUROC per fold")
    if failed:
        raise FoldFailed(
            f"{len(failed)} fold(s) failed: {', '.join(failed)}; the others completed and are kept",
            fix="fix the cause shown in the failed task's log and run the flow again: only what is left is trained",
        )
    logger.info("all %d folds trained; packaging", len(folds))
    summary = {**package(plan, flow_run.get_id()), "folds": folds}
    create_markdown_artifact(
        key="training-summary",
        markdown="# Training\n\nOut-of-fold AUROC by arm: "
        + ", ".join(f"{arm} {value:.3f}" for arm, value in summary["oof_auc"].items() if value is not None)
        + f"\n\nArtifact manifest sha256 `{summary['manifest_hash']}`.",
    )
    return summary
