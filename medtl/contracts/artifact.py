"""Contracts of the model artifact folder: metadata, the file manifest and the hash-chained audit events."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import SHA256, ImageKind


class TaskSpec(Strict):
    kind: Literal["binary", "multiclass"]
    classes: list[str] = Field(min_length=2)
    positive_class: str | None = Field(None, description="binary tasks: the class the probability refers to")


class InputSpec(Strict):
    modalities: list[str]
    image_kind: ImageKind
    channels: int = Field(ge=1)
    spatial_shape: list[int]
    value_range: tuple[float, float]


class PretrainedSource(Strict):
    source: str = Field(description="weight source kind: torchvision, medicalnet, monai_bundle, artifact, file, none")
    name: str
    sha256: str | None = Field(None, pattern=SHA256)
    license: str | None = None


class Provenance(Strict):
    medtl_version: str
    code_version: str = Field(description="git commit (+dirty) or package version")
    python: str
    packages: dict[str, str]
    hardware: dict[str, str]
    manifest_hash: str = Field(pattern=SHA256)
    fingerprint_hash: str = Field(pattern=SHA256)
    split_hash: str = Field(pattern=SHA256)
    pretrained: PretrainedSource
    seed: int
    started_at: str
    finished_at: str
    flow_run_id: str | None = None


class ArtifactMetadata(ContractModel):
    contract_name: ClassVar[str] = "artifact_metadata"
    contract_title: ClassVar[str] = "artifact/metadata.json: what the model is, what it takes, where it came from"

    model_id: str
    model_version: str
    task: TaskSpec
    intended_use: str
    input: InputSpec
    output: dict[str, str]
    preprocessing_hash: str = Field(pattern=SHA256)
    config_hash: str = Field(pattern=SHA256)
    provenance: Provenance


class FileEntry(Strict):
    path: str = Field(description="relative POSIX path inside the artifact folder")
    sha256: str = Field(pattern=SHA256)
    size_bytes: int = Field(ge=0)


class ArtifactManifest(ContractModel):
    """Every file of the artifact with its hash; the signature covers this document."""

    contract_name: ClassVar[str] = "artifact_manifest"
    contract_title: ClassVar[str] = "artifact/manifest.json: files and hashes of a sealed artifact"

    files: list[FileEntry]
    signed: bool = Field(description="false only when unsigned artifacts were explicitly allowed")
    public_key: str | None = Field(None, description="Ed25519 public key (hex) that verifies signature.bin")


class AuditEvent(ContractModel):
    """One line of the append-only audit log; `hash` chains it to the previous event."""

    contract_name: ClassVar[str] = "audit_event"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "artifact/audit.jsonl: one hash-chained event per line"

    index: int = Field(ge=0)
    kind: Literal["created", "evaluated", "approved", "rejected", "scored", "verified"]
    actor: str
    time: str
    payload: dict[str, Any]
    prev_hash: str | None = Field(None, pattern=SHA256)
    hash: str = Field(pattern=SHA256)
