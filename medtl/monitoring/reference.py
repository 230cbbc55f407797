"""The training reference a night is compared with, read from the verified artifact and nothing else.

What the artifact carries: the fingerprint of the training data (modality counts; per modality the p05 / median /
p95 of spacing and shape over scans), the out-of-fold predictions of the main arm (one per training scan, by a
model that never saw it: the score distribution the evaluation validated, and the manufacturer of each scan) and
the feature-outlier rule (its stated false-flag rate says how often a training-like scan is flagged). The out-of-fold
probabilities go through the same policy scoring applies (approved or provisional thresholds, the evaluation's
temperature), so a night's scores and positive rate and their reference are on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medtl.artifacts import VerifiedArtifact
from medtl.artifacts.contents import ArtifactContents
from medtl.contracts.ingest import GroupStats
from medtl.scoring.inputs import manufacturer_category
from medtl.scoring.score import OOD_FLAGS, artifact_policy

MAIN_ARM = "main"  # training's configured recipe (medtl.training.cv.MAIN_ARM): the model that is approved


@dataclass
class Reference:
    """Training-side numbers of every check; plain values so that tests can build one without an artifact."""

    image_kind: str
    modalities: dict[str, int]
    manufacturers: dict[str, int] | None  # None: the training rows name no manufacturer
    groups: list[GroupStats]
    endpoints: list[str]
    scores: dict[str, np.ndarray]  # endpoint -> out-of-fold probabilities on the scoring scale
    positives: dict[str, tuple[int, int]]  # endpoint -> (decided positive, decided) at the scoring thresholds
    flag_tolerance: dict[str, float] = field(default_factory=dict)  # flag -> the rate training-like scans reach

    @property
    def n(self) -> int:
        return max((len(v) for v in self.scores.values()), default=0)

    def group_for(self, image_kind: str, modality: str) -> GroupStats | None:
        """The fingerprint group of a scan's kind and modality, else the largest group of the artifact's kind."""
        for group in self.groups:
            if group.image_kind == image_kind and group.modality == modality:
                return group
        same_kind = [g for g in self.groups if g.image_kind == self.image_kind]
        return max(same_kind, key=lambda g: g.n_scans) if same_kind else None


def training_reference(verified: VerifiedArtifact, *, flag_tolerance: float) -> Reference:
    contents = ArtifactContents(verified, action="monitored")
    policy = artifact_policy(verified)
    oof = contents.oof
    main = oof[oof["arm"] == MAIN_ARM].reset_index(drop=True)
    ends = [e.id for e in policy.endpoints]
    matrix = _class_probabilities(main, policy.kind, policy.classes, policy.positive)
    rows = [policy.columns(matrix[i], abstained=False) for i in range(len(matrix))]
    scores = {end: np.array([row["endpoint_probabilities"][j] for row in rows]) for j, end in enumerate(ends)}
    positives = {}
    for j, end in enumerate(ends):
        decided = [row["decisions"][j] for row in rows if row["decisions"][j] is not None]
        if decided:
            positives[end] = (int(sum(decided)), len(decided))
    image_kind = verified.metadata["input"]["image_kind"]
    tolerance = {flag: flag_tolerance for flag in OOD_FLAGS} | {
        "feature_outlier": max(flag_tolerance, contents.ood_summary.false_flag_rate),
        **_training_shares(contents.fingerprint.groups, image_kind, verified.metadata["input"]["modalities"],
                           flag_tolerance),
    }  # fmt: skip
    return Reference(
        image_kind=image_kind,
        modalities=dict(contents.fingerprint.modalities),
        manufacturers=_manufacturers(main),
        groups=list(contents.fingerprint.groups),
        endpoints=ends,
        scores=scores,
        positives=positives,
        flag_tolerance=tolerance,
    )


def _manufacturers(main: pd.DataFrame) -> dict[str, int] | None:
    if "manufacturer" not in main or main["manufacturer"].isna().all():
        return None
    counts = pd.Series([manufacturer_category(v) for v in main["manufacturer"]]).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _training_shares(
    groups: list[GroupStats], image_kind: str, modalities: list[str], floor: float
) -> dict[str, float]:
    """How often the training data itself would carry the kind and modality flags: a site whose exports always held
    some 2D images beside the volumes sees them every night, and that is not drift (the modality mix check sees a
    change in their share)."""
    total = sum(g.n_scans for g in groups)
    if not total:
        return {}
    other_kind = sum(g.n_scans for g in groups if g.image_kind != image_kind) / total
    unseen = sum(g.n_scans for g in groups if g.image_kind == image_kind and g.modality not in modalities) / total
    return {"kind_mismatch": max(floor, other_kind), "modality_unseen": max(floor, unseen)}


def _class_probabilities(main: pd.DataFrame, kind: str, classes: list[str], positive: str | None) -> np.ndarray:
    """(N, K) out-of-fold probabilities in the model's class order. A binary task reads its `probability` column,
    as evaluation does (the per-class columns of a binary task may hold the positive class only)."""
    if kind == "binary":
        index = classes.index(positive) if positive in classes else 1
        p = main["probability"].to_numpy(dtype=float)
        matrix = np.repeat((1 - p)[:, None], len(classes), axis=1)
        matrix[:, index] = p
        return matrix
    return main[[f"p_{name}" for name in classes]].to_numpy(dtype=float)
