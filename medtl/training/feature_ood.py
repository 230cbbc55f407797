"""Multi-layer nearest-neighbour reference: the feature-outlier rule that tells another dataset of one format apart.

Why not only the penultimate Mahalanobis distance (medtl.training.feature_reference): the penultimate layer of a
classifier keeps what separates its classes and discards the rest, so images of another organ or another kind of
scan land in the same few class-shaped clusters, and a Gaussian fitted to them barely moves (measured:
benchmarks/bench_ood.py).
Earlier stages still describe the image itself (texture, edges, contrast). So each backbone stage's output is
average-pooled, L2-normalised, and a scan's score is its distance (1 - cosine) to the k-th nearest training scan,
per stage, divided by that stage's typical in-distribution distance and averaged over stages. A nearest-neighbour
distance assumes no shape of the training distribution (several clusters, class-conditional ones, are fine).

Calibration: the threshold is the split-conformal quantile of the scores of scans the network never trained on: the
ceil((n + 1)(1 - rate))-th smallest of n, which a new in-distribution scan exceeds with probability at most `rate`
(the plain (1 - rate) quantile lets about rate + 1/n through: 1.5% instead of 1% with 200 held-out scans). With a
fold ensemble, scoring reads features from the fold-0 network, so the reference bank is fold 0's training side and
the threshold comes from fold 0's held-out patients: exactly the situation of a new in-distribution scan. A refit
model has no held-out scans; the bank is then cross-fitted over training scans (held-out parts scored against the
rest), which under-states new scans' distances a little (the network fitted them), so that flag errs towards flagging.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_FALSE_FLAG_RATE = 0.01  # share of in-distribution scans the flag is allowed to mark
DEFAULT_K = 5
MAX_BANK = 1024  # training scans kept per stage: bounds the artifact (about 4 MB for a ResNet-18) and scoring time
PREFIX = "knn."  # tensor names in ood/features.safetensors beside the Mahalanobis reference's


def stage_modules(network: nn.Module, stages: Sequence[Sequence[str]], stage_names: Sequence[str]) -> dict[str, str]:
    """Stage name -> module path whose output is that stage's feature map: the deepest module holding all the
    stage's parameters. The first stage (the stem: a conv and a norm side by side) and the head have none worth
    pooling, so they are left out."""
    found: dict[str, str] = {}
    modules = dict(network.named_modules())
    for name, params in zip(stage_names[1:-1], stages[1:-1], strict=True):
        paths = [p.rsplit(".", 1)[0].split(".") for p in params if "." in p]
        if not paths:
            continue
        common: list[str] = []
        for parts in zip(*paths, strict=False):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        path = ".".join(common)
        if path and path in modules:
            found[name] = path
    return found


@contextmanager
def tapped(network: nn.Module, paths: dict[str, str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the pooled output of each named module during this thread's forward passes of NETWORK.

    Other threads may run the same network at the same time (chunks scored in parallel): their calls are ignored.
    """
    caller = threading.get_ident()
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in paths}
    handles = []

    def keeper(name: str) -> Any:
        def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if threading.get_ident() == caller:
                captured[name].append(pooled(output))

        return keep

    for name, path in paths.items():
        handles.append(network.get_submodule(path).register_forward_hook(keeper(name)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def pooled(output: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C) mean over space; flat outputs pass through."""
    output = output.detach().float()
    return output.flatten(2).mean(dim=2) if output.ndim > 2 else output.flatten(1)


def collected(captured: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
    return {name: torch.cat(parts).cpu().numpy().astype(np.float32) for name, parts in captured.items() if parts}


def _normalised(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def knn_distance(bank: np.ndarray, features: np.ndarray, k: int, *, chunk: int = 512) -> np.ndarray:
    """1 - cosine similarity to the k-th most similar row of BANK (rows of both already L2-normalised)."""
    k = min(k, len(bank))
    out = np.empty(len(features), dtype=np.float64)
    for start in range(0, len(features), chunk):
        similarity = features[start : start + chunk] @ bank.T
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        out[start : start + chunk] = 1.0 - kth
    return out


@dataclass
class KnnReference:
    """Per stage: a bank of normalised training features and the stage's typical in-distribution distance."""

    banks: dict[str, np.ndarray]
    scales: dict[str, float]
    k: int
    threshold: float
    rate: float
    n: int
    calibration: str
    calibration_n: int
    modules: dict[str, str] = field(default_factory=dict)  # stage -> module path the features come from

    def scores(self, features: dict[str, np.ndarray]) -> np.ndarray:
        per_stage = [
            knn_distance(self.banks[name], _normalised(features[name]), self.k) / self.scales[name]
            for name in self.banks
        ]
        return np.mean(per_stage, axis=0)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{PREFIX}{name}": torch.from_numpy(np.ascontiguousarray(bank)) for name, bank in self.banks.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "false_flag_rate": self.rate,
            "k": self.k,
            "n": self.n,
            "bank": len(next(iter(self.banks.values()))),
            "stages": {
                name: {"module": self.modules.get(name, name), "scale": self.scales[name]} for name in self.banks
            },
            "calibration": self.calibration,
            "calibration_n": self.calibration_n,
        }

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], summary: dict[str, Any]) -> KnnReference:
        stages = summary["stages"]
        return cls(
            banks={name: tensors[f"{PREFIX}{name}"].numpy().astype(np.float32) for name in stages},
            scales={name: float(entry["scale"]) for name, entry in stages.items()},
            k=int(summary["k"]),
            threshold=float(summary["threshold"]),
            rate=float(summary["false_flag_rate"]),
            n=int(summary["n"]),
            calibration=str(summary["calibration"]),
            calibration_n=int(summary["calibration_n"]),
            modules={name: str(entry["module"]) for name, entry in stages.items()},
        )


