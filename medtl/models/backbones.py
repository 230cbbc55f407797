"""The explicit backbone registry: each entry knows how to build its network and where its stem, stages and head are.

Why describe stages and head here: the loader needs the head (it is replaced, everything else must match the
pretrained file), adaptation needs the stem convolution, and fine-tuning strategies need the stages from input to
output. Builders never pass `weights=` to torchvision or `pretrained=True` to MONAI, so nothing can download.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.densenet import DenseNet

from medtl.errors import ConfigError
from medtl.models.adapt import replace_first_conv
from medtl.models.loading import under
from medtl.registry import Registry

Builder = Callable[[int, int, int], nn.Module]  # (in_channels, num_classes, spatial_dims) -> module


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: Literal["torchvision", "monai", "artifact"]
    description: str
    build: Builder | None
    native_dims: tuple[int, ...]  # dimensionalities the architecture is built in directly
    inflatable: bool  # a 2D build can be converted to 3D layer by layer (I3D inflation or ACS)
    first_conv: str  # module path of the stem convolution
    head: str  # module path of the classification layer that is replaced for the task
    stages: tuple[tuple[str, tuple[str, ...]], ...]  # body stages, input -> output: (name, module prefixes)
    torchvision_weights: Any = None  # torchvision WeightsEnum class with the ImageNet weights
    medicalnet_depth: int | None = None  # depth of the matching MedicalNet checkpoint


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


# torchvision and MONAI DenseNet121 name their layers alike: the same stages serve both.
_DENSENET_STAGES = (
    ("stem", ("features.conv0", "features.norm0")),
    ("block1", ("features.denseblock1", "features.transition1")),
    ("block2", ("features.denseblock2", "features.transition2")),
    ("block3", ("features.denseblock3", "features.transition3")),
    ("block4", ("features.denseblock4", "features.norm5")),
)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.register(spec.name, spec)


def get_backbone(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def partition_stages(spec: BackboneSpec, names: Sequence[str], prefix: str = "") -> tuple[list[str], list[list[str]]]:
    """Assign every parameter name to one body stage or the head; an unassigned name is a registry bug."""
    stage_names = [stage for stage, _ in spec.stages] + ["head"]
    prefixes = [tuple(prefix + p for p in group) for _, group in spec.stages] + [(prefix + spec.head,)]
    groups: list[list[str]] = [[] for _ in stage_names]
    for name in names:
        index = next((i for i, group in enumerate(prefixes) if under(name, group)), None)
        if index is None:
            raise ConfigError(f"parameter {name!r} of backbone {spec.name!r} belongs to no stage (registry bug)")
        groups[index].append(name)
    return stage_names, groups


# ---- torchvision ---------------------------------------------------------------------------------------------------


def _torchvision(factory: str, first_conv: str, init: str = "kaiming_fan_out") -> Builder:
    def build(in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
        if spatial_dims != 2:
            raise ConfigError(f"torchvision {factory} is built in 2D and inflated afterwards (internal misuse)")
        model = getattr(tvm, factory)(weights=None, num_classes=num_classes)
        replace_first_conv(model, first_conv, in_channels, init=init)
        return model

    return build


class DenseNetND(DenseNet):
    """torchvision's DenseNet, with a forward that pools over however many spatial dims the features have.

    torchvision's own forward calls `adaptive_avg_pool2d`, which breaks after inflation; parameter names are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.features(x))
        return self.classifier(features.flatten(2).mean(dim=2))


