"""From an ingested dataset to training tensors: select the task's scans, map labels, fill the preprocessed cache.

Preprocessing is deterministic and lives in ingest's cache (keyed by pixel hash and spec hash); training only reads
those tensors, and random augmentation happens later, on whole batches, on the model's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medtl.contracts import PreprocessingSpec, read_json, read_table
from medtl.contracts.ingest import Fingerprint, ManifestRow
from medtl.contracts.task import (
    TaskDeclaration,
    TaskKind,
    all_numbers,
    default_class_order,
    default_decision_cut,
    findings_of,
    infer_kind,
)
from medtl.errors import ConfigError, ContractProblem, DataContractError
from medtl.hashing import sha256_file
from medtl.ingest.cache import ScanCache
from medtl.ingest.pipeline import FINGERPRINT, MANIFEST, PREPROCESSING, TASK_DECLARATION
from medtl.ingest.preprocess import applies_to, spec_hash
from medtl.ingest.tensors import checked_tensor
from medtl.training.config import TaskConfig

PRELOAD_LIMIT_BYTES = 2 * 1024**3  # below this, every tensor of the task is kept in memory
RESIDENT_SHARE = 0.2  # of a GPU's memory, at most, for a set's tensors kept on the device during a fit


@dataclass
class TaskData:
    dataset: Path
    scans: pd.DataFrame  # labelled scans of the task, with `target` (class index; -1 multi-label) and `tensor_path`
    classes: list[str]  # class names, grades lowest first, or finding names
    positive_class: str | None
    spec: PreprocessingSpec
    spec_hash: str
    manifest_hash: str
    fingerprint_hash: str
    excluded: dict[str, int] = field(default_factory=dict)
    kind: TaskKind = "binary"
    decision_cut: str | None = None  # ordinal: the decision is "grade >= decision_cut"
    decision_cut_declared: bool | None = None  # ordinal: False when the cut is the default middle grade
    findings: np.ndarray | None = None  # multi-label: (scans, findings) 0/1 matrix in `scans` row order

    def targets(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Class indices (N,), or for multi-label the (N, K) 0/1 finding matrix."""
        rows = np.arange(len(self.scans)) if rows is None else np.asarray(rows, dtype=int)
        if self.findings is not None:
            return self.findings[rows]
        return self.scans["target"].to_numpy()[rows]

    @property
    def spatial_dims(self) -> int:
        return self.spec.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.spec.channels

    @property
    def modalities(self) -> list[str]:
        return sorted(set(self.scans["modality"]))


def dataset_spec(dataset: Path) -> PreprocessingSpec:
    """The preprocessing the dataset was ingested with (its cache holds tensors for it)."""
    if not (Path(dataset) / PREPROCESSING).exists():
        raise ConfigError(
            "the dataset has no preprocessing spec",
            where=str(dataset),
            fix="give one in the training config (preprocessing:) or re-run `medtl ingest` with --spec",
        )
    return read_json(PreprocessingSpec, Path(dataset) / PREPROCESSING)


def read_manifest(dataset: Path) -> pd.DataFrame:
    return read_table(ManifestRow, Path(dataset) / MANIFEST)


