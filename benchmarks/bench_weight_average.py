"""A moving average of the weights (`ema_decay`) against the same plan without it: paired, on the official test split.

For each seed, one plan is made (`medtl plan` with the budget) and trained twice through the real path: as planned
(no average), and with `ema_decay` set so that the average spans the last `--share` of the schedule (at least 10
steps): the network that is tuned, predicted out of fold and kept is then the average. Same splits, same steps, same
seed; only the average differs. Both sealed artifacts are evaluated on
the official test split (scored once each), and their test scores are compared paired (DeLong: same patients).

    python benchmarks/bench_weight_average.py breastmnist --budget 8 --seeds 0 1 2

Binary MedMNIST sets only (the paired test is for one AUROC). Writes benchmarks/results/weight_average_NAME.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_medmnist_quality import (
    PUBLISHED,
    artifact_summary,
    evaluate_test,
    prepare,
    run_header,
    signing_key,
    test_scores,
)

MIN_HORIZON = 10  # steps: a shorter average is no average


def _auroc(test: dict) -> dict:
    estimate = test["estimates"]["auroc"]
    return {key: estimate[key] for key in ("value", "ci_low", "ci_high") if key in estimate}


def _one_seed(dataset: Path, workdir: Path, args: argparse.Namespace, seed: int) -> dict:
    from medtl.evaluation.paired import delong_paired
    from medtl.models.loaded import load_model
    from medtl.planning import PlanOptions, make_plan
    from medtl.training.train import train

    planned = make_plan(dataset, PlanOptions(budget_minutes=args.budget, seed=seed, search=args.search))
    horizon = max(MIN_HORIZON, round(args.share * planned.steps))  # steps the average spans: 1 / (1 - decay)
    decay = float(f"{1 - 1 / horizon:.6g}")
    configs = {"average": planned.model_copy(update={"ema_decay": decay}), "plain": planned}
    arms = {}
    for name, config in configs.items():
        artifact = workdir / f"seed{seed}-{name}-artifact"
        shutil.rmtree(artifact, ignore_errors=True)
        started = time.perf_counter()
        train(dataset, config, artifact)
        summary = artifact_summary(artifact)
        arms[name] = {
            "artifact": artifact,
            "train_seconds": round(time.perf_counter() - started, 1),
            "oof_auc": summary["oof_auc_by_arm"],
            "test": _auroc(evaluate_test(artifact, dataset, workdir / f"seed{seed}-{name}-report")),
        }
    models = {name: load_model(arm.pop("artifact")) for name, arm in arms.items()}
    targets, scores = test_scores(models, dataset, models["plain"])
    found = delong_paired(targets, scores["plain"], scores["average"])  # difference: average minus plain
    return {
        "seed": seed,
        "recipe": {
            "steps": planned.steps,
            "batch_size": planned.batch_size,
            "ema_decay": decay,
            "n_folds": planned.cv.n_folds,
            "input_shape": planned.preprocessing.target_shape if planned.preprocessing else None,
        },
        "arms": arms,
        "paired": None
        if found is None
        else {
            "difference": found.difference,
            "ci_low": found.low,
            "ci_high": found.high,
            "p_value": found.p_value,
            "method": "DeLong paired, same test images, average minus plain",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PUBLISHED))
    parser.add_argument("--budget", type=float, default=8.0, help="minutes for plan + train of one arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=False, help="the empirical stage")
    parser.add_argument("--share", type=float, default=0.05, help="of the schedule that the average spans")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medtl-weight-average-"))
    workdir.mkdir(parents=True, exist_ok=True)
    signing_key(workdir)
    started = time.perf_counter()
    dataset = prepare(args.dataset, workdir, args.size, None)
    runs = []
    for seed in args.seeds:
        runs.append(_one_seed(dataset, workdir, args, seed))
        print(json.dumps({k: runs[-1][k] for k in ("seed", "paired")} | {
            name: arm["test"] for name, arm in runs[-1]["arms"].items()}))  # fmt: skip
    differences = [run["paired"]["difference"] for run in runs if run["paired"]]
    report = {
        **run_header("weight_average", args),
        "runs": runs,
        "test_auroc": {
            name: {
                "median": statistics.median(run["arms"][name]["test"]["value"] for run in runs),
                "by_seed": [run["arms"][name]["test"]["value"] for run in runs],
            }
            for name in ("average", "plain")
        },
        "paired_difference": {
            "median": statistics.median(differences) if differences else None,
            "min": min(differences, default=None),
            "max": max(differences, default=None),
            "seeds_better": sum(d > 0 for d in differences),
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out = args.out or Path("benchmarks/results") / f"weight_average_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("test_auroc", "paired_difference")}, indent=2))


if __name__ == "__main__":
    main()
