"""What `medtl demo` needs besides the flows: its synthetic cohorts, its settings, and its demo keys.

The story the demo tells is the product's: a network pretrained on a larger dataset is adapted to a small labelled
target cohort, and the artifact shows whether that transfer helped,
against a linear probe and the same network trained from scratch on the same patient-grouped folds. Everything is
pseudonymised with the public development key (synthetic data only) and the artifacts are signed with a demo key
made on the spot unless MEDTL_SIGNING_KEY names the site's key. The orchestration is `pipelines.demo`.

Which pretrained network: MedicalNet's 3D ResNet-10 when its file is in the weight store and verified, else
torchvision's ImageNet ResNet-18 (inflated to 3D) when that file is, else -- as on any machine that never fetched
weights -- a model the demo first trains on a larger synthetic source cohort. The demo says which it used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from medtl.contracts import PreprocessingSpec
from medtl.outputs import clear_for, mark

# Volumes at 1.5 x 1.5 x 5 mm in a 32 x 32 x 16 box: small enough to train on two CPU cores in minutes.
DEMO_SPEC = PreprocessingSpec(
    spatial_dims=3,
    target_spacing=[1.5, 1.5, 5.0],
    target_shape=[32, 32, 16],
    intensity={"kind": "window", "center": 40.0, "width": 400.0},
)
DEMO_DIFFICULTY = 0.1
# what a re-run replaces, under --out
DEMO_FOLDERS = ("source", "target", "incoming", "scores", "settings", "registry", "monitoring")
DEMO_OWNER = "medtl demo"
INTENDED_USE = "Demonstration on synthetic data only; not for any clinical or research decision."


@dataclass(frozen=True)
class DemoTransfer:
    """Where the target model's pretrained weights come from, and the sentence that tells the user."""

    kind: Literal["medicalnet", "imagenet", "source-model"]
    backbone: str
    weights: object  # the train config's `weights` value; for source-model, filled in with the source artifact
    description: str


def choose_transfer() -> DemoTransfer:
    """The best pretrained network present on this machine; only files that pass their hash check count."""
    from medtl.models.catalog import check, known_weights

    entries = known_weights()
    for entry in entries:
        if entry.source == "medicalnet" and "monai_resnet10" in entry.backbones:
            status = check(entry)
            if status.state == "verified":
                return DemoTransfer("medicalnet", "monai_resnet10", {"source": "medicalnet", "sha256": status.sha256},
                                    f"MedicalNet 3D ResNet-10 ({entry.key}, sha256 {status.sha256[:12]}…)")  # fmt: skip
    for entry in entries:
        imagenet = entry.source == "torchvision" and entry.label == "ResNet18_Weights.IMAGENET1K_V1"
        if imagenet and check(entry).state == "verified":
            return DemoTransfer("imagenet", "resnet18", {"source": "torchvision", "name": "IMAGENET1K_V1"},
                                f"ImageNet ResNet-18 ({entry.key}), inflated to 3D")  # fmt: skip
    return DemoTransfer(
        "source-model", "monai_resnet10", None,
        "a 3D ResNet-10 the demo trained on a larger synthetic source cohort (no MedicalNet or ImageNet weights "
        "found locally; `medtl weights list` shows where they go)",
    )  # fmt: skip


@dataclass(frozen=True)
class DemoPlan:
    """Every input the demo's flows read, written as files a user can open and reuse with the real commands."""

    transfer: DemoTransfer
    source_cohort: Path
    target_cohort: Path
    incoming: Path
    spec: Path
    source_config: Path
    target_config: Path
    signing_key_made: Path | None


