"""Contracts written by evaluation and scoring: metrics.json and the rows of scores.parquet."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

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


class DecisionCurve(Strict):
    """Decision-curve analysis of one yes/no decision: net benefit against the threshold probability.

    Net benefit at threshold t = TP/n - FP/n * t/(1-t), counting scans with probability >= t as positive; treat-all
    is prevalence - (1 - prevalence) * t/(1-t) and treat-none is 0 at every t (not stored)."""

    endpoint: str | None = Field(None, description="the endpoint id (cut ge_<grade>, finding); None: a binary task")
    display: str = Field(description="what the decision is about, e.g. the positive class or 'grade >= 2'")
    n: int = Field(ge=0, description="scans the curve rests on (the denominator of net benefit)")
    n_positive: int = Field(ge=0)
    prevalence: float = Field(ge=0, le=1)
    thresholds: list[float] = Field(description="threshold probabilities t, ascending")
    net_benefit: list[float] = Field(description="the model's net benefit at each threshold")
    treat_all: list[float] = Field(description="net benefit of treating every patient at each threshold")
    useful_thresholds: list[list[float]] = Field(
        default_factory=list,
        description="[first, last] runs of thresholds where the model beats both treat-all and treat-none",
    )
    operating_threshold: float | None = Field(None, description="the frozen operating threshold, when there is one")
    operating_net_benefit: float | None = Field(None, description="the model's net benefit at that threshold")

    @model_validator(mode="after")
    def _parallel(self) -> DecisionCurve:
        if not len(self.thresholds) == len(self.net_benefit) == len(self.treat_all):
            raise ValueError("thresholds, net_benefit and treat_all must have the same length")
        return self


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
    decision_curves: list[DecisionCurve] = Field(
        default_factory=list,
        description="decision-curve analysis per decision: the binary task's positive class, the ordinal decision "
        "cut, each multi-label finding (none for multiclass, which decides by its most probable class)",
    )


class TransferArm(Strict):
    arm: str = Field(
        description="main (the configured recipe), linear_probe, scratch, or features (frozen pretrained features + "
        "a logistic regression per fold)"
    )
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
    seconds_per_fold: float | None = Field(
        None, ge=0, description="median over folds of the fold's fitting time (features arm: the regression fits)"
    )
    feature_seconds: float | None = Field(
        None, ge=0, description="features arm: the one feature extraction shared by all folds; None for other arms"
    )


class EfficiencyPoint(Strict):
    """One arm trained on one share of every fold's training patients: its pooled out-of-fold AUROC."""

    arm: str
    fraction: float = Field(gt=0, le=1, description="share of each fold's training patients the models were fitted on")
    n_labelled_patients: float = Field(ge=1, description="median over folds of the training patients fitted on")
    fold_patients: list[int] = Field(description="training patients fitted on, per fold (tuning patients are extra)")
    auc: Estimate = Field(description="pooled out-of-fold AUROC of the task type, patient-bootstrap 95% CI")


class LabelsSaved(Strict):
    """How many labels a pretrained arm needed to match the from-scratch arm trained on every label."""

    arm: str
    reference_auc: float = Field(description="the scratch arm's out-of-fold AUROC with every label (point estimate)")
    reached_fraction: float | None = Field(
        description="the smallest share at which the arm's AUROC reaches the reference; None: not reached"
    )
    reached_patients: float | None = Field(None, description="median over folds of the patients at that share")
    all_patients: float = Field(description="median over folds of the training patients at share 1.0")


class LabelEfficiency(Strict):
    """The label-efficiency curve, out of fold only: the models trained on fewer labels are not kept, so a locked
    test set cannot be scored with them."""

    evaluated_on: Literal["oof"] = "oof"
    points: list[EfficiencyPoint] = Field(min_length=1)
    saved: list[LabelsSaved] = Field(
        default_factory=list, description="one per pretrained arm, when there is a from-scratch arm to compare with"
    )


class SeedRun(Strict):
    """One training run of the seed replicate set: the artifact and its threshold-free out-of-fold measures."""

    seed: int
    model_version: str
    artifact_manifest_hash: str = Field(pattern=SHA256)
    estimates: list[Estimate] = Field(description="auroc (task summary); binary also auprc and brier")


class SpreadSummary(Strict):
    name: str = Field(description="the estimate, e.g. auroc")
    n_runs: int = Field(ge=2)
    median: float
    minimum: float
    maximum: float
    sd: float = Field(ge=0, description="sample standard deviation over runs (ddof 1)")


class SeedSpread(Strict):
    """How much the out-of-fold results move when only the training seed changes: artifacts trained on the same data
    manifest, preprocessing, task, pretrained weights, code and config except `seed` (checked before use)."""

    evaluated_on: Literal["oof"] = "oof"
    split_shared: bool = Field(
        description="true: every run used the same patient folds (the spread is initialisation, order and "
        "augmentation); false: the seed also drew the folds (the spread includes the fold assignment)"
    )
    runs: list[SeedRun] = Field(min_length=2, description="the evaluated artifact first, then the replicates")
    summary: list[SpreadSummary] = Field(default_factory=list)


