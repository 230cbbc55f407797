"""A model must not be tested on a patient it learnt from, and it learns from its starting weights' data too.

`medtl pretrain` leaves out the locked-test patients of the datasets it is given, and a model trained earlier kept
its own test split apart, but the dataset trained on now may be another export, whose test split neither saw. So
training reads, from the verified weight source, every patient that source learnt from (a backbone's pretraining
pool; a model's training patients and its own lineage), refuses a locked test set that shares one, and seals the
list into the artifact (`lineage.json`) for the checks that come later, on other test sets and other machines.
Errors give counts, never pseudonyms.
"""

from __future__ import annotations

from pathlib import Path

from medtl.artifacts import VerifiedArtifact, open_verified
from medtl.artifacts.contents import ArtifactContents, pretraining_record
from medtl.contracts.lineage import LearntFrom, Lineage
from medtl.errors import ArtifactIntegrityError, ConfigError, LeakageError
from medtl.models.config import ModelConfig


def source_lineage(verified: VerifiedArtifact) -> Lineage:
    """What a model fine-tuned from VERIFIED learns from: its pretraining pool, or its training patients plus
    everything its own lineage lists."""
    if verified.kind == "pretrained":
        patients = set(pretraining_record(verified).patients_used)
        inherited: list[LearntFrom] = []
    else:
        contents = ArtifactContents(verified, action="fine-tuned from")
        patients = set(contents.oof["patient_id"].astype(str))
        inherited = contents.lineage.sources
    source = LearntFrom(
        kind="pretrained" if verified.kind == "pretrained" else "model",
        artifact_name=verified.folder.name,
        artifact_manifest_hash=verified.manifest_hash,
        patients=sorted(patients),
    )
    return Lineage(sources=[source, *inherited])


def lineage_of(model: ModelConfig) -> Lineage:
    """The lineage of a model about to be trained from MODEL's weights (empty unless they come from an artifact)."""
    if model.weights.source != "artifact":
        return Lineage()
    return source_lineage(open_verified(Path(model.weights.path).expanduser()))


def recorded_lineage(contents: ArtifactContents) -> Lineage:
    """The sealed lineage; for an artifact sealed before lineage was recorded, the weight source is opened where its
    config names it (a folder name: found when the source sits in the working folder)."""
    if contents.has_lineage:
        return contents.lineage
    model = ModelConfig.model_validate(contents.verified.read_yaml("config.yaml")["model"])
    try:
        return lineage_of(model)
    except ArtifactIntegrityError as error:
        raise ConfigError(
            f"{contents.verified.folder.name} was fine-tuned from {Path(str(model.weights.path)).name}, which it "
            f"does not describe (sealed before lineage records) and which cannot be opened ({error.what}): the "
            "test patients cannot be checked against what that source learnt from",
            where=contents.verified.folder.name,
            fix="run from the folder that holds the source artifact, or train the model again with this version",
        ) from None


def check_lineage(lineage: Lineage, patients: set[str] | list[str], *, who: str = "this model") -> None:
    """Raise LeakageError when a test patient is one that WHO learnt from through its starting weights."""
    tested = set(patients)
    for source in lineage.sources:
        shared = len(tested & set(source.patients))
        if not shared:
            continue
        how = "pretrained on by" if source.kind == "pretrained" else "in the training of"
        raise LeakageError(
            f"{shared} test patient(s) were {how} {source.artifact_name}, which {who} started from: results on "
            "them would be optimistic",
            where=source.artifact_name,
            fix="test on patients none of the model's sources saw (a locked test split of a dataset the sources "
            "were made with, or another site); for a backbone, pretrain again with this dataset among the inputs "
            "or named in --exclude-patients-of",
        )
