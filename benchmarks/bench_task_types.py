"""Task types on synthetic cohorts with known truth: does treating grades as grades (and findings as findings) help?

Ordinal: a graded cohort (`medtl synth --task ordinal`), trained twice on the same patient folds with the same
recipe: medtl's ordinal task (CORN, rank-consistent) against the baseline of the same network treating the grades as
unordered classes (softmax cross-entropy, what medtl did before task types). Measured on out-of-fold predictions with
scikit-learn directly (not medtl's evaluation code): quadratic weighted kappa, mean absolute grade error, macro
one-vs-rest AUROC and the AUROC of the decision cut "grade >= middle grade".

Multi-label: a multi-finding cohort (`--task multilabel`), per-finding prevalence weighting (medtl's default) against
the unweighted loss, measured by the per-finding AUROCs (the rarest finding is where weighting should matter).

Each seed makes a new cohort and a new split; the JSON keeps every run, and the median with min-max spread of each
arm and of the paired difference (project minus baseline) over the seeds.

    python benchmarks/bench_task_types.py ordinal --patients 120 --seeds 0 1 2
    python benchmarks/bench_task_types.py multilabel --patients 120 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

# About the synthetic volumes' field of view (~48 mm) at a resolution where the smallest lesion spans a few voxels,
# with the soft-tissue CT window ingest chooses by default for CT.
SPEC = {
    "spatial_dims": 3,
    "target_spacing": [2.0, 2.0, 4.0],
    "target_shape": [24, 24, 12],
    "intensity": {"kind": "window", "center": 40.0, "width": 400.0},
}


def recipe(**overrides: object) -> dict:
    """One small recipe for both arms: a 3D ResNet-18 from scratch (no weights can be downloaded here)."""
    epochs = int(overrides.get("epochs", 30))
    base = {
        "model": {"backbone": "resnet18", "weights": "none"},
        "strategy": {"name": "full", "lr": 1e-3},
        "arms": [],
        "epochs": 30,
        "batch_size": 16,
        "cv": {"n_folds": int(overrides.pop("folds", 3))},
        "early_stopping": {"min_epochs": epochs},  # the whole schedule runs; the best tuning epoch is kept
        "final_model": "ensemble",
        "allow_unsigned": True,
        "device": "cpu",
    }
    base.update(overrides)
    return base


def cohort(kind: str, patients: int, seed: int, workdir: Path, grades: int, findings: int) -> Path:
    from medtl.contracts import PreprocessingSpec
    from medtl.contracts.task import TaskDeclaration
    from medtl.datasets.synth import make_cohort
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.pipeline import ingest_sources

    source = workdir / f"cohort-{seed}"
    make_cohort(source, patients=patients, seed=seed, task=kind, grades=grades, findings=findings, difficulty=0.3)
    declaration = (
        TaskDeclaration(kind="ordinal", classes=[str(g) for g in range(grades)])
        if kind == "ordinal"
        else TaskDeclaration(kind="multilabel")
    )
    dataset = workdir / f"dataset-{seed}"
    ingest_sources(
        [source / "dicom"],
        out=dataset,
        labels=source / "labels.csv",
        spec=PreprocessingSpec(**SPEC),
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        task=declaration,
    )
    return dataset


def train_arm(dataset: Path, out: Path, seed: int, **overrides: object) -> tuple[pd.DataFrame, float]:
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    started = time.perf_counter()
    train(dataset, TrainConfig.model_validate(recipe(seed=seed, **overrides)), out)
    oof = pd.read_parquet(out / "predictions" / "oof.parquet")
    return oof[oof["arm"] == "main"].sort_values("scan_id").reset_index(drop=True), time.perf_counter() - started


def ordinal_measures(oof: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    probabilities = oof[[f"p_{c}" for c in classes]].to_numpy()
    truth = oof["target"].to_numpy()
    predicted = probabilities.argmax(axis=1)
    cut = len(classes) // 2
    return {
        "quadratic_weighted_kappa": float(cohen_kappa_score(truth, predicted, weights="quadratic")),
        "mean_absolute_grade_error": float(np.abs(truth - predicted).mean()),
        "accuracy": float((truth == predicted).mean()),
        "macro_auroc": float(roc_auc_score(truth, probabilities, multi_class="ovr", average="macro")),
        f"auroc_grade_ge_{classes[cut]}": float(roc_auc_score(truth >= cut, probabilities[:, cut:].sum(axis=1))),
    }


def multilabel_measures(oof: pd.DataFrame, findings: list[str]) -> dict[str, float]:
    values = {
        f"auroc_{name}": float(roc_auc_score(oof[f"y_{name}"], oof[f"p_{name}"]))
        for name in findings
        if oof[f"y_{name}"].nunique() == 2
    }
    values["mean_auroc"] = float(np.mean(list(values.values())))
    return values


def summarise(runs: list[dict], arm_names: tuple[str, str]) -> dict:
    project, baseline = arm_names
    keys = runs[0][project].keys()
    summary = {}
    for key in keys:
        a = np.array([run[project][key] for run in runs])
        b = np.array([run[baseline][key] for run in runs])
        summary[key] = {
            project: {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())},
            baseline: {"median": float(np.median(b)), "min": float(b.min()), "max": float(b.max())},
            "difference": {
                "median": float(np.median(a - b)),
                "min": float((a - b).min()),
                "max": float((a - b).max()),
            },
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["ordinal", "multilabel"])
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grades", type=int, default=5)
    parser.add_argument("--findings", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    arm_names = ("ordinal_corn", "unordered_softmax") if args.task == "ordinal" else ("weighted_bce", "unweighted_bce")
    runs = []
    with tempfile.TemporaryDirectory(prefix="medtl-bench-tasks-") as tmp:
        workdir = Path(tmp)
        for seed in args.seeds:
            dataset = cohort(args.task, args.patients, seed, workdir, args.grades, args.findings)
            run: dict = {"seed": seed}
            if args.task == "ordinal":
                classes = [str(g) for g in range(args.grades)]
                arms = {
                    arm_names[0]: {"task": {"kind": "ordinal", "classes": classes}},
                    arm_names[1]: {"task": {"kind": "multiclass", "classes": classes}},
                }
            else:
                arms = {arm_names[0]: {"class_balance": "weighted_loss"}, arm_names[1]: {"class_balance": "none"}}
            for name, overrides in arms.items():
                oof, seconds = train_arm(
                    dataset, workdir / f"{name}-{seed}", seed, epochs=args.epochs, folds=args.folds, **overrides
                )
                if args.task == "ordinal":
                    run[name] = ordinal_measures(oof, classes)
                else:
                    findings = sorted(c[2:] for c in oof.columns if c.startswith("y_"))
                    run[name] = multilabel_measures(oof, findings)
                run[name]["train_seconds"] = round(seconds, 1)
                print(f"seed {seed} {name}: {run[name]}", flush=True)
            runs.append(run)
    result = {
        "benchmark": f"task_types_{args.task}",
        "question": "ordinal (CORN) vs grades as unordered classes"
        if args.task == "ordinal"
        else "per-finding prevalence weighting vs unweighted multi-label loss",
        "settings": {**vars(args), "out": None, "recipe": recipe(epochs=args.epochs, folds=args.folds), "spec": SPEC},
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "runs": runs,
        "summary": summarise(runs, arm_names),
        "reading": "median over seeds with min-max spread; 'difference' is paired (same cohort and folds)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"task_types_{args.task}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
