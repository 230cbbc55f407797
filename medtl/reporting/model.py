"""Everything the report shows, as data: the evaluation writes it, the renderer only lays it out.

Why a separate model: the numbers in the report must be the numbers in metrics.json (a test compares them), so the
renderer computes nothing; and the same data can be rendered as HTML and as PDF.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from medtl.contracts.evaluation import Metrics
from medtl.contracts.task import TaskKind


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Curve(_Part):
    """Points of a curve, e.g. ROC (x = 1 - specificity, y = sensitivity) or precision-recall."""

    x: list[float]
    y: list[float]


class EvaluationCurves(_Part):
    evaluated_on: Literal["oof", "test"]
    endpoint: str | None = Field(
        None, description="the endpoint id the curve is for (a class, a cut ge_<grade>, a finding); None: binary task"
    )
    roc: Curve
    pr: Curve | None = None


class HistogramGroup(_Part):
    label: str = Field(description="the true class (or 'finding present' / 'finding absent')")
    counts: list[int] = Field(description="scans per probability bin")


class ProbabilityHistogram(_Part):
    """How the predicted probability of one decision is distributed among the scans of each true class."""

    evaluated_on: Literal["oof", "test"]
    endpoint: str | None = Field(None, description="the endpoint id; None: the binary task's positive class")
    display: str = Field(description="the probability shown, e.g. 'P(malignant)' or 'grade >= 2'")
    edges: list[float] = Field(description="bin edges from 0 to 1; the last bin includes 1")
    groups: list[HistogramGroup]


class TransferCurve(_Part):
    """Tuning AUROC per epoch of one arm on one fold, with the cumulative seconds (the learning-speed picture)."""

    arm: str
    fold: int
    epochs: list[int]
    tune_auc: list[float | None]
    seconds: list[float]


class FailureCase(_Part):
    kind: Literal["false_positive", "false_negative"]
    scan_id: str = Field(pattern=r"^X-[0-9a-f]{16}$")
    probability: float
    true_class: str
    thumbnail_png: bytes = Field(description="de-identified image with the saliency overlay (PNG, no text chunks)")
    saliency_method: str = Field(description="e.g. Grad-CAM (MONAI), occlusion")
    endpoint: str | None = None


class Cohort(_Part):
    n_patients: int
    n_scans: int
    prevalence: float | None
    classes: list[str]
    modalities: list[str]
    image_kind: str
    excluded_scans: dict[str, int] = Field(default_factory=dict)
    locked_test_patients: int = 0


class Provenance(_Part):
    artifact_manifest_hash: str
    signed_by: str | None = Field(None, description="signing key fingerprint; None = UNSIGNED")
    signer_trusted: bool = Field(False, description="the signer was checked against a configured trust anchor")
    data_manifest_hash: str
    code_version: str
    pretrained: str = Field(description="source, name and sha256 of the pretrained weights, or 'none'")
    pretrained_license: str | None = None
    seed: int
    trained_at: str


class RecipeChoice(_Part):
    key: str = Field(description="config key path, e.g. batch_size")
    value: str
    reason: str


class RecipeCandidate(_Part):
    name: str
    changes: str
    inner_aucs: list[float | None]
    mean_auc: float | None
    chosen: bool


class Recipe(_Part):
    """How the training recipe was chosen (`medtl plan`), and what the run cost against its budget."""

    planned: bool = Field(description="False: a hand-written config, whose values carry no recorded reasons")
    choices: list[RecipeChoice] = Field(default_factory=list)
    candidates: list[RecipeCandidate] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    run: str | None = Field(None, description="wall time, device, and whether the budget was met")


class ReportInput(_Part):
    """One report: the machine-readable metrics plus what a clinician needs to read them."""

    title: str
    model_id: str
    model_version: str
    intended_use: str
    task_kind: TaskKind
    positive_class: str | None
    decision_text: str | None = Field(
        None, description="what acting on the supported decision means, e.g. 'refer' (ordinal: said after the cut)"
    )
    decision_cut_declared: bool | None = Field(
        None, description="ordinal: True when the decision cut was declared, False when it is the default middle grade"
    )
    cohort: Cohort
    metrics: Metrics
    curves: list[EvaluationCurves]
    distributions: list[ProbabilityHistogram] = Field(default_factory=list)
    transfer_curves: list[TransferCurve] = Field(default_factory=list)
    recipe: Recipe | None = None
    failure_cases: list[FailureCase] = Field(default_factory=list)
    limitations: list[str]
    provenance: Provenance
    generated_at: str
    medtl_version: str
