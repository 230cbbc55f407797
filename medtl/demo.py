"""What `medtl demo` needs besides the flows: its synthetic cohorts, its settings, and its demo keys.

The story the demo tells is the product's: a model trained earlier on a larger related dataset (here a synthetic
source cohort) is adapted to a small labelled target cohort, and the artifact shows whether that transfer helped,
against a linear probe and the same network trained from scratch on the same patient-grouped folds. Everything is
pseudonymised with the public development key (synthetic data only) and the artifacts are signed with a demo key
made on the spot unless MEDTL_SIGNING_KEY names the site's key. The orchestration is `pipelines.demo`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from medtl.contracts import PreprocessingSpec

# Volumes at 1.5 x 1.5 x 5 mm in a 32 x 32 x 16 box: small enough to train on two CPU cores in minutes.
DEMO_SPEC = PreprocessingSpec(
    spatial_dims=3,
    target_spacing=[1.5, 1.5, 5.0],
    target_shape=[32, 32, 16],
    intensity={"kind": "window", "center": 40.0, "width": 400.0},
)
DEMO_DIFFICULTY = 0.1
INTENDED_USE = "Demonstration on synthetic data only; not for any clinical or research decision."


@dataclass(frozen=True)
class DemoPlan:
    """Every input the demo's flows read, written as files a user can open and reuse with the real commands."""

    source_cohort: Path
    target_cohort: Path
    incoming: Path
    spec: Path
    source_config: Path
    target_config: Path
    signing_key_made: Path | None


def train_config(*, weights: object, arms: list[str], epochs: int, final: str, model_id: str, seed: int) -> dict:
    return {
        "model_id": model_id,
        "intended_use": INTENDED_USE,
        "seed": seed,
        "model": {"backbone": "monai_resnet10", "weights": weights},
        "strategy": {"name": "full", "lr": 1e-3} if weights == "none" else {"name": "layerwise_lr_decay", "lr": 1e-3},
        "arms": arms,
        "epochs": epochs,
        "batch_size": 8,
        "cv": {"n_folds": 3},
        "early_stopping": {"metric": "auc", "patience": 5, "min_epochs": max(1, (2 * epochs) // 3)},
        "final_model": final,
    }


def prepare_demo(out: Path, *, patients: int, seed: int, epochs: int) -> DemoPlan:
    """Start afresh (a re-run replaces earlier demo outputs, keeps the demo key), then write cohorts and settings."""
    from medtl.artifacts import generate_signing_key
    from medtl.datasets.synth import make_cohort

    out = Path(out)
    for stale in ("source", "target", "incoming", "scores", "settings"):
        shutil.rmtree(out / stale, ignore_errors=True)
    made = None
    if not os.environ.get("MEDTL_SIGNING_KEY"):
        made = out / "keys" / "demo-signing.pem"
        if not made.exists():
            generate_signing_key(made)
        os.environ["MEDTL_SIGNING_KEY"] = str(made)
    settings = out / "settings"
    settings.mkdir(parents=True)
    plan = DemoPlan(
        source_cohort=out / "source" / "cohort", target_cohort=out / "target" / "cohort",
        incoming=out / "incoming", spec=settings / "preprocessing.json", source_config=settings / "source.yaml",
        target_config=settings / "target.yaml", signing_key_made=made,
    )  # fmt: skip
    plan.spec.write_text(DEMO_SPEC.model_dump_json(indent=2), encoding="utf-8")
    source = train_config(weights="none", arms=[], epochs=epochs, final="refit", model_id="demo-source", seed=seed)
    transfer = {"source": "artifact", "path": str((out / "source" / "artifact").resolve())}
    target = train_config(weights=transfer, arms=["linear_probe", "scratch"], epochs=epochs, final="ensemble",
                          model_id="demo-target", seed=seed)  # fmt: skip
    plan.source_config.write_text(yaml.safe_dump(source, sort_keys=False), encoding="utf-8")
    plan.target_config.write_text(yaml.safe_dump(target, sort_keys=False), encoding="utf-8")
    make_cohort(plan.source_cohort, patients=2 * patients, seed=seed + 101, difficulty=DEMO_DIFFICULTY)
    make_cohort(plan.target_cohort, patients=patients, seed=seed, difficulty=DEMO_DIFFICULTY, with_problems=True)
    make_cohort(plan.incoming, patients=max(4, patients // 5), seed=seed + 202, difficulty=DEMO_DIFFICULTY,
                with_problems=True)  # fmt: skip
    return plan


def pdf_available() -> bool:
    """The PDF needs WeasyPrint and pango; the demo writes the HTML report either way."""
    try:
        import weasyprint  # noqa: F401
    except Exception:
        return False
    return True
