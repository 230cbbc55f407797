"""The training flow under Prefect: one task per fold, a failing fold reported without losing the others."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client

from medtl.artifacts import open_verified
from medtl.contracts import PreprocessingSpec
from medtl.datasets.synth import make_cohort
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources
from pipelines import train as train_module
from pipelines.train import FoldFailed, TrainParameters, train_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-flow")
    make_cohort(root / "cohort", patients=12, seed=8)
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[3.0, 3.0, 6.0], target_shape=[16, 16, 8])
    ingest_sources(
        [root / "cohort" / "dicom"],
        out=root / "dataset",
        labels=root / "cohort" / "labels.csv",
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        spec=spec,
        workers=1,
    )
    config = root / "train.yaml"
    config.write_text(
        "model: {backbone: resnet18, weights: none}\nstrategy: {name: full}\narms: []\nepochs: 1\nbatch_size: 8\n"
        "cv: {n_folds: 2}\nearly_stopping: {patience: 1, min_epochs: 1}\nallow_unsigned: true\n"
    )
    return root


def test_each_fold_is_a_task_and_the_artifact_records_the_flow_run(dataset):
    params = TrainParameters(dataset=dataset / "dataset", out=dataset / "artifact", config=dataset / "train.yaml")
    summary = train_flow(params)
    artifact = open_verified(dataset / "artifact", allow_unsigned=True)
    flow_run_id = artifact.metadata["provenance"]["flow_run_id"]
    assert flow_run_id and summary["manifest_hash"] == artifact.manifest_hash

    async def task_names():
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return sorted(run.name for run in runs)

    import anyio

    names = anyio.run(task_names)
    assert [n for n in names if n.startswith("main-fold")] == ["main-fold0", "main-fold1"]
    assert any(n.startswith("package-artifact") for n in names)


def test_a_crashing_fold_fails_alone_and_a_rerun_trains_only_what_is_left(dataset, monkeypatch):
    calls = []
    original = train_module.train_unit

    def flaky(plan, arm, fold):
        calls.append(fold)
        if fold == 1 and calls.count(1) == 1:
            raise RuntimeError("simulated crash in fold 1")
        return original(plan, arm, fold)

    monkeypatch.setattr(train_module, "train_unit", flaky)
    params = TrainParameters(dataset=dataset / "dataset", out=dataset / "artifact2", config=dataset / "train.yaml")
    with pytest.raises(FoldFailed, match="main fold 1"):
        train_flow(params)
    assert sorted(calls) == [0, 1]
    work = dataset / "artifact2.work" / "main"
    assert (work / "fold0" / "result.json").exists() and not (work / "fold1" / "result.json").exists()
    from medtl.training import cv as cv_module

    fitted = []
    original_fit = cv_module.fit
    monkeypatch.setattr(cv_module, "fit", lambda *a, **k: fitted.append(k.get("epochs")) or original_fit(*a, **k))
    summary = train_flow(params)
    assert fitted == [None]  # only fold 1 trains again (the final model is the fold ensemble); fold 0 is read back
    assert summary["artifact"].endswith("artifact2")
    assert not (dataset / "artifact2.work").exists()


def test_concurrent_folds_train_side_by_side_as_tasks_each_in_a_process_of_its_own(dataset):
    config = dataset / "concurrent.yaml"
    config.write_text((dataset / "train.yaml").read_text() + "concurrent_folds: 2\n")
    params = TrainParameters(dataset=dataset / "dataset", out=dataset / "artifact3", config=config)
    summary = train_flow(params)
    artifact = open_verified(dataset / "artifact3", allow_unsigned=True)
    assert artifact.read_yaml("config.yaml")["concurrent_folds"] == 2
    flow_run_id = artifact.metadata["provenance"]["flow_run_id"]

    async def fold_runs():
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return sorted((run for run in runs if run.name.startswith("main-fold")), key=lambda run: run.name)

    import anyio

    first, second = anyio.run(fold_runs)
    assert first.state.is_completed() and second.state.is_completed()
    assert second.start_time < first.end_time and first.start_time < second.end_time  # side by side
    assert [fold["best_epoch"] for fold in summary["folds"]] == [1, 1]  # one epoch each, read back from the processes
