"""Contracts between ingest, training and evaluation: the persisted cross-validation splits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256


class Fold(Strict):
    """One fold, by patient pseudonym. `tune` is carved from the training side for early stopping."""

    index: int = Field(ge=0)
    train: list[str] = Field(description="patients the model is fitted on")
    tune: list[str] = Field(description="patients for early stopping / model selection (from the training side)")
    heldout: list[str] = Field(description="patients predicted out-of-fold; never used to choose anything")


class Splits(ContractModel):
    """A persisted split: later runs reuse it so that every arm and every re-run sees the same patients."""

    contract_name: ClassVar[str] = "splits"
    contract_title: ClassVar[str] = "splits.json: patient-grouped cross-validation folds"

    method: str = Field(description="e.g. stratified_group_kfold, or manual for a hand-written file")
    group_by: Literal["patient"] = "patient"
    stratify_by: str | None = "label"
    seed: int
    n_folds: int = Field(ge=2)
    manifest_hash: str = Field(pattern=SHA256)
    folds: list[Fold]
    locked_test: list[str] = Field(
        default_factory=list, description="patients of the locked test set; scored once, after model selection"
    )


__all__ = ["PSEUDONYM", "Fold", "Splits"]
