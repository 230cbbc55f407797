"""Out-of-distribution detection on real data: does the feature-outlier flag tell another dataset of the same format
and modality tag apart from the model's own held-out scans, at its stated false-flag rate?

Per model set D (trained through medtl's real path: import-medmnist -> ingest -> train, ResNet-18 from scratch at
28 px, 3 folds, fold ensemble; recipe in RECIPE) and other set O: D's official test images (in distribution) against
O's official test images written by `import-medmnist --modality` with D's modality tag (out of distribution), both
staged through scoring's own ingest with the artifact's spec. Metadata flags cannot help (same format, same tag), so
only image content can. Candidate scores, each from the artifact's model:

  maha_penultimate   today's rule: Mahalanobis in PCA space of the penultimate features, cross-fitted threshold
  knn_penultimate    k-NN cosine distance on the penultimate features
  energy             -logsumexp of the fold-0 network's logits
  disagreement       variance of the fold models' probabilities
  maha_multilayer    Mahalanobis (PCA) per backbone stage, pooled features, averaged after scaling
  knn_multilayer     k-NN cosine distance per backbone stage, averaged after scaling (medtl.training.feature_ood)
  knn_multilayer_cf  the same, threshold cross-fitted on training scans (what a refit model gets)

Thresholds are the split-conformal (1 - rate) quantile of scans the fold-0 network never trained on (fold 0's
held-out patients), except *_cf and maha_penultimate (cross-fitted on training scans, as the rule was). Reported
per pair and candidate: OOD AUROC with a bootstrap 95% CI, the in-distribution flag rate (own test) against the
stated rate with a Wilson 95% CI, and the share of the other set flagged. `artifact_rule` is what `medtl score`
itself flags (score_chunk).

    python benchmarks/bench_ood.py --seeds 0 1 2          # trains 2 sets x 3 seeds once; cached in --workdir
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

import numpy as np
import torch
from bench_medmnist_quality import prepare, shared_data, signing_key

RECIPE = {  # small enough for two shared CPU cores: minutes per model
    "model": {"backbone": "resnet18", "weights": "none"},
    "strategy": {"name": "full", "lr": 1e-3, "weight_decay": 1e-4},
    "epochs": 12,
    "batch_size": 64,
    "early_stopping": {"metric": "loss", "patience": 4, "min_epochs": 4},
    "cv": {"n_folds": 3},
    "final_model": "ensemble",
    "arms": [],
    "class_balance": "weighted_loss",
}


def train_model(dataset: Path, out: Path, seed: int) -> float | None:
    """Train through medtl's real path unless an earlier run sealed the artifact (reused across iterations)."""
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    if (out / "manifest.json").exists():
        return None
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    train(dataset, TrainConfig.model_validate({**RECIPE, "seed": seed}), out)
    return round(time.perf_counter() - started, 1)


