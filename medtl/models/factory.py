"""`create_model`: backbone + verified weights + adaptation → a model and the record of how it was made.

Order matters: the weights are resolved and hash-checked before the network is built, so a missing or tampered file
fails in milliseconds with a message about the file, not after minutes of work.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from medtl.errors import ConfigError, WeightsError, describe_validation_error
from medtl.models.adapt import ACS_VIEWS, SliceStack, convert_to_3d, convert_to_acs
from medtl.models.backbones import BackboneSpec, get_backbone, partition_stages
from medtl.models.config import ModelConfig, parse_weights
from medtl.models.loading import LoadReport, transfer_state
from medtl.models.records import BuiltModel
from medtl.models.single_position import use_single_position_shortcut
from medtl.models.sources import SOURCES, ResolvedWeights

SPEC_KEYS = (
    "backbone",
    "in_channels",
    "num_classes",
    "spatial_dims",
    "channel_adapt",
    "adapt_3d",
    "slices",
    "slice_step",
    "depth_padding",
)
_CHOICES = {
    "channel_adapt": ("sum", "mean"),
    "adapt_3d": ("inflate", "2.5d", "acs"),
    "depth_padding": ("replicate", "zeros"),
}


def _check(name: str, value: Any, allowed: tuple[Any, ...] | None = None, minimum: int | None = None) -> None:
    if minimum is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", where=name)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}", where=name)


def _mode(spec: BackboneSpec, spatial_dims: int, adapt_3d: str) -> str:
    if spatial_dims == 2 or adapt_3d == "2.5d":
        if 2 not in spec.native_dims:
            raise ConfigError(f"backbone {spec.name!r} has no 2D form", where="spatial_dims")
        return "2d" if spatial_dims == 2 else "2.5d"
    if adapt_3d == "acs":
        if 2 in spec.native_dims and spec.inflatable:
            return "acs"
        raise ConfigError(
            f"backbone {spec.name!r} cannot be converted to ACS convolutions",
            where="adapt_3d",
            fix="ACS needs a 2D backbone that converts layer by layer (resnet18/50, densenet121, efficientnet_b0); "
            "a natively 3D backbone takes adapt_3d: inflate (it is built in 3D), others adapt_3d: 2.5d",
        )
    if 3 in spec.native_dims:
        return "3d"
    if spec.inflatable:
        return "inflate"
    raise ConfigError(
        f"backbone {spec.name!r} cannot be inflated to 3D",
        where="adapt_3d",
        fix="use adapt_3d: 2.5d (neighbouring slices as channels) or a natively 3D backbone",
    )


def _resolve(spec: BackboneSpec, choice: Any) -> tuple[BackboneSpec, ResolvedWeights | None]:
    if spec.family == "artifact" and choice.source != "artifact":
        raise ConfigError(
            "backbone 'artifact' takes its architecture from an artifact",
            where="weights",
            fix="set weights: {source: artifact, path: ARTIFACT_FOLDER}",
        )
    resolved = SOURCES.get(choice.source).resolve(choice, spec)
    if resolved is not None and resolved.model_spec is not None:
        trained = str(resolved.model_spec["backbone"])
        if spec.family == "artifact":
            spec = get_backbone(trained)
        elif trained != spec.name:
            raise WeightsError(
                f"the artifact's model is {trained!r}, not {spec.name!r}",
                where="backbone",
                fix=f"set backbone: {trained} (or backbone: artifact)",
            )
    return spec, resolved


def create_model(
    name: str,
    *,
    weights: Any,
    in_channels: int,
    num_classes: int,
    spatial_dims: int = 2,
    channel_adapt: str = "sum",
    adapt_3d: str = "inflate",
    slices: int = 3,
    slice_step: int | None = None,
    depth_padding: str = "replicate",
) -> BuiltModel:
    """Build backbone `name` for (in_channels, spatial_dims) inputs and num_classes outputs, from `weights`.

    `weights` is required: `"none"` for random initialisation, or a weights choice (see `medtl.models.config`).
    `spatial_dims=3` on a 2D backbone inflates it (`adapt_3d="inflate"`), stacks slices (`"2.5d"`) or turns its
    convolutions into ACS convolutions that keep the 2D weights (`"acs"`).
    """
    _check("in_channels", in_channels, minimum=1)
    _check("num_classes", num_classes, minimum=1)
    _check("spatial_dims", spatial_dims, allowed=(2, 3))
    _check("slices", slices, minimum=1)
    if slice_step is not None:
        _check("slice_step", slice_step, minimum=1)
    for key, value in (("channel_adapt", channel_adapt), ("adapt_3d", adapt_3d), ("depth_padding", depth_padding)):
        _check(key, value, allowed=_CHOICES[key])

    spec = get_backbone(name)
    choice = parse_weights(weights)
    if spec.family != "artifact":
        _mode(spec, spatial_dims, adapt_3d)  # refuse an impossible layout before reading any weight file
    spec, resolved = _resolve(spec, choice)
    mode = _mode(spec, spatial_dims, adapt_3d)
    if spec.build is None:  # only the 'artifact' placeholder, replaced in _resolve
        raise ConfigError(f"backbone {spec.name!r} cannot be built directly", where="backbone")
    net_channels = in_channels * slices if mode == "2.5d" else in_channels
    model: nn.Module = spec.build(net_channels, num_classes, 3 if mode == "3d" else 2)
    if mode == "inflate":
        convert_to_3d(model, depth_padding=depth_padding)
    elif mode == "acs":
        convert_to_acs(model)

    report = LoadReport()
    if resolved is not None:
        record = resolved.record
        report = transfer_state(
            model,
            resolved.state.tensors,
            head=[spec.head],
            channel_keys=[spec.first_conv + ".weight"],
            channel_method=channel_adapt,  # type: ignore[arg-type]
            where=f"{record.source}:{record.path_name}",
            what=f"weights {record.name!r} ({record.path_name})",
        )
        report.normalisation = list(resolved.state.steps)

    prefix = ""
    if mode == "2.5d":
        model = SliceStack(model, slices, slice_step)
        prefix = "net."
    use_single_position_shortcut(model)  # small inputs: a last stage of one position costs a matrix product
    loaded = {prefix + key for key in report.loaded}
    names = [n for n, _ in model.named_parameters()]
    stage_names, stages = partition_stages(spec, names, prefix)

    source_channels = None
    if resolved is not None and spec.first_conv + ".weight" in resolved.state.tensors:
        source_channels = int(resolved.state.tensors[spec.first_conv + ".weight"].shape[1])
    adaptation: dict[str, Any] = {
        "mode": mode,
        "input_channels": {
            "data": in_channels,
            "network": net_channels,
            "pretrained": source_channels,
            "layer": spec.first_conv,
            "method": channel_adapt if source_channels not in (None, net_channels) else None,
        },
        "head": {"layer": spec.head, "num_classes": num_classes, "dropped_source_keys": report.dropped_head_keys},
        "adapted_tensors": dict(report.adapted),
    }
    if mode == "inflate" or (mode == "3d" and any("inflated" in how for how in report.adapted.values())):
        adaptation["inflation"] = {
            "method": "I3D: k x k kernel -> k x k x k, weights / k; cubic strides and pools",
            "depth_padding": depth_padding if mode == "inflate" else "zeros",
        }
    if mode == "acs":
        adaptation["acs"] = {
            "method": "ACS convolutions: output channels of each 2D conv split in three groups, one per view",
            "axis_groups": list(ACS_VIEWS),
            "split": "about out/3 channels per group, the remainder to the first groups",
            "weights": "2D weights unchanged (no inflation); cubic strides and pools",
        }
    if mode == "2.5d":
        adaptation["slices_2_5d"] = {
            "slices": slices,
            "step": slice_step or slices,
            "aggregate": "mean of logits over slice groups",
        }

    model_spec = {
        "backbone": spec.name,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "spatial_dims": spatial_dims,
        "channel_adapt": channel_adapt,
        "adapt_3d": adapt_3d,
        "slices": slices,
        "slice_step": slice_step,
        "depth_padding": depth_padding,
    }
    return BuiltModel(
        model=model,
        backbone=spec.name,
        spec=model_spec,
        pretrained=resolved.record if resolved else None,
        pretrained_params=[n for n in names if n in loaded],
        new_params=[n for n in names if n not in loaded],
        stages=stages,
        stage_names=stage_names,
        adaptation=adaptation,
        load_report=report.as_dict(),
    )


def create_model_from_config(
    config: ModelConfig | Mapping[str, Any], *, in_channels: int, num_classes: int, spatial_dims: int
) -> BuiltModel:
    """The train YAML's `model:` section plus what the dataset says about inputs and classes."""
    if isinstance(config, ModelConfig):
        cfg = config
    else:
        try:
            cfg = ModelConfig.model_validate(dict(config))
        except ValidationError as error:
            problems = describe_validation_error(error, root="model")
            raise ConfigError(f"invalid model section: {problems}", where="model") from None
    return create_model(
        cfg.backbone,
        weights=cfg.weights,
        in_channels=in_channels,
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        channel_adapt=cfg.channel_adapt,
        adapt_3d=cfg.adapt_3d,
        slices=cfg.slices,
        slice_step=cfg.slice_step,
        depth_padding=cfg.depth_padding,
    )


