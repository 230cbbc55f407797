"""How many labels does pretraining on the site's own unlabelled scans save? Test AUROC against labelled patients.

One run, every arm side by side on the same patients:
- scratch: ResNet-18 from random initialisation;
- supervised transfer (2D): from a medtl artifact trained on another labelled set (PneumoniaMNIST);
- self-supervised: from `medtl pretrain` on the unlabelled images of the sources' train+val splits (every locked-test
  patient excluded by the pretraining stage itself);
- features: the self-supervised backbone frozen, a regularised logistic regression per fold (training's `features`
  arm), no fine-tuning.
Label shares: a seeded, nested, stratified ordering of the target's development patients (train + val); at share f
only the first f of them keep their labels (the others become unlabelled scans, which training leaves out), and the
usual patient-grouped CV runs on them. The official test split is the locked test set, scored once per run by
`medtl evaluate --test`. Every arm uses the same fine-tuning recipe (below), so the weights are the only difference.

Throughput: one pretraining step (two augmented views through the backbone, NT-Xent) against a bare supervised
torch loop of the same backbone on the same batch, and against the same step with MONAI's ContrastiveLoss as the
loss (what medtl used before its own NT-Xent); samples per second, median of repeats, as ratios.
`--throughput-only` measures that alone (the target set is prepared, nothing is pretrained or fine-tuned).

    python benchmarks/bench_pretrain.py breastmnist --sources pneumoniamnist breastmnist \\
        --supervised-source pneumoniamnist --seeds 0 1 2 --pretrain-minutes 15
    python benchmarks/bench_pretrain.py adrenalmnist3d --sources adrenalmnist3d --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from bench_medmnist_quality import evaluate_test, prepare, signing_key

FINE_TUNE = {  # the one recipe of every fine-tuned arm: the weights are the only difference between arms
    "strategy": {"name": "full", "lr": 1e-3, "weight_decay": 1e-4},
    "epochs": 30,
    "batch_size": 64,
    "early_stopping": {"metric": "loss", "patience": 8, "min_epochs": 8},
    "cv": {"n_folds": 3},
    "final_model": "ensemble",
    "class_balance": "weighted_loss",
}


# `--pretrained-strategy layerwise`: the pretrained arms fine-tuned as `medtl plan` fine-tunes pretrained weights
# (smaller steps for earlier, more general layers); scratch keeps FINE_TUNE's. Recorded as arms of their own.
LAYERWISE = {"name": "layerwise_lr_decay", "lr": 1e-3, "decay": 0.5, "weight_decay": 1e-4}


def recipe(dataset: Path) -> dict:
    """FINE_TUNE with the task filters the planner would use on this dataset (a dataset of shape masks keeps its
    scans, which the default QC exclusions would remove)."""
    from medtl.planning.facts import task_filters
    from medtl.training.data import dataset_spec

    kind = "volume" if dataset_spec(dataset).spatial_dims == 3 else "image2d"
    return {**FINE_TUNE, "task": task_filters(dataset, kind)[0].model_dump()}


def labelled_share(dataset: Path, keep: set[str], out: Path) -> Path:
    """A view of the dataset in which only `keep` (and the locked test patients) have labels; files are linked."""
    from medtl.contracts import read_table, write_table
    from medtl.contracts.ingest import ManifestRow

    if out.exists():
        return out
    out.mkdir(parents=True)
    for entry in dataset.iterdir():
        if entry.name not in ("manifest.parquet", "splits"):
            (out / entry.name).symlink_to(entry.resolve())
    frame = read_table(ManifestRow, dataset / "manifest.parquet")
    unlabelled = ~frame["patient_id"].isin(keep) & (frame["split"] != "test")
    frame.loc[unlabelled, "label"] = None
    write_table(ManifestRow, frame, out / "manifest.parquet")
    return out


def shares(dataset: Path, fractions: list[float], seed: int) -> dict[float, list[str]]:
    """Nested, stratified development-patient subsets (training's own label-efficiency ordering)."""
    from medtl.training.config import TaskConfig
    from medtl.training.data import load_task
    from medtl.training.fractions import nested_subsets

    task = load_task(dataset, TaskConfig.model_validate(recipe(dataset)["task"]))
    development = sorted(set(task.scans.loc[task.scans["split"] != "test", "patient_id"]))
    return nested_subsets(task, development, fractions, seed)


def pretrain_ssl(datasets: list[Path], out: Path, args: argparse.Namespace) -> dict:
    from medtl.pretraining.config import PretrainConfig
    from medtl.pretraining.pretrain import pretrain

    if not (out / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        config = PretrainConfig(
            method=args.method,
            epochs=args.pretrain_epochs,
            time_budget_minutes=args.pretrain_minutes,
            batch_size=args.pretrain_batch,
            seed=args.seeds[0],
        )
        pretrain(datasets, config, out, progress=False)
    record = json.loads((out / "metrics" / "pretraining.json").read_text())
    kept = ("method", "scans", "epochs_done", "epochs_configured", "stopped_by", "wall_seconds", "batch_size", "steps")
    return {k: record[k] for k in kept} | {
        "excluded_patients": len(record["exclusion"]["patients"]),
        "loss_first": record["curve"][0]["loss"],
        "loss_last": record["curve"][-1]["loss"],
    }


def supervised_source(dataset: Path, out: Path, seed: int) -> dict:
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    if not (out / "manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        config = TrainConfig.model_validate(
            {
                **recipe(dataset),
                "model": {"backbone": "resnet18", "weights": "none"},
                "arms": [],
                "seed": seed,
                "cv": {"n_folds": 2},  # a transfer source, not a benchmarked model: two folds, their best lends
                "final_model": "ensemble",
            }
        )
        train(dataset, config, out)
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import ArtifactContents

    return {"oof_auc": {arm.arm: arm.oof_auc for arm in ArtifactContents(open_verified(out)).transfer.arms}}


def fine_tune(
    dataset: Path, weights: object, arms: list[str], seed: int, out: Path, report: Path, strategy: dict | None = None
) -> dict:
    """Train (the real path) and score the locked test once; the artifact is removed after (disk)."""
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import ArtifactContents
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    config = TrainConfig.model_validate(
        {**recipe(dataset), "model": {"backbone": "resnet18", "weights": weights}, "arms": arms, "seed": seed}
        | ({"strategy": strategy} if strategy else {})
    )
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    started = time.perf_counter()
    train(dataset, config, out)
    seconds = time.perf_counter() - started
    transfer = ArtifactContents(open_verified(out)).transfer
    test = evaluate_test(out, dataset, report)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(report, ignore_errors=True)
    return {
        "train_seconds": round(seconds, 1),
        "oof_auc": {arm.arm: arm.oof_auc for arm in transfer.arms},
        "arm_seconds": {arm.arm: [f.seconds for f in arm.folds] for arm in transfer.arms},
        "test_auroc": test["estimates"]["auroc"],
        "test_patients": test["n_patients"],
    }


def features_test(dataset: Path, ssl: Path, seed: int) -> dict:
    """The features arm on the locked test: per fold, training's own regression (C chosen on the fold's tuning
    patients) on the frozen backbone's features; the folds' test probabilities averaged, as the ensemble does."""
    from medtl.evaluation.metrics import auroc_ci
    from medtl.models.factory import create_model
    from medtl.models.heads import headless
    from medtl.training.config import TrainConfig
    from medtl.training.cv import positive_index
    from medtl.training.data import TensorSet, load_task, rows_of
    from medtl.training.features_arm import extract, fit_logistic
    from medtl.training.splits import resolve_splits

    config = TrainConfig.model_validate({**recipe(dataset), "seed": seed})
    task = load_task(dataset, config.task)
    splits, _ = resolve_splits(
        task.scans, dataset=dataset, n_folds=config.cv.n_folds, tune_fraction=config.cv.tune_fraction, seed=seed,
        manifest_hash=task.manifest_hash, kind=task.kind,
    )  # fmt: skip
    built = create_model("resnet18", weights={"source": "artifact", "path": str(ssl)}, in_channels=task.in_channels,
                         num_classes=len(task.classes), spatial_dims=task.spatial_dims)  # fmt: skip
    network, device = headless(built), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    every = np.arange(len(task.scans))
    features = extract(network, TensorSet(task, every), device=device, batch_size=256)
    extraction = time.perf_counter() - started
    test_rows = rows_of(task, splits.locked_test)
    probabilities, fits = [], []
    for fold in splits.folds:
        train_rows, tune_rows = rows_of(task, fold.train), rows_of(task, fold.tune)
        fitted = fit_logistic(task.kind, len(task.classes), (features[train_rows], task.targets(train_rows)),
                              (features[tune_rows], task.targets(tune_rows)), features[test_rows],
                              positive=positive_index(task))  # fmt: skip
        probabilities.append(fitted.heldout)
        fits.append({"c": fitted.c, "seconds": fitted.seconds})
    positive = positive_index(task)
    scores = np.mean(probabilities, axis=0)[:, positive]
    truth = (task.targets(test_rows) == positive).astype(int)
    patients = task.scans["patient_id"].to_numpy()[test_rows]
    interval = auroc_ci(truth, scores, patients, n_boot=2000, seed=0)
    return {
        "test_auroc": {"value": interval.value, "ci_low": interval.low, "ci_high": interval.high},
        "extraction_seconds": round(extraction, 2),
        "folds": fits,
        "test_patients": len(set(patients)),
    }


def throughput(dataset: Path, args: argparse.Namespace, repeats: int = 3, steps: int = 6) -> dict:
    """Samples/s of one pretraining step vs a bare supervised loop, same backbone and batch, median of repeats."""
    from monai.losses import ContrastiveLoss

    from medtl.models.factory import create_model
    from medtl.pretraining import methods
    from medtl.pretraining.config import PretrainConfig
    from medtl.pretraining.methods import make_method
    from medtl.pretraining.pool import PoolSet, build_pool

    config = PretrainConfig(method=args.method, batch_size=args.pretrain_batch)
    pool = build_pool([dataset], config.scans, None, [])
    data = PoolSet(pool.paths[: args.pretrain_batch])
    batch = torch.stack([data[i] for i in range(len(data))])
    dims, channels = pool.spatial_dims, pool.in_channels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def timed(step) -> float:
        step()  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * len(batch) / (time.perf_counter() - started)

    def ssl_rate(monai_loss: bool = False) -> float:
        """`monai_loss`: the baseline, the same step with MONAI's ContrastiveLoss as the NT-Xent (simclr)."""
        built = create_model("resnet18", weights="none", in_channels=channels, num_classes=1, spatial_dims=dims)
        method = make_method(args.method, built, batch, config).to(device).train()
        optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
        on_device = batch.to(device)

        def step() -> None:
            value = method(on_device)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()

        if not monai_loss:
            return timed(step)
        criterion = ContrastiveLoss(temperature=config.temperature)
        with mock.patch.object(methods, "nt_xent", lambda first, second, _: criterion(first, second)):
            return timed(step)

    def supervised_rate() -> float:
        network = create_model("resnet18", weights="none", in_channels=channels, num_classes=2, spatial_dims=dims)
        model = network.model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        on_device = batch.to(device)
        labels = torch.randint(0, 2, (len(batch),), device=device)

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(on_device), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return timed(step)

    ssl, supervised, with_monai_loss = [], [], []
    for _ in range(repeats):  # interleaved, so a noisy minute hits every arm alike
        ssl.append(ssl_rate())
        supervised.append(supervised_rate())
        with_monai_loss.append(ssl_rate(monai_loss=True))
    ratios = [a / b for a, b in zip(ssl, supervised, strict=True)]
    gains = [a / b for a, b in zip(ssl, with_monai_loss, strict=True)]
    return {
        "batch": len(batch),
        "device": device.type,
        "pretrain_samples_per_s": [round(v, 1) for v in ssl],
        "supervised_samples_per_s": [round(v, 1) for v in supervised],
        "pretrain_with_monai_loss_samples_per_s": [round(v, 1) for v in with_monai_loss],
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "vs_monai_loss_median": round(statistics.median(gains), 3),
        "vs_monai_loss_range": [round(min(gains), 3), round(max(gains), 3)],
        "note": "a pretraining step passes two views through the backbone (simclr), so about 0.5 is the ideal",
    }


def summarise(runs: list[dict]) -> dict:
    """Per arm and share: median test AUROC over seeds with its spread, and the seeds' own CIs."""
    table: dict[str, dict[str, dict]] = {}
    for run in runs:
        entry = table.setdefault(run["arm"], {}).setdefault(
            f"{run['fraction']:g}", {"auroc": [], "seeds": [], "patients": []}
        )
        entry["auroc"].append(run["test_auroc"]["value"])
        entry["seeds"].append(run["seed"])
        entry["patients"].append(run["labelled_patients"])
    for arms in table.values():
        for entry in arms.values():
            values = entry["auroc"]
            entry["median"] = round(float(np.median(values)), 4)
            entry["range"] = [round(min(values), 4), round(max(values), 4)]
            entry["labelled_patients"] = int(np.median(entry["patients"]))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="MedMNIST set fine-tuned and tested, e.g. breastmnist, adrenalmnist3d")
    parser.add_argument("--sources", nargs="+", required=True, help="sets whose train+val images are pretrained on")
    parser.add_argument("--supervised-source", default=None, help="a set to train a supervised source model on")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--method", choices=["simclr", "masked"], default="simclr")
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--pretrain-minutes", type=float, default=15.0, help="time budget of the pretraining")
    parser.add_argument("--pretrain-batch", type=int, default=128)
    parser.add_argument(
        "--pretrained-strategy",
        choices=["full", "layerwise"],
        default="full",
        help="layerwise: the pretrained arms fine-tuned as the planner does (arms named *_layerwise)",
    )
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medtl-bench-pretrain")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--throughput",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the pretraining step against a bare supervised loop (best on a quiet machine)",
    )
    parser.add_argument("--throughput-only", action="store_true", help="prepare the target, measure throughput, stop")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the runs recorded in --workdir for these seeds and shares (e.g. when some "
        "shares were run with fewer seeds); each cell lists its seeds",
    )
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    signing_key(args.workdir)
    os.environ.setdefault("MEDTL_HOME", str(args.workdir / "home"))
    started = time.perf_counter()
    report: dict = {
        "benchmark": "pretrain",
        "target": args.target,
        "settings": {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "fine_tune_recipe": FINE_TUNE,
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    target = prepare(args.target, args.workdir, args.size, None)
    if args.throughput_only:
        report["throughput"] = throughput(target, args)
        _write(report, args)
        print(json.dumps(report["throughput"], indent=2))
        return
    report["fine_tune_recipe"] = recipe(target)
    sources = [target if name == args.target else prepare(name, args.workdir, args.size, None) for name in args.sources]
    ssl = args.workdir / f"ssl-{args.method}-{'-'.join(args.sources)}"
    report["pretraining"] = pretrain_ssl(sources, ssl, args)
    if args.throughput:
        report["throughput"] = throughput(target, args)
    arms: dict[str, object] = {"scratch": "none", "self_supervised": {"source": "artifact", "path": str(ssl)}}
    if args.supervised_source:
        source = args.workdir / f"supervised-{args.supervised_source}"
        data = prepare(args.supervised_source, args.workdir, args.size, None)
        report["supervised_source"] = {"dataset": args.supervised_source, **supervised_source(data, source, 0)}
        arms["supervised_transfer"] = {"source": "artifact", "path": str(source)}
    suffix = "_layerwise" if args.pretrained_strategy == "layerwise" else ""
    if suffix:
        report["pretrained_arms_strategy"] = LAYERWISE
    arms = {f"{arm}{suffix}" if arm != "scratch" else arm: weights for arm, weights in arms.items()}
    results_file = args.workdir / f"runs-{args.target}.jsonl"
    done = set()
    if results_file.exists():
        done = {(r["arm"], r["fraction"], r["seed"]) for r in map(json.loads, results_file.open())}
    for seed in [] if args.summary_only else args.seeds:
        subsets = shares(target, args.fractions, seed)
        for fraction in args.fractions:  # in the order given: the most telling shares first on a short run
            patients = subsets[fraction]
            view = labelled_share(target, set(patients), args.workdir / "shares" / f"seed{seed}-f{fraction:g}")
            for arm, weights in arms.items():
                if (arm, fraction, seed) in done:
                    continue
                extra = ["features"] if arm == "self_supervised" else []  # its OOF AUROC beside the others
                strategy = LAYERWISE if arm.endswith("_layerwise") else None
                result = fine_tune(view, weights, extra, seed, args.workdir / "artifact", args.workdir / "report",
                                   strategy)  # fmt: skip
                common = {"fraction": fraction, "seed": seed, "labelled_patients": len(patients)}
                rows = [{"arm": arm, **common, **result}]
                if extra:
                    rows.append({"arm": "features", **common, **features_test(view, ssl, seed)})
                with results_file.open("a") as handle:
                    for row in rows:
                        handle.write(json.dumps(row) + "\n")
                print(json.dumps({k: v for k, v in rows[0].items() if k != "arm_seconds"}), flush=True)
    runs = [json.loads(line) for line in results_file.open()]
    runs = [r for r in runs if r["seed"] in args.seeds and r["fraction"] in args.fractions]
    report["runs"] = runs
    report["summary"] = summarise([r for r in runs if r["test_auroc"]["value"] is not None])
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    _write(report, args)
    print(json.dumps(report["summary"], indent=2))


def _write(report: dict, args: argparse.Namespace) -> None:
    out = args.out or Path("benchmarks/results") / f"pretrain_{args.target}_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
