"""Verification: recompute every hash, check the signature and the audit chain; refuse at the first problem.

Why one function for `medtl verify` and for every load: an artifact that evaluate, score or a later training run
uses as a weight source must pass exactly the check an auditor runs by hand.

Order of checks: manifest.json (contract) → signature.bin and the signer's trust → audit.jsonl chain (which binds
manifest.json to its `created` event) → the set of files (nothing added, nothing missing) → size and SHA-256 of each
file → metadata.json contract. The first failure raises ArtifactIntegrityError naming the file or event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medtl.artifacts.audit import Chain, read_chain
from medtl.artifacts.decisions import ApprovalStatus, judge
from medtl.artifacts.keys import TrustedKeySource, key_fingerprint
from medtl.artifacts.keys import signature_is_valid as _signature_is_valid
from medtl.artifacts.layout import (
    ALLOWED_SUFFIXES,
    AUDIT_LOG,
    MANIFEST,
    METADATA,
    SIGNATURE,
    walk_files,
)
from medtl.artifacts.trust import ALLOW_UNSIGNED_ENV, TrustSettings, resolve_trust
from medtl.contracts.artifact import UNLISTED_FILES, ArtifactManifest, ArtifactMetadata, AuditEvent
from medtl.contracts.base import validate_document
from medtl.errors import ArtifactIntegrityError, DataContractError
from medtl.hashing import sha256_bytes, sha256_file


def render_manifest(manifest: ArtifactManifest) -> bytes:
    """The exact bytes of manifest.json (sorted keys, indent 2, UTF-8, final newline); the signature covers them."""
    payload = {"contract": manifest.contract_name, "contract_version": manifest.contract_version}
    payload.update(manifest.model_dump(mode="json"))
    return (json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def parse_manifest(data: bytes) -> ArtifactManifest:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactIntegrityError(
            f"{MANIFEST} is not valid JSON: it was modified or truncated", where=MANIFEST
        ) from None
    if not isinstance(document, dict) or (document.get("contract"), document.get("contract_version")) != (
        ArtifactManifest.contract_name,
        ArtifactManifest.contract_version,
    ):
        raise ArtifactIntegrityError(
            f"{MANIFEST} is not an {ArtifactManifest.contract_name} v{ArtifactManifest.contract_version} document",
            where=MANIFEST,
        )
    body = {k: v for k, v in document.items() if k not in ("contract", "contract_version")}
    try:
        return validate_document(ArtifactManifest, body, where=MANIFEST)
    except DataContractError as error:
        raise ArtifactIntegrityError(f"{MANIFEST} does not follow its contract: {error.what}", where=MANIFEST) from None


@dataclass
class VerificationReport:
    """What was checked and found; `warnings` are things a reviewer must see (unsigned, untrusted, ignored events)."""

    folder: Path
    manifest_hash: str
    files_checked: int
    bytes_checked: int
    signed: bool
    public_key: str | None
    key_fingerprint: str | None
    trusted: bool  # the signer is one of the configured artifact keys (False in development mode)
    events: list[AuditEvent]
    head_hash: str
    status: ApprovalStatus
    pipeline_keys: frozenset[str]  # whose `evaluated` events count: the anchors, or in development the sealing key
    event_signers: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.signed:
            trust = "trusted" if self.trusted else "UNTRUSTED: no trust anchor configured, signer not checked"
            signature = f"valid Ed25519 signature by {self.key_fingerprint} ({trust})"
        else:
            signature = "UNSIGNED (allowed explicitly)"
        lines = [
            f"artifact: {self.folder.name}",
            f"manifest sha256: {self.manifest_hash}",
            f"files: {self.files_checked} verified ({self.bytes_checked} bytes)",
            f"signature: {signature}",
            f"audit log: {len(self.events)} event(s), chain intact, head {self.head_hash[:16]}",
            f"decision: {self.status.describe()}",
        ]
        lines += [f"WARNING: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _first_event_manifest_hash(folder: Path) -> str | None:
    """Best effort, for a precise message only: the manifest hash that the 'created' event recorded."""
    try:
        with open(folder / AUDIT_LOG, "rb") as handle:
            value = json.loads(handle.readline()).get("manifest_sha256")
        return value if isinstance(value, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _check_signature(folder: Path, manifest: ArtifactManifest, data: bytes, digest: str) -> None:
    path = folder / SIGNATURE
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"{SIGNATURE} is missing but {MANIFEST} says the artifact is signed",
            where=SIGNATURE,
            fix="restore signature.bin from a trusted copy of the artifact",
        )
    signature = path.read_bytes()
    assert manifest.public_key is not None  # the contract ties signed to public_key
    if len(signature) == 64 and _signature_is_valid(manifest.public_key, data, signature):
        return
    recorded = _first_event_manifest_hash(folder)
    if recorded is not None and recorded != digest:
        what = (
            f"{MANIFEST} was modified after sealing: {SIGNATURE} does not verify it and its sha256 differs "
            f"from the one recorded in {AUDIT_LOG}"
        )
        where = MANIFEST
    elif recorded == digest:
        what = f"{SIGNATURE} does not verify {MANIFEST} (which is unchanged): the signature was replaced or corrupted"
        where = SIGNATURE
    else:
        what = f"{SIGNATURE} does not verify {MANIFEST}: one of them was modified"
        where = f"{MANIFEST}, {SIGNATURE}"
    raise ArtifactIntegrityError(what, where=where, fix="do not use this artifact; restore it from a trusted copy")


def _check_files(folder: Path, manifest: ArtifactManifest) -> tuple[int, int]:
    listed = {entry.path: entry for entry in manifest.files}
    present = [path for path in walk_files(folder) if path not in UNLISTED_FILES]
    added = [path for path in present if path not in listed]
    if added:
        raise ArtifactIntegrityError(
            f"{added[0]} is not listed in {MANIFEST}: a file was added after sealing"
            + (f" (and {len(added) - 1} more)" if len(added) > 1 else ""),
            where=added[0],
            fix="remove the file; a sealed artifact never changes except for its audit log",
        )
    present_set = set(present)
    total = 0
    for entry in manifest.files:
        path = folder / entry.path
        if Path(entry.path).suffix.lower() not in ALLOWED_SUFFIXES:
            raise ArtifactIntegrityError(
                f"{entry.path} has a format that is never loaded from an artifact", where=entry.path
            )
        if entry.path not in present_set:
            raise ArtifactIntegrityError(
                f"{entry.path} is listed in {MANIFEST} but missing",
                where=entry.path,
                fix="restore the artifact from a trusted copy",
            )
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise ArtifactIntegrityError(
                f"{entry.path} has {size} bytes, {MANIFEST} says {entry.size_bytes}: the file was modified",
                where=entry.path,
                fix="restore the artifact from a trusted copy",
            )
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ArtifactIntegrityError(
                f"{entry.path}: sha256 {digest[:16]}… differs from {entry.sha256[:16]}… in {MANIFEST}: "
                "the file was modified after sealing",
                where=entry.path,
                fix="restore the artifact from a trusted copy",
            )
        total += size
    return len(manifest.files), total


def _check_metadata(folder: Path, listed: set[str]) -> None:
    if METADATA not in listed:
        raise ArtifactIntegrityError(f"{METADATA} is not part of the artifact", where=METADATA)
    try:
        document = json.loads((folder / METADATA).read_text(encoding="utf-8"))
        body = {k: v for k, v in document.items() if k not in ("contract", "contract_version")}
        validate_document(ArtifactMetadata, body, where=METADATA)
    except (ValueError, AttributeError, DataContractError) as error:
        raise ArtifactIntegrityError(f"{METADATA} does not follow its contract: {error}", where=METADATA) from None


def verify(
    folder: str | Path,
    *,
    trusted_keys: list[TrustedKeySource] | None = None,
    approver_keys: list[TrustedKeySource] | None = None,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
) -> VerificationReport:
    """Check everything; return what was checked, or raise ArtifactIntegrityError naming the first problem.

    The artifact must be signed by one of the trusted keys (arguments, else $MEDTL_TRUSTED_KEYS). Without any trust
    anchor it is refused unless `allow_untrusted` ($MEDTL_ALLOW_UNTRUSTED=1), and is then reported UNTRUSTED. An
    unsigned artifact is refused unless `allow_unsigned` ($MEDTL_ALLOW_UNSIGNED=1, which implies untrusted). The
    approval status is judged with the approver keys (arguments, else $MEDTL_APPROVER_KEYS).
    """
    trust = resolve_trust(
        trusted_keys=trusted_keys, approver_keys=approver_keys, allow_unsigned=allow_unsigned,
        allow_untrusted=allow_untrusted,
    )  # fmt: skip
    return verify_resolved(Path(folder), trust)


def _check_signer(folder: Path, manifest: ArtifactManifest, data: bytes, digest: str, trust: TrustSettings) -> bool:
    """Check signature.bin and the signer against the anchors; True when the signer is trusted."""
    fingerprint = key_fingerprint(manifest.public_key) if manifest.public_key else None
    if manifest.signed:
        if manifest.key_fingerprint is not None and manifest.key_fingerprint != fingerprint:
            raise ArtifactIntegrityError(
                f"{MANIFEST} names a key fingerprint that does not match its public key", where=MANIFEST
            )
        _check_signature(folder, manifest, data, digest)
        if trust.artifact_keys is None:
            return False
        if manifest.public_key not in trust.artifact_keys:
            raise ArtifactIntegrityError(
                f"the artifact is signed by an untrusted key {fingerprint}",
                where=SIGNATURE,
                fix="use an artifact signed by one of the trusted keys, or add this key to them if you trust it",
            )
        return True
    if (folder / SIGNATURE).exists():
        raise ArtifactIntegrityError(
            f"{SIGNATURE} exists but {MANIFEST} says the artifact is unsigned",
            where=SIGNATURE,
            fix="restore the artifact from a trusted copy",
        )
    if trust.artifact_keys is not None:
        raise ArtifactIntegrityError(
            "the artifact is UNSIGNED but trusted keys were given: a signature is required", where=MANIFEST
        )
    if not trust.allow_unsigned:
        raise ArtifactIntegrityError(
            "the artifact is UNSIGNED; unsigned artifacts are refused unless explicitly allowed",
            where=MANIFEST,
            fix="seal it with a signing key; for development only, pass allow_unsigned=True / --allow-unsigned "
            f"or set {ALLOW_UNSIGNED_ENV}=1",
        )
    return False


def verify_resolved(folder: Path, trust: TrustSettings) -> VerificationReport:
    """verify() with the trust settings already resolved (no environment look-ups)."""
    if not folder.is_dir():
        raise ArtifactIntegrityError(
            "the artifact folder does not exist", where=folder.name, fix="check the path given for the artifact"
        )
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactIntegrityError(
            f"{MANIFEST} is missing: this is not a sealed medtl artifact",
            where=MANIFEST,
            fix="seal the folder with medtl.artifacts.seal(), or check the path",
        )
    trust.require_anchor(folder.name)
    data = manifest_path.read_bytes()
    digest = sha256_bytes(data)
    manifest = parse_manifest(data)
    checks = [f"{MANIFEST} follows the artifact_manifest contract"]
    fingerprint = key_fingerprint(manifest.public_key) if manifest.public_key else None
    trusted = _check_signer(folder, manifest, data, digest, trust)
    warnings: list[str] = []
    if manifest.signed:
        checks.append(f"{SIGNATURE}: valid Ed25519 signature over {MANIFEST} by {fingerprint}")
    else:
        warnings.append("UNSIGNED artifact: nothing proves who built it; its hashes only show it is self-consistent")
    if trusted:
        checks.append(f"signer {fingerprint} is one of the {len(trust.artifact_keys or ())} trusted key(s)")
    elif manifest.signed:
        warnings.append(
            f"UNTRUSTED: signed by {fingerprint}, but no trust anchor was configured, so who signed it was not "
            "checked (development mode)"
        )
    chain: Chain = read_chain(folder, manifest_sha256=digest, manifest_public_key=manifest.public_key)
    checks.append(f"{AUDIT_LOG}: {len(chain.events)} event(s), hash chain intact, bound to this manifest")
    files, total = _check_files(folder, manifest)
    checks.append(f"{files} file(s): none added, none missing, every size and SHA-256 matches")
    _check_metadata(folder, {entry.path for entry in manifest.files})
    checks.append(f"{METADATA} follows the artifact_metadata contract")
    # whose `evaluated` events count: the anchors, or in development mode the key that sealed this artifact
    pipeline_keys = (trust.artifact_keys if trusted else None) or frozenset({manifest.public_key} - {None})
    status = judge(chain.events, manifest_sha256=digest, pipeline_keys=pipeline_keys, approver_keys=trust.approver_keys)
    warnings += [ignored.describe() for ignored in status.ignored]
    return VerificationReport(
        folder=folder,
        manifest_hash=digest,
        files_checked=files,
        bytes_checked=total,
        signed=manifest.signed,
        public_key=manifest.public_key,
        key_fingerprint=fingerprint,
        trusted=trusted,
        events=chain.events,
        head_hash=chain.head_hash,
        status=status,
        pipeline_keys=pipeline_keys,
        event_signers=chain.signers,
        warnings=warnings,
        checks=checks,
    )


__all__ = ["VerificationReport", "parse_manifest", "render_manifest", "verify", "verify_resolved"]