def rebuild_model(spec: Mapping[str, Any]) -> BuiltModel:
    """The same architecture as a `BuiltModel.spec` (e.g. an artifact's metadata['model']), randomly initialised.

    For scoring: rebuild, then `model.load_state_dict(weights, strict=True)` from the artifact's own weights.
    """
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown or "backbone" not in spec:
        raise ConfigError(
            f"invalid model spec: unknown keys {unknown}" if unknown else "model spec has no backbone",
            fix=f"a model spec has the keys {list(SPEC_KEYS)}",
        )
    kwargs = {k: v for k, v in spec.items() if k != "backbone"}
    return create_model(str(spec["backbone"]), weights="none", **kwargs)


def model_structure(spec: Mapping[str, Any]) -> BuiltModel:
    """`rebuild_model` without parameter storage (PyTorch's meta device), for what needs only the architecture's
    module names and groups (the head's parameters, a stage's module path): nothing is allocated or initialised."""
    with torch.device("meta"):
        return rebuild_model(spec)


def rebuild_with_weights(spec: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """The network of `spec` holding `weights` (every key and only those, as load_state_dict(strict=True)).

    Built on the meta device and given the weights' tensors, so the random initialisation that the weights would
    replace at once is skipped, and no throwaway copy of the parameters is allocated: 8x faster for a 3D ResNet-18
    (~0.3 s saved per fold model of an ensemble in every scoring, evaluation and comparison run); networks of many
    small layers (DenseNet, EfficientNet) load a few hundredths of a second slower, as each operation on the meta
    device costs more than initialising a small layer (benchmarks/bench_model_load.py). Weights of another dtype
    than the network's, or a module with state outside its state dict, take the ordinary route: built,
    initialised, then loaded."""
    with torch.device("meta"):
        network = rebuild_model(spec).model
    expected = {name: tensor.dtype for name, tensor in network.state_dict().items()}
    if expected.keys() == weights.keys() and all(weights[name].dtype == dtype for name, dtype in expected.items()):
        network.load_state_dict(weights, strict=True, assign=True)
        if not any(tensor.is_meta for tensor in chain(network.parameters(), network.buffers())):
            return network
    network = rebuild_model(spec).model
    network.load_state_dict(weights, strict=True)
    return network
