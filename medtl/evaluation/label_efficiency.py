"""The label-efficiency curve: each arm's out-of-fold AUROC per share of the labels, and how many labels a pretrained
arm needed to match the model trained from scratch on all of them.

Why out of fold only: the models trained on shares of the labels are not kept in the artifact (only their held-out
predictions are), so a locked test set cannot be scored with them; a benchmark that wants test AUROC per share trains
its own. Why the scratch arm's point estimate on every label as the bar: it is what a site gets today without
pretraining, and "the smallest share at which the arm reaches it" is the number a site can act on. The comparison is
of point estimates; the intervals beside them say how far to trust it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtl.contracts.evaluation import EfficiencyPoint, Estimate, LabelEfficiency, LabelsSaved
from medtl.contracts.handoff import ArmTransfer
from medtl.contracts.task import TaskKind
from medtl.evaluation.metrics import auroc_ci
from medtl.evaluation.task_evaluation import summary_auroc

SCRATCH_ARM = "scratch"


def pooled_auroc(
    frame: pd.DataFrame, kind: TaskKind, classes: list[str], positive: str | None, *, n_boot: int
) -> Estimate:
    """An arm's pooled out-of-fold AUROC: the positive class's (binary) or the task's summary AUROC (macro over
    classes; for multi-label the mean over findings), with its patient-bootstrap 95% CI."""
    if kind == "binary":
        targets = (frame["label"].astype(str) == str(positive)).astype(int).to_numpy()
        scores = frame["probability"].to_numpy()
        interval = auroc_ci(targets, scores, frame["patient_id"].to_numpy(), n_boot=n_boot)
        return interval.estimate("auroc", n=int(frame["patient_id"].nunique()))
    return summary_auroc(frame, kind, classes, n_boot=n_boot)


def label_efficiency(
    table: pd.DataFrame | None,
    transfer: list[ArmTransfer],
    kind: TaskKind,
    classes: list[str],
    positive: str | None,
    *,
    n_boot: int,
) -> LabelEfficiency | None:
    """Points per arm and share (arms in the transfer record's order, shares ascending), and per pretrained arm the
    smallest share reaching the scratch arm's AUROC on every label; None without label-efficiency runs."""
    if table is None or table.empty:
        return None
    order = [entry.arm for entry in transfer] + sorted(set(table["arm"]) - {entry.arm for entry in transfer})
    points = []
    for arm in order:
        mine = table[table["arm"] == arm]
        for fraction in sorted(set(mine["fraction"])):
            frame = mine[mine["fraction"] == fraction]
            per_fold = frame.groupby("fold")["n_labelled_patients"].first().sort_index()
            points.append(
                EfficiencyPoint(
                    arm=arm,
                    fraction=float(fraction),
                    n_labelled_patients=float(np.median(per_fold.to_numpy())),
                    fold_patients=[int(n) for n in per_fold],
                    auc=pooled_auroc(frame, kind, classes, positive, n_boot=n_boot),
                )
            )
    return LabelEfficiency(points=points, saved=_saved(points, transfer))


def _saved(points: list[EfficiencyPoint], transfer: list[ArmTransfer]) -> list[LabelsSaved]:
    reference = next((p for p in points if p.arm == SCRATCH_ARM and p.fraction == 1.0), None)
    if reference is None or reference.auc.value is None:
        return []
    pretrained = [entry.arm for entry in transfer if entry.pretrained.get("source", "none") != "none"]
    saved = []
    for arm in pretrained:
        mine = sorted((p for p in points if p.arm == arm), key=lambda p: p.fraction)
        if not mine:
            continue
        reached = next((p for p in mine if p.auc.value is not None and p.auc.value >= reference.auc.value), None)
        saved.append(
            LabelsSaved(
                arm=arm,
                reference_auc=reference.auc.value,
                reached_fraction=reached.fraction if reached else None,
                reached_patients=reached.n_labelled_patients if reached else None,
                all_patients=mine[-1].n_labelled_patients,
            )
        )
    return saved
