"""What the rules are given: the task's development scans (never the locked test), their classes and shape.

One QC flag is a property of a whole dataset rather than of outliers: `possible_label_map` marks images with few
distinct values. When it is on most labelled scans, the dataset *is* masks or other few-valued images (shape
analysis), and excluding the flagged scans would leave nothing to learn from; the plan keeps them and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    development = task.scans[task.scans["split"] != "test"]
    counts = development["label"].value_counts()
    per_class = {name: int(counts.get(name, 0)) for name in task.classes}
    total = max(1, sum(per_class.values()))
    facts = PlanFacts(
        manifest_hash=task.manifest_hash,
        image_kind=kind,
        spatial_dims=spec.spatial_dims,
        native_shape=list(spec.target_shape),
        channels=spec.channels,
        classes=list(task.classes),
        scans_per_class=per_class,
        n_patients=int(development["patient_id"].nunique()),
        minority_share=min(per_class.values()) / total,
    )
    return Gathered(facts, task_config, task, reasons)
