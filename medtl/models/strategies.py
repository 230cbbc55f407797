"""Fine-tuning strategies as named schedules over the model's stages, applied through optimizer parameter groups.

Why parameter groups and not `requires_grad`: DistributedDataParallel registers its gradient hooks once, when it
wraps the model; flipping `requires_grad` later (gradual unfreezing) leaves replicas out of sync or fails with
"unused parameters". Here every parameter always has a gradient and sits in exactly one group (one per stage); a
frozen stage has lr 0 and weight decay 0, so SGD, Adam and AdamW leave it bit-for-bit unchanged, and the optimizer
state stays the same shape all run long. (Gradients of frozen stages are still computed: that is the price.)

BatchNorm policy, explicit: `frozen` (default) keeps BatchNorm layers of frozen stages in eval mode, so their running
statistics — pretrained on the source data — are neither used from the batch nor updated; `train` puts every
BatchNorm in train mode. A linear probe always uses `frozen`. Other stochastic layers (dropout, stochastic depth)
follow the model's train/eval mode. Call `set_bn_modes` after `model.train()` at the start of every epoch.

LR schedulers: set the learning rate with `apply_plan(optimizer, plan, lr_scale)` rather than a torch LR scheduler,
which caches each group's initial lr — 0 for a stage that is frozen at the start of gradual unfreezing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from medtl.errors import ConfigError
from medtl.models.records import BuiltModel

StrategyName = Literal["linear_probe", "partial", "full", "gradual_unfreeze", "layerwise_lr_decay"]
BNPolicy = Literal["frozen", "train"]
DEFAULT_LAYERWISE_DECAY = 0.75


class StrategyConfig(BaseModel):
    """The `strategy:` section of the train YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName
    lr: float = Field(1e-3, gt=0, description="learning rate of the head; other stages derive from it")
    weight_decay: float = Field(1e-4, ge=0)
    last_k: int | None = Field(None, ge=1, description="partial: how many last body stages train (default 1)")
    unfreeze_every: int | None = Field(None, ge=1, description="gradual_unfreeze: epochs per newly unfrozen stage")
    decay: float | None = Field(None, gt=0, le=1, description="lr x decay^(distance from head); layerwise default 0.75")
    bn_policy: BNPolicy = "frozen"

    @model_validator(mode="after")
    def _fields_fit_strategy(self) -> StrategyConfig:
        if self.last_k is not None and self.name != "partial":
            raise ValueError("last_k applies only to strategy 'partial'")
        if self.unfreeze_every is not None and self.name != "gradual_unfreeze":
            raise ValueError("unfreeze_every applies only to strategy 'gradual_unfreeze'")
        if self.name == "linear_probe" and self.decay not in (None, 1.0):
            raise ValueError("a linear probe trains only the head; decay does not apply")
        if self.name == "linear_probe" and self.bn_policy == "train":
            raise ValueError("a linear probe keeps the body's BatchNorm in eval mode; bn_policy 'train' contradicts it")
        return self

    def resolved(self) -> StrategyConfig:
        """The same strategy with every default written out, as recorded in the artifact."""
        updates: dict[str, Any] = {
            "decay": self.decay or (DEFAULT_LAYERWISE_DECAY if self.name == "layerwise_lr_decay" else 1.0)
        }
        if self.name == "linear_probe":
            updates["decay"] = 1.0
        if self.name == "partial":
            updates["last_k"] = self.last_k or 1
        if self.name == "gradual_unfreeze":
            updates["unfreeze_every"] = self.unfreeze_every or 1
        return self.model_copy(update=updates)


