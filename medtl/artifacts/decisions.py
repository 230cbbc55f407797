"""Clinical decisions on an artifact: reviewers sign them with their own key; `judge` is the one place that decides.

Why a signed statement inside the event rather than a signature on the event: the reviewer may sign where they read
the report (`medtl approve --sign-only`) while a paused flow on another machine appends it, and the audit log's
hash chain and the decision's authorship are separate questions. The statement names the sealed manifest, the
signed `evaluated` event and the report's SHA-256; the signature is Ed25519 over a domain tag + its canonical JSON.

`judge` reads the whole audit log and returns the status every consumer uses (scoring, flows, report, `verify`):
- an `evaluated` event counts only when signed by a pipeline key (the artifact anchors, or in development mode the
  key that sealed the artifact);
- an `approved` / `rejected` event counts only when it carries a valid signed statement by an approver key that is
  not a pipeline key, for this manifest, naming a counted evaluation earlier in the log and one of the files that
  evaluation recorded, and is not a copy of an earlier statement;
- the latest counted decision wins (an invalid approval cannot override a valid rejection); everything else is
  listed as ignored, with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from medtl.artifacts.keys import key_fingerprint, public_key_hex, sign, signature_is_valid
from medtl.contracts.artifact import AuditEvent, DecisionStatement, SignedDecision
from medtl.contracts.evaluation import OperatingPoint
from medtl.contracts.handoff import evaluated_payload
from medtl.errors import ConfigError, DataContractError
from medtl.hashing import canonical_json

DECISION_SIGNATURE_DOMAIN = b"medtl-decision-v1:"
TOKEN_PREFIX = "medtl-decision-v1."  # noqa: S105 - a format tag, not a secret
MAX_TOKEN_CHARS = 16_384  # a statement is well under 8 KiB; anything longer is not one


def new_nonce() -> str:
    return secrets.token_hex(16)


def statement_message(statement: DecisionStatement) -> bytes:
    return DECISION_SIGNATURE_DOMAIN + canonical_json(statement.model_dump(mode="json"))


def sign_decision(statement: DecisionStatement, key: Ed25519PrivateKey) -> SignedDecision:
    return SignedDecision(
        statement=statement, public_key=public_key_hex(key), signature=sign(key, statement_message(statement)).hex()
    )


def encode_decision(signed: SignedDecision) -> str:
    """One line a reviewer can paste into a form: the prefix + base64url of the canonical JSON."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(canonical_json(signed.model_dump(mode="json"))).decode("ascii")


def decode_decision(token: str) -> SignedDecision:
    """Parse a pasted decision; the signature is checked by `judge` (and by `approve` before it is appended)."""
    text = token.strip()
    fix = "paste the whole line printed by `medtl approve --sign-only`"
    if len(text) > MAX_TOKEN_CHARS or not text.startswith(TOKEN_PREFIX):
        raise ConfigError("this is not a signed medtl decision", where="decision", fix=fix)
    try:
        document = json.loads(base64.urlsafe_b64decode(text[len(TOKEN_PREFIX) :].encode("ascii")))
        return SignedDecision.model_validate(document)
    except (binascii.Error, UnicodeError, ValueError, ValidationError):
        raise ConfigError("the signed decision is damaged or incomplete", where="decision", fix=fix) from None


@dataclass(frozen=True)
class IgnoredEvent:
    index: int
    kind: str
    reason: str

    def describe(self) -> str:
        return f"event {self.index} ({self.kind}) ignored: {self.reason}"


@dataclass(frozen=True)
class ApprovalStatus:
    """What the audit log decides about this artifact, given the trust settings it was judged under."""

    state: Literal["approved", "rejected", "undecided"]
    event: AuditEvent | None = None  # the counted decision
    statement: DecisionStatement | None = None
    reviewer_key: str | None = None  # fingerprint of the key that signed the counted decision
    evaluation: AuditEvent | None = None  # the evaluation the decision refers to
    latest_evaluation: AuditEvent | None = None  # the newest counted evaluation (provisional threshold)
    ignored: tuple[IgnoredEvent, ...] = field(default_factory=tuple)

    @property
    def approved(self) -> bool:
        return self.state == "approved"

    @property
    def threshold(self) -> float | None:
        """The approved threshold; None unless approved."""
        return self.statement.threshold if self.approved and self.statement is not None else None

    def thresholds(self, decision: str | None) -> dict[str, float]:
        """Endpoint id -> the threshold decisions are made at (ids as contracts/task.py `endpoints` names them).

        Approved: the approved evaluation's operating points, with the reviewer's threshold for `decision` (the
        decision endpoint: binary's positive class, ordinal's decision cut; None for multiclass and multi-label),
        the only one a reviewer may change. Otherwise the latest counted evaluation's points, provisionally (empty
        without one): the caller marks such decisions unapproved."""
        if self.approved and self.evaluation is not None and self.statement is not None:
            found = operating_thresholds(self.evaluation, decision)
            if decision is not None and self.statement.threshold is not None:
                found[decision] = float(self.statement.threshold)
            return found
        return operating_thresholds(self.latest_evaluation, decision) if self.latest_evaluation is not None else {}

    def describe(self) -> str:
        if self.event is None or self.statement is None:
            return "none counted"
        s = self.statement
        points = evaluated_payload(self.evaluation).operating_points if self.evaluation is not None else {}
        endpoints = f" ({len(points)} endpoint operating points)" if points else ""
        return (
            f"{self.state} by {s.reviewer} ({s.role}) at {s.decided_at}, signed by approver key {self.reviewer_key}, "
            f"threshold {'none' if s.threshold is None else f'{s.threshold:g}'}{endpoints}, "
            f"report sha256 {s.report_sha256[:16]}…"
        )


