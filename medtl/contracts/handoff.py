"""What training hands to evaluation and scoring inside the artifact, and what evaluation hands to approval and
scoring through the audit log: out-of-fold rows (also those of the label-efficiency runs), the transfer metrics, the
OOD reference's summary and the payloads of `evaluated` and `scored` events.

Why contracts for files that never leave the artifact: three stages read them, written by different versions of
medtl over an artifact's life; a renamed key found by a dict lookup fails late and far from its cause, a contract
fails at the boundary and names the key. medtl/artifacts/contents.py is the one reader.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from medtl.contracts.artifact import AuditEvent
from medtl.contracts.base import ContractModel, Strict, validate_document
from medtl.contracts.evaluation import OperatingPoint
from medtl.contracts.ingest import PSEUDONYM, SHA256

_SCORE_COLUMN = re.compile(r"^[py]_[A-Za-z0-9][A-Za-z0-9_.+\-]*$")


# Non-identifying facts an out-of-fold row carries so that the report can break results down by them (training
# writes them, evaluation groups by them).
SUBGROUP_ATTRIBUTES = ("site", "manufacturer", "sex", "age_band", "modality")


class OofRow(ContractModel):
    """predictions/oof.parquet: one held-out scan of one arm's fold, predicted by the model that never saw it.

    Besides the fixed columns, each class or finding has p_<name> (its probability); a multi-label task's rows also
    have y_<name> (1 when the scan carries the finding). No other column is allowed."""

    contract_name: ClassVar[str] = "oof_predictions"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "artifact/predictions/oof.parquet: out-of-fold predictions, one scan per row"
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "patternProperties": {
                r"^p_": {"type": "number", "minimum": 0, "maximum": 1},
                r"^y_": {"type": "integer", "minimum": 0, "maximum": 1},
            }
        },
    )

    scan_id: str = Field(pattern=PSEUDONYM)
    patient_id: str = Field(pattern=PSEUDONYM)
    study_id: str | None = Field(None, pattern=PSEUDONYM)
    label: str
    target: int = Field(ge=-1, description="class index; -1 for multi-label rows (their truth is in y_<finding>)")
    fold: int = Field(ge=0)
    arm: str = Field(min_length=1)
    probability: float | None = Field(None, ge=0, le=1, description="binary: P(positive class)")
    site: str | None = None
    manufacturer: str | None = None
    sex: str | None = None
    age_band: str | None = None
    modality: str | None = None

    @model_validator(mode="after")
    def _score_columns(self) -> OofRow:
        extra = self.model_extra or {}
        for name, value in extra.items():
            if not _SCORE_COLUMN.match(name):
                raise ValueError(f"column {name!r} is not allowed (only p_<class> and y_<finding> besides the fixed)")
            if name.startswith("p_") and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a probability")
            if name.startswith("y_") and value not in (0, 1):
                raise ValueError(f"{name} must be 0 or 1")
        if not any(name.startswith("p_") for name in extra):
            raise ValueError("a row needs at least one p_<class> column")
        return self


class LabelEfficiencyRow(OofRow):
    """metrics/label_efficiency.parquet: one held-out scan of one arm's fold, predicted by a model trained on a share
    of that fold's training patients (medtl/training/fractions.py); the rows of share 1.0 repeat the out-of-fold
    predictions, so the file holds the whole label-efficiency curve. Columns as in the out-of-fold predictions, plus
    the share and the number of training patients the model was fitted on."""

    contract_name: ClassVar[str] = "label_efficiency"
    contract_title: ClassVar[str] = (
        "artifact/metrics/label_efficiency.parquet: out-of-fold predictions of models trained on fewer labels"
    )

    fraction: float = Field(gt=0, le=1, description="share of the fold's training patients the model was fitted on")
    n_labelled_patients: int = Field(ge=1, description="training patients fitted on (the tuning patients are extra)")


class EpochRecord(Strict):
    epoch: int = Field(ge=1)
    train_loss: float | None = None
    tune_auc: float | None = None
    tune_loss: float | None = None
    seconds: float = Field(ge=0, description="since the fold began: its optimiser steps and tuning predictions")
    step_seconds: float | None = Field(
        None, ge=0, description="the part of `seconds` spent in optimiser steps (the rest: tuning predictions)"
    )


class CandidateC(Strict):
    c: float = Field(gt=0)
    tune_auc: float | None
    tune_loss: float | None


class FeatureFit(Strict):
    """The features arm on one fold: a logistic regression on frozen pretrained features (training/features_arm.py)."""

    c: float = Field(gt=0, description="inverse L2 strength chosen by the tuning patients' AUROC")
    grid: list[CandidateC] = Field(min_length=1, description="every candidate C with its tuning AUROC and loss")
    feature_seconds: float = Field(ge=0, description="the one feature extraction of the run, shared by all folds")
    fit_seconds: float = Field(ge=0, description="this fold's regression fits (every candidate C)")
    n_features: int = Field(ge=1)


class FoldTransfer(Strict):
    fold: int = Field(ge=0)
    heldout_auc: float | None
    best_epoch: int = Field(ge=0)
    best_tune_auc: float | None
    scratch_best_tune_auc: float | None = None
    epochs_to_scratch_best: int | None = None
    seconds_to_scratch_best: float | None = None
    curve: list[EpochRecord] = Field(default_factory=list)
    seconds: float | None = Field(None, ge=0, description="the fold's fitting time (training, or regression fits)")
    features: FeatureFit | None = Field(None, description="the features arm only")


class ArmTransfer(Strict):
    """One arm over all folds: pooled and per-fold AUROC and how fast it reached the scratch arm's best."""

    arm: str
    strategy: str
    pretrained: dict[str, Any] = Field(description="the weight source's provenance (medtl.models records it)")
    oof_auc: float | None = Field(description="pooled out-of-fold AUROC of the task type (macro for non-binary)")
    folds: list[FoldTransfer]
    median_epochs_to_scratch_best: float | None = None
    folds_reaching_scratch_best: int = Field(0, ge=0)
    median_fold_auc: float | None = None
    pooling_gap: float | None = None
    pooling_gap_flagged: bool = False
    seconds_per_fold: float | None = Field(None, ge=0, description="median over folds of the fold's fitting time")


