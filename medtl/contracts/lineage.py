"""Contract of a model artifact's `lineage.json`: the patients the model learnt from through its starting weights.

Why the artifact carries them: its config names a weight source by folder name only (no machine paths), so a test
set checked later (`medtl evaluate --test`, `medtl compare`), often on another machine, could not open the source.
Training copies the patients from the verified source once, and every later check reads them from the sealed
artifact itself.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import PSEUDONYM, SHA256


class LearntFrom(Strict):
    kind: Literal["pretrained", "model"] = Field(
        description="pretrained: a self-supervised backbone; model: a model fine-tuned from earlier"
    )
    artifact_name: str = Field(description="the source artifact's folder name (no path)")
    artifact_manifest_hash: str = Field(pattern=SHA256)
    patients: list[Annotated[str, Field(pattern=PSEUDONYM)]] = Field(
        description="sorted pseudonyms: a backbone's pretraining pool, or a model's training patients and those of "
        "its own lineage"
    )


class Lineage(ContractModel):
    contract_name: ClassVar[str] = "lineage"
    contract_title: ClassVar[str] = "artifact/lineage.json: the patients a model learnt from through its weights"

    sources: list[LearntFrom] = Field(default_factory=list)
