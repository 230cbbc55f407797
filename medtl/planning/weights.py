"""Which pretrained weights are on this machine and verified: checked before the plan chooses, never after.

Order of preference, for the network family the rules chose: an earlier medtl artifact the user named (trained on
medical images, verified through its own seal), then MedicalNet for volumes (3D medical pretraining), then ImageNet
through torchvision, then the newest backbone pretrained on this site's own scans (`medtl pretrain`, listed in
$MEDTL_HOME/pretrained.json) of the task's dimensionality, then none. A file that is present but fails its hash check
is reported and never used.

Why a site-pretrained backbone comes after the public files: large supervised pretraining is the better-measured
start where it exists; where it does not (an air-gapped site), pretraining on the site's own scans is what can be
had, and it beats random initialisation on small labelled sets (benchmarks/results/pretrain_*.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl.artifacts import open_verified
from medtl.contracts.planning import WeightsCheck
from medtl.models.artifact_index import usable as usable_pretrained
from medtl.models.artifact_source import source_weights_file
from medtl.models.catalog import ExpectedWeights, check, known_weights


@dataclass(frozen=True)
class WeightsPick:
    backbone: str
    weights: Any  # a weights choice for ModelConfig ("none" or a mapping)
    reason: str
    layout_3d: str | None = None  # a 3D network's own adapt_3d (its kernels fit only it); None for 2D weights

    @property
    def source(self) -> str:
        return "none" if self.weights == "none" else str(self.weights["source"])


def _entry(source: str, backbone: str) -> ExpectedWeights | None:
    matches = [e for e in known_weights() if e.source == source and backbone in e.backbones]
    # torchvision lists every member of the Weights enum: the first is IMAGENET1K_V1, the plain ImageNet recipe.
    return matches[0] if matches else None


def _looked_at(entry: ExpectedWeights | None, source: str, backbone: str) -> tuple[WeightsCheck, bool]:
    if entry is None:
        return WeightsCheck(
            source=source, label=f"no {source} file for {backbone}", state="missing", usable=False
        ), False
    status = check(entry, verify=True)
    usable = status.state == "verified"
    return WeightsCheck(source=source, label=entry.label, state=status.state, usable=usable), usable


def _preferences(spatial_dims: int) -> list[tuple[str, str, dict[str, str], str]]:
    """(source, backbone, weights choice, reason) in order of preference for this dimensionality."""
    imagenet = ("torchvision", "resnet18", {"source": "torchvision", "name": "IMAGENET1K_V1"},
                "ImageNet ResNet-18 is present and verified")  # fmt: skip
    if spatial_dims == 2:
        return [imagenet]
    medicalnet = ("medicalnet", "monai_resnet18", {"source": "medicalnet"},
                  "MedicalNet ResNet-18 is present and verified: 3D pretraining on medical volumes")  # fmt: skip
    return [medicalnet, (*imagenet[:3], imagenet[3] + " (adapted to volumes, see model.adapt_3d)")]


def pick_weights(spatial_dims: int, artifact: Path | None = None) -> tuple[WeightsPick, list[WeightsCheck]]:
    """The best usable weights for the rules' network (ResNet-18 family) and what was looked at on the way."""
    checks: list[WeightsCheck] = []
    if artifact is not None:  # opened now: a broken seal or an untrusted signer stops the plan, not a later fold
        verified = open_verified(artifact)
        backbone = str(verified.metadata["model"]["backbone"])
        layout_3d = _layout_3d(verified.metadata["model"])
        weights_file = source_weights_file(verified)
        checks.append(WeightsCheck(source="artifact", label=artifact.name, state="verified", usable=True))
        what = "self-supervised on unlabelled scans" if verified.kind == "pretrained" else "trained on medical images"
        reason = (
            f"the named medtl artifact ({backbone}, {what}; {weights_file}) verified through its seal and the "
            "site's trust anchors"
        )
        return WeightsPick(backbone, {"source": "artifact", "path": str(artifact)}, reason, layout_3d), checks
    for source, backbone, weights, reason in _preferences(spatial_dims):
        found, usable = _looked_at(_entry(source, backbone), source, backbone)
        checks.append(found)
        if usable:
            return WeightsPick(backbone, weights, reason), checks
    for status in usable_pretrained(spatial_dims):
        entry = status.entry
        checks.append(WeightsCheck(source="artifact", label=Path(entry.path).name, state="verified", usable=True))
        reason = (
            f"no public pretrained file is usable here; the site's own pretrained backbone {entry.model_id} "
            f"({entry.backbone}, {entry.method} on {entry.scans} unlabelled scans) is verified through its seal"
        )
        layout_3d = _layout_3d(status.model or {})
        return WeightsPick(entry.backbone, {"source": "artifact", "path": entry.path}, reason, layout_3d), checks
    missing = ", ".join(f"{c.source} ({c.state})" for c in checks)
    return (
        WeightsPick(
            "resnet18",
            "none",
            f"no pretrained weights are usable on this machine ({missing}): trained from scratch. "
            "`medtl weights list` says which files to copy where; --weights-artifact names an earlier medtl model; "
            "`medtl pretrain` makes a backbone from the site's unlabelled scans",
        ),
        checks,
    )


def _layout_3d(model: dict[str, Any]) -> str | None:
    """How a medtl network laid out its 3D convolutions (its weights load into that layout only); None for a 2D
    network, whose weights any 3D layout can take (ACS, inflation, 2.5D)."""
    return str(model.get("adapt_3d", "inflate")) if int(model.get("spatial_dims", 2)) == 3 else None