class TransferRecord(ContractModel):
    contract_name: ClassVar[str] = "transfer_metrics"
    contract_title: ClassVar[str] = "artifact/metrics/transfer.json: every arm's folds, curves and pooling gap"

    arms: list[ArmTransfer] = Field(min_length=1)

    def arm(self, name: str) -> ArmTransfer | None:
        return next((entry for entry in self.arms if entry.arm == name), None)


class KnnStage(Strict):
    module: str = Field(description="the network module whose pooled output the stage's features are")
    scale: float = Field(gt=0, description="the stage's median held-out k-NN distance; distances are divided by it")


class KnnSummary(Strict):
    """The multi-layer nearest-neighbour rule (medtl/training/feature_ood.py); its banks are the `knn.<stage>`
    tensors of ood/features.safetensors."""

    threshold: float = Field(ge=0, description="scores above this flag a scan as a feature outlier")
    false_flag_rate: float = Field(gt=0, lt=1, description="the stated share of in-distribution scans flagged")
    k: int = Field(ge=1, description="the k-th nearest training scan gives the distance")
    n: int = Field(ge=1, description="training scans the rule used: those the bank was drawn from and the calibration")
    bank: int = Field(ge=1, description="training scans kept in each stage's bank")
    stages: dict[str, KnnStage] = Field(min_length=1)
    calibration: str = Field(description="which scans the threshold's quantile was taken over")
    calibration_n: int = Field(ge=1)


class OodReferenceSummary(ContractModel):
    """ood/features.json: how the feature reference in ood/features.safetensors decides 'unlike training'."""

    contract_name: ClassVar[str] = "ood_reference"
    contract_title: ClassVar[str] = "artifact/ood/features.json: the scoring-time feature outlier rule"

    threshold: float = Field(ge=0, description="Mahalanobis distances above this flag a scan (flag: mahalanobis)")
    n: int = Field(ge=1, description="training scans the reference was fitted on")
    components: int = Field(ge=1)
    quantile: float = Field(gt=0, lt=1)
    metric: str
    flag: Literal["mahalanobis", "knn_multilayer"] = Field(
        "mahalanobis",
        description="the rule that sets `feature_outlier` at scoring; artifacts sealed before knn_multilayer have "
        "only the Mahalanobis reference",
    )
    knn: KnnSummary | None = Field(None, description="the multi-layer nearest-neighbour rule, when flag names it")

    @property
    def false_flag_rate(self) -> float:
        """The share of in-distribution scans the rule in force is calibrated to flag (what monitoring expects)."""
        return self.knn.false_flag_rate if self.flag == "knn_multilayer" and self.knn else 1.0 - self.quantile

    @model_validator(mode="after")
    def _rule_present(self) -> OodReferenceSummary:
        if self.flag == "knn_multilayer" and self.knn is None:
            raise ValueError("flag knn_multilayer needs its `knn` section")
        return self


class EvaluatedPayload(ContractModel):
    """The payload of an `evaluated` audit event: which report files it produced (a reviewer approves one of them)
    and the operating points chosen on out-of-fold predictions, which scoring applies once approved."""

    contract_name: ClassVar[str] = "evaluated_payload"
    contract_title: ClassVar[str] = "artifact/audit.jsonl: the payload of an `evaluated` event"

    files: dict[str, str] = Field(description="report file name -> sha256")
    operating_point: OperatingPoint | None = Field(
        None, description="the decision the model supports (binary; ordinal: the decision cut); None otherwise"
    )
    operating_points: dict[str, OperatingPoint] = Field(
        default_factory=dict, description="every endpoint with a threshold, by endpoint id (contracts/task.py)"
    )
    temperature: float | None = Field(None, gt=0)
    test_manifest_hash: str | None = Field(None, pattern=SHA256)
    evaluated_on: list[Literal["oof", "test"]] = Field(min_length=1)

    @model_validator(mode="after")
    def _files_are_hashes(self) -> EvaluatedPayload:
        if not all(re.fullmatch(SHA256, digest) for digest in self.files.values()):
            raise ValueError("files must map names to sha256 digests")
        return self


class ScoredPayload(ContractModel):
    """The payload of a `scored` audit event: counts and the scores file's hash, never a patient's identity."""

    contract_name: ClassVar[str] = "scored_payload"
    contract_title: ClassVar[str] = "artifact/audit.jsonl: the payload of a `scored` event"

    model_config = ConfigDict(extra="allow")  # callers add context such as the PACS query's counts

    scored: int = Field(ge=0)
    already_scored: int = Field(ge=0)
    abstained: int = Field(ge=0)
    flagged: int = Field(ge=0)
    scores_sha256: str | None = Field(None, pattern=SHA256)
    approved: bool
    trusted: bool
    policy: str
    tta: bool
    sr_written: int = Field(0, ge=0)
    sr_omitted_attributes: dict[str, int] = Field(default_factory=dict)
    sr_failed: int = Field(0, ge=0)


def evaluated_payload(event: AuditEvent) -> EvaluatedPayload:
    """The typed payload of an `evaluated` event; DataContractError names the event and the key that is wrong."""
    return validate_document(EvaluatedPayload, event.payload, where=f"audit event {event.index} (evaluated)")