def _bank(features: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: _normalised(values[rows]) for name, values in features.items()}


def _raw_distances(bank: dict[str, np.ndarray], features: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    return {name: knn_distance(bank[name], _normalised(features[name]), k) for name in bank}


def fit_knn_reference(
    training: dict[str, np.ndarray],
    calibration: dict[str, np.ndarray] | None = None,
    *,
    rate: float = DEFAULT_FALSE_FLAG_RATE,
    k: int = DEFAULT_K,
    max_bank: int = MAX_BANK,
    folds: int = 5,
    seed: int = 0,
    modules: dict[str, str] | None = None,
) -> KnnReference:
    """Bank = (a seeded subsample of) TRAINING; threshold = the (1 - RATE) quantile of held-out scores.

    CALIBRATION: features of in-distribution scans the network never trained on (see the module docstring); without
    it the training scans are cross-fitted: each part scored against a bank of the others.
    """
    if not 0 < rate < 1:
        raise ValueError(f"the false-flag rate must lie in (0, 1); got {rate}")
    names = list(training)
    n = len(training[names[0]])
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(n)[:max_bank])
    bank = _bank(training, keep)
    if calibration is not None and len(calibration[names[0]]):
        raw = _raw_distances(bank, calibration, k)
        how, count = "held-out scans of the feature network", len(calibration[names[0]])
    else:
        parts = np.array_split(rng.permutation(n), max(2, min(folds, n // max(k + 1, 2))))
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for part in parts:
            rest = np.sort(rng.permutation(np.setdiff1d(np.arange(n), part))[:max_bank])  # a seeded subsample
            distances = _raw_distances(_bank(training, rest), {m: v[part] for m, v in training.items()}, k)
            for name in names:
                pieces[name].append(distances[name])
        raw = {name: np.concatenate(pieces[name]) for name in names}
        how, count = "cross-fitted training scans", n
    scales = {name: float(max(np.median(raw[name]), 1e-6)) for name in names}
    scores = np.mean([raw[name] / scales[name] for name in names], axis=0)
    threshold = conformal_threshold(scores, rate)
    total = n + (count if calibration is not None and len(calibration[names[0]]) else 0)
    return KnnReference(bank, scales, k, threshold, rate, total, how, count, dict(modules or {}))


@torch.no_grad()
def conformal_threshold(scores: np.ndarray, rate: float) -> float:
    """The ceil((n + 1)(1 - rate))-th smallest score. With fewer than 1/rate - 1 calibration scans no score is high
    enough for that guarantee; the largest one is used then (a rate near 1/(n + 1)), rather than never flagging."""
    ordered = np.sort(np.asarray(scores, dtype=float))
    rank = int(np.ceil((len(ordered) + 1) * (1.0 - rate)))
    return float(ordered[min(rank, len(ordered)) - 1])


def network_features(
    network: nn.Module, head: nn.Module, paths: dict[str, str], batches: Iterator[torch.Tensor] | Sequence[torch.Tensor]
) -> dict[str, np.ndarray]:
    """Pooled stage features (by stage name) and the penultimate features (`penultimate`) of every batch, from one
    forward pass each: what both feature references are fitted on."""
    network.eval()
    penultimate: list[torch.Tensor] = []
    with tapped(network, paths) as captured:
        for batch in batches:
            handle = head.register_forward_pre_hook(lambda module, args: penultimate.append(args[0].detach()))
            try:
                network(batch)
            finally:
                handle.remove()
    features = collected(captured)
    features["penultimate"] = torch.cat([p.flatten(1).float() for p in penultimate]).cpu().numpy()
    return features


def artifact_knn_reference(
    features: dict[str, np.ndarray],
    modules: dict[str, str],
    *,
    bank_rows: np.ndarray,
    calibration_rows: np.ndarray | None,
    rate: float = DEFAULT_FALSE_FLAG_RATE,
    seed: int = 0,
) -> KnnReference:
    """The artifact's rule: bank from BANK_ROWS, threshold from CALIBRATION_ROWS (scans the feature network did not
    train on), or cross-fitted over BANK_ROWS when there are none (a refit model)."""
    stages = {name: features[name][bank_rows] for name in modules}
    held = {name: features[name][calibration_rows] for name in modules} if calibration_rows is not None else None
    return fit_knn_reference(stages, held, rate=rate, seed=seed, modules=modules)
