"""Label efficiency: every arm trained again, per fold, on shares of that fold's training patients.

Why: a site deciding whether to pretrain on its own unlabelled scans wants to know how many labels that saves, which
is a curve of AUROC against the number of labelled patients, one line per arm. The subsets are built so that the
points of the curve differ only in the labels:

- nested: one seeded ordering of a fold's training patients per fold, and each share is a prefix of it, so the 10%
  patients are among the 25% ones, and so on; a curve then never mixes "fewer labels" with "other patients";
- grouped by patient: the ordering is of patients, so a patient's scans are in or out together;
- stratified: patients are interleaved so that every prefix keeps the classes' proportions (each class's patients,
  shuffled, are spread evenly over the ordering), and each subset starts with one patient per class (multi-label:
  one patient with and one without each finding), so that no subset lacks a class the training side has;
- the tuning and held-out patients are the fold's own at every share, so the out-of-fold AUROCs are comparable.

Multi-label patients are stratified on their set of findings (each distinct set is a stratum), on top of the
guarantee that every finding is present and absent in every subset. The models trained on the shares are not kept:
only their out-of-fold predictions go into the artifact, in a file of their own (the artifact's models, and the
out-of-fold predictions that choose the operating point, are those trained on every training patient).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtl.contracts.task import findings_of
from medtl.contracts.training import Fold, Splits
from medtl.training.config import TrainConfig
from medtl.training.cv import arm_specs, run_fold
from medtl.training.data import TaskData
from medtl.training.splits import patient_labels

FRACTION_SEED_OFFSET = 7919  # the orderings' seeds differ from the folds' training seeds


def patient_memberships(scans: pd.DataFrame, patients: list[str], multilabel: bool) -> dict[str, frozenset[str]]:
    """Per patient: its class (a one-element set), or every finding any of its scans carries."""
    mine = scans[scans["patient_id"].isin(set(patients))]
    if not multilabel:
        return {patient: frozenset({label}) for patient, label in patient_labels(mine).items()}
    found: dict[str, set[str]] = defaultdict(set)
    for patient, label in zip(mine["patient_id"], mine["label"], strict=True):
        found[str(patient)].update(findings_of(str(label)))
    return {patient: frozenset(found[patient]) for patient in patients}


def labelling_order(memberships: dict[str, frozenset[str]], seed: int, *, multilabel: bool) -> tuple[list[str], int]:
    """(every patient in the order they are labelled, how many lead it to cover every class / finding).

    Each stratum's patients are shuffled and patient r of a stratum of n gets the key (r + u) / n (u uniform per
    stratum), so sorting by key spreads every stratum evenly over the ordering. The lead patients are the first, in
    key order, that give each class a member (multi-label: each finding a carrier and a non-carrier)."""
    rng = np.random.default_rng(seed)
    strata: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(memberships):
        strata["|".join(sorted(memberships[patient]))].append(patient)
    keys: dict[str, float] = {}
    for name in sorted(strata):
        members = list(rng.permutation(strata[name]))
        offset = float(rng.uniform())
        keys.update({str(p): (rank + offset) / len(members) for rank, p in enumerate(members)})
    ordered = sorted(keys, key=lambda p: (keys[p], p))
    needs: list[Callable[[str], bool]] = []
    for name in sorted(set().union(*memberships.values()) if memberships else set()):
        needs.append(lambda p, name=name: name in memberships[p])
        if multilabel:
            needs.append(lambda p, name=name: name not in memberships[p])
    lead: list[str] = []
    for need in needs:
        if not any(need(p) for p in lead):
            chosen = next((p for p in ordered if need(p)), None)
            if chosen is not None:
                lead.append(chosen)
    leading = set(lead)
    lead.sort(key=lambda p: (keys[p], p))
    return lead + [p for p in ordered if p not in leading], len(lead)


def subset_size(fraction: float, n_patients: int, floor: int) -> int:
    """ceil(fraction x patients), never fewer than the lead that covers every class, never more than all."""
    return min(n_patients, max(floor, math.ceil(fraction * n_patients - 1e-9), 1))


def nested_subsets(task: TaskData, patients: list[str], fractions: list[float], seed: int) -> dict[float, list[str]]:
    """Per fraction, the patients of its subset (sorted); a smaller fraction's subset is inside a larger one's."""
    multilabel = task.kind == "multilabel"
    order, lead = labelling_order(patient_memberships(task.scans, patients, multilabel), seed, multilabel=multilabel)
    return {f: sorted(order[: subset_size(f, len(order), lead)]) for f in sorted(fractions)}


def with_training_side(splits: Splits, fold_index: int, train: list[str]) -> Splits:
    """The same split with one fold's training patients replaced (its tuning and held-out patients unchanged)."""
    folds: list[Fold] = [
        fold.model_copy(update={"train": train}) if fold.index == fold_index else fold for fold in splits.folds
    ]
    return splits.model_copy(update={"folds": folds})


def fraction_folder(fraction: float) -> str:
    return f"frac{fraction:g}"


def run_label_efficiency(
    task: TaskData,
    splits: Splits,
    config: TrainConfig,
    oof: pd.DataFrame,
    *,
    device: torch.device,
    workdir: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame | None:
    """Every arm on every fold's subsets below 100%; returns their out-of-fold predictions beside the full runs' (the
    100% rows are `oof`'s, so the table holds the whole curve), with `fraction` and `n_labelled_patients` columns.
    None when no fraction below 1 is configured. Finished runs are read back (work folder per fraction)."""
    fractions = [f for f in (config.label_fractions or []) if f < 1.0]
    if not fractions:
        return None
    arms = arm_specs(config)
    total = len(splits.folds) * len(fractions) * len(arms)
    frames = [
        oof.assign(
            fraction=1.0,
            n_labelled_patients=oof["fold"].map({fold.index: len(fold.train) for fold in splits.folds}),
        )
    ]
    done = 0
    for fold in splits.folds:
        subsets = nested_subsets(task, fold.train, fractions, config.seed + 1000 * fold.index + FRACTION_SEED_OFFSET)
        for fraction, subset in subsets.items():
            trimmed = with_training_side(splits, fold.index, subset)
            for arm in arms:
                if progress is not None:
                    progress(f"{arm.name} fold {fold.index + 1} on {fraction:.0%} of the labels", done, total)
                _, frame, _, _ = run_fold(
                    task, trimmed, arm, fold.index, config, device=device,
                    workdir=workdir / fraction_folder(fraction),
                )  # fmt: skip
                frames.append(frame.assign(fraction=fraction, n_labelled_patients=len(subset)))
                done += 1
    if progress is not None:
        progress("label-efficiency runs done", total, total)
    return pd.concat(frames, ignore_index=True)
