"""Quality on real data through the real path: import-medmnist -> ingest -> medtl plan (with a time budget) ->
medtl train --config plan.yaml -> medtl evaluate --test (the official test split, scored once).

No tuning on the test split: the plan's empirical stage, cross-validation, early stopping and model selection use
train + val patients only; the test patients are the locked test set, predicted once at the end by the sealed
artifact. Published results (MedMNIST v2, Yang et al. 2023; all trained from scratch) are copied into the JSON.

    python benchmarks/bench_medmnist_quality.py breastmnist --budget 30
    python benchmarks/bench_medmnist_quality.py breastmnist --pretrain pneumoniamnist   # transfer between domains
    python benchmarks/bench_medmnist_quality.py retinamnist --source retinamnist.npz    # graded (ordinal) set
    python benchmarks/bench_medmnist_quality.py breastmnist --plan-only plan.yaml   # plan here (e.g. on a CPU) ...
    python benchmarks/bench_medmnist_quality.py breastmnist --plan plan.yaml   # ... train it elsewhere (CPU/GPU parity)

Baselines in the same run: the published results, and, whenever the main arm starts from pretrained weights, the
same architecture trained from scratch (the `scratch` arm) on the same splits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

PUBLISHED = {  # test AUC / ACC, MedMNIST v2 (Yang et al., Scientific Data 2023)
    "breastmnist": {
        "ResNet-18 (28)": [0.901, 0.863],
        "ResNet-18 (224)": [0.891, 0.833],
        "Google AutoML Vision": [0.919, 0.861],
    },
    "pneumoniamnist": {
        "ResNet-18 (28)": [0.944, 0.854],
        "ResNet-18 (224)": [0.956, 0.864],
        "Google AutoML Vision": [0.991, 0.946],
    },
    "retinamnist": {  # five diabetic-retinopathy grades: macro one-vs-rest AUROC, accuracy
        "ResNet-18 (28)": [0.717, 0.524],
        "Google AutoML Vision": [0.750, 0.531],
    },
    "chestmnist": {  # 14 findings, multi-label: mean per-finding AUROC, accuracy over all labels
        "ResNet-18 (28)": [0.768, 0.947],
        "Google AutoML Vision": [0.778, 0.948],
    },
    "adrenalmnist3d": {
        "ResNet-18 + 3D": [0.827, 0.721],
        "ResNet-18 + ACS": [0.839, 0.754],
        "auto-sklearn": [0.828, 0.802],
    },
}
# the same volumes at 64^3 (MedMNIST+): published figures are for 28^3, the nearest comparison (run with --size 64)
PUBLISHED["adrenalmnist3d_64"] = {f"{name} (28^3)": value for name, value in PUBLISHED["adrenalmnist3d"].items()}


def signing_key(workdir: Path) -> None:
    """Artifacts are signed as in production: without MEDTL_SIGNING_KEY, a throwaway key in `workdir`."""
    if os.environ.get("MEDTL_SIGNING_KEY"):
        return
    from medtl.artifacts import generate_signing_key

    key = workdir / "signing.pem"
    if not key.exists():
        generate_signing_key(key)
    os.environ["MEDTL_SIGNING_KEY"] = str(key)
    os.environ.setdefault("MEDTL_TRUSTED_KEYS", f"{key}.pub")


def run_header(benchmark: str, args: argparse.Namespace) -> dict:
    """What a result file starts with: the benchmark, its settings (folder names only, never paths) and the machine."""
    return {
        "benchmark": benchmark,
        "dataset": args.dataset,
        "settings": {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }


def shared_data() -> Path:
    configured = os.environ.get("MEDTL_SHARED_DATA")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


def prepare(name: str, workdir: Path, size: int, limit: int | None, source: Path | None = None) -> Path:
    """MedMNIST .npz -> DICOM/NIfTI + labels.csv (+ task.json) -> ingested dataset with a fixed spec (no peeking at
    test); the import's task declaration (ordinal grades, multi-label findings) is ingested with it."""
    from medtl.contracts import PreprocessingSpec, read_json
    from medtl.contracts.task import TaskDeclaration
    from medtl.datasets.medmnist import import_medmnist
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.pipeline import ingest_sources

    files = workdir / f"{name}-files"
    if not files.exists():
        npz = source or shared_data() / "medmnist" / f"{name}.npz"
        import_medmnist(name, source=str(npz), out=files, limit=limit)
    dims = 3 if name.endswith("3d") or name.endswith("3d_64") else 2
    spec = PreprocessingSpec(
        spatial_dims=dims,
        target_spacing=None,
        target_shape=[size] * dims,
        intensity={"kind": "range", "low": 0.0, "high": 255.0},  # MedMNIST images are uint8
    )
    dataset = workdir / f"{name}-dataset"
    ingest_sources(
        [files],
        out=dataset,
        labels=files / "labels.csv",
        spec=spec,
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        task=read_json(TaskDeclaration, files / "task.json") if (files / "task.json").exists() else None,
    )
    return dataset


