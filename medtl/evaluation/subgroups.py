"""Results broken down by site, scanner maker, sex, age band and modality, with small cells flagged.

A model that works on average can fail for one group; a clinician needs to see each group's numbers with their
uncertainty, and to be told when a group is too small to say anything.
"""

from __future__ import annotations

import pandas as pd

from medtl.contracts.evaluation import Estimate, SubgroupResult
from medtl.contracts.handoff import SUBGROUP_ATTRIBUTES
from medtl.evaluation.metrics import auroc_ci, threshold_metrics

# Manifest columns (copied into the out-of-fold predictions at training) that describe groups of patients.
ATTRIBUTES = SUBGROUP_ATTRIBUTES
MIN_PATIENTS = 20
MIN_EVENTS = 5


def subgroup_results(
    frame: pd.DataFrame, *, score: str, target: str, threshold: float | None, n_boot: int = 1000
) -> list[SubgroupResult]:
    """Per value of each attribute that varies in `frame`: patients, positives, AUROC and threshold metrics."""
    results = []
    for attribute in ATTRIBUTES:
        if attribute not in frame or frame[attribute].nunique(dropna=True) < 2:
            continue
        for value, group in frame.groupby(frame[attribute].fillna("unknown")):
            targets = group[target].to_numpy().astype(int)
            patients = group["patient_id"].to_numpy()
            positive_patients = group.loc[targets == 1, "patient_id"].nunique()
            negative_patients = group.loc[targets == 0, "patient_id"].nunique()
            small = (
                group["patient_id"].nunique() < MIN_PATIENTS
                or positive_patients < MIN_EVENTS
                or negative_patients < MIN_EVENTS
            )
            estimates: list[Estimate] = [
                auroc_ci(targets, group[score].to_numpy(), patients, n_boot=n_boot).estimate("auroc", n=len(group))
            ]
            if threshold is not None:
                estimates += [
                    e
                    for e in threshold_metrics(targets, group[score].to_numpy(), threshold, patients, n_boot=n_boot)
                    if e.name in ("sensitivity", "specificity")
                ]
            results.append(
                SubgroupResult(
                    attribute=attribute,
                    value=str(value),
                    n_patients=int(group["patient_id"].nunique()),
                    n_positive=int(positive_patients),
                    small_cell=bool(small),
                    estimates=estimates,
                )
            )
    return results
