"""The append-only, hash-chained audit log (audit.jsonl): created, evaluated, approved / rejected, scored, ...

Why a hash chain: months later an auditor must see every decision taken on a model, in order, and notice when a line
was edited, removed, inserted or moved. Each line is the canonical JSON of one AuditEvent whose `hash` covers all
its fields but `hash` and `signature`, including `prev_hash` (the previous event's hash) and `manifest_sha256` (the
sealed manifest it refers to). An event may be signed: `signature` is Ed25519 over b"medtl-audit-event-v1:" + hash,
by `public_key` — which is itself hashed, so a signature cannot be stripped without breaking the chain. `evaluated`
events are signed by the pipeline's key; decisions carry a statement signed by the reviewer's own key
(decisions.py), and only decisions.judge says which events count.

What the chain cannot do on its own: someone with write access can drop the newest events or rebuild an unsigned
tail. Signed events prove who wrote them; the log's head hash, recorded elsewhere (e.g. with the scores or in a
ticket), pins the log's length.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from medtl.artifacts.keys import (
    SigningKeySource,
    key_fingerprint,
    public_key_hex,
    resolve_signing_key,
    sign,
    signature_is_valid,
)
from medtl.artifacts.layout import AUDIT_LOG
from medtl.artifacts.trust import TrustSettings
from medtl.contracts.artifact import AuditEvent, EventKind
from medtl.errors import ArtifactIntegrityError, ConfigError
from medtl.hashing import canonical_json, sha256_bytes

try:  # POSIX: serialise concurrent appends (scoring jobs); elsewhere appends are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

EVENT_SIGNATURE_DOMAIN = b"medtl-audit-event-v1:"
ACTOR_ENV = "MEDTL_ACTOR"
_UNHASHED = ("hash", "signature")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_actor() -> str:
    """$MEDTL_ACTOR, else the operating-system user: who ran the command, never a patient."""
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown-user"


def event_hash(event: dict[str, Any]) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in event.items() if k not in _UNHASHED}))


def _event_line(event: dict[str, Any]) -> bytes:
    return canonical_json(event) + b"\n"


def build_event(
    *,
    index: int,
    kind: EventKind,
    actor: str,
    payload: dict[str, Any],
    manifest_sha256: str,
    prev_hash: str | None,
    key: Ed25519PrivateKey | None,
    time: str | None = None,
) -> dict[str, Any]:
    """A complete event as a plain dict (what is written), validated against the AuditEvent contract."""
    if not isinstance(actor, str) or not actor.strip():
        raise ConfigError("an audit event needs an actor (who did it)", fix=f"pass actor=... or set ${ACTOR_ENV}")
    try:  # JSON-native values only, no NaN: the stored line must hash to the same value when read back
        payload = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"the event payload is not plain JSON: {error}", fix="use str/int/float/bool/list/dict, no NaN"
        ) from None
    if not isinstance(payload, dict):
        raise ConfigError("the event payload must be a JSON object (dict)")
    event: dict[str, Any] = {
        "index": index,
        "kind": kind,
        "actor": actor.strip(),
        "time": time or now_iso(),
        "manifest_sha256": manifest_sha256,
        "payload": payload,
        "prev_hash": prev_hash,
        "public_key": public_key_hex(key) if key is not None else None,
    }
    event["hash"] = event_hash(event)
    event["signature"] = sign(key, EVENT_SIGNATURE_DOMAIN + event["hash"].encode()).hex() if key else None
    try:
        AuditEvent.model_validate(event)
    except ValidationError as error:
        raise ConfigError(f"invalid audit event: {error.errors()[0]['msg']}", where=f"event {index}") from None
    return event


def write_first_event(folder: Path, event: dict[str, Any]) -> None:
    """Create audit.jsonl with the `created` event; refuses to touch an existing log."""
    descriptor = os.open(folder / AUDIT_LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_event_line(event))
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Chain:
    events: list[AuditEvent]
    head_hash: str
    signers: dict[int, str] = field(default_factory=dict)  # event index -> key fingerprint


def _fail(line: int, what: str, event: dict[str, Any] | None = None, fix: str | None = None) -> ArtifactIntegrityError:
    label = f"{AUDIT_LOG} line {line}"
    if event is not None:
        label += f" (event {event.get('index')} {event.get('kind')!r})"
    return ArtifactIntegrityError(
        f"{label}: {what}",
        where=AUDIT_LOG,
        fix=fix or "the audit log was changed after it was written; restore the artifact from a trusted copy",
    )


def read_chain(folder: Path, *, manifest_sha256: str, manifest_public_key: str | None) -> Chain:
    """Parse audit.jsonl and check every link and every event signature; raise ArtifactIntegrityError naming the
    first bad line/event. Whose signature counts for what is not decided here but in decisions.judge."""
    path = folder / AUDIT_LOG
    if not path.is_file():
        raise ArtifactIntegrityError(f"{AUDIT_LOG} is missing", where=AUDIT_LOG, fix="restore it from a trusted copy")
    raw = path.read_bytes()
    if not raw:
        raise _fail(1, "the log is empty; a sealed artifact starts with a 'created' event")
    if not raw.endswith(b"\n"):
        raise _fail(raw.count(b"\n") + 1, "the last line is incomplete (no newline): an append was interrupted")
    events: list[AuditEvent] = []
    chain = Chain(events=events, head_hash="")
    for number, line in enumerate(raw[:-1].split(b"\n"), start=1):
        try:
            data = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _fail(number, "not valid JSON") from None
        if not isinstance(data, dict):
            raise _fail(number, "not a JSON object")
        try:
            event = AuditEvent.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "event"
            raise _fail(number, f"not a valid audit event ({where}: {first['msg']})", data) from None
        expected = len(events)
        if event.index != expected:
            raise _fail(
                number,
                f"expected event index {expected}, found {event.index}: events were removed, inserted or reordered",
                data,
            )
        if event_hash(data) != event.hash:
            raise _fail(number, "the hash does not match the event's content: the event was edited", data)
        previous = events[-1].hash if events else None
        if event.prev_hash != previous:
            raise _fail(
                number,
                "prev_hash does not match the previous event's hash: events were removed, inserted or reordered",
                data,
            )
        if event.manifest_sha256 != manifest_sha256:
            what = (
                "manifest.json was modified after sealing: its sha256 differs from the one this event recorded"
                if expected == 0
                else "the event refers to another manifest (copied from another artifact?)"
            )
            raise _fail(number, what, data)
        if (event.kind == "created") != (expected == 0):
            raise _fail(number, "the log must start with the one and only 'created' event", data)
        if line + b"\n" != _event_line(data):
            raise _fail(number, "the line is not in canonical form: it was rewritten by hand", data)
        if event.signature is not None:
            assert event.public_key is not None  # guaranteed by the contract's validator
            message = EVENT_SIGNATURE_DOMAIN + event.hash.encode()
            if not signature_is_valid(event.public_key, message, bytes.fromhex(event.signature)):
                raise _fail(number, "the event's signature does not verify", data)
            chain.signers[event.index] = key_fingerprint(event.public_key)
        if expected == 0 and manifest_public_key is not None and event.public_key != manifest_public_key:
            raise _fail(number, "the 'created' event is not signed by the key that signed manifest.json", data)
        events.append(event)
    chain.head_hash = events[-1].hash
    return chain


def append_line_locked(folder: Path, event_for: Any) -> dict[str, Any]:
    """Under an exclusive lock on audit.jsonl: call event_for() (which verifies and builds the event), append it."""
    try:
        descriptor = os.open(folder / AUDIT_LOG, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        raise ArtifactIntegrityError(f"{AUDIT_LOG} is missing", where=AUDIT_LOG) from None
    with os.fdopen(descriptor, "ab") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            event = event_for()
            handle.write(_event_line(event))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return event


def append_event(
    folder: str | Path,
    kind: EventKind,
    *,
    actor: str,
    payload: dict[str, Any],
    signing_key: SigningKeySource | None = None,
    trust: TrustSettings | None = None,
    phi_terms: Any = None,
) -> AuditEvent:
    """Verify the whole artifact (under `trust`, default: from the environment), then append one event (signed when
    `signing_key` is given) and return it.

    `signing_key=None` writes an unsigned event (the environment's key is not used implicitly: what signs an event
    is a deliberate choice). Pass `phi_terms` to refuse payloads that contain identifiers.
    """
    from medtl.artifacts.phi import PhiMatcher, raise_on_findings
    from medtl.artifacts.trust import resolve_trust
    from medtl.artifacts.verify import verify_resolved

    folder = Path(folder)
    if kind == "created":
        raise ConfigError("the 'created' event is written by seal(), exactly once")
    trust = trust if trust is not None else resolve_trust()
    key = resolve_signing_key(signing_key) if signing_key is not None else None
    if phi_terms is not None:
        matcher = PhiMatcher(phi_terms)
        raise_on_findings(matcher.scan_value({"actor": actor, "payload": payload}, where=AUDIT_LOG), where=AUDIT_LOG)

    def next_event() -> dict[str, Any]:
        report = verify_resolved(folder, trust)
        return build_event(
            index=len(report.events),
            kind=kind,
            actor=actor,
            payload=payload,
            manifest_sha256=report.manifest_hash,
            prev_hash=report.head_hash,
            key=key,
        )

    return AuditEvent.model_validate(append_line_locked(folder, next_event))