def plan_and_train(dataset: Path, artifact: Path, args: argparse.Namespace, weights_artifact: Path | None) -> dict:
    """`medtl plan` (with the budget) then `medtl train --config plan.yaml`, as a user runs them."""
    from medtl.planning import read_plan
    from medtl.training.train import train

    if (artifact / "manifest.json").exists():  # sealed by an earlier run of this script (--keep-artifacts)
        return artifact_summary(artifact)
    plan_file = artifact.with_name(artifact.name + ".plan.yaml")
    if args.plan is not None:  # the same plan on another machine: no planning here
        shutil.copyfile(args.plan, plan_file)
    else:
        plan_to_file(dataset, plan_file, args, weights_artifact)
    train(dataset, read_plan(plan_file), artifact)  # what the user runs: the plan as written to disk
    return artifact_summary(artifact)


def plan_to_file(dataset: Path, plan_file: Path, args: argparse.Namespace, weights_artifact: Path | None) -> None:
    """`medtl plan DATASET --budget MINUTES --out plan.yaml`."""
    from medtl.planning import PlanOptions, make_plan, write_plan

    options = PlanOptions(
        budget_minutes=args.budget, seed=args.seed, weights_artifact=weights_artifact, search=args.search
    )
    write_plan(make_plan(dataset, options), plan_file)


def artifact_summary(artifact: Path) -> dict:
    """What the sealed artifact says about its plan, its run and its arms (read through the verified reader)."""
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import ArtifactContents
    from medtl.contracts.planning import PlanRecord

    verified = open_verified(artifact)
    config = verified.read_yaml("config.yaml")  # the config as run: the spec in force, the resolved strategy
    plan = PlanRecord.model_validate(config["plan"])
    run = verified.read_json("metrics/run.json")
    indicators = [arm.model_dump() for arm in ArtifactContents(verified).transfer.arms]
    return {
        "plan_seconds": run["planning_seconds"],
        "train_seconds": round(run["wall_seconds"] - run["planning_seconds"], 1),
        "run": run,
        "recipe": {
            "model": verified.metadata["model"],
            "weights": config["model"]["weights"]["source"],
            "input_shape": config["preprocessing"]["target_shape"],
            **{key: config[key] for key in ("batch_size", "steps", "arms", "final_model")},
            "lr": config["strategy"]["lr"],
            "n_folds": config["cv"]["n_folds"],
        },
        "estimate": plan.estimate.model_dump(),
        "candidates": [c.model_dump() for c in plan.candidates],
        "notes": plan.notes,
        "oof_auc_by_arm": {entry["arm"]: entry["oof_auc"] for entry in indicators},
        "fold_time": {entry["arm"]: fold_time(entry["folds"]) for entry in indicators},
        "transfer": [{k: v for k, v in entry.items() if k not in ("folds", "pretrained")} for entry in indicators],
    }


def fold_time(folds: list[dict]) -> dict | None:
    """Where an arm's training time went, summed over its folds: optimiser steps, and the rest of the epochs
    (tuning predictions); a fold's set-up and its out-of-fold predictions are outside both."""
    ends = [fold["curve"][-1] for fold in folds if fold.get("curve")]
    if not ends or any(end.get("step_seconds") is None for end in ends):
        return None  # the features arm (no epochs), or an artifact from before steps were timed apart
    return {
        "epochs_seconds": round(sum(end["seconds"] for end in ends), 2),
        "steps_seconds": round(sum(end["step_seconds"] for end in ends), 2),
    }


def evaluate_test(artifact: Path, dataset: Path, out: Path) -> dict:
    """`medtl evaluate ARTIFACT --test DATASET`: the locked test split scored once; its AUROC with the CI."""
    from medtl.evaluation.evaluate import evaluate

    evaluate(artifact, out=out, test=dataset, pdf=False)
    metrics = json.loads((out / "metrics.json").read_text())
    test = next(e for e in metrics["evaluations"] if e["evaluated_on"] == "test")
    estimates = {e["name"]: e for e in test["estimates"]}
    return {"n_patients": test["n_patients"], "estimates": estimates}


def test_scores(predictors: dict, dataset: Path, reference) -> tuple:
    """Each predictor's positive-class scores on the official test images (binary tasks), and the targets; the task
    as `reference` (a loaded model) saw it."""
    import numpy as np

    from medtl.training.config import TaskConfig
    from medtl.training.data import TensorSet, load_task

    config = TaskConfig.model_validate(reference.artifact.read_yaml("config.yaml")["task"])
    task = load_task(dataset, config, reference.spec)
    data = TensorSet(task, np.flatnonzero((task.scans["split"] == "test").to_numpy()))
    inputs = torch.stack([data[i][0] for i in range(len(data))])
    positive = reference.classes.index(reference.positive_class)
    targets = data.targets.numpy() == task.classes.index(reference.positive_class)
    scores = {}
    for name, predictor in predictors.items():
        batches = [predictor.predict(inputs[i : i + 64]) for i in range(0, len(inputs), 64)]
        scores[name] = np.concatenate(batches)[:, positive]
    return targets, scores