class Metrics(ContractModel):
    contract_name: ClassVar[str] = "metrics"
    contract_title: ClassVar[str] = "metrics.json: evaluation results with confidence intervals"

    artifact_manifest_hash: str = Field(pattern=SHA256)
    model_id: str
    model_version: str
    evaluations: list[Evaluation] = Field(min_length=1)
    transfer: list[TransferArm] = Field(default_factory=list)
    label_efficiency: LabelEfficiency | None = Field(
        None, description="AUROC against the number of labelled patients per arm (train config label_fractions)"
    )
    seed_spread: SeedSpread | None = Field(
        None, description="results per training seed when replicate artifacts were given (`--replicate`)"
    )


class ScoreRow(ContractModel):
    """One scored scan, for every task type (contracts/task.py).

    Version 2 adds the task type, every class (or finding) probability and one decision per endpoint under the
    policy, as parallel lists (Parquet stores a list column with the same type in every row; a map of names to
    values would not survive a file that holds rows of several models). The binary columns keep their version 1
    meaning. Version 1 files stay readable with ScoreRowV1."""

    contract_name: ClassVar[str] = "scores"
    contract_version: ClassVar[int] = 2
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
    probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="binary: P(positive class), temperature-scaled when the approved evaluation fitted a temperature; "
        "ordinal: P(grade >= decision cut); multiclass and multilabel: None (see probabilities)",
    )
    decision: str | None = Field(
        description="binary: the decided class (positive when probability >= threshold); ordinal: 'grade >= CUT' or "
        "'grade < CUT' for the decision cut; multiclass: the most probable class; multilabel: the findings at or "
        "above their thresholds joined by '|' ('none': no finding), None unless every finding has a threshold. "
        "None when abstained or when no threshold applies"
    )
    threshold: float | None = Field(
        description="binary: the decision threshold on the same scale as probability; ordinal: the decision cut's "
        "threshold; None for multiclass and multilabel, and without an operating point"
    )
    task_kind: TaskKind = Field(description="binary, multiclass, ordinal or multilabel (the artifact's task)")
    classes: list[str] = Field(min_length=1, description="class, grade (lowest first) or finding names, model order")
    probabilities: list[float] = Field(
        default_factory=list,
        description="one per class (multilabel: per finding, each on its own), same order as classes; binary: "
        "temperature-scaled like probability; empty when the scan could not be scored",
    )
    endpoints: list[str] = Field(
        min_length=1,
        description="the binary decisions the task supports (contracts/task.py endpoints): binary the positive "
        "class; multiclass each class vs rest; ordinal each cut ge_<grade>; multilabel each finding",
    )
    endpoint_probabilities: list[float] = Field(
        default_factory=list, description="P(endpoint), same order as endpoints; empty when the scan was not scored"
    )
    thresholds: list[float | None] = Field(
        description="the threshold of each endpoint under the policy (approved, or provisional when unapproved), same "
        "scale as endpoint_probabilities; None where none applies (multiclass: the argmax decides)"
    )
    decisions: list[bool | None] = Field(
        description="per endpoint: probability >= threshold (multiclass: the class is the most probable one); None "
        "when abstained, not scored, or without a threshold"
    )
    flags: list[str] = Field(default_factory=list)
    abstained: bool
    approved: bool
    trusted: bool = Field(
        False, description="the artifact's signer was checked against a trust anchor (False: development mode)"
    )
    scored_at: str

    @field_validator("thresholds", "decisions", mode="before")
    @classmethod
    def _missing(cls, values: object) -> object:
        """Parquet gives a missing list item back as NaN in a numeric list: it means None."""
        if isinstance(values, list):
            return [None if isinstance(v, float) and math.isnan(v) else v for v in values]
        return values

    @model_validator(mode="after")
    def _parallel(self) -> ScoreRow:
        if len(self.probabilities) not in (0, len(self.classes)):
            raise ValueError("probabilities must have one value per class (or none, when not scored)")
        if len(self.endpoint_probabilities) not in (0, len(self.endpoints)):
            raise ValueError("endpoint_probabilities must have one value per endpoint (or none, when not scored)")
        if len(self.thresholds) != len(self.endpoints) or len(self.decisions) != len(self.endpoints):
            raise ValueError("thresholds and decisions must have one entry per endpoint")
        values = [*self.probabilities, *self.endpoint_probabilities, *(t for t in self.thresholds if t is not None)]
        if any(not 0.0 <= value <= 1.0 for value in values):
            raise ValueError("probabilities and thresholds must lie within [0, 1]")
        return self


# scores.parquet as medtl wrote it before task types (binary columns only): kept so that old files stay readable and
# their schema stays published beside v2 (data_contracts/README.md); nothing writes it any more. No docstring: it
# would change the committed v1 schema, which must stay byte for byte what v1 readers were given.
class ScoreRowV1(ContractModel):
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
