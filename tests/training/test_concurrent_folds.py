"""`concurrent_folds`: folds trained side by side, each in a process of its own, give the run that trains them one
at a time (speed only), keep the same work folder, and a process that dies stops the run with what to do."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_train_e2e import _config, dataset, signing_key  # noqa: F401  (module fixtures shared with the e2e tests)

from medtl.errors import TrainingError
from medtl.training import train as train_module
from medtl.training.concurrent import train_concurrently
from medtl.training.cv import fold_finished
from medtl.training.train import prepare_training, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_folds_trained_side_by_side_give_the_run_trained_one_at_a_time(dataset, tmp_path, monkeypatch):  # noqa: F811
    config = _config(seed=5, cv={"n_folds": 3})  # three folds, two at a time: one waits for a free process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes gets on this machine's share: the same arithmetic
    try:
        one_at_a_time = train(dataset, config, tmp_path / "sequential")
    finally:
        torch.set_num_threads(threads)
    trained_elsewhere: list[list[bool]] = []

    def recorded(train_unit, plan, units, workers, progress=None):
        assert workers == 2 and units == [("main", 0), ("main", 1), ("main", 2)]
        train_concurrently(train_unit, plan, units, workers, progress)
        trained_elsewhere.append([fold_finished(plan.workdir, arm, fold) for arm, fold in units])

    monkeypatch.setattr(train_module, "train_concurrently", recorded)
    side_by_side = train(dataset, config.model_copy(update={"concurrent_folds": 2}), tmp_path / "concurrent")
    assert trained_elsewhere == [[True, True, True]]  # by the other processes, before this one read them back
    atol = 1e-4 if threads // 2 > 1 else 0.0  # more than one thread per process: sums in another order
    runs = (one_at_a_time, side_by_side)
    first, second = (pd.read_parquet(run.artifact / "predictions" / "oof.parquet") for run in runs)
    keys = ["fold", "scan_id"]
    first, second = first.sort_values(keys).reset_index(drop=True), second.sort_values(keys).reset_index(drop=True)
    assert len(first) > 0 and first[keys].equals(second[keys])
    np.testing.assert_allclose(first.probability, second.probability, rtol=0, atol=atol)
    for fold in (0, 1, 2):
        weights = [load_file(run.artifact / "weights" / f"fold{fold}.safetensors") for run in runs]
        for name, tensor in weights[0].items():
            np.testing.assert_allclose(tensor.numpy(), weights[1][name].numpy(), rtol=0, atol=atol)
    arms = [{a["arm"]: (a["oof_auc"], [f["heldout_auc"] for f in a["folds"]]) for a in run.indicators} for run in runs]
    assert arms[1]["main"][0] == pytest.approx(arms[0]["main"][0], abs=10 * atol)
    assert arms[1]["main"][1] == pytest.approx(arms[0]["main"][1], abs=10 * atol)


def test_the_number_of_concurrent_folds_is_not_part_of_a_run_s_identity(dataset, tmp_path):  # noqa: F811
    plan = prepare_training(dataset, _config(seed=13), tmp_path / "artifact")
    finished = plan.workdir / "main" / "fold0" / "result.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    prepare_training(dataset, _config(seed=13, concurrent_folds=3), tmp_path / "artifact")
    assert finished.exists()  # the same run, faster: its finished folds are kept


def test_auto_resolves_to_one_fold_at_a_time_on_a_cpu_and_a_number_is_kept(dataset, tmp_path):  # noqa: F811
    auto = prepare_training(dataset, _config(seed=13, concurrent_folds="auto"), tmp_path / "auto")
    assert auto.device.type == "cpu" and auto.fold_width == 1
    assert prepare_training(dataset, _config(seed=13, concurrent_folds=3), tmp_path / "three").fold_width == 3


def _dies(plan, arm, fold):
    os._exit(3)  # what the kernel's out-of-memory killer does to a process, as far as its parent can tell


def test_a_fold_process_that_dies_stops_the_run_and_says_what_to_do():
    with pytest.raises(TrainingError, match="the process training main fold 2 died") as caught:
        train_concurrently(_dies, None, [("main", 1)], workers=2)
    assert "smaller concurrent_folds" in caught.value.fix and "finished folds are kept" in caught.value.fix
