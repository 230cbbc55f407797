"""The planner's timing probe runs the training loop's own step, for every task type, so its seconds are a fold's."""

from __future__ import annotations

import pytest
import torch

from medtl.planning.probe import probe
from medtl.training import step as step_module
from medtl.training.config import TrainConfig

SHAPE = [16, 16]


def _config(**overrides) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"backbone": "resnet18", "weights": "none"},
            "batch_size": 4,
            "augmentation": {"flip_axes": [1]},
            **overrides,
        }
    )


@pytest.fixture
def calls(monkeypatch):
    """Counts the loop's step, its clipping and the optimiser groups it updates, as the probe drives them."""
    seen = {"steps": 0, "clips": 0, "groups": set()}
    real_call, real_clip = step_module.TrainStep.__call__, step_module.nn.utils.clip_grad_norm_

    def counted_call(self, inputs, targets, plan, lr_scale):
        seen["steps"] += 1
        seen["groups"].add(len(self.optimizer.param_groups))
        return real_call(self, inputs, targets, plan, lr_scale)

    def counted_clip(parameters, max_norm):
        seen["clips"] += 1
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(step_module.TrainStep, "__call__", counted_call)
    monkeypatch.setattr(step_module.nn.utils, "clip_grad_norm_", counted_clip)
    return seen


@pytest.mark.parametrize(("grad_clip", "clips"), [(1.0, 7), (None, 0)])
def test_the_probe_times_the_loops_step_with_its_clipping_and_parameter_groups(calls, grad_clip, clips):
    result = probe(_config(grad_clip=grad_clip), shape=SHAPE, channels=1, n_classes=2, kind="binary",
                   device=torch.device("cpu"))  # fmt: skip
    assert calls["steps"] == 7 and calls["clips"] == clips  # 2 discarded + 5 measured steps
    assert calls["groups"] == {6}  # stem, four ResNet stages and the head: the strategy's groups, as in a fold
    assert result.input_shape == SHAPE and result.batch_size == 4 and result.seconds_per_step > 0


@pytest.mark.parametrize(("kind", "n_classes"), [("multilabel", 3), ("ordinal", 4), ("multiclass", 3)])
def test_the_probe_builds_each_task_types_head_and_loss(calls, kind, n_classes):
    result = probe(_config(), shape=SHAPE, channels=3, n_classes=n_classes, kind=kind, device=torch.device("cpu"))
    assert calls["steps"] == 7 and result.seconds_per_image_predict > 0
