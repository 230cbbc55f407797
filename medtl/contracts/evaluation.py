"""Contracts written by evaluation and scoring: metrics.json and the rows of scores.parquet."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256
from medtl.contracts.task import TaskKind


class Estimate(Strict):
    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = Field(None, description="e.g. percentile bootstrap over patients (2000), wilson")
    n: int | None = Field(None, description="the count the estimate rests on (patients, positives, ...)")


class OperatingPoint(Strict):
    rule: str = Field(description="e.g. youden, sensitivity>=0.95; declared before any test data is opened")
    threshold: float = Field(description="decision threshold on the positive-class probability")
    chosen_on: Literal["oof"] = Field(description="chosen on out-of-fold predictions, then frozen")
    pooling: Literal["pooled", "fold_median"] = Field(
        "pooled",
        description="pooled: the rule on all out-of-fold predictions together; fold_median: the median of the "
        "thresholds the rule picks on each fold's own held-out predictions (used when the folds score on different "
        "scales, i.e. the pooling gap is flagged)",
    )


class CalibrationBin(Strict):
    lower: float
    upper: float
    count: int = Field(ge=0)
    mean_predicted: float | None
    observed: float | None


class Calibration(Strict):
    brier: float
    ece: float
    intercept: float | None = Field(None, description="calibration-in-the-large (logistic recalibration)")
    slope: float | None = Field(None, description="calibration slope; 1 is ideal, <1 overconfident")
    bins: list[CalibrationBin] = Field(default_factory=list)
    temperature: float | None = Field(None, description="temperature fitted on OOF data, when scaling was applied")
    after_scaling: dict[str, float | None] | None = Field(None, description="brier, ece, intercept, slope after")


class SubgroupResult(Strict):
    attribute: str
    value: str
    n_patients: int = Field(ge=0)
    n_positive: int = Field(ge=0)
    small_cell: bool = Field(description="too few patients or events for a stable estimate")
    estimates: list[Estimate]


class EndpointResult(Strict):
    """One binary decision a task supports (contracts/task.py: the positive class, a class vs the rest, a grade cut
    "grade >= k", or one finding), measured as a binary task with its own operating point chosen on OOF."""

    endpoint: str = Field(description="machine name: the class, the finding, or ge_<grade>")
    display: str = Field(description="how the report says it, e.g. 'grade >= 2', 'finding effusion'")
    role: Literal["positive_class", "class", "cut", "finding"]
    is_decision: bool = Field(
        False, description="the decision the model supports (page one of the report; the approved threshold)"
    )
    n_patients: int = Field(ge=0)
    n_positive: int = Field(ge=0, description="patients positive for this endpoint")
    prevalence: float | None
    operating_point: OperatingPoint | None = Field(
        None, description="None for one-vs-rest class endpoints of a multiclass task (the argmax decides)"
    )
    estimates: list[Estimate] = Field(description="auroc, auprc, and at the operating point sensitivity, ...")
    confusion: list[list[int]] = Field(default_factory=list, description="2x2: rows truth (neg, pos), cols predicted")
    calibration: Calibration | None = None
    subgroups: list[SubgroupResult] = Field(default_factory=list)


class Evaluation(Strict):
    """Results on one set of predictions: the out-of-fold ones, or the locked test set scored once.

    Binary tasks keep their one decision in the top-level fields. Other task types put task-level measures in
    `estimates` (macro AUROC, accuracy; ordinal: quadratic weighted kappa and mean absolute grade error; multiclass:
    multi-class Brier and class-wise ECE) and each binary decision in `endpoints`; `operating_point` then repeats the
    decision endpoint's (ordinal), which is the threshold a reviewer approves."""

    evaluated_on: Literal["oof", "test"]
    task_kind: TaskKind = "binary"
    n_patients: int = Field(ge=0)
    n_scans: int = Field(ge=0)
    prevalence: float | None
    operating_point: OperatingPoint | None
    estimates: list[Estimate]
    classes: list[str]
    confusion: list[list[int]] = Field(description="rows = true class, columns = predicted class")
    calibration: Calibration | None = None
    subgroups: list[SubgroupResult] = Field(default_factory=list)
    endpoints: list[EndpointResult] = Field(default_factory=list)


class TransferArm(Strict):
    arm: str = Field(description="main (the configured recipe), linear_probe or scratch")
    strategy: str
    pretrained: str = Field(description="weight source and name, e.g. artifact:demo-source; none for scratch")
    auc: Estimate
    epochs_to_scratch_best: float | None = Field(None, description="median over folds; None when never reached")
    seconds_to_scratch_best: float | None = None
    folds_reaching_scratch_best: int = 0
    fold_aucs: list[float | None] = Field(default_factory=list, description="each fold's own held-out AUROC")
    pooling_gap: float | None = Field(
        None, description="median per-fold AUROC minus the pooled out-of-fold AUROC; large: fold scales differ"
    )


class Metrics(ContractModel):
    contract_name: ClassVar[str] = "metrics"
    contract_title: ClassVar[str] = "metrics.json: evaluation results with confidence intervals"

    artifact_manifest_hash: str = Field(pattern=SHA256)
    model_id: str
    model_version: str
    evaluations: list[Evaluation] = Field(min_length=1)
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
    trusted: bool = Field(
        False, description="the artifact's signer was checked against a trust anchor (False: development mode)"
    )
    scored_at: str