def test_files(files: Path, out: Path) -> Path:
    """The official test split's files only (copied: scoring's ingest does not follow links into other folders)."""
    if not out.exists():
        staging = out.with_name(out.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for folder in sorted(files.iterdir()):
            if folder.is_dir() and "-test-" in folder.name:
                shutil.copytree(folder, staging / folder.name)
        staging.rename(out)
    return out


def other_files(name: str, modality: str, workdir: Path, limit: int | None) -> Path:
    """The other set's test images written with the model's modality tag."""
    from medtl.datasets.medmnist import import_medmnist

    files = workdir / f"{name}-as-{modality}-files"
    if not files.exists():
        import_medmnist(name, source=str(shared_data() / "medmnist" / f"{name}.npz"), out=files, limit=limit,
                        modality=modality)  # fmt: skip
    return test_files(files, workdir / f"{name}-as-{modality}-test")


class Probe:
    """Everything the candidates need from one forward pass: stage features, penultimate features, logits."""

    def __init__(self, scorer) -> None:
        from medtl.models.factory import rebuild_model
        from medtl.training.feature_ood import stage_modules

        built = rebuild_model(scorer.artifact.metadata["model"])
        self.networks = scorer.model.networks
        self.head = scorer.head
        self.paths = stage_modules(built.model, built.stages, built.stage_names)
        self.kind = scorer.model.task_kind

    @torch.no_grad()
    def __call__(self, tensors: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
        from medtl.models.heads import probabilities
        from medtl.training.feature_ood import collected, tapped

        network = self.networks[0].eval()
        penultimate, logits, fold_probs = [], [], []
        with tapped(network, self.paths) as captured:
            for start in range(0, len(tensors), batch_size):
                batch = tensors[start : start + batch_size].to(next(network.parameters()).device)
                held: list[torch.Tensor] = []
                handle = self.head.register_forward_pre_hook(lambda m, a, h=held: h.append(a[0].detach().flatten(1)))
                try:
                    out = network(batch)
                finally:
                    handle.remove()
                penultimate.append(held[0].float().cpu())
                logits.append(out.float().cpu())
                others = [probabilities(n.eval()(batch), self.kind).cpu() for n in self.networks[1:]]  # not tapped
                fold_probs.append(torch.stack([probabilities(out, self.kind).cpu(), *others]))
        result = collected(captured)
        result["penultimate"] = torch.cat(penultimate).numpy()
        result["logits"] = torch.cat(logits).numpy()
        result["fold_probs"] = torch.cat(fold_probs, dim=1).numpy()  # (folds, N, K)
        return result


def stage_names(features: dict[str, np.ndarray]) -> list[str]:
    return [k for k in features if k not in ("penultimate", "logits", "fold_probs")]


def energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def candidates(train: dict, heldout: dict, rate: float) -> dict[str, tuple]:
    """Candidate -> (score function of a feature dict, threshold)."""
    from medtl.training.feature_ood import conformal_threshold, fit_knn_reference
    from medtl.training.feature_reference import fit_reference

    stages = stage_names(train)
    every = {name: np.concatenate([train[name], heldout[name]]) for name in ("penultimate", *stages)}
    found: dict[str, tuple] = {}
    maha = fit_reference(every["penultimate"])  # as training fits it: its 99% cross-fitted quantile, whatever --rate
    found["maha_penultimate"] = (lambda f: maha.distances(f["penultimate"]), maha.threshold)
    knn_p = fit_knn_reference({"penultimate": train["penultimate"]}, {"penultimate": heldout["penultimate"]}, rate=rate)
    found["knn_penultimate"] = (lambda f: knn_p.scores({"penultimate": f["penultimate"]}), knn_p.threshold)
    found["energy"] = (lambda f: energy(f["logits"]), conformal_threshold(energy(heldout["logits"]), rate))
    spread = lambda f: f["fold_probs"].var(axis=0).mean(axis=1)  # noqa: E731
    found["disagreement"] = (spread, conformal_threshold(spread(heldout), rate))
    per_stage = {s: fit_reference(train[s]) for s in stages}
    scales = {s: float(np.median(per_stage[s].distances(heldout[s]))) for s in stages}
    multi = lambda f: np.mean([per_stage[s].distances(f[s]) / scales[s] for s in stages], axis=0)  # noqa: E731
    found["maha_multilayer"] = (multi, conformal_threshold(multi(heldout), rate))
    knn_m = fit_knn_reference({s: train[s] for s in stages}, {s: heldout[s] for s in stages}, rate=rate)
    found["knn_multilayer"] = (lambda f: knn_m.scores({s: f[s] for s in stages}), knn_m.threshold)
    for s in stages:  # which stages carry the signal (diagnostic)
        alone = fit_knn_reference({s: train[s]}, {s: heldout[s]}, rate=rate)
        found[f"knn_{s}_only"] = (lambda f, r=alone, s=s: r.scores({s: f[s]}), alone.threshold)
    knn_cf = fit_knn_reference({s: every[s] for s in stages}, None, rate=rate)
    found["knn_multilayer_cf"] = (lambda f: knn_cf.scores({s: f[s] for s in stages}), knn_cf.threshold)
    return found


def exchangeable_flag_rate(train: dict, heldout: dict, patients: np.ndarray, rate: float, seed: int) -> dict:
    """The chosen rule's promise checked where it applies: calibrated on half of the held-out patients, its flag
    rate on the other half (and the reverse), scans exchangeable with the calibration ones by construction. The
    official test split is a separate collection for some sets, so its rate also measures a shift."""
    from medtl.training.feature_ood import fit_knn_reference

    stages = stage_names(train)
    order = np.random.default_rng(seed).permutation(np.unique(patients))
    first = np.isin(patients, order[: len(order) // 2])
    flagged = n = 0
    for calibrate, measure in ((first, ~first), (~first, first)):
        rule = fit_knn_reference({s: train[s] for s in stages}, {s: heldout[s][calibrate] for s in stages}, rate=rate)
        scores = rule.scores({s: heldout[s][measure] for s in stages})
        flagged, n = flagged + int((scores > rule.threshold).sum()), n + int(measure.sum())
    return {
        "rule": "knn_multilayer",
        "flagged": flagged,
        "n": n,
        "rate": round(flagged / n, 4),
        "ci95": wilson(flagged, n),
    }


def auroc_ci(inside: np.ndarray, outside: np.ndarray, rng: np.random.Generator, n_boot: int) -> dict:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    value = float(roc_auc_score(labels, np.r_[inside, outside]))
    boots = []
    for _ in range(n_boot):
        a, b = rng.choice(inside, len(inside)), rng.choice(outside, len(outside))
        boots.append(roc_auc_score(labels, np.r_[a, b]))
    low, high = np.quantile(boots, [0.025, 0.975])
    return {"value": round(value, 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def wilson(k: int, n: int) -> list[float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def staged_tensors(scorer, folder: Path, out: Path) -> tuple[torch.Tensor, object]:
    """Scoring's own ingest of FOLDER with the artifact's spec, then the preprocessed tensors it cached."""
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.cache import ScanCache
    from medtl.ingest.preprocess import spec_hash
    from medtl.scoring.score import STAGING, stage_inputs

    manifest = stage_inputs(scorer, [folder], out, pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"))
    cache, key = ScanCache(out / STAGING), spec_hash(scorer.model.spec)
    arrays = [np.load(out / STAGING / cache.preprocessed_relpath(h, key)) for h in manifest["pixel_hash"]]
    return torch.from_numpy(np.stack(arrays)).float(), manifest


def artifact_rule(scorer, out: Path, manifest) -> dict:
    """The flag `medtl score` writes (score_chunk, the real path): share of scans marked feature_outlier."""
    from medtl.scoring.score import STAGING, score_chunk

    rows = score_chunk(scorer, out / STAGING, manifest, policy="flag", tta=False, batch_size=256)
    flagged = sum("feature_outlier" in row["flags"] for row in rows)
    return {
        "flagged": flagged,
        "n": len(rows),
        "rate": round(flagged / len(rows), 4),
        "ci95": wilson(flagged, len(rows)),
    }


def evaluate_pair(model_set: str, other: str, seed: int, workdir: Path, args: argparse.Namespace) -> dict:
    from medtl.artifacts.contents import ArtifactContents
    from medtl.scoring.score import prepare as prepare_scorer
    from medtl.training.config import TaskConfig
    from medtl.training.data import TensorSet, load_task, rows_of

    dataset = prepare(model_set, workdir, 28, args.limit)
    artifact = workdir / f"{model_set}-s{seed}-artifact"
    seconds = train_model(dataset, artifact, seed)
    scorer = prepare_scorer(artifact, allow_unapproved=True)
    probe = Probe(scorer)
    splits = ArtifactContents(scorer.artifact).splits
    task = load_task(dataset, TaskConfig())
    fold = splits.folds[0]  # the ensemble's features come from the fold-0 network

    def features_of(patients: list[str]) -> dict[str, np.ndarray]:
        data = TensorSet(task, rows_of(task, patients))
        return probe(torch.stack([data[i][0] for i in range(len(data))]))

    train = features_of([*fold.train, *fold.tune])
    heldout = features_of(list(fold.heldout))
    heldout_patients = task.scans["patient_id"].to_numpy()[rows_of(task, list(fold.heldout))]
    found = candidates(train, heldout, args.rate)
    modality = task.modalities[0]
    runs = workdir / "runs" / f"{model_set}-s{seed}-vs-{other}"
    shutil.rmtree(runs, ignore_errors=True)
    own_folder = test_files(workdir / f"{model_set}-files", workdir / f"{model_set}-test")
    own_tensors, own_manifest = staged_tensors(scorer, own_folder, runs / "own")
    other_folder = other_files(other, modality, workdir, args.limit)
    other_tensors, other_manifest = staged_tensors(scorer, other_folder, runs / "other")
    own, out = probe(own_tensors), probe(other_tensors)
    rng = np.random.default_rng(seed)
    results = {}
    for name, (score, threshold) in found.items():
        inside, outside = score(own), score(out)
        flagged = int((inside > threshold).sum())
        results[name] = {
            "auroc": auroc_ci(inside, outside, rng, args.bootstrap),
            "threshold": round(float(threshold), 6),
            "in_distribution_flag_rate": round(flagged / len(inside), 4),
            "in_distribution_flag_ci95": wilson(flagged, len(inside)),
            "other_flag_rate": round(float((outside > threshold).mean()), 4),
        }
    summary = ArtifactContents(scorer.artifact).ood_summary
    return {
        "model_set": model_set,
        "other_set": other,
        "seed": seed,
        "modality_tag": modality,
        "train_seconds": seconds,
        "n": {
            "reference": len(train["penultimate"]),
            "calibration": len(heldout["penultimate"]),
            "own_test": len(own_tensors),
            "other_test": len(other_tensors),
        },
        "candidates": results,
        "exchangeable_check": exchangeable_flag_rate(train, heldout, heldout_patients, args.rate, seed),
        "artifact_rule": {
            "rule": summary.flag,
            "stated_rate": summary.false_flag_rate,  # the artifact's own (training's), whatever --rate says
            "own_test": artifact_rule(scorer, runs / "own", own_manifest),
            "other_test": artifact_rule(scorer, runs / "other", other_manifest),
        },
    }


def aggregate(runs: list[dict]) -> dict:
    """Per pair and candidate: median over seeds of AUROC and flag rates, with their range."""
    table: dict[str, dict] = {}
    for run in runs:
        pair = f"{run['model_set']} vs {run['other_set']}"
        for name, entry in run["candidates"].items():
            slot = table.setdefault(pair, {}).setdefault(name, {"auroc": [], "own_flag": [], "other_flag": []})
            slot["auroc"].append(entry["auroc"]["value"])
            slot["own_flag"].append(entry["in_distribution_flag_rate"])
            slot["other_flag"].append(entry["other_flag_rate"])
        check = run["exchangeable_check"]  # own_flag is the official test split's; this, held-out halves'
        table[pair][check["rule"]].setdefault("own_flag_exchangeable", []).append(check["rate"])
    return {
        pair: {
            name: {key: {"median": statistics.median(v), "min": min(v), "max": max(v)} for key, v in slot.items()}
            for name, slot in entries.items()
        }
        for pair, entries in table.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["breastmnist:pneumoniamnist", "pneumoniamnist:breastmnist"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rate", type=float, default=0.01, help="the stated false-flag rate")
    parser.add_argument("--limit", type=int, default=1000, help="images per split imported (test splits are smaller)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medtl-ood")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ood.json"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    signing_key(args.workdir)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for pair in args.pairs:
            model_set, other = pair.split(":")
            runs.append(evaluate_pair(model_set, other, seed, args.workdir, args))
            aurocs = {n: e["auroc"]["value"] for n, e in runs[-1]["candidates"].items()}
            print(json.dumps({"pair": pair, "seed": seed, **aurocs}), flush=True)
    report = {
        "benchmark": "ood",
        "settings": {**{k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()}, "recipe": RECIPE},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform()},
        "summary": aggregate(runs),
        "runs": runs,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