@dataclass(frozen=True)
class EpochPlan:
    """What trains in one epoch: lr and weight decay per stage (lr 0 = frozen) and which stages' BatchNorm trains."""

    epoch: int
    lr: dict[str, float]
    weight_decay: dict[str, float]
    bn_train: dict[str, bool]

    @property
    def trainable(self) -> list[str]:
        return [stage for stage, lr in self.lr.items() if lr > 0]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_schedule(config: StrategyConfig | dict[str, Any], epochs: int, stage_names: list[str]) -> list[EpochPlan]:
    """One plan per epoch. `stage_names` run from input to output and end with "head" (`BuiltModel.stage_names`)."""
    cfg = (config if isinstance(config, StrategyConfig) else StrategyConfig.model_validate(config)).resolved()
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}", where="epochs")
    if not stage_names or stage_names[-1] != "head":
        raise ConfigError("stage names must end with 'head' (use BuiltModel.stage_names)")
    body = len(stage_names) - 1
    if cfg.last_k is not None and cfg.last_k > body:
        raise ConfigError(
            f"partial fine-tuning of the last {cfg.last_k} stages, but the backbone has {body}",
            where="strategy.last_k",
            fix=f"use last_k between 1 and {body}, or strategy 'full'",
        )
    decay = cfg.decay if cfg.decay is not None else 1.0
    plans = []
    for epoch in range(epochs):
        if cfg.name == "linear_probe":
            open_stages = 0
        elif cfg.name == "partial":
            open_stages = cfg.last_k or 1
        elif cfg.name == "gradual_unfreeze":
            open_stages = min(body, epoch // (cfg.unfreeze_every or 1))
        else:
            open_stages = body
        lr: dict[str, float] = {}
        for index, stage in enumerate(stage_names):
            distance = body - index  # head 0, last body stage 1, ...
            lr[stage] = cfg.lr * decay**distance if distance <= open_stages else 0.0
        plans.append(
            EpochPlan(
                epoch=epoch,
                lr=lr,
                weight_decay={s: cfg.weight_decay if lr[s] > 0 else 0.0 for s in stage_names},
                bn_train={s: cfg.bn_policy == "train" or lr[s] > 0 for s in stage_names},
            )
        )
    return plans


def schedule_record(config: StrategyConfig | dict[str, Any], plans: list[EpochPlan]) -> dict[str, Any]:
    """JSON-serialisable strategy + per-epoch plan for the artifact's resolved config."""
    cfg = config if isinstance(config, StrategyConfig) else StrategyConfig.model_validate(config)
    return {"strategy": cfg.resolved().model_dump(), "epochs": [plan.as_dict() for plan in plans]}


def param_groups(built: BuiltModel, plan: EpochPlan) -> list[dict[str, Any]]:
    """One optimizer group per stage, covering every parameter exactly once; build the optimizer from these."""
    params = dict(built.model.named_parameters())
    groups: list[dict[str, Any]] = []
    seen: set[str] = set()
    for stage, names in zip(built.stage_names, built.stages, strict=True):
        if not names:
            continue
        seen.update(names)
        groups.append(
            {
                "params": [params[n] for n in names],
                "lr": plan.lr[stage],
                "weight_decay": plan.weight_decay[stage],
                "stage": stage,
            }
        )
    if seen != set(params):
        missing = sorted(set(params) - seen)[:5]
        raise ConfigError(f"stages do not cover all parameters (e.g. {missing}); rebuild with create_model")
    return groups


def apply_plan(optimizer: torch.optim.Optimizer, plan: EpochPlan, lr_scale: float = 1.0) -> None:
    """Set each stage group's lr (times an outer schedule's factor, e.g. cosine) and weight decay for this epoch."""
    for group in optimizer.param_groups:
        stage = group.get("stage")
        if stage not in plan.lr:
            raise ConfigError(f"optimizer group without a known stage ({stage!r}); build it with param_groups()")
        group["lr"] = plan.lr[stage] * lr_scale
        group["weight_decay"] = plan.weight_decay[stage]


def set_bn_modes(built: BuiltModel, plan: EpochPlan) -> None:
    """After `model.train()`: BatchNorm of stages whose `bn_train` is False goes to eval mode (stats frozen)."""
    stage_of = {name: stage for stage, names in zip(built.stage_names, built.stages, strict=True) for name in names}
    training = built.model.training
    for module_name, module in built.model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            stage = stage_of.get(f"{module_name}.weight")
            if stage is not None:
                module.train(training and plan.bn_train[stage])
