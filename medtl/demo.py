"""`medtl demo`: the whole pipeline, offline, on synthetic cohorts: ingest, train with transfer, evaluate, sign off,
score a fresh batch.

The story it tells is the product's: a model trained earlier on a larger related dataset (here a synthetic source
cohort) is adapted to a small labelled target cohort, and the artifact shows whether that transfer helped, against
a linear probe and the same network trained from scratch on the same patient-grouped folds. Everything is
pseudonymised with the public development key (synthetic data only) and the artifacts are signed with a demo key
made on the spot unless MEDTL_SIGNING_KEY names the site's key.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rich.console import Console

from medtl.contracts import PreprocessingSpec
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer

# Volumes at 1.5 x 1.5 x 5 mm in a 32 x 32 x 16 box: small enough to train on two CPU cores in minutes.
DEMO_SPEC = PreprocessingSpec(
    spatial_dims=3,
    target_spacing=[1.5, 1.5, 5.0],
    target_shape=[32, 32, 16],
    intensity={"kind": "window", "center": 40.0, "width": 400.0},
)
DEMO_DIFFICULTY = 0.1


def _train_config(*, weights: object, arms: list[str], epochs: int, final: str, model_id: str) -> dict:
    return {
        "model_id": model_id,
        "intended_use": "Demonstration on synthetic data only; not for any clinical or research decision.",
        "model": {"backbone": "monai_resnet10", "weights": weights},
        "strategy": {"name": "full", "lr": 1e-3} if weights == "none" else {"name": "layerwise_lr_decay", "lr": 1e-3},
        "arms": arms,
        "epochs": epochs,
        "batch_size": 8,
        "cv": {"n_folds": 3},
        "early_stopping": {"metric": "auc", "patience": 5, "min_epochs": max(1, (2 * epochs) // 3)},
        "final_model": final,
    }


def run_demo(
    out: Path, *, patients: int, seed: int, epochs: int = 18, console: Console | None = None
) -> dict[str, Path]:
    from medtl.artifacts import generate_signing_key, verify
    from medtl.datasets.synth import make_cohort
    from medtl.evaluation.approve import approve
    from medtl.evaluation.evaluate import evaluate
    from medtl.ingest.pipeline import ingest_sources
    from medtl.scoring.score import score
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    console = console or Console()
    out = Path(out)
    for stale in ("source", "target", "models", "report", "incoming", "scores"):  # a re-run starts afresh
        shutil.rmtree(out / stale, ignore_errors=True)
    pseudonymizer = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    if not os.environ.get("MEDTL_SIGNING_KEY"):
        key = out / "keys" / "demo-signing.pem"
        if not key.exists():
            generate_signing_key(key)
        os.environ["MEDTL_SIGNING_KEY"] = str(key)
        console.print(f"[yellow]signing artifacts with a demo key made here: {key}[/]")
    console.print("[yellow]pseudonyms use the public development key: synthetic data only[/]")

    def cohort(name: str, n: int, cohort_seed: int, problems: bool) -> Path:
        console.rule(f"{name}: synthesize {n} patients and ingest")
        folder = out / name
        make_cohort(folder / "cohort", patients=n, seed=cohort_seed, difficulty=DEMO_DIFFICULTY, with_problems=problems)
        result = ingest_sources(
            [folder / "cohort" / "dicom"],
            out=folder / "dataset",
            labels=folder / "cohort" / "labels.csv",
            spec=DEMO_SPEC,
            pseudonymizer=pseudonymizer,
            progress=True,
        )
        console.print(result.describe())
        return folder / "dataset"

    source_data = cohort("source", 2 * patients, seed + 101, problems=False)
    target_data = cohort("target", patients, seed, problems=True)
    console.rule("train the source model (from scratch, a related task with more patients)")
    source_config = _train_config(weights="none", arms=[], epochs=epochs, final="refit", model_id="demo-source")
    source = train(source_data, TrainConfig.model_validate({**source_config, "seed": seed}), out / "models" / "source")
    console.print(source.describe())
    console.rule("transfer to the target cohort, with a linear probe and from-scratch on the same folds")
    weights = {"source": "artifact", "path": str(out / "models" / "source")}
    console.print("pretrained weights: the source artifact trained above (no ImageNet weights are used offline)")
    target_config = _train_config(
        weights=weights, arms=["linear_probe", "scratch"], epochs=epochs, final="ensemble", model_id="demo-target"
    )
    target = train(target_data, TrainConfig.model_validate({**target_config, "seed": seed}), out / "models" / "target")
    console.print(target.describe())
    console.rule("evaluate: the clinician's report")
    evaluation = evaluate(target.artifact, out=out / "report", dataset=target_data, n_boot=1000, pdf=pdf_available())
    console.print(evaluation.describe())
    console.rule("sign-off (a demo reviewer approves: synthetic data only)")
    event = approve(
        target.artifact, reviewer="Demo Reviewer", role="demonstration only", decision="approve", report=out / "report",
        comment="synthetic demonstration data; not a clinical approval",
    )  # fmt: skip
    console.print(f"recorded: {event.kind} by {event.actor}, threshold {event.payload['threshold']:.3f}")
    console.rule("score a fresh batch of scans (with the artifact's own preprocessing)")
    make_cohort(out / "incoming", patients=max(4, patients // 5), seed=seed + 202, difficulty=DEMO_DIFFICULTY,
                with_problems=True)  # fmt: skip
    scored = score(
        target.artifact, [out / "incoming" / "dicom"], out=out / "scores", pseudonymizer=pseudonymizer, sr=True
    )
    console.print(scored.describe())
    report = verify(out / "models" / "target")
    console.rule("done")
    console.print(f"report:          {out / 'report' / 'report.html'}")
    console.print(f"target artifact: {target.artifact} (verified: {len(report.checks)} checks passed; "
                  f"{len(report.events)} audit events)")  # fmt: skip
    console.print(f"scores:          {out / 'scores' / 'scores.parquet'} (DICOM SR in {out / 'scores' / 'sr'})")
    console.print(f"datasets:        {target_data} and {source_data} (read qc_summary.md in each)")
    return {"source": source.artifact, "target": target.artifact, "dataset": target_data, "report": out / "report",
            "scores": out / "scores"}  # fmt: skip


def pdf_available() -> bool:
    """The PDF needs WeasyPrint and pango; the demo writes the HTML report either way."""
    try:
        import weasyprint  # noqa: F401
    except Exception:
        return False
    return True
