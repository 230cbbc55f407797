"""Transfer models: backbone registry, verified offline weight sources, adaptation and fine-tuning strategies.

Training calls `create_model` (or `create_model_from_config`) and then the strategy functions; everything a run needs
for its provenance is on the returned `BuiltModel`. Names are imported lazily, so that importing `medtl.models.cli`
(mounted by `medtl weights`) does not load torch and `medtl --help` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BackboneSpec": "backbones",
    "get_backbone": "backbones",
    "list_backbones": "backbones",
    "register_backbone": "backbones",
    "ModelConfig": "config",
    "parse_weights": "config",
    "create_model": "factory",
    "create_model_from_config": "factory",
    "rebuild_model": "factory",
    "rebuild_with_weights": "factory",
    "model_structure": "factory",
    "BuiltModel": "records",
    "WeightRecord": "records",
    "SOURCES": "sources",
    "register_source": "sources",
    "EpochPlan": "strategies",
    "StrategyConfig": "strategies",
    "apply_plan": "strategies",
    "param_groups": "strategies",
    "resolve_schedule": "strategies",
    "schedule_record": "strategies",
    "set_bn_modes": "strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medtl.models' has no attribute {name!r}")
    return getattr(import_module(f"medtl.models.{module}"), name)
