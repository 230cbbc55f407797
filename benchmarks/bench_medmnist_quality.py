"""Quality on real data through the real path: import-medmnist -> ingest -> train -> score the official test split.

No tuning on the test split: cross-validation, early stopping and model selection use train + val patients only;
the test patients are the locked test set, predicted once at the end by the sealed artifact. Published results
(MedMNIST v2, Yang et al. 2023; all trained from scratch) are copied into the JSON for comparison.

    python benchmarks/bench_medmnist_quality.py breastmnist --out benchmarks/results/quality_breastmnist.json
    python benchmarks/bench_medmnist_quality.py breastmnist --pretrain pneumoniamnist   # transfer between domains

Baseline in the same run: the same architecture trained from scratch (the `scratch` arm) on the same splits,
whenever the main arm starts from pretrained weights.
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

import numpy as np
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
    "adrenalmnist3d": {
        "ResNet-18 + 3D": [0.827, 0.721],
        "ResNet-18 + ACS": [0.839, 0.754],
        "auto-sklearn": [0.828, 0.802],
    },
}


def shared_data() -> Path:
    configured = os.environ.get("MEDTL_SHARED_DATA")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"


def prepare(name: str, workdir: Path, size: int, limit: int | None) -> Path:
    """MedMNIST .npz -> DICOM/NIfTI + labels.csv -> ingested dataset with a fixed spec (no peeking at test)."""
    from medtl.contracts import PreprocessingSpec
    from medtl.datasets.medmnist import import_medmnist
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.pipeline import ingest_sources

    files = workdir / f"{name}-files"
    if not files.exists():
        import_medmnist(name, source=str(shared_data() / "medmnist" / f"{name}.npz"), out=files, limit=limit)
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
    )
    return dataset


def train_config(args: argparse.Namespace, weights: object, arms: list[str]) -> dict:
    return {
        "model_id": f"bench-{args.dataset}",
        "model": {"backbone": args.backbone, "weights": weights},
        "strategy": {"name": "full" if weights == "none" else "layerwise_lr_decay", "lr": args.lr},
        "arms": arms,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "cv": {"n_folds": args.folds},
        "early_stopping": {"patience": args.patience, "min_epochs": min(args.epochs, 5)},
        "final_model": args.final,
        # AdrenalMNIST3D images are binary shape masks: ingest rightly flags them as label-map-like; keep them here.
        "task": {
            "exclude_flags": [] if args.dataset.startswith("adrenal") else ["constant_image", "possible_label_map"]
        },
        "seed": args.seed,
        "num_workers": 0,
    }


def score_test(artifact: Path, dataset: Path) -> dict:
    """The locked test split, scored once by the sealed artifact: AUROC (95% bootstrap CI) and accuracy at 0.5."""
    from medtl.evaluation.metrics import auroc_ci
    from medtl.scoring.model import load_model
    from medtl.training.config import TaskConfig
    from medtl.training.data import TensorSet, load_task

    model = load_model(artifact)
    task = load_task(dataset, TaskConfig.model_validate(model.artifact.read_yaml("config.yaml")["task"]), model.spec)
    rows = np.flatnonzero((task.scans["split"] == "test").to_numpy())
    data = TensorSet(task, rows)
    probabilities = np.concatenate(
        [
            model.predict(torch.stack([data[i][0] for i in range(s, min(s + 256, len(data)))]))
            for s in range(0, len(data), 256)
        ]
    )
    targets = data.targets.numpy()
    positive = task.classes.index(model.positive_class) if model.positive_class else 1
    interval = auroc_ci(targets == positive, probabilities[:, positive], task.scans["patient_id"].to_numpy()[rows])
    accuracy = float((probabilities.argmax(1) == targets).mean())
    return {"n_test": len(rows), "auroc": interval.as_dict(), "accuracy": accuracy, "model": model.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PUBLISHED))
    parser.add_argument("--pretrain", default=None, help="a MedMNIST set to train first and transfer from")
    parser.add_argument("--pretrain-artifact", type=Path, default=None, help="an earlier artifact to transfer from")
    parser.add_argument("--final", choices=["ensemble", "refit"], default="ensemble", help="the sealed model")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="images per split (quick trials; not comparable)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medtl-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("MEDTL_SIGNING_KEY"):  # artifacts are signed as in production; a throwaway key here
        from medtl.artifacts import generate_signing_key

        key = workdir / "signing.pem"
        if not key.exists():
            generate_signing_key(key)
        os.environ["MEDTL_SIGNING_KEY"] = str(key)
        os.environ.setdefault("MEDTL_TRUSTED_KEYS", f"{key}.pub")
    report: dict = {
        "benchmark": "medmnist_quality",
        "dataset": args.dataset,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "published_test_auc_acc": PUBLISHED[args.dataset],
    }
    started = time.perf_counter()
    weights: object = "none"
    if args.pretrain_artifact:
        weights = {"source": "artifact", "path": str(args.pretrain_artifact)}
        report["pretrain"] = {"artifact": args.pretrain_artifact.name}
    elif args.pretrain:
        source_dataset = prepare(args.pretrain, workdir, args.size, args.limit)
        source = workdir / "source-artifact"
        shutil.rmtree(source, ignore_errors=True)
        t = time.perf_counter()
        config = train_config(args, "none", [])
        config["final_model"] = "refit"
        train(source_dataset, TrainConfig.model_validate(config), source)
        report["pretrain"] = {"dataset": args.pretrain, "seconds": round(time.perf_counter() - t, 1)}
        weights = {"source": "artifact", "path": str(source)}
    dataset = prepare(args.dataset, workdir, args.size, args.limit)
    report["prepare_seconds"] = round(time.perf_counter() - started, 1)
    artifact = workdir / f"{args.dataset}-artifact"
    shutil.rmtree(artifact, ignore_errors=True)
    t = time.perf_counter()
    arms = ["scratch"] if weights != "none" else []
    result = train(dataset, TrainConfig.model_validate(train_config(args, weights, arms)), artifact)
    report["train_seconds"] = round(time.perf_counter() - t, 1)
    report["oof_auc_by_arm"] = {entry["arm"]: entry["oof_auc"] for entry in result.indicators}
    report["transfer"] = [
        {k: v for k, v in entry.items() if k not in ("folds", "pretrained")} for entry in result.indicators
    ]
    report["test"] = score_test(artifact, dataset)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    source = args.pretrain or (args.pretrain_artifact.name if args.pretrain_artifact else None)
    name = f"quality_{args.dataset}" + (f"_from_{source}" if source else "") + ".json"
    out = args.out or Path("benchmarks/results") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {"test": report["test"], "oof": report["oof_auc_by_arm"], "seconds": report["total_seconds"]}, indent=2
        )
    )


if __name__ == "__main__":
    main()
