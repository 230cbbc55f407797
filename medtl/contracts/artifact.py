"""Contracts of the model artifact folder: metadata, the file manifest and the hash-chained audit events.

The folder layout, the signing rules and the hash chain are described in medtl/artifacts/README.md; these models are
the machine-checkable part of it (data_contracts/artifact_*.schema.json, audit_event.*.schema.json).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import SHA256, ImageKind
from medtl.contracts.task import TaskKind, check_declaration

# One segment: starts with a letter or digit (no hidden files, no "." / ".."), then a small portable alphabet, so
# that a folder copied between Linux, macOS and Windows keeps every name exactly.
ARTIFACT_PATH = r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)*[A-Za-z0-9][A-Za-z0-9._-]*$"
ED25519_PUBLIC_KEY = r"^[0-9a-f]{64}$"
ED25519_SIGNATURE = r"^[0-9a-f]{128}$"
ISO_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$"
# Files that the manifest cannot list: the manifest itself, the signature over it and the log that grows after it.
UNLISTED_FILES = ("manifest.json", "signature.bin", "audit.jsonl")


class TaskSpec(Strict):
    kind: TaskKind = Field(description="binary, multiclass, ordinal (classes are grades, lowest first) or multilabel")
    classes: list[str] = Field(min_length=1, description="class names in output order, grades, or finding names")
    positive_class: str | None = Field(None, description="binary tasks: the class the probability refers to")
    decision_cut: str | None = Field(
        None, description="ordinal tasks: the decision the model supports is 'grade >= decision_cut'"
    )
    decision_cut_declared: bool | None = Field(
        None, description="ordinal: true when the cut was declared (config or task.json), false for the default"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.kind != "multilabel" and len(self.classes) < 2:
            raise ValueError("a single-label task has at least two classes")
        check_declaration(self.kind, self.classes, self.positive_class, self.decision_cut)
        return self


class InputSpec(Strict):
    """What the network expects after the artifact's own preprocessing (preprocessing.json) has run."""

    modalities: list[str] = Field(description="DICOM modality codes the model was trained on, e.g. CT, MR, CR")
    image_kind: ImageKind
    channels: int = Field(ge=1)
    spatial_shape: list[int] = Field(description="network input size per spatial axis")
    value_range: tuple[float, float] = Field(description="range of the preprocessed values, e.g. [0, 1]")


class PretrainedSource(Strict):
    source: str = Field(description="weight source kind: torchvision, medicalnet, monai_bundle, artifact, file, none")
    name: str
    sha256: str | None = Field(None, pattern=SHA256, description="full SHA-256 of the weight file that was loaded")
    license: str | None = Field(None, description="license of the weights; 'unknown' must be said explicitly")
    location: str | None = Field(
        None, description="where it came from, without local paths: e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1"
    )

    @model_validator(mode="after")
    def _hash_and_license(self) -> PretrainedSource:
        if self.source != "none" and (self.sha256 is None or self.license is None):
            raise ValueError("pretrained weights need their full sha256 and a license (or license 'unknown')")
        return self


