"""Contracts written by evaluation and scoring: metrics.json and the rows of scores.parquet."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256


class Estimate(Strict):
    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = Field(None, description="e.g. patient bootstrap (2000), wilson")
    n: int | None = None


class OperatingPoint(Strict):
    rule: str = Field(description="e.g. youden, sensitivity>=0.95")
    threshold: float
    chosen_on: Literal["oof", "tuning"]


class Calibration(Strict):
    brier: float
    ece: float
    intercept: float | None = None
    slope: float | None = None
    temperature: float | None = None


class SubgroupResult(Strict):
    attribute: str
    value: str
    n_patients: int = Field(ge=0)
    small_cell: bool
    estimates: list[Estimate]


class TransferArm(Strict):
    arm: str = Field(description="e.g. finetune, linear_probe, scratch")
    auc: Estimate
    epochs_to_scratch_best: int | None = None
    seconds_to_scratch_best: float | None = None


class Metrics(ContractModel):
    contract_name: ClassVar[str] = "metrics"
    contract_title: ClassVar[str] = "metrics.json: evaluation results with confidence intervals"

    artifact_manifest_hash: str = Field(pattern=SHA256)
    evaluated_on: Literal["oof", "test"]
    n_patients: int = Field(ge=0)
    n_scans: int = Field(ge=0)
    prevalence: float | None
    operating_point: OperatingPoint | None
    estimates: list[Estimate]
    calibration: Calibration | None = None
    subgroups: list[SubgroupResult] = Field(default_factory=list)
    transfer: list[TransferArm] = Field(default_factory=list)


class ScoreRow(ContractModel):
    contract_name: ClassVar[str] = "scores"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "scores.parquet: one scored scan per row"

    scan_id: str = Field(pattern=PSEUDONYM)
    series_id: str = Field(pattern=PSEUDONYM)
    study_id: str | None = Field(None, pattern=PSEUDONYM)
    patient_id: str = Field(pattern=PSEUDONYM)
    input_hash: str = Field(pattern=SHA256)
    model_id: str
    model_version: str
    artifact_hash: str = Field(pattern=SHA256)
    probability: float | None = Field(None, ge=0, le=1)
    decision: str | None
    threshold: float | None
    flags: list[str] = Field(default_factory=list)
    abstained: bool
    approved: bool
    scored_at: str
