"""The one typed reader of what an artifact's training run handed on: every file that crosses the train → evaluate →
score boundary is read here, through its contract, from a verified artifact (its bytes already hash-checked).

Why one reader: evaluation, scoring and the report used to look these files up by name and read keys from dicts; a
file written by another medtl version then failed deep inside a metric. Here it fails on opening, naming the file
and the key (DataContractError), and every consumer gets the same typed object.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import pandas as pd

from medtl.artifacts.layout import (
    FINGERPRINT,
    LABEL_EFFICIENCY,
    LINEAGE,
    OOD_FEATURES,
    OOD_SUMMARY,
    OOF_PREDICTIONS,
    PREPROCESSING,
    PRETRAINING,
    SPLITS,
    TRANSFER_METRICS,
)
from medtl.artifacts.reader import VerifiedArtifact
from medtl.contracts import PreprocessingSpec, validate_document
from medtl.contracts.artifact import ArtifactMetadata, TaskSpec
from medtl.contracts.base import validate_frame
from medtl.contracts.handoff import LabelEfficiencyRow, OodReferenceSummary, OofRow, TransferRecord
from medtl.contracts.ingest import Fingerprint
from medtl.contracts.lineage import Lineage
from medtl.contracts.pretraining import PretrainingRecord
from medtl.contracts.training import Splits
from medtl.errors import ConfigError

_HEADER = ("contract", "contract_version")


def _document(data: Any) -> Any:
    """A JSON document without its contract header (artifacts sealed before the header was written have none)."""
    return {k: v for k, v in data.items() if k not in _HEADER} if isinstance(data, dict) else data


def pretraining_record(verified: VerifiedArtifact) -> PretrainingRecord:
    """A pretrained artifact's record (metrics/pretraining.json), through its contract; the one reader of that file
    (ArtifactContents is for models and refuses a pretrained backbone)."""
    return validate_document(PretrainingRecord, _document(verified.read_json(PRETRAINING)), where=PRETRAINING)


class ArtifactContents:
    """Typed views of a verified artifact's files; each is read and checked once, on first use."""

    def __init__(self, verified: VerifiedArtifact, *, action: str = "evaluated or scored") -> None:
        verified.require_model(action)
        self.verified = verified

    @cached_property
    def metadata(self) -> ArtifactMetadata:
        return self.verified.metadata_model()

    @property
    def task(self) -> TaskSpec:
        task = self.metadata.task
        if task is None:  # excluded by require_model and the metadata contract; kept for type checkers
            raise ConfigError("the artifact names no task", where=self.verified.folder.name)
        return task

    @cached_property
    def oof(self) -> pd.DataFrame:
        return validate_frame(OofRow, self.verified.read_table(OOF_PREDICTIONS), where=OOF_PREDICTIONS)

    @cached_property
    def label_efficiency(self) -> pd.DataFrame | None:
        """Out-of-fold predictions of the arms trained on shares of the labels; None when none were configured."""
        if LABEL_EFFICIENCY not in self.verified.files:
            return None
        return validate_frame(LabelEfficiencyRow, self.verified.read_table(LABEL_EFFICIENCY), where=LABEL_EFFICIENCY)

    @property
    def has_lineage(self) -> bool:
        """False for artifacts sealed before training recorded what the starting weights learnt from."""
        return LINEAGE in self.verified.files

    @cached_property
    def lineage(self) -> Lineage:
        """The patients the model learnt from through its starting weights (none recorded: an empty lineage)."""
        if not self.has_lineage:
            return Lineage()
        return validate_document(Lineage, _document(self.verified.read_json(LINEAGE)), where=LINEAGE)

    @cached_property
    def transfer(self) -> TransferRecord:
        data = _document(self.verified.read_json(TRANSFER_METRICS))
        if isinstance(data, list):  # artifacts sealed before the contract: a bare list of arms
            data = {"arms": data}
        return validate_document(TransferRecord, data, where=TRANSFER_METRICS)

    @cached_property
    def splits(self) -> Splits:
        return validate_document(Splits, _document(self.verified.read_json(SPLITS)), where=SPLITS)

    @cached_property
    def preprocessing(self) -> PreprocessingSpec:
        return validate_document(
            PreprocessingSpec, _document(self.verified.read_json(PREPROCESSING)), where=PREPROCESSING
        )

    @cached_property
    def fingerprint(self) -> Fingerprint:
        return validate_document(Fingerprint, _document(self.verified.read_json(FINGERPRINT)), where=FINGERPRINT)

    @cached_property
    def ood_summary(self) -> OodReferenceSummary:
        return validate_document(
            OodReferenceSummary, _document(self.verified.read_json(OOD_SUMMARY)), where=OOD_SUMMARY
        )

    def ood_tensors(self) -> bytes:
        return self.verified.read_bytes(OOD_FEATURES)