class CodeVersion(Strict):
    kind: Literal["git", "package"] = Field(description="git: medtl ran from a git checkout; package: an install")
    version: str = Field(description="medtl package version")
    commit: str | None = Field(None, pattern=r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
    dirty: bool | None = Field(None, description="git only: uncommitted changes to tracked files")


class Hardware(Strict):
    platform: str
    machine: str
    cpu: str
    cpu_count: int = Field(ge=1)
    ram_gb: float | None = None
    gpu: str | None = None
    gpu_count: int = Field(0, ge=0)
    cuda: str | None = None
    cudnn: str | None = None


class Provenance(Strict):
    medtl_version: str
    code_version: str = Field(description="short form: git:<commit>[+dirty] or package:<version>")
    code: CodeVersion
    python: str
    packages: dict[str, str] = Field(description="versions of the key packages ('not installed' when absent)")
    environment_sha256: str | None = Field(
        None, pattern=SHA256, description="sha256 of environment.txt, the full name==version lock"
    )
    hardware: Hardware
    manifest_hash: str = Field(
        pattern=SHA256, description="content hash of the dataset's manifest (fingerprint.json: manifest_hash)"
    )
    fingerprint_hash: str = Field(pattern=SHA256)
    split_hash: str = Field(pattern=SHA256)
    pretrained: PretrainedSource
    seed: int = Field(description="the one seed that drives everything below")
    seeds: dict[str, int] = Field(default_factory=dict, description="derived seeds: split, init, loader, augment, ...")
    started_at: str = Field(pattern=ISO_TIME)
    finished_at: str = Field(pattern=ISO_TIME)
    flow_run_id: str | None = Field(None, description="Prefect flow-run id when run as a flow")


ArtifactKind = Literal["model", "pretrained"]


class ArtifactMetadata(ContractModel):
    """`kind` says what the artifact is for: a `model` is a trained classifier that is evaluated, approved and
    scored; a `pretrained` artifact is a backbone from self-supervised pretraining (no head, no task) whose only use
    is as a weight source. Artifacts sealed before `kind` existed are models."""

    contract_name: ClassVar[str] = "artifact_metadata"
    contract_title: ClassVar[str] = "artifact/metadata.json: what the model is, what it takes, where it came from"

    kind: ArtifactKind = Field(
        "model",
        description="model: a classifier (evaluated, approved, scored); pretrained: a self-supervised backbone "
        "without a head, usable only as a weight source",
    )
    model_id: str
    model_version: str
    task: TaskSpec | None = Field(None, description="the task; required for a model, absent for a pretrained backbone")
    intended_use: str
    input: InputSpec
    output: dict[str, str] = Field(description="what the model returns, e.g. {'probability': 'P(positive_class)'}")
    model: dict[str, Any] = Field(
        description="the architecture (backbone, input channels, classes, adaptation) as medtl.models records it; "
        "enough to rebuild the network before loading its weights, and to reuse it as a pretrained source"
    )
    prediction_flip_axes: list[Annotated[int, Field(ge=0, le=2)]] = Field(
        default_factory=list,
        max_length=3,
        description="spatial axes (0 = first) whose mirror images are averaged with the input, in every combination, "
        "whenever the model predicts (out-of-fold, test, scoring); empty: the input alone",
    )
    preprocessing_hash: str = Field(pattern=SHA256)
    config_hash: str = Field(pattern=SHA256)
    provenance: Provenance

    @model_validator(mode="after")
    def _task_matches_kind(self) -> ArtifactMetadata:
        if self.kind == "model" and self.task is None:
            raise ValueError("a model artifact names its task")
        if self.kind == "pretrained" and self.task is not None:
            raise ValueError("a pretrained backbone has no task (it is trained without labels)")
        axes, dims = self.prediction_flip_axes, len(self.input.spatial_shape)
        if len(set(axes)) != len(axes) or any(axis >= dims for axis in axes):
            raise ValueError(f"prediction_flip_axes {axes} must be distinct axes of the {dims}D input")
        return self


class FileEntry(Strict):
    path: str = Field(pattern=ARTIFACT_PATH, max_length=255, description="relative POSIX path in the artifact")
    sha256: str = Field(pattern=SHA256)
    size_bytes: int = Field(ge=0)


class ArtifactManifest(ContractModel):
    """Every file of the artifact with its hash; signature.bin is Ed25519 over the exact bytes of this file."""

    contract_name: ClassVar[str] = "artifact_manifest"
    contract_title: ClassVar[str] = "artifact/manifest.json: files and hashes of a sealed artifact"

    files: list[FileEntry] = Field(min_length=1, description="sorted by path; every file but the three unlisted")
    signed: bool = Field(description="false only when unsigned artifacts were explicitly allowed")
    public_key: str | None = Field(
        None, pattern=ED25519_PUBLIC_KEY, description="raw Ed25519 public key (hex) that verifies signature.bin"
    )
    key_fingerprint: str | None = Field(None, description="ed25519:<first 16 hex of sha256(public key)>")
    sealed_at: str = Field(pattern=ISO_TIME)
    medtl_version: str

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactManifest:
        paths = [entry.path for entry in self.files]
        if paths != sorted(paths):
            raise ValueError("files must be sorted by path")
        folded = [path.casefold() for path in paths]
        if len(set(folded)) != len(folded):
            raise ValueError("file paths must be unique, also ignoring case")
        reserved = set(UNLISTED_FILES) & set(paths)
        if reserved:
            raise ValueError(f"the manifest may not list {sorted(reserved)}")
        if self.signed != (self.public_key is not None):
            raise ValueError("a signed manifest names its public key; an unsigned one names none")
        return self


# compared: a pipeline-signed record of a champion/challenger comparison; promoted / rolled_back: service registry
# events (medtl/artifacts/service.py), which use this same log format in a registry folder.
EventKind = Literal[
    "created", "evaluated", "approved", "rejected", "scored", "verified", "compared", "promoted", "rolled_back"
]


class AuditEvent(ContractModel):
    """One line of the append-only audit log.

    `hash` = sha256 of the canonical JSON of the event without `hash` and `signature`; `prev_hash` is the previous
    event's hash, so editing, removing or reordering any event breaks the chain. `manifest_sha256` binds every event to
    one sealed manifest. An event may be signed: `signature` is Ed25519 over "medtl-audit-event-v1:" + hash by
    `public_key`, which itself is covered by the hash (so a signature cannot be stripped without breaking the chain).
    """

    contract_name: ClassVar[str] = "audit_event"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "artifact/audit.jsonl: one hash-chained event per line"

    index: int = Field(ge=0)
    kind: EventKind
    actor: str = Field(min_length=1, description="who did it: a person, or a service account / pipeline")
    time: str = Field(pattern=ISO_TIME)
    manifest_sha256: str = Field(pattern=SHA256)
    payload: dict[str, Any]
    prev_hash: str | None = Field(None, pattern=SHA256)
    public_key: str | None = Field(None, pattern=ED25519_PUBLIC_KEY)
    hash: str = Field(pattern=SHA256)
    signature: str | None = Field(None, pattern=ED25519_SIGNATURE)

    @model_validator(mode="after")
    def _signed_consistently(self) -> AuditEvent:
        if (self.public_key is None) != (self.signature is None):
            raise ValueError("public_key and signature are given together or not at all")
        return self


class DecisionStatement(Strict):
    """What a reviewer signs with their own key: one decision on one evaluation of one sealed artifact.

    Bound to the sealed manifest, to the signed `evaluated` event (by its hash) and to the report file they read (by
    its SHA-256), so it cannot be moved to another artifact, evaluation or report. `nonce` makes every statement
    unique, so a copy of an old approval appended after a rejection is recognised as a copy.
    """

    artifact_manifest_sha256: str = Field(pattern=SHA256)
    evaluation_event_hash: str = Field(pattern=SHA256)
    report_sha256: str = Field(pattern=SHA256)
    decision: Literal["approve", "reject"]
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="the operating threshold the reviewer accepts (None: no binary threshold)"
    )
    operating_point_rule: str | None = None
    threshold_changed: bool = False
    reviewer: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=200)
    comment: str = Field("", max_length=4000)
    decided_at: str = Field(pattern=ISO_TIME)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")


class SignedDecision(ContractModel):
    """The payload of an `approved` / `rejected` audit event: the statement, the reviewer's public key and the
    Ed25519 signature over "medtl-decision-v1:" + the statement's canonical JSON. Whether it counts is decided by
    medtl.artifacts.decisions.judge (an approver key, not a pipeline key, a signed evaluation of this artifact)."""

    contract_name: ClassVar[str] = "signed_decision"
    contract_title: ClassVar[str] = "payload of an approved/rejected audit event: a reviewer-signed decision"

    statement: DecisionStatement
    public_key: str = Field(pattern=ED25519_PUBLIC_KEY)
    signature: str = Field(pattern=ED25519_SIGNATURE)