def flip_ablation(artifact: Path, dataset: Path) -> dict | None:
    """The same sealed models on the same test images with and without the mirror average (binary tasks): the
    paired AUROC difference (DeLong) is what the plan's test_time_flips buys; the headline number is the artifact's
    own, with the average."""
    import dataclasses

    from medtl.evaluation.paired import delong_paired
    from medtl.models.loaded import load_model

    model = load_model(artifact)
    if not model.flip_axes or model.task_kind != "binary":
        return None
    predictors = {"mirrored": model, "plain": dataclasses.replace(model, flip_axes=())}
    targets, scores = test_scores(predictors, dataset, model)
    found = delong_paired(targets, scores["plain"], scores["mirrored"])  # difference: mirrored minus plain
    return None if found is None else {
        "flip_axes": list(model.flip_axes), "auroc_with": found.auc_b, "auroc_without": found.auc_a,
        "difference": found.difference, "ci_low": found.low, "ci_high": found.high, "p_value": found.p_value,
        "method": "DeLong paired, same models and test images",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PUBLISHED))
    parser.add_argument("--budget", type=float, default=30.0, help="minutes for plan + train on this machine")
    parser.add_argument("--pretrain", default=None, help="a MedMNIST set to plan, train and transfer from")
    parser.add_argument("--pretrain-budget", type=float, default=None, help="minutes for the source model")
    parser.add_argument(
        "--pretrain-artifact",
        type=Path,
        default=None,
        help="an earlier artifact to transfer from; its signer must be trusted (e.g. the --workdir that made it)",
    )
    parser.add_argument(
        "--plan", type=Path, default=None, help="train this plan.yaml instead of planning (e.g. one made on a CPU)"
    )
    parser.add_argument(
        "--plan-only", type=Path, default=None, help="write the plan here and stop (to train it on another machine)"
    )
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=None, help="the empirical stage")
    parser.add_argument("--size", type=int, default=28, help="the ingest's preprocessing (the plan may upsample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source", type=Path, default=None, help="the set's .npz (default: MEDTL_SHARED_DATA/medmnist/NAME.npz)"
    )
    parser.add_argument("--limit", type=int, default=None, help="images per split (quick trials; not comparable)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--keep-artifacts", action="store_true", help="reuse artifacts an earlier run sealed in --workdir"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medtl-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    signing_key(workdir)
    report: dict = {**run_header("medmnist_quality", args), "published_test_auc_acc": PUBLISHED[args.dataset]}
    started = time.perf_counter()
    weights_artifact = args.pretrain_artifact
    if weights_artifact is not None:
        report["pretrain"] = {"artifact": weights_artifact.name}
    elif args.pretrain:
        source_dataset = prepare(args.pretrain, workdir, args.size, args.limit)
        weights_artifact = workdir / f"{args.pretrain}-source-artifact"
        shutil.rmtree(weights_artifact, ignore_errors=True)
        source_args = argparse.Namespace(**{**vars(args), "budget": args.pretrain_budget or args.budget, "plan": None})
        report["pretrain"] = {"dataset": args.pretrain, **plan_and_train(source_dataset, weights_artifact,
                                                                          source_args, None)}  # fmt: skip
    dataset = prepare(args.dataset, workdir, args.size, args.limit, args.source)
    report["prepare_seconds"] = round(time.perf_counter() - started, 1)
    if args.plan_only is not None:  # the plan alone, as `medtl plan` writes it; --plan trains it elsewhere
        plan_to_file(dataset, args.plan_only, args, weights_artifact)
        return
    artifact = workdir / f"{args.dataset}-artifact"
    if not args.keep_artifacts:
        shutil.rmtree(artifact, ignore_errors=True)
    report.update(plan_and_train(dataset, artifact, args, weights_artifact))
    report["test"] = evaluate_test(artifact, dataset, workdir / f"{args.dataset}-report")
    report["test_time_flips"] = flip_ablation(artifact, dataset)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    named = args.pretrain_artifact.name.removesuffix("-artifact") if args.pretrain_artifact else None
    source = args.pretrain or named
    name = f"quality_{args.dataset}" + (f"_from_{source}" if source else "") + ".json"
    out = args.out or Path("benchmarks/results") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {"test": report["test"]["estimates"].get("auroc"), "oof": report["oof_auc_by_arm"], "run": report["run"]}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