def train_config(
    *, weights: object, arms: list[str], epochs: int, final: str, model_id: str, seed: int,
    backbone: str = "monai_resnet10",
) -> dict:  # fmt: skip
    return {
        "model_id": model_id,
        "intended_use": INTENDED_USE,
        "seed": seed,
        "model": {"backbone": backbone, "weights": weights},
        "strategy": {"name": "full", "lr": 1e-3} if weights == "none" else {"name": "layerwise_lr_decay", "lr": 1e-3},
        "arms": arms,
        "epochs": epochs,
        "batch_size": 8,
        "cv": {"n_folds": 3},
        "early_stopping": {"metric": "auc", "patience": 5, "min_epochs": max(1, (2 * epochs) // 3)},
        "final_model": final,
    }


def prepare_demo(out: Path, *, patients: int, seed: int, epochs: int) -> DemoPlan:
    """Start afresh (a re-run replaces earlier demo outputs, keeps the demo key), then write cohorts and settings.

    Only folders an earlier demo made are replaced (each carries the demo's marker, see medtl.outputs); a folder
    of the same name with anything else in it stops the demo before anything is removed or written."""
    from medtl.artifacts import generate_signing_key
    from medtl.datasets.synth import make_cohort

    out = Path(out)
    for folder in DEMO_FOLDERS:  # all checked before any is removed: a refusal leaves every folder as it was
        clear_for(out / folder, owner=DEMO_OWNER, what=f"the demo's {folder} folder", dry_run=True)
    for folder in DEMO_FOLDERS:
        clear_for(out / folder, owner=DEMO_OWNER, what=f"the demo's {folder} folder")
    # incoming and registry are marked once written: the cohort builder and the first promotion need them empty
    for folder in ("source", "target", "scores", "settings", "monitoring"):
        mark(out / folder, owner=DEMO_OWNER)
    made = None
    if not os.environ.get("MEDTL_SIGNING_KEY"):
        made = out / "keys" / "demo-signing.pem"
        if not made.exists():
            generate_signing_key(made)
        os.environ["MEDTL_SIGNING_KEY"] = str(made)
    settings = out / "settings"
    transfer = choose_transfer()
    plan = DemoPlan(
        transfer=transfer, source_cohort=out / "source" / "cohort", target_cohort=out / "target" / "cohort",
        incoming=out / "incoming", spec=settings / "preprocessing.json", source_config=settings / "source.yaml",
        target_config=settings / "target.yaml", signing_key_made=made,
    )  # fmt: skip
    plan.spec.write_text(DEMO_SPEC.model_dump_json(indent=2), encoding="utf-8")
    weights = transfer.weights
    if transfer.kind == "source-model":
        source = train_config(weights="none", arms=[], epochs=epochs, final="refit", model_id="demo-source", seed=seed)
        plan.source_config.write_text(yaml.safe_dump(source, sort_keys=False), encoding="utf-8")
        make_cohort(plan.source_cohort, patients=2 * patients, seed=seed + 101, difficulty=DEMO_DIFFICULTY)
        weights = {"source": "artifact", "path": str((out / "source" / "artifact").resolve())}
    target = train_config(weights=weights, arms=["linear_probe", "scratch"], epochs=epochs, final="ensemble",
                          model_id="demo-target", seed=seed, backbone=transfer.backbone)  # fmt: skip
    plan.target_config.write_text(yaml.safe_dump(target, sort_keys=False), encoding="utf-8")
    make_cohort(plan.target_cohort, patients=patients, seed=seed, difficulty=DEMO_DIFFICULTY, with_problems=True)
    make_cohort(plan.incoming, patients=max(4, patients // 5), seed=seed + 202, difficulty=DEMO_DIFFICULTY,
                with_problems=True)  # fmt: skip
    mark(plan.incoming, owner=DEMO_OWNER)
    return plan


def pdf_available() -> bool:
    """The PDF needs WeasyPrint and pango; the demo writes the HTML report either way."""
    try:
        import weasyprint  # noqa: F401
    except Exception:
        return False
    return True


def demo_trust(out: Path) -> Path:
    """Trust anchors for this demo run only (this process's environment), and a demo reviewer's key, returned.

    The demo shows the trusted path, not the development shortcut: the key that signs its artifacts is added to the
    artifact anchors, and a demo reviewer's own key (never the pipeline's) to the approver keys, beside whatever
    the site configured.
    """
    from medtl.artifacts import (
        APPROVER_KEYS_ENV,
        TRUSTED_KEYS_ENV,
        generate_signing_key,
        public_key_hex,
        resolve_signing_key,
    )

    pipeline = resolve_signing_key()
    if pipeline is not None:
        _add_key(TRUSTED_KEYS_ENV, public_key_hex(pipeline))
    reviewer = Path(out) / "keys" / "demo-reviewer.pem"
    if not reviewer.exists():
        generate_signing_key(reviewer)
    _add_key(APPROVER_KEYS_ENV, str(reviewer.with_name(reviewer.name + ".pub")))
    return reviewer


def _add_key(variable: str, key: str) -> None:
    """Add one key (hex or a .pub path) to a key-list variable of this process, keeping what the site set."""
    present = [part for part in os.environ.get(variable, "").split(os.pathsep) if part.strip()]
    if key not in present:
        os.environ[variable] = os.pathsep.join([*present, key])