def load_task(dataset: Path, task: TaskConfig, spec: PreprocessingSpec | None = None) -> TaskData:
    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    fingerprint = read_json(Fingerprint, dataset / FINGERPRINT)
    if spec is None:
        spec = dataset_spec(dataset)
    kind = task.image_kind or ("volume" if spec.spatial_dims == 3 else "image2d")
    if not applies_to(spec, kind):
        raise ConfigError(f"task.image_kind {kind!r} does not match the {spec.spatial_dims}D preprocessing spec")
    excluded: dict[str, int] = {}
    selected = manifest

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal selected
        mask = mask.astype(bool)  # an empty selection gives an object-typed mask, which pandas reads as columns
        if mask.any():
            excluded[reason] = int(mask.sum())
        selected = selected.loc[~mask]

    drop(selected["image_kind"] != kind, f"not {kind}")
    if task.modalities:
        drop(~selected["modality"].isin(task.modalities), "other modality")
    flag_counts: dict[str, int] = {}
    if task.exclude_flags:
        hits = selected["qc_flags"].apply(lambda flags: sorted(set(flags) & set(task.exclude_flags)))
        for flags in hits:
            for flag in flags:
                flag_counts[flag] = flag_counts.get(flag, 0) + 1
        drop(hits.apply(bool), "excluded QC flag")
    drop(selected["label"].isna(), "unlabelled")
    labels = set(selected["label"])
    declared = read_declaration(dataset)
    task_kind: TaskKind = task.kind or (declared.kind if declared else None) or infer_kind(labels)
    if task_kind == "multilabel":
        return _finish(dataset, task, declared, task_kind, selected, excluded, spec, fingerprint)
    if len(labels) < 2:
        raise ConfigError(
            f"the task needs at least two classes; after the task's filters {len(selected)} of {len(manifest)} scans "
            f"remain, with labels {sorted(labels)}. " + _what_removed(excluded, flag_counts, kind),
            where=str(dataset),
            fix="change the setting named above in the training config's task: section (or the labels file)",
        )
    return _finish(dataset, task, declared, task_kind, selected, excluded, spec, fingerprint)


def read_declaration(dataset: Path) -> TaskDeclaration | None:
    path = Path(dataset) / TASK_DECLARATION
    return read_json(TaskDeclaration, path) if path.exists() else None


def _finish(
    dataset: Path,
    task: TaskConfig,
    declared: TaskDeclaration | None,
    kind: TaskKind,
    selected: pd.DataFrame,
    excluded: dict[str, int],
    spec: PreprocessingSpec,
    fingerprint: Fingerprint,
) -> TaskData:
    """Classes in their index order, each scan's target, and the preprocessed tensors."""
    same_kind = declared is not None and declared.kind == kind
    declared_classes = declared.classes if same_kind else None
    scans = selected.copy().reset_index(drop=True)
    findings = None
    if kind == "multilabel":
        present = {name for label in scans["label"] for name in findings_of(label)}
        classes = task.classes or declared_classes or sorted(present)
        unknown = present - set(classes)
        if unknown or len(classes) < 1:
            raise ConfigError(
                f"findings {sorted(unknown)} are not among task.classes {classes}",
                fix="add them to task.classes, or fix labels.csv and re-run ingest",
            )
        position = {name: index for index, name in enumerate(classes)}
        findings = np.zeros((len(scans), len(classes)), dtype=np.float32)
        for row, label in enumerate(scans["label"]):
            for name in findings_of(label):
                findings[row, position[name]] = 1.0
        scans["target"] = -1
    else:
        labels = set(scans["label"])
        classes = task.classes or declared_classes or default_class_order(labels)
        unknown = labels - set(classes)
        if unknown:
            raise ConfigError(
                f"labels {sorted(unknown)} are not among task.classes {classes}",
                fix="add them to task.classes, or fix labels.csv and re-run ingest",
            )
        if len(classes) < 2:
            raise ConfigError(f"the task needs at least two classes; found {classes}", where=str(dataset))
        if kind == "binary" and len(classes) != 2:
            raise ConfigError(
                f"a binary task needs exactly two classes; found {len(classes)}",
                fix="declare task.kind multiclass (or ordinal for grades), or select two classes with task.classes",
            )
        if kind == "ordinal" and not (task.classes or declared_classes) and not all_numbers(labels):
            raise ConfigError(
                "an ordinal task needs its grades in order, and these labels are not numbers",
                fix="list the grades lowest first in task.classes (or in the dataset's task.json)",
            )
        scans["target"] = scans["label"].map({name: index for index, name in enumerate(classes)}).astype(int)
    positive = task.positive_class or (declared.positive_class if same_kind else None)
    if kind == "binary":
        positive = positive or classes[1]
    cut, cut_declared = None, None
    if kind == "ordinal":
        cut = task.decision_cut or (declared.decision_cut if same_kind else None)
        cut_declared = cut is not None
        cut = cut or default_decision_cut(classes)
    key = spec_hash(spec)
    scans["tensor_path"] = ensure_preprocessed(dataset, scans, spec, key)
    return TaskData(
        dataset=dataset,
        scans=scans,
        classes=list(classes),
        positive_class=positive,
        spec=spec,
        spec_hash=key,
        manifest_hash=fingerprint.manifest_hash,
        fingerprint_hash=sha256_file(dataset / FINGERPRINT),
        excluded=excluded,
        kind=kind,
        decision_cut=cut,
        decision_cut_declared=cut_declared,
        findings=findings,
    )


