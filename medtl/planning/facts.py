"""What the rules are given: the task's development scans (never the locked test), their classes and shape.

A QC flag on most labelled scans describes the dataset rather than outliers (`training.dataset_flags`): the plan
keeps those scans and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.contracts import PreprocessingSpec
from medtl.contracts.planning import PlanFacts
from medtl.training.config import TaskConfig
from medtl.training.data import TaskData, load_task, read_manifest
from medtl.training.dataset_flags import keep_dataset_wide, kept_reason


@dataclass
class Gathered:
    facts: PlanFacts
    task_config: TaskConfig
    task: TaskData
    reasons: dict[str, str]
    voxel_spacing: list[float] | None = None  # the development scans' median, per array axis (a smaller 3D input)


def task_filters(dataset: Path, kind: str) -> tuple[TaskConfig, dict[str, str]]:
    """Training's default QC exclusions for this dataset's `kind` scans, less a flag that describes the dataset."""
    manifest = read_manifest(dataset)
    labelled = manifest[(manifest["image_kind"] == kind) & manifest["label"].notna()]
    defaults = list(TaskConfig().exclude_flags)
    flags, kept = keep_dataset_wide(defaults, labelled["qc_flags"])
    reasons = {"task.exclude_flags": f"default QC exclusions {defaults}: flagged scans are outliers"}
    for flag, share in kept.items():
        reasons["task.exclude_flags"] = (
            f"{kept_reason(flag, share, 'labelled scans')}, so those scans are kept; still excluded: {flags}"
        )
    return TaskConfig(exclude_flags=flags), reasons


def gather(dataset: Path, spec: PreprocessingSpec) -> Gathered:
    """Load the task as training will (same filters, same label order) and summarise its development side."""
    kind = "volume" if spec.spatial_dims == 3 else "image2d"
    task_config, reasons = task_filters(dataset, kind)
    task = load_task(dataset, task_config, spec)
    development = task.scans["split"].to_numpy() != "test"
    facts = PlanFacts(
        manifest_hash=task.manifest_hash,
        image_kind=kind,
        spatial_dims=spec.spatial_dims,
        native_shape=list(spec.target_shape),
        channels=spec.channels,
        classes=list(task.classes),
        n_patients=int(task.scans.loc[development, "patient_id"].nunique()),
        n_scans=int(development.sum()),
        task_kind=task.kind,
        **_class_balance(task, development),
    )
    return Gathered(facts, task_config, task, reasons, _median_spacing(task, development))


def _median_spacing(task: TaskData, development: np.ndarray) -> list[float] | None:
    """The development scans' median voxel spacing per array axis (None without scans of the spec's dimensions)."""
    spacings = [list(value) for value in task.scans.loc[development, "spacing"] if len(value) == task.spec.spatial_dims]
    return [float(v) for v in np.median(np.asarray(spacings, dtype=float), axis=0)] if spacings else None


def _class_balance(task: TaskData, development: np.ndarray) -> dict[str, object]:
    """Scans per class (per finding), the minority share and how many patients carry the minority.

    Multi-label: a finding is rare when it is on few scans, or (for one on nearly every scan) missing from few; the
    rarer side of the rarest finding is what stratified folds and tuning splits must still contain."""
    patients = task.scans["patient_id"].to_numpy()[development]
    if task.kind == "multilabel":
        matrix = task.targets()[development].astype(bool)
        n = max(1, len(matrix))
        present = {name: int(matrix[:, k].sum()) for k, name in enumerate(task.classes)}
        sides = [(min(count, n - count), k, count <= n - count) for k, count in enumerate(present.values())]
        rarest, column, positive_side = min(sides) if sides else (0, 0, True)
        carriers = matrix[:, column] if positive_side else ~matrix[:, column]
        return {
            "scans_per_class": present,
            "minority_share": rarest / n,
            "minority_patients": len(set(patients[carriers])),
            "finding_prevalence": {name: round(count / n, 4) for name, count in present.items()},
        }
    labels = task.scans["label"].to_numpy()[development]
    per_class = {name: int((labels == name).sum()) for name in task.classes}
    total = max(1, sum(per_class.values()))
    minority = min(per_class, key=lambda name: per_class[name])
    return {
        "scans_per_class": per_class,
        "minority_share": per_class[minority] / total,
        "minority_patients": len(set(patients[labels == minority])),
    }
