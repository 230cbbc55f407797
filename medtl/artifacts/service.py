"""The service registry: which model artifact is in service at a site, as signed events in a hash-chained log.

Why a log and not a symlink: "which model scored this patient last March, and who decided it would" must have an
answer that can be checked. A registry folder holds registry.json (what it is; every event is bound to its SHA-256)
and audit.jsonl in the artifact audit log's format, written and verified by the same code (audit.py): `created`,
then `promoted` and `rolled_back` events whose payload is a ServiceChange. Each event is signed by a reviewer's own
key ($MEDTL_REVIEWER_KEY), and the registry verifies only when every signer is an approver key
($MEDTL_APPROVER_KEYS) and not a pipeline key: the key on every training worker cannot put a model into service.

A promotion requires the artifact to be approved (decisions.judge) and, when a champion is in service, a comparison
of exactly these two artifacts (comparison.json, hashes matching) that found the challenger non-inferior and that
`medtl compare` recorded, pipeline-signed, in the challenger's audit log. A rollback returns to the artifact that was
in service before the current one; the replay of the events says which artifact served at any moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from medtl import __version__
from medtl.artifacts.audit import (
    append_line_locked,
    build_event,
    default_actor,
    now_iso,
    read_chain,
    write_first_event,
)
from medtl.artifacts.keys import (
    APPROVER_KEYS_ENV,
    REVIEWER_KEY_ENV,
    SigningKeySource,
    key_fingerprint,
    public_key_hex,
    resolve_signing_key,
)
from medtl.artifacts.layout import AUDIT_LOG
from medtl.artifacts.reader import VerifiedArtifact, open_verified
from medtl.artifacts.trust import TrustSettings, resolve_trust
from medtl.contracts.artifact import AuditEvent
from medtl.contracts.base import read_json, write_json
from medtl.contracts.comparison import Comparison
from medtl.contracts.service import ComparisonReference, ServiceChange, ServiceRegistryRecord
from medtl.errors import ArtifactIntegrityError, ConfigError, NotApprovedError
from medtl.hashing import sha256_file

REGISTRY_FILE = "registry.json"
SERVICE_KINDS = ("promoted", "rolled_back")


@dataclass(frozen=True)
class ServiceEntry:
    event: AuditEvent
    change: ServiceChange
    signer: str  # key fingerprint

    @property
    def time(self) -> datetime:
        return parse_time(self.event.time)


@dataclass(frozen=True)
class ServiceRegistry:
    """A verified registry: every event in order, and the stack of artifacts that rollbacks return through."""

    folder: Path
    record: ServiceRegistryRecord
    digest: str  # sha256 of registry.json
    entries: tuple[ServiceEntry, ...]
    head_hash: str

    @property
    def in_service(self) -> ServiceChange | None:
        stack = _replay(self.entries)
        return stack[-1] if stack else None

    def in_service_at(self, when: datetime) -> ServiceChange | None:
        stack = _replay([e for e in self.entries if e.time <= when])
        return stack[-1] if stack else None


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _replay(entries: list[ServiceEntry] | tuple[ServiceEntry, ...]) -> list[ServiceChange]:
    stack: list[ServiceChange] = []
    for entry in entries:
        if entry.event.kind == "promoted":
            stack.append(entry.change)
        else:
            stack.pop()
    return stack


def _broken(what: str, event: AuditEvent | None = None) -> ArtifactIntegrityError:
    where = f"{AUDIT_LOG} event {event.index} ({event.kind})" if event is not None else AUDIT_LOG
    return ArtifactIntegrityError(
        f"the service registry does not verify: {what}",
        where=where,
        fix="restore the registry folder from a trusted copy; until then nothing can say which model is in service",
    )


def open_registry(folder: str | Path, *, trust: TrustSettings | None = None) -> ServiceRegistry:
    """Verify the registry (chain, signatures, signers, the replay of promotions and rollbacks) and return it."""
    folder = Path(folder)
    trust = trust if trust is not None else resolve_trust()
    if not (folder / REGISTRY_FILE).is_file():
        raise ConfigError(
            f"{folder.name} is not a service registry (no {REGISTRY_FILE})",
            where=folder.name,
            fix="pass the registry folder that `medtl service promote` created",
        )
    record = read_json(ServiceRegistryRecord, folder / REGISTRY_FILE)
    digest = sha256_file(folder / REGISTRY_FILE)
    chain = read_chain(folder, manifest_sha256=digest, manifest_public_key=None)
    if not trust.approver_keys:
        raise ConfigError(
            "no approver keys are configured, so no promotion or rollback can be verified",
            fix=f"set {APPROVER_KEYS_ENV} to the reviewers' public keys",
        )
    entries: list[ServiceEntry] = []
    stack: list[ServiceChange] = []
    for event in chain.events:
        _check_signer(event, trust)
        if event.index == 0:
            continue
        if event.kind not in SERVICE_KINDS:
            raise _broken(f"a {event.kind!r} event has no place in a service registry", event)
        try:
            change = ServiceChange.model_validate(event.payload)
        except ValidationError:
            raise _broken("the payload does not follow the service_change contract", event) from None
        current = stack[-1].artifact_manifest_hash if stack else None
        if change.replaces != current:
            raise _broken("it does not name the artifact that was in service before it", event)
        if event.kind == "rolled_back":
            if len(stack) < 2 or stack[-2].artifact_manifest_hash != change.artifact_manifest_hash:
                raise _broken("a rollback must return to the artifact in service before the current one", event)
            stack.pop()
        else:
            stack.append(change)
        entries.append(ServiceEntry(event, change, key_fingerprint(event.public_key or "")))
    return ServiceRegistry(folder, record, digest, tuple(entries), chain.head_hash)


def _check_signer(event: AuditEvent, trust: TrustSettings) -> None:
    if event.public_key is None:
        raise _broken("the event is not signed; promotions and rollbacks are signed by a reviewer", event)
    if trust.artifact_keys and event.public_key in trust.artifact_keys:
        raise _broken("signed by a pipeline key; only a reviewer's own key may change what is in service", event)
    if event.public_key not in trust.approver_keys:
        raise _broken(f"signed by {key_fingerprint(event.public_key)}, which is not an approver key", event)


def _reviewer_key(source: SigningKeySource | None, trust: TrustSettings) -> Ed25519PrivateKey:
    key = resolve_signing_key(source, env=REVIEWER_KEY_ENV)
    if key is None:
        raise ConfigError(
            "no reviewer key: a change of the model in service is signed by a reviewer's own key",
            fix=f"set {REVIEWER_KEY_ENV} to your Ed25519 key (its public key must be in {APPROVER_KEYS_ENV})",
        )
    public = public_key_hex(key)
    if public not in trust.approver_keys or (trust.artifact_keys and public in trust.artifact_keys):
        raise ConfigError(
            f"the key {key_fingerprint(public)} is not an approver key (or it is a pipeline key): the registry would "
            "not verify with its signature",
            fix=f"sign with a reviewer key whose public key is in {APPROVER_KEYS_ENV}",
        )
    return key


def _append(folder: Path, kind: str, change: ServiceChange, key: Ed25519PrivateKey, trust: TrustSettings) -> AuditEvent:
    """Under the log's lock: verify the registry again (another promotion may have landed meanwhile), check that
    `change` still replaces what is in service, then append the signed event."""

    def next_event() -> dict:
        registry = open_registry(folder, trust=trust)
        current = registry.in_service
        if change.replaces != (current.artifact_manifest_hash if current else None):
            raise ConfigError(
                "the model in service changed while this change was being prepared",
                where=folder.name,
                fix="run the command again: it is checked against the registry as it is now",
            )
        return build_event(
            index=len(registry.entries) + 1, kind=kind, actor=default_actor(),  # type: ignore[arg-type]
            payload=change.model_dump(mode="json"), manifest_sha256=registry.digest, prev_hash=registry.head_hash,
            key=key,
        )  # fmt: skip

    return AuditEvent.model_validate(append_line_locked(folder, next_event))


def _create(folder: Path, name: str, key: Ed25519PrivateKey) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ConfigError(
            f"{folder.name} holds files but no {REGISTRY_FILE}: not a registry, and not ours to write into",
            where=folder.name,
            fix="pass an empty or new folder to start a registry, or the existing registry folder",
        )
    write_json(
        ServiceRegistryRecord(name=name, created_at=now_iso(), medtl_version=__version__), folder / REGISTRY_FILE
    )
    event = build_event(
        index=0, kind="created", actor=default_actor(), payload={"name": name},
        manifest_sha256=sha256_file(folder / REGISTRY_FILE), prev_hash=None, key=key,
    )  # fmt: skip
    write_first_event(folder, event)


def promote(
    registry: str | Path,
    artifact: str | Path,
    *,
    reason: str,
    comparison: str | Path | None = None,
    reviewer_key: SigningKeySource | None = None,
    trust: TrustSettings | None = None,
    name: str | None = None,
) -> AuditEvent:
    """Put an approved artifact into service (creating the registry on first use); over a champion, only with a
    non-inferior comparison of these two artifacts."""
    folder = Path(registry)
    trust = trust if trust is not None else resolve_trust()
    key = _reviewer_key(reviewer_key, trust)
    verified = open_verified(Path(artifact), trust=trust)
    verified.require_model("promoted")
    status = verified.status
    if not status.approved or status.event is None:
        raise NotApprovedError(
            f"{verified.folder.name} is not approved ({status.state}): only an approved model can be put in service",
            where=verified.folder.name,
            fix="have a reviewer read its evaluation report and sign `medtl approve`, then promote it",
        )
    exists = (folder / REGISTRY_FILE).is_file()
    current = open_registry(folder, trust=trust).in_service if exists else None
    if current is not None and current.artifact_manifest_hash == verified.manifest_hash:
        raise ConfigError(f"{verified.folder.name} is already in service", where=folder.name)
    reference = None
    if current is not None:
        reference = _checked_comparison(comparison, verified, current)
    if not exists:
        _create(folder, name or folder.name, key)
    change = ServiceChange(
        artifact_manifest_hash=verified.manifest_hash,
        model_id=verified.metadata["model_id"],
        model_version=verified.metadata["model_version"],
        artifact_name=verified.folder.name,
        replaces=current.artifact_manifest_hash if current else None,
        approval_event_hash=status.event.hash,
        comparison=reference,
        reason=reason,
    )
    return _append(folder, "promoted", change, key, trust)


def _checked_comparison(
    path: str | Path | None, challenger: VerifiedArtifact, champion: ServiceChange
) -> ComparisonReference:
    fix = (
        "run `medtl compare CHAMPION CHALLENGER --test LOCKED_TEST --out DIR` with the artifact in service as the "
        "champion, and pass --comparison DIR/comparison.json"
    )
    if path is None:
        raise ConfigError(
            f"{champion.artifact_name} is in service: replacing it needs a comparison showing the new model "
            "non-inferior",
            fix=fix,
        )
    path = Path(path)
    found = read_json(Comparison, path)
    if (found.champion.artifact_manifest_hash, found.challenger.artifact_manifest_hash) != (
        champion.artifact_manifest_hash,
        challenger.manifest_hash,
    ):
        raise ConfigError(
            "the comparison is not of these two artifacts (the one in service as champion, this one as challenger)",
            where=path.name,
            fix=fix,
        )
    if not found.proposed:
        raise ConfigError(
            f"the comparison found the challenger {found.verdict.replace('_', '-')}: it does not replace the model "
            "in service",
            where=path.name,
            fix="keep the model in service; retrain or collect more test patients if the result was inconclusive",
        )
    digest = sha256_file(path)
    recorded = [
        e
        for e in challenger.events
        if e.kind == "compared"
        and e.payload.get("comparison_sha256") == digest
        and (e.public_key in challenger.report.pipeline_keys or challenger.trust.allow_unsigned)
    ]
    if not recorded:
        raise ConfigError(
            "the challenger's audit log has no pipeline-signed record of this comparison file: it was edited, or "
            "not written by `medtl compare`",
            where=path.name,
            fix=fix,
        )
    return ComparisonReference(
        comparison_sha256=digest,
        champion_manifest_hash=found.champion.artifact_manifest_hash,
        challenger_manifest_hash=found.challenger.artifact_manifest_hash,
        verdict=found.verdict,
        margin=found.margin,
    )


def rollback(
    registry: str | Path,
    *,
    reason: str,
    reviewer_key: SigningKeySource | None = None,
    trust: TrustSettings | None = None,
) -> AuditEvent:
    """Return to the artifact that was in service before the current one."""
    folder = Path(registry)
    trust = trust if trust is not None else resolve_trust()
    key = _reviewer_key(reviewer_key, trust)
    stack = _replay(open_registry(folder, trust=trust).entries)
    if len(stack) < 2:
        raise ConfigError(
            "nothing to roll back to: no artifact was in service before the current one",
            where=folder.name,
            fix="promote the artifact that should serve instead (it must be approved)",
        )
    previous, current = stack[-2], stack[-1]
    change = previous.model_copy(
        update={"replaces": current.artifact_manifest_hash, "comparison": None, "reason": reason}
    )
    return _append(folder, "rolled_back", change, key, trust)


def require_in_service(verified: VerifiedArtifact, registry: str | Path) -> ServiceChange:
    """Refuse an artifact that the (verified) registry does not have in service now: a scheduled job given a stale
    path must not score patients with a model a reviewer has replaced or rolled back."""
    current = open_registry(registry, trust=verified.trust).in_service
    if current is None or current.artifact_manifest_hash != verified.manifest_hash:
        serving = f"{current.model_id} {current.model_version} ({current.artifact_name})" if current else "nothing"
        raise NotApprovedError(
            f"{verified.folder.name} is not the artifact in service (the registry has {serving} in service)",
            where=Path(registry).name,
            fix="score with the artifact in service (`medtl service status`), or have a reviewer promote this one",
        )
    return current


__all__ = [
    "REGISTRY_FILE",
    "ServiceEntry",
    "ServiceRegistry",
    "open_registry",
    "parse_time",
    "promote",
    "require_in_service",
    "rollback",
]
