"""What the rules are given: the task's development scans (never the locked test), their classes and shape.

One QC flag is a property of a whole dataset rather than of outliers: `possible_label_map` marks images with few
distinct values. When it is on most labelled scans, the dataset *is* masks or other few-valued images (shape
analysis), and excluding the flagged scans would leave nothing to learn from; the plan keeps them and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtl.contracts import PreprocessingSpec
from medtl.contracts.planning import PlanFacts
from medtl.training.config import TaskConfig
from medtl.training.data import TaskData, load_task, read_manifest

DATASET_WIDE_FLAGS = ("possible_label_map",)
DATASET_WIDE_SHARE = 0.5  # a flag on more than half of the labelled scans describes the dataset, not outliers


@dataclass
class Gathered:
    facts: PlanFacts
    task_config: TaskConfig
    task: TaskData
    reasons: dict[str, str]


def _task_filters(dataset: Path, kind: str) -> tuple[TaskConfig, dict[str, str]]:
    manifest = read_manifest(dataset)
    labelled = manifest[(manifest["image_kind"] == kind) & manifest["label"].notna()]
    flags = list(TaskConfig().exclude_flags)
    reasons = {"task.exclude_flags": f"default QC exclusions {flags}: flagged scans are outliers"}
    for flag in DATASET_WIDE_FLAGS:
        share = float(labelled["qc_flags"].apply(lambda f, flag=flag: flag in set(f)).mean()) if len(labelled) else 0
        if share > DATASET_WIDE_SHARE and flag in flags:
            flags.remove(flag)
            reasons["task.exclude_flags"] = (
                f"{flag} is on {share:.0%} of the labelled scans: it describes this dataset (e.g. shape masks), "
                f"not outliers, so those scans are kept; still excluded: {flags}"
            )
    return TaskConfig(exclude_flags=flags), reasons


def gather(dataset: Path, spec: PreprocessingSpec) -> Gathered:
    """Load the task as training will (same filters, same label order) and summarise its development side."""
    kind = "volume" if spec.spatial_dims == 3 else "image2d"
    task_config, reasons = _task_filters(dataset, kind)
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
    return Gathered(facts, task_config, task, reasons)


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