def _what_removed(excluded: dict[str, int], flag_counts: dict[str, int], kind: str) -> str:
    """Which filter removed how many scans, and the setting that controls it."""
    settings = {
        f"not {kind}": f"task.image_kind (now {kind}; or the preprocessing spec's dimensionality)",
        "other modality": "task.modalities",
        "excluded QC flag": "task.exclude_flags ("
        + ", ".join(f"{flag}: {count}" for flag, count in sorted(flag_counts.items()))
        + ")",
        "unlabelled": "labels.csv (scans without a matching row)",
    }
    if not excluded:
        return "No filter removed any scan: the labels themselves have fewer than two classes."
    return (
        "Removed: " + "; ".join(f"{count} {reason} by {settings[reason]}" for reason, count in excluded.items()) + "."
    )


def ensure_preprocessed(dataset: Path, scans: pd.DataFrame, spec: PreprocessingSpec, key: str) -> list[str]:
    """The cached tensor of every scan under this spec, each checked whole and of the spec's shape; missing or
    damaged ones are made now (medtl/ingest/tensors.py). Scans whose cached array is damaged too stop the run
    here, before any training, all of them named."""
    cache = ScanCache(dataset)
    paths = [
        checked_tensor(cache, row.pixel_hash, row.cache_path, list(row.affine), spec, key) for row in scans.itertuples()
    ]
    damaged = [scan_id for scan_id, path in zip(scans["scan_id"], paths, strict=True) if path is None]
    if damaged:
        raise DataContractError(
            "manifest.parquet",
            [
                ContractProblem(f"scan {scan_id}", "its cached array is missing or damaged, and so is its tensor")
                for scan_id in damaged
            ],
            fix="delete the dataset's cache/ folder and run medtl ingest again with --full over the same sources",
        )
    return [path for path in paths if path is not None]


class TensorSet(Dataset):
    """(tensor, target, row index) for the given rows of a task; held in memory when the task is small."""

    def __init__(self, task: TaskData, rows: np.ndarray) -> None:
        self.task = task
        self.rows = np.asarray(rows, dtype=int)
        self.paths = [task.dataset / task.scans["tensor_path"].iloc[i] for i in self.rows]
        targets = task.targets(self.rows)
        self.targets = torch.as_tensor(targets, dtype=torch.float32 if targets.ndim == 2 else torch.long)
        self._memory: torch.Tensor | None = None
        if self.rows.size and self._estimated_bytes() <= PRELOAD_LIMIT_BYTES:
            self._memory = torch.stack([self._load(i) for i in range(len(self.rows))])

    @property
    def resident(self) -> bool:
        return self._memory is not None and self._memory.is_cuda

    def keep_on(self, device: torch.device) -> bool:
        """Keep a small in-memory set on the GPU for the whole fit: batches are then gathered on the device, with no
        host-to-device copy per step (on a fast GPU that copy, not the model, limits small 2D and 3D sets)."""
        if device.type != "cuda" or self._memory is None:
            return self.resident
        if self._memory.nbytes <= RESIDENT_SHARE * torch.cuda.get_device_properties(device).total_memory:
            self._memory = self._memory.to(device)
        return self.resident

    def _estimated_bytes(self) -> int:
        first = np.load(self.paths[0], mmap_mode="r")
        return int(first.nbytes) * len(self.rows)

    def _load(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.load(self.paths[index], allow_pickle=False), np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        tensor = self._memory[index] if self._memory is not None else self._load(index)
        return tensor, self.targets[index], int(self.rows[index])


def rows_of(task: TaskData, patients: list[str]) -> np.ndarray:
    return np.flatnonzero(task.scans["patient_id"].isin(set(patients)).to_numpy())
