"""The training loop: best weights are a copy of the best tuning epoch, early stopping, exact resume, schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl.models.factory import create_model
from medtl.models.mirrored import mirror_views
from medtl.models.strategies import StrategyConfig, resolve_schedule
from medtl.training import loop
from medtl.training import step as step_module
from medtl.training.config import TrainConfig
from medtl.training.data import TensorSet
from medtl.training.loop import fit, lr_scale


def _config(**overrides) -> TrainConfig:
    base = {
        "model": {"backbone": "resnet18", "weights": "none"},
        "strategy": {"name": "full", "lr": 1e-3},
        "epochs": 4,
        "batch_size": 8,
        "arms": [],
        "early_stopping": {"patience": 10, "min_epochs": 1},
        "augmentation": {"enabled": False},
        "min_steps_between_tuning": 1,  # these tests follow the curve epoch by epoch (2 steps each)
    }
    base.update(overrides)
    return TrainConfig.model_validate(base)


def _setup(task, config, seed=0):
    torch.manual_seed(seed)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    plans = resolve_schedule(StrategyConfig(name="full", lr=1e-3), config.epochs, built.stage_names)
    rows = np.arange(len(task.scans))
    return built, plans, TensorSet(task, rows[:16]), TensorSet(task, rows[16:])


def _scripted_tune_auc(monkeypatch, aucs):
    """Make the tuning AUC follow the given sequence, one value per epoch (the model and predictions stay real)."""
    calls = {"n": 0}

    def scripted(targets, probabilities, positive, kind=None):
        value = aucs[min(calls["n"], len(aucs) - 1)]
        calls["n"] += 1
        return value

    monkeypatch.setattr(loop, "auc", scripted)


def test_returned_weights_are_the_best_epochs_copy_not_the_last(tiny_task, monkeypatch):
    config = _config(epochs=4)
    built, plans, train, tune = _setup(tiny_task, config)
    _scripted_tune_auc(monkeypatch, [0.6, 0.9, 0.7, 0.65])
    snapshots = []
    result = fit(
        built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0,
        on_epoch=lambda record: snapshots.append({k: v.clone() for k, v in built.model.state_dict().items()}),
    )  # fmt: skip
    assert result.best_epoch == 2 and result.best_tune_auc == pytest.approx(0.9, abs=1e-3)
    for key, value in result.state.items():
        assert torch.equal(value, snapshots[1][key]), key
    changed = [k for k, v in snapshots[3].items() if v.is_floating_point() and not torch.equal(v, result.state[k])]
    assert changed, "the last epoch's weights should differ from the returned best ones"


def test_early_stopping_waits_patience_epochs_after_the_best(tiny_task, monkeypatch):
    config = _config(epochs=10, early_stopping={"patience": 2, "min_epochs": 1})
    built, plans, train, tune = _setup(tiny_task, config)
    _scripted_tune_auc(monkeypatch, [0.9, 0.5, 0.5, 0.5, 0.5])
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    assert [r["epoch"] for r in result.curve] == [1, 2, 3]
    assert result.stopped_early and result.best_epoch == 1


def test_each_record_s_train_loss_is_the_mean_of_the_step_losses_since_the_one_before(tiny_task, monkeypatch):
    returned: list[float] = []
    real = step_module.TrainStep.__call__

    def recorded(self, *args):
        loss = real(self, *args)
        returned.append(float(loss))
        return loss

    monkeypatch.setattr(step_module.TrainStep, "__call__", recorded)
    config = _config(epochs=4, min_steps_between_tuning=4)  # 2 steps an epoch: a record every second epoch
    built, plans, train, tune = _setup(tiny_task, config)
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    assert [record["epoch"] for record in result.curve] == [2, 4] and len(returned) == 8
    for record, since in zip(result.curve, (returned[:4], returned[4:]), strict=True):
        assert record["train_loss"] == pytest.approx(np.mean(since), rel=1e-12)
    first, last = result.curve
    assert 0 < first["step_seconds"] < last["step_seconds"] <= last["seconds"]  # a part of the time, growing
    assert last["seconds"] - last["step_seconds"] > first["seconds"] - first["step_seconds"] > 0  # + predictions


@pytest.mark.parametrize("ema_decay", [None, 0.8])
def test_an_interrupted_fold_resumes_to_exactly_the_same_result(tiny_task, tmp_path, ema_decay):
    config = _config(epochs=4, augmentation={"enabled": True}, checkpoint_every_s=0, ema_decay=ema_decay)
    built, plans, train, tune = _setup(tiny_task, config, seed=5)
    torch.manual_seed(11)
    reference = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=3)

    class Interrupted(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 3:
            raise Interrupted

    workdir = tmp_path / "fold"
    built, plans, train, tune = _setup(tiny_task, config, seed=5)
    torch.manual_seed(11)
    with pytest.raises(Interrupted):
        fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=3, workdir=workdir,
            on_epoch=stop_after_two)  # fmt: skip
    built, plans, train, tune = _setup(tiny_task, config, seed=99)  # a fresh process would start from scratch
    resumed = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=3, workdir=workdir)
    assert [r["epoch"] for r in resumed.curve] == [1, 2, 3, 4]
    assert [r["tune_auc"] for r in resumed.curve] == [r["tune_auc"] for r in reference.curve]
    assert resumed.best_epoch == reference.best_epoch
    for key, value in reference.state.items():
        assert torch.equal(value, resumed.state[key]), key
    # a checkpoint written with the weight average is not resumed under a recipe without one, nor the reverse
    other = config.model_copy(update={"ema_decay": None if ema_decay else 0.8})
    built, plans, train, tune = _setup(tiny_task, other, seed=5)
    fresh = fit(built, plans, train, tune, other, device=torch.device("cpu"), positive=1, seed=3)
    built, plans, train, tune = _setup(tiny_task, other, seed=5)
    again = fit(built, plans, train, tune, other, device=torch.device("cpu"), positive=1, seed=3, workdir=workdir)
    assert all(torch.equal(value, again.state[key]) for key, value in fresh.state.items())
    assert not all(torch.equal(value, again.state[key]) for key, value in reference.state.items())


def test_checkpoints_are_written_at_most_every_interval_and_when_the_fold_ends(tiny_task, tmp_path, monkeypatch):
    from medtl.training import loop

    written = []
    real = loop._checkpoint
    monkeypatch.setattr(loop, "_checkpoint", lambda workdir, model, opt, epoch, *rest: (
        written.append(epoch), real(workdir, model, opt, epoch, *rest)))  # fmt: skip
    for interval, expected in ((3600, [4]), (0, [1, 2, 3, 4])):
        written.clear()
        config = _config(epochs=4, checkpoint_every_s=interval)
        built, plans, train, tune = _setup(tiny_task, config, seed=5)
        fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=3,
            workdir=tmp_path / str(interval))  # fmt: skip
        assert written == expected


def test_the_model_learns_the_tiny_task(tiny_task):
    config = _config(epochs=6)
    built, plans, train, tune = _setup(tiny_task, config)
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    assert result.best_tune_auc is not None and result.best_tune_auc >= 0.9
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [("cosine", 0, 0.25), ("cosine", 4, 1.0), ("cosine", 100, 0.0), ("constant", 50, 1.0), ("onecycle", 30, 1.0)],
)
def test_learning_rate_schedules(kind, step, expected):
    assert lr_scale(step, total=100, warmup=4, kind=kind) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(("steps", "batch", "epochs"), [(7, 4, 2), (8, 4, 2), (3, 8, 2), (1, 16, 1)])
def test_a_schedule_in_steps_takes_exactly_that_many_optimiser_steps(tiny_task, monkeypatch, steps, batch, epochs):
    config = _config(steps=steps, batch_size=batch)
    built, plans, train, tune = _setup(tiny_task, config)
    taken: list[float] = []
    real = step_module.apply_plan

    def counting(optimizer, plan, scale):
        taken.append(scale)
        return real(optimizer, plan, scale)

    monkeypatch.setattr(step_module, "apply_plan", counting)
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    assert len(taken) == steps and len(result.curve) == epochs == loop.schedule_length(config, len(train))[0]
    warmup = loop.steps_per_epoch(len(train), batch)  # one warm-up epoch; the cosine spans the steps, not epochs
    assert taken == [lr_scale(step, steps, warmup, "cosine") for step in range(steps)]
    assert not train.keep_on(torch.device("cpu")) and not train.resident  # the CPU path keeps host tensors


def test_mirrored_predictions_are_the_mean_over_each_flip_combination(tiny_task):
    """A network that is not symmetric gives another answer for the mirror image; the prediction is their mean."""
    config = _config()
    built, _, _, tune = _setup(tiny_task, config)
    plain = loop.predict(built.model, tune, device=torch.device("cpu"), batch_size=8)
    mirrored = loop.predict(built.model, tune, device=torch.device("cpu"), batch_size=8, flip_axes=(1,))
    inputs = torch.stack([tune[i][0] for i in range(len(tune))])
    with torch.no_grad():
        flipped = torch.softmax(built.model(torch.flip(inputs, [3])).float(), dim=1).numpy()
    np.testing.assert_allclose(mirrored, (plain + flipped) / 2, atol=1e-5)
    assert np.abs(mirrored - plain).max() > 1e-4  # the flip was applied, not skipped
    assert mirror_views([2, 0, 2]) == [(), (0,), (2,), (0, 2)]


def test_test_time_flips_need_an_augmentation_that_flips():
    for augmentation in ({"enabled": False}, {"p_flip": 0.0}, {"flip_axes": []}):
        with pytest.raises(ValueError, match="test_time_flips"):
            _config(test_time_flips=True, augmentation=augmentation)
    assert _config(test_time_flips=True, augmentation={"flip_axes": [0, 1]}).prediction_flip_axes(2) == (0, 1)
    assert _config().prediction_flip_axes(2) == ()


def test_tiny_sets_predict_the_tuning_patients_every_few_epochs_and_count_patience_in_epochs(tiny_task, monkeypatch):
    """2 steps an epoch and at least 5 steps between predictions: a record every 3rd epoch and after the last; the
    best weights are still those of a predicted epoch, and patience still counts epochs."""
    config = _config(epochs=10, min_steps_between_tuning=5)
    built, plans, train, tune = _setup(tiny_task, config)
    assert loop.tuning_interval(2, 5) == 3 and loop.tuning_interval(16, 16) == 1
    predictions = []
    real_predict = loop.predict
    monkeypatch.setattr(loop, "predict", lambda *a, **k: predictions.append(1) or real_predict(*a, **k))
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    assert [r["epoch"] for r in result.curve] == [3, 6, 9, 10] and len(predictions) == 4
    assert result.best_epoch in (3, 6, 9, 10) and not result.stopped_early

    config = _config(epochs=30, min_steps_between_tuning=5, early_stopping={"patience": 4, "min_epochs": 1})
    built, plans, train, tune = _setup(tiny_task, config)
    _scripted_tune_auc(monkeypatch, [0.9, 0.5, 0.5, 0.5])
    result = fit(built, plans, train, tune, config, device=torch.device("cpu"), positive=1, seed=0)
    # best at epoch 3; at epoch 6 three epochs passed without improvement (< 4), at epoch 9 six: it stops there
    assert [r["epoch"] for r in result.curve] == [3, 6, 9] and result.stopped_early and result.best_epoch == 3


def test_the_weight_average_follows_the_ramped_moving_average_and_copies_integer_buffers():
    from medtl.training.averaging import averaged_copy, ramped_decay

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    averaged = averaged_copy(net, decay=0.9)
    expected = None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0, 0.5, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 7.0]):
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(2 * value)
        net[1].num_batches_tracked.fill_(n + 1)
        averaged.update_parameters(net)
        expected = value if expected is None else ramped_decay(0.9, n) * expected + (1 - ramped_decay(0.9, n)) * value
        assert averaged.module[0].weight.flatten().tolist() == pytest.approx([expected] * 6, rel=1e-5)
        assert averaged.module[1].running_mean.tolist() == pytest.approx([2 * expected] * 2, rel=1e-5)
        assert int(averaged.module[1].num_batches_tracked) == n + 1
    assert ramped_decay(0.9, 0) == pytest.approx(1 / 10) and ramped_decay(0.9, 1000) == 0.9
    assert expected != pytest.approx(7.0) and averaged.module[0].weight.flatten()[0] != net[0].weight.flatten()[0]


@pytest.mark.parametrize("decay, same_as_trained", [(1e-9, True), (0.9, False)])
def test_with_a_weight_average_the_fold_returns_the_average_not_the_last_weights(tiny_task, decay, same_as_trained):
    config = _config(epochs=3, ema_decay=decay)
    built, plans, train, _ = _setup(tiny_task, config)
    result = fit(built, plans, train, None, config, device=torch.device("cpu"), positive=1, seed=0)  # a refit
    trained = built.model.state_dict()
    floats = [k for k, v in trained.items() if v.is_floating_point()]
    assert all(torch.allclose(result.state[k], trained[k], atol=1e-6) for k in floats) is same_as_trained
    assert torch.equal(result.state["bn1.num_batches_tracked"], trained["bn1.num_batches_tracked"])


def test_the_log_says_how_a_fold_epoch_was_chosen_when_no_tuning_auroc_exists():
    from medtl.training.cv import FoldOutcome, _chosen_by

    def outcome(auc, selection):
        return FoldOutcome(0, 3, auc, 1.0, False, selection, [])

    assert _chosen_by(outcome(0.91234, "tune_auc")) == "tuning AUC 0.912"
    assert "lowest tuning loss" in _chosen_by(outcome(None, "tune_loss"))
    assert "last epoch" in _chosen_by(outcome(None, "last_epoch"))
