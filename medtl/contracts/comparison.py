"""Contract of `medtl compare`: comparison.json, the paired champion/challenger comparison on one locked test set.

Everything a later promotion checks is here: both artifacts' sealed manifest hashes, the test data's manifest hash,
the non-inferiority margin declared before the run, the differences with their CIs and the verdict.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medtl.contracts.artifact import ISO_TIME, TaskSpec
from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.evaluation import Estimate
from medtl.contracts.ingest import SHA256

Verdict = Literal["superior", "non_inferior", "inconclusive", "inferior"]


class ComparedArtifact(Strict):
    artifact_manifest_hash: str = Field(pattern=SHA256)
    model_id: str
    model_version: str
    trusted: bool = Field(description="its signer was checked against a trust anchor (False: development mode)")
    approval: Literal["approved", "rejected", "undecided"] = Field(description="decisions.judge's status at the run")
    thresholds: dict[str, float] = Field(description="endpoint id -> the threshold its decisions were made at")
    thresholds_approved: bool = Field(description="false: provisional thresholds of an unapproved evaluation")


class PairedDifference(Strict):
    """One statistic of both models on the same patients; difference = challenger - champion."""

    name: str = Field(description="auroc, sensitivity, specificity, accuracy, balanced_accuracy")
    scope: str = Field(description="what it measures: the decision endpoint, macro over classes, mean over findings")
    champion: Estimate
    challenger: Estimate
    difference: Estimate
    verdict: Verdict | None = Field(None, description="against the declared margin, where one applies")


class DeLongTest(Strict):
    """DeLong's paired AUROC test (scans as independent units): a cross-check of the primary bootstrap."""

    champion_auroc: float
    challenger_auroc: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float | None = Field(description="two-sided, H0: equal AUROC; None when the difference has no variance")


class DecisionAgreement(Strict):
    """Scans by whether each model's decision was right (decision endpoint), with the exact McNemar test."""

    endpoint: str
    both_correct: int = Field(ge=0)
    champion_only_correct: int = Field(ge=0)
    challenger_only_correct: int = Field(ge=0)
    both_wrong: int = Field(ge=0)
    mcnemar_p: float | None


class Comparison(ContractModel):
    contract_name: ClassVar[str] = "comparison"
    contract_title: ClassVar[str] = "comparison.json: paired champion/challenger comparison on one locked test set"

    champion: ComparedArtifact
    challenger: ComparedArtifact
    task: TaskSpec
    test_manifest_hash: str = Field(pattern=SHA256, description="content hash of the locked test data's manifest")
    n_patients: int = Field(ge=0)
    n_scans: int = Field(ge=0)
    margin: float = Field(ge=0, le=1, description="non-inferiority margin on the AUROC, declared before the run")
    decision_margin: float | None = Field(
        None, ge=0, le=1, description="margin on the decision statistics; None: they are reported, not judged"
    )
    method: Literal["paired patient bootstrap"] = "paired patient bootstrap"
    n_boot: int = Field(ge=1)
    seed: int
    auroc: PairedDifference
    decisions: list[PairedDifference]
    delong: DeLongTest | None = Field(None, description="binary and ordinal (decision cut) tasks only")
    agreement: DecisionAgreement | None = None
    verdict: Verdict = Field(description="the challenger's verdict: AUROC, and the decisions when a margin is declared")
    proposed: bool = Field(description="true when the challenger may be put forward for sign-off (non-inferior)")
    reasons: list[str] = Field(description="why it is or is not proposed, in words")
    compared_at: str = Field(pattern=ISO_TIME)
    medtl_version: str
