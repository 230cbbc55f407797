"""The `plan:` section of a planned training config: what the planner saw, measured and chose, and why.

Why it travels inside the train config (and so into the artifact's resolved config.yaml) rather than beside it: a
recipe separated from its reasons cannot be reviewed. The report shows the reasons and the candidate comparison.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import SHA256
from medtl.contracts.task import TaskKind


class PlanFacts(Strict):
    """What the rules were given: the trainable part of the dataset after the task's filters (test side excluded)."""

    manifest_hash: str = Field(pattern=SHA256)
    image_kind: str
    spatial_dims: int = Field(ge=2, le=3)
    native_shape: list[int] = Field(description="the ingest preprocessing's network input shape")
    channels: int = Field(ge=1)
    classes: list[str]
    scans_per_class: dict[str, int] = Field(description="development scans (train and validation) per class")
    n_patients: int = Field(ge=0, description="development patients (the locked test side is not counted)")
    minority_share: float = Field(
        ge=0,
        le=1,
        description="the rarest class's share of the scans; multilabel: the rarest finding's (presence or "
        "absence, whichever is rarer)",
    )
    task_kind: TaskKind = Field("binary", description="binary, multiclass, ordinal or multilabel")
    n_scans: int | None = Field(
        None, ge=0, description="development scans (multilabel: scans_per_class counts findings, not scans)"
    )
    minority_patients: int | None = Field(
        None, ge=0, description="patients with the rarest class (or the rarer side of the rarest finding)"
    )
    finding_prevalence: dict[str, float] | None = Field(
        None, description="multilabel: each finding's share of the development scans"
    )


class Hardware(Strict):
    device: str = Field(description="cpu or cuda")
    name: str = Field(description="the GPU's name, or 'cpu'")
    cpus: int = Field(ge=1)


class WeightsCheck(Strict):
    """One pretrained-weight source the planner looked for, and what it found (file states from the catalogue)."""

    source: str
    label: str
    state: str = Field(description="missing / present / verified / mismatch / unpinned")
    usable: bool


class Probe(Strict):
    """Seconds measured on this machine for the chosen network, input size and batch size."""

    input_shape: list[int]
    batch_size: int = Field(ge=1)
    seconds_per_step: float = Field(
        gt=0,
        description="median of one optimiser step as the loop runs it, with an epoch's start and a batch's collation",
    )
    seconds_per_image_predict: float = Field(gt=0, description="one image through one view of a prediction")
    seconds_per_predict_batch: float = Field(
        0.0, ge=0, description="fixed cost of one batch through one view of a prediction (0 in plans made before it)"
    )


class Estimate(Strict):
    train_seconds: float = Field(ge=0, description="upper bound: every fold and arm runs its whole schedule")
    budget_seconds: float | None = Field(None, gt=0)
    fits_budget: bool | None = None


class Candidate(Strict):
    """One recipe of the empirical stage and how it scored by inner cross-validation on development patients."""

    name: str
    changes: dict[str, str] = Field(description="config keys changed from the rule-based recipe")
    inner_aucs: list[float | None]
    mean_auc: float | None
    seconds: float = Field(ge=0)
    chosen: bool


class PlanRecord(ContractModel):
    """How `medtl plan` chose a training config: every decision is a key path of the config with its reason."""

    contract_name: ClassVar[str] = "plan_record"
    contract_title: ClassVar[str] = "the plan: section of plan.yaml and of an artifact's config.yaml"

    planner_version: int = Field(ge=1)
    created_at: str
    budget_minutes: float | None = Field(None, gt=0, description="the time budget for planning and training")
    planning_seconds: float = Field(0.0, ge=0, description="wall time spent planning (probes, search)")
    facts: PlanFacts
    hardware: Hardware
    weights: list[WeightsCheck] = Field(default_factory=list)
    probe: Probe | None = None
    estimate: Estimate
    reasons: dict[str, str] = Field(description="config key path -> why this value")
    candidates: list[Candidate] = Field(default_factory=list, description="empty when no empirical stage ran")
    notes: list[str] = Field(default_factory=list, description="what the planner could not do, and why")
