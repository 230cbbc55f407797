"""Contract of a pretrained artifact's record (`metrics/pretraining.json`): what was learned from which scans, how.

Read by `medtl weights list`, by the planner and by the model card; it is the evidence that a backbone never saw a
locked-test patient and how far its loss came down.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256


class DatasetUse(Strict):
    name: str = Field(description="the dataset folder's name (no path)")
    manifest_hash: str = Field(pattern=SHA256)
    fingerprint_hash: str = Field(pattern=SHA256)
    scans: int = Field(ge=0, description="scans pretrained on")
    patients: int = Field(ge=0)
    left_out: dict[str, int] = Field(default_factory=dict, description="scans left out, by reason")
    kept_flags: dict[str, str] = Field(
        default_factory=dict, description="default QC exclusions not applied to this dataset, with why"
    )


class PatientExclusion(Strict):
    rule: str
    locked_test_patients: int = Field(ge=0)
    named_dataset_patients: int = Field(ge=0)
    scans: int = Field(ge=0, description="scans of excluded patients that were left out")
    patients: list[Annotated[str, Field(pattern=PSEUDONYM)]] = Field(
        description="every excluded patient's pseudonym, sorted"
    )


class PretrainEpoch(Strict):
    epoch: int = Field(ge=1)
    loss: float
    lr: float = Field(ge=0)
    seconds: float = Field(ge=0, description="wall time of this epoch's optimisation steps")
    samples_per_second: float = Field(ge=0)


class PretrainingRecord(ContractModel):
    contract_name: ClassVar[str] = "pretraining"
    contract_title: ClassVar[str] = "artifact/metrics/pretraining.json: self-supervised pretraining of a backbone"

    method: Literal["simclr", "masked"]
    method_details: dict[str, Any] = Field(description="the method's settings and the library parts it uses")
    backbone: str
    initial_weights: str = Field(description="where the backbone started: none, or the weight source's name")
    datasets: list[DatasetUse] = Field(min_length=1)
    exclusion: PatientExclusion
    patients_used: list[Annotated[str, Field(pattern=PSEUDONYM)]] = Field(
        description="every pretrained-on patient's pseudonym, sorted: training refuses a locked test set that "
        "shares a patient with them"
    )
    scans: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    steps: int = Field(ge=0, description="optimiser steps taken")
    epochs_configured: int = Field(ge=1)
    epochs_scheduled: int = Field(ge=1, description="after fitting the schedule to the time budget")
    epochs_done: int = Field(ge=0)
    stopped_by: Literal["epochs", "time_budget"]
    time_budget_minutes: float | None = None
    wall_seconds: float = Field(ge=0, description="pretraining wall time, over every resumed part")
    device: str
    curve: list[PretrainEpoch]
    seed: int
    spec_hash: str = Field(pattern=SHA256, description="hash of the preprocessing the pool was read through")