def _densenet121(in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
    if spatial_dims != 2:
        raise ConfigError("torchvision densenet121 is built in 2D and inflated afterwards (internal misuse)")
    model = DenseNetND(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=num_classes)
    replace_first_conv(model, "features.conv0", in_channels)
    return model


def _register_torchvision() -> None:
    resnet_stages = (
        ("stem", ("conv1", "bn1")),
        ("layer1", ("layer1",)),
        ("layer2", ("layer2",)),
        ("layer3", ("layer3",)),
        ("layer4", ("layer4",)),
    )
    for name, weights in (("resnet18", tvm.ResNet18_Weights), ("resnet50", tvm.ResNet50_Weights)):
        register_backbone(
            BackboneSpec(
                name=name,
                family="torchvision",
                description=f"torchvision {name}, ImageNet-1K weights; 2D, 3D by inflation or ACS",
                build=_torchvision(name, "conv1"),
                native_dims=(2,),
                inflatable=True,
                first_conv="conv1",
                head="fc",
                stages=resnet_stages,
                torchvision_weights=weights,
            )
        )
    register_backbone(
        BackboneSpec(
            name="densenet121",
            family="torchvision",
            description="torchvision densenet121, ImageNet-1K weights; 2D, 3D by inflation or ACS",
            build=_densenet121,
            native_dims=(2,),
            inflatable=True,
            first_conv="features.conv0",
            head="classifier",
            stages=_DENSENET_STAGES,
            torchvision_weights=tvm.DenseNet121_Weights,
        )
    )
    register_backbone(
        BackboneSpec(
            name="efficientnet_b0",
            family="torchvision",
            description="torchvision efficientnet_b0, ImageNet-1K weights; 2D, 3D by inflation or ACS",
            build=_torchvision("efficientnet_b0", "features.0.0"),
            native_dims=(2,),
            inflatable=True,
            first_conv="features.0.0",
            head="classifier.1",
            stages=(
                ("stem", ("features.0", "features.1")),
                ("stage2", ("features.2",)),
                ("stage3", ("features.3",)),
                ("stage4", ("features.4", "features.5")),
                ("stage5", ("features.6", "features.7", "features.8")),
            ),
            torchvision_weights=tvm.EfficientNet_B0_Weights,
        )
    )
    register_backbone(
        BackboneSpec(
            name="convnext_tiny",
            family="torchvision",
            description="torchvision convnext_tiny, ImageNet-1K weights; 2D, 3D only as 2.5D (2D-only LayerNorms)",
            build=_torchvision("convnext_tiny", "features.0.0", init="trunc_normal"),
            native_dims=(2,),
            inflatable=False,
            first_conv="features.0.0",
            head="classifier.2",
            stages=(
                ("stem", ("features.0",)),
                ("stage1", ("features.1",)),
                ("stage2", ("features.2", "features.3")),
                ("stage3", ("features.4", "features.5")),
                ("stage4", ("features.6", "features.7", "classifier.0")),
            ),
            torchvision_weights=tvm.ConvNeXt_Tiny_Weights,
        )
    )


# ---- MONAI ---------------------------------------------------------------------------------------------------------


def _monai_resnet(depth: int) -> Builder:
    def build(in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
        from monai.networks.nets import resnet
        from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

        # The MedicalNet layout: shortcut / downsample bias as MONAI documents for each depth, 7^3 stem with stride 2.
        bias_downsample, shortcut_type = get_medicalnet_pretrained_resnet_args(depth)
        factory = getattr(resnet, f"resnet{depth}")
        return factory(
            pretrained=False,
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=num_classes,
            shortcut_type=shortcut_type,
            bias_downsample=bias_downsample,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=True,
        )

    return build


def _monai_densenet(in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, pretrained=False)


def _register_monai() -> None:
    resnet_stages = (
        ("stem", ("conv1", "bn1")),
        ("layer1", ("layer1",)),
        ("layer2", ("layer2",)),
        ("layer3", ("layer3",)),
        ("layer4", ("layer4",)),
    )
    for depth in (10, 18, 50):
        register_backbone(
            BackboneSpec(
                name=f"monai_resnet{depth}",
                family="monai",
                description=f"MONAI ResNet-{depth} in the MedicalNet layout; 2D/3D, MedicalNet 3D weights",
                build=_monai_resnet(depth),
                native_dims=(2, 3),
                inflatable=False,
                first_conv="conv1",
                head="fc",
                stages=resnet_stages,
                medicalnet_depth=depth,
            )
        )
    register_backbone(
        BackboneSpec(
            name="monai_densenet121",
            family="monai",
            description="MONAI DenseNet121; 2D/3D, weights from a MONAI bundle, a file or an artifact",
            build=_monai_densenet,
            native_dims=(2, 3),
            inflatable=False,
            first_conv="features.conv0",
            head="class_layers.out",
            stages=_DENSENET_STAGES,
        )
    )


ARTIFACT_BACKBONE = register_backbone(
    BackboneSpec(
        name="artifact",
        family="artifact",
        description="the architecture of an earlier medtl artifact (requires weights: {source: artifact, path: ...})",
        build=None,
        native_dims=(),
        inflatable=False,
        first_conv="",
        head="",
        stages=(),
    )
)
_register_torchvision()
_register_monai()
