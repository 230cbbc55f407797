"""Fine-tuning strategies: exactly the intended tensors change after an optimizer step, BN policy, schedules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from medtl.errors import ConfigError
from medtl.models import (
    BuiltModel,
    StrategyConfig,
    apply_plan,
    create_model,
    param_groups,
    resolve_schedule,
    schedule_record,
    set_bn_modes,
)

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


@pytest.fixture(scope="module")
def pristine() -> BuiltModel:
    return create_model("resnet18", weights="none", in_channels=1, num_classes=2)


@pytest.fixture
def built(pristine: BuiltModel) -> BuiltModel:
    return copy.deepcopy(pristine)


def _snapshot(built: BuiltModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in built.model.named_parameters()}


def _changed(built: BuiltModel, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in built.model.named_parameters() if not torch.equal(p, before[name])}


def _params_of(built: BuiltModel, stages: list[str]) -> set[str]:
    return {p for name, params in zip(built.stage_names, built.stages, strict=True) if name in stages for p in params}


def _step(built: BuiltModel, optimizer: torch.optim.Optimizer, plan, model=None) -> set[str]:
    before = _snapshot(built)
    (model or built.model).train()
    set_bn_modes(built, plan)
    x = torch.randn(2, 1, 32, 32)
    loss = torch.nn.functional.cross_entropy((model or built.model)(x), torch.tensor([0, 1]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return _changed(built, before)


@pytest.mark.parametrize(
    ("config", "trainable"),
    [
        ({"name": "linear_probe"}, ["head"]),
        ({"name": "partial", "last_k": 2}, ["layer3", "layer4", "head"]),
        ({"name": "full"}, STAGES),
        ({"name": "layerwise_lr_decay", "decay": 0.5}, STAGES),
    ],
)
@pytest.mark.parametrize("optimizer_kind", ["sgd", "adamw"])
def test_strategy_trains_exactly_its_parameters(built, config, trainable, optimizer_kind) -> None:
    plan = resolve_schedule(config, epochs=1, stage_names=built.stage_names)[0]
    groups = param_groups(built, plan)
    assert sum(len(g["params"]) for g in groups) == len(list(built.model.parameters()))  # every parameter, once
    if optimizer_kind == "sgd":
        optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=0.1)
    else:
        optimizer = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.1)
    assert _step(built, optimizer, plan) == _params_of(built, trainable)


def test_layerwise_decay_scales_lr_by_distance_from_the_head(built) -> None:
    plan = resolve_schedule({"name": "layerwise_lr_decay", "lr": 0.01, "decay": 0.5}, 1, built.stage_names)[0]
    assert plan.lr == pytest.approx({"head": 0.01, "layer4": 0.005, "layer3": 0.0025, "layer2": 0.00125,
                                     "layer1": 0.000625, "stem": 0.0003125})  # fmt: skip
    assert StrategyConfig(name="layerwise_lr_decay").resolved().decay == 0.75


def test_gradual_unfreezing_opens_one_more_stage_every_n_epochs(built) -> None:
    plans = resolve_schedule({"name": "gradual_unfreeze", "unfreeze_every": 2}, 7, built.stage_names)
    assert [plan.trainable for plan in plans] == [
        ["head"], ["head"], ["layer4", "head"], ["layer4", "head"], ["layer3", "layer4", "head"],
        ["layer3", "layer4", "head"], ["layer2", "layer3", "layer4", "head"],
    ]  # fmt: skip
    optimizer = torch.optim.SGD(param_groups(built, plans[0]), lr=0.0, momentum=0.9)
    for plan in (plans[0], plans[2], plans[4]):  # the same optimizer all along: only lr / wd change per epoch
        apply_plan(optimizer, plan)
        assert _step(built, optimizer, plan) == _params_of(built, plan.trainable)


def test_frozen_policy_keeps_batchnorm_statistics_of_frozen_stages(built) -> None:
    plan = resolve_schedule({"name": "partial", "last_k": 1}, 1, built.stage_names)[0]
    built.model.train()
    set_bn_modes(built, plan)
    assert not built.model.layer3[0].bn1.training and built.model.layer4[0].bn1.training
    frozen_before = built.model.layer1[0].bn1.running_mean.clone()
    open_before = built.model.layer4[0].bn1.running_mean.clone()
    built.model(torch.randn(4, 1, 32, 32))
    assert torch.equal(built.model.layer1[0].bn1.running_mean, frozen_before)
    assert not torch.equal(built.model.layer4[0].bn1.running_mean, open_before)

    train_all = resolve_schedule({"name": "partial", "last_k": 1, "bn_policy": "train"}, 1, built.stage_names)[0]
    set_bn_modes(built, train_all)
    built.model(torch.randn(4, 1, 32, 32))
    assert not torch.equal(built.model.layer1[0].bn1.running_mean, frozen_before)
    built.model.eval()
    set_bn_modes(built, train_all)
    assert not built.model.layer4[0].bn1.training  # never switches an evaluating model's BN to train mode


def test_schedule_is_json_for_the_artifact(built) -> None:
    config = StrategyConfig(name="gradual_unfreeze")
    plans = resolve_schedule(config, 3, built.stage_names)
    record = json.loads(json.dumps(schedule_record(config, plans)))
    assert record["strategy"]["unfreeze_every"] == 1 and record["strategy"]["bn_policy"] == "frozen"
    assert record["epochs"][1]["lr"]["layer4"] == pytest.approx(1e-3) and record["epochs"][0]["lr"]["layer4"] == 0
    for name in ("linear_probe", "partial", "full", "gradual_unfreeze", "layerwise_lr_decay"):
        resolved = schedule_record({"name": name}, resolve_schedule({"name": name}, 1, built.stage_names))["strategy"]
        assert StrategyConfig.model_validate(resolved).resolved() == StrategyConfig.model_validate(resolved)


def test_strategy_configs_are_validated(built) -> None:
    with pytest.raises(ValidationError):
        StrategyConfig(name="full", last_k=2)
    with pytest.raises(ValidationError):
        StrategyConfig(name="linear_probe", bn_policy="train")
    with pytest.raises(ValidationError):
        StrategyConfig.model_validate({"name": "full", "momentum": 0.9})
    with pytest.raises(ValidationError):
        StrategyConfig(name="freeze_everything")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="last_k between 1 and 5"):
        resolve_schedule({"name": "partial", "last_k": 9}, 1, built.stage_names)


def test_gradual_unfreezing_under_distributed_data_parallel(built, tmp_path: Path) -> None:
    """A one-process gloo group: DDP wraps the model once; unfreezing later needs no re-wrapping and stays exact."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(built.model)
        plans = resolve_schedule({"name": "gradual_unfreeze"}, 3, built.stage_names)
        optimizer = torch.optim.AdamW(param_groups(built, plans[0]), lr=0.0)
        for plan in plans:
            apply_plan(optimizer, plan, lr_scale=0.5)
            assert _step(built, optimizer, plan, model=ddp) == _params_of(built, plan.trainable)
    finally:
        dist.destroy_process_group()