def operating_thresholds(evaluation: AuditEvent, decision: str | None) -> dict[str, float]:
    """The thresholds an `evaluated` event records: `operating_points` {endpoint id: point} for every endpoint that
    has one, and `operating_point` (the decision endpoint's; the only one an evaluation from before task types
    recorded)."""
    payload = evaluated_payload(evaluation)
    found = {
        name: _threshold_of(evaluation, point, f"operating_points.{name}")
        for name, point in payload.operating_points.items()
    }
    if decision is not None and decision not in found and payload.operating_point is not None:
        found[decision] = _threshold_of(evaluation, payload.operating_point, "operating_point")
    return found


def _threshold_of(evaluation: AuditEvent, point: OperatingPoint, key: str) -> float:
    if not 0.0 <= point.threshold <= 1.0:
        raise _bad_point(evaluation, key)
    return float(point.threshold)


def _bad_point(evaluation: AuditEvent, key: str) -> ConfigError:
    return ConfigError(
        f"the evaluation's {key} has no threshold between 0 and 1",
        where=f"audit event {evaluation.index} (evaluated)",
        fix="run `medtl evaluate` again with this medtl version and have the new report approved",
    )


def _counted_evaluation(event: AuditEvent, pipeline_keys: frozenset[str]) -> str | None:
    """None when the `evaluated` event counts, else why not."""
    if event.public_key is None:
        return "not signed; an evaluation counts only when signed by a pipeline key"
    if event.public_key not in pipeline_keys:
        return f"signed by {key_fingerprint(event.public_key)}, which is not a trusted pipeline key"
    try:
        payload = evaluated_payload(event)
    except DataContractError:
        return "its payload does not follow the evaluated_payload contract (data_contracts/)"
    if not payload.files:
        return "its payload lists no report files"
    return None


def _decision_problem(
    event: AuditEvent,
    signed: SignedDecision,
    *,
    manifest_sha256: str,
    evaluations: dict[str, AuditEvent],
    pipeline_keys: frozenset[str],
    approver_keys: frozenset[str],
) -> str | None:
    s = signed.statement
    if (s.decision == "approve") != (event.kind == "approved"):
        return f"the signed statement says {s.decision!r} but the event says {event.kind!r}"
    if not signature_is_valid(signed.public_key, statement_message(s), bytes.fromhex(signed.signature)):
        return "the reviewer's signature does not verify the statement"
    fingerprint = key_fingerprint(signed.public_key)
    if signed.public_key in pipeline_keys:
        return f"signed by the pipeline key {fingerprint}; decisions must come from a reviewer's own key"
    if not approver_keys:
        return "no approver keys are configured (MEDTL_APPROVER_KEYS), so no decision can count"
    if signed.public_key not in approver_keys:
        return f"signed by {fingerprint}, which is not one of the approver keys"
    if s.artifact_manifest_sha256 != manifest_sha256:
        return "the statement was signed for another artifact"
    evaluation = evaluations.get(s.evaluation_event_hash)
    if evaluation is None or evaluation.index >= event.index:
        return "the statement names no counted evaluation of this artifact before it"
    if s.report_sha256 not in evaluated_payload(evaluation).files.values():
        return "the statement names a report that this evaluation did not produce"
    return None


def judge(
    events: Sequence[AuditEvent],
    *,
    manifest_sha256: str,
    pipeline_keys: frozenset[str],
    approver_keys: frozenset[str],
) -> ApprovalStatus:
    """The approval status of an artifact whose chain has already been verified (see the module docstring)."""
    ignored: list[IgnoredEvent] = []
    evaluations: dict[str, AuditEvent] = {}
    latest_evaluation: AuditEvent | None = None
    seen_statements: set[bytes] = set()
    counted: tuple[AuditEvent, SignedDecision] | None = None
    for event in events:
        if event.kind == "evaluated":
            problem = _counted_evaluation(event, pipeline_keys)
            if problem is None:
                evaluations[event.hash] = latest_evaluation = event
            else:
                ignored.append(IgnoredEvent(event.index, event.kind, problem))
        elif event.kind in ("approved", "rejected"):
            try:
                signed = SignedDecision.model_validate(event.payload)
            except ValidationError:
                ignored.append(IgnoredEvent(event.index, event.kind, "it carries no reviewer-signed statement"))
                continue
            problem = _decision_problem(
                event, signed, manifest_sha256=manifest_sha256, evaluations=evaluations,
                pipeline_keys=pipeline_keys, approver_keys=approver_keys,
            )  # fmt: skip
            message = statement_message(signed.statement)
            if problem is None and message in seen_statements:
                problem = "it repeats an earlier signed statement (a replayed decision)"
            seen_statements.add(message)
            if problem is None:
                counted = (event, signed)
            else:
                ignored.append(IgnoredEvent(event.index, event.kind, problem))
    if counted is None:
        return ApprovalStatus("undecided", latest_evaluation=latest_evaluation, ignored=tuple(ignored))
    event, signed = counted
    return ApprovalStatus(
        state="approved" if event.kind == "approved" else "rejected",
        event=event,
        statement=signed.statement,
        reviewer_key=key_fingerprint(signed.public_key),
        evaluation=evaluations[signed.statement.evaluation_event_hash],
        latest_evaluation=latest_evaluation,
        ignored=tuple(ignored),
    )


__all__ = [
    "ApprovalStatus",
    "IgnoredEvent",
    "decode_decision",
    "encode_decision",
    "judge",
    "new_nonce",
    "operating_thresholds",
    "sign_decision",
    "statement_message",
]
