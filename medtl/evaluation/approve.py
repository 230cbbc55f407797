"""`medtl approve`: a clinician's decision, signed with the reviewer's own key and bound to the report they read.

Why the reviewer's key and never the pipeline's: every training and scoring worker holds the pipeline key, so a
decision signed with it proves nothing about a person. The statement names the sealed manifest, the signed
`evaluated` event that produced the report, and the report's SHA-256 (medtl.artifacts.decisions). It can be signed
on the reviewer's machine and appended elsewhere (`--sign-only`, then a paused flow's form), or both at once.
Before anything is appended, the decision is judged exactly as every later reader will judge it, so a decision
that would not count is refused with the reason instead of being recorded in vain.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from medtl.artifacts import REVIEWER_KEY_ENV, VerifiedArtifact, key_fingerprint, open_verified, resolve_signing_key
from medtl.artifacts.decisions import judge, new_nonce, sign_decision
from medtl.artifacts.keys import APPROVER_KEYS_ENV, SigningKeySource
from medtl.artifacts.trust import TrustSettings
from medtl.contracts.artifact import AuditEvent, DecisionStatement, SignedDecision
from medtl.contracts.handoff import evaluated_payload
from medtl.errors import ConfigError, DataContractError
from medtl.hashing import sha256_file

log = logging.getLogger(__name__)


def _report_file(report: Path) -> Path:
    report_file = Path(report) / "report.html" if Path(report).is_dir() else Path(report)
    if not report_file.is_file():
        raise ConfigError(
            "the report file does not exist", where=report_file.name, fix="pass the folder `medtl evaluate` wrote"
        )
    return report_file


def sign_review(
    artifact: Path | VerifiedArtifact,
    *,
    reviewer: str,
    role: str,
    decision: Literal["approve", "reject"],
    report: Path,
    threshold: float | None = None,
    comment: str | None = None,
    key: SigningKeySource | None = None,
    trust: TrustSettings | None = None,
) -> SignedDecision:
    """The reviewer's signed statement (nothing is written): key from `key`, else $MEDTL_REVIEWER_KEY."""
    if decision not in ("approve", "reject"):
        raise ConfigError(f"decision must be approve or reject, not {decision!r}")
    if not reviewer.strip() or not role.strip():
        raise ConfigError("a decision needs the reviewer's name and role", fix="pass --reviewer and --role")
    private = resolve_signing_key(key, env=REVIEWER_KEY_ENV)
    if private is None:
        raise ConfigError(
            "no reviewer key: a decision must be signed with the reviewer's own key",
            fix=f"pass --key REVIEWER.pem or set {REVIEWER_KEY_ENV}; make one with `medtl keys generate PATH` and "
            f"give its .pub file to whoever sets {APPROVER_KEYS_ENV}",
        )
    report_file = _report_file(report)
    verified = artifact if isinstance(artifact, VerifiedArtifact) else open_verified(artifact, trust=trust)
    verified.require_model("approved or rejected")
    digest = sha256_file(report_file)
    evaluations = [e for e in verified.events if e.kind == "evaluated" and digest in _files(e).values()]
    if not evaluations:
        raise ConfigError(
            "this report was not produced by this artifact's evaluation (or it was edited afterwards)",
            where=report_file.name,
            fix="run `medtl evaluate` on this artifact and review the report it writes",
        )
    event = evaluations[-1]
    if event.index in {ignored.index for ignored in verified.status.ignored}:
        raise ConfigError(
            "the evaluation that produced this report is not signed by a pipeline key, so it cannot be approved",
            where=report_file.name,
            fix="evaluate again with MEDTL_SIGNING_KEY set to the pipeline's key",
        )
    _check_threshold_applies(verified, threshold)
    point = evaluated_payload(event).operating_point
    chosen = (point.threshold if point is not None else None) if threshold is None else threshold
    if chosen is not None and not 0.0 <= float(chosen) <= 1.0:
        raise ConfigError(f"the threshold must be between 0 and 1 (got {chosen})")
    statement = DecisionStatement(
        artifact_manifest_sha256=verified.manifest_hash,
        evaluation_event_hash=event.hash,
        report_sha256=digest,
        decision=decision,
        threshold=None if chosen is None else float(chosen),
        operating_point_rule=point.rule if point is not None else None,
        threshold_changed=threshold is not None and (point is None or float(threshold) != point.threshold),
        reviewer=reviewer.strip(),
        role=role.strip(),
        comment=comment or "",
        decided_at=_now(),
        nonce=new_nonce(),
    )
    return sign_decision(statement, private)


def record_review(
    artifact: Path | VerifiedArtifact, signed: SignedDecision, *, trust: TrustSettings | None = None
) -> AuditEvent:
    """Append a signed decision to the audit log, after checking that it would count (else ConfigError, why)."""
    verified = artifact if isinstance(artifact, VerifiedArtifact) else open_verified(artifact, trust=trust)
    kind = "approved" if signed.statement.decision == "approve" else "rejected"
    trial = verified.events[-1].model_copy(
        update={"index": len(verified.events), "kind": kind, "payload": signed.model_dump(mode="json")}
    )
    verdict = judge(
        [*verified.events, trial], manifest_sha256=verified.manifest_hash,
        pipeline_keys=verified.report.pipeline_keys, approver_keys=verified.trust.approver_keys,
    )  # fmt: skip
    rejected = [ignored for ignored in verdict.ignored if ignored.index == trial.index]
    if rejected:
        raise ConfigError(
            f"this decision would not count: {rejected[0].reason}",
            where=verified.folder.name,
            fix=f"sign with a reviewer key listed in {APPROVER_KEYS_ENV} (never the pipeline key), for a report "
            "this artifact's signed evaluation produced",
        )
    event = verified.append_event(
        kind,  # type: ignore[arg-type]
        actor=f"{signed.statement.reviewer} ({signed.statement.role})",
        payload=signed.model_dump(mode="json"),
    )
    log.info("recorded %s signed by %s", kind, key_fingerprint(signed.public_key))
    return event


def approve(
    artifact: Path,
    *,
    reviewer: str,
    role: str,
    decision: Literal["approve", "reject"],
    report: Path,
    threshold: float | None = None,
    comment: str | None = None,
    key: SigningKeySource | None = None,
    trust: TrustSettings | None = None,
) -> AuditEvent:
    """Sign the decision with the reviewer's key and record it (sign_review, then record_review)."""
    verified = open_verified(artifact, trust=trust)
    signed = sign_review(
        verified, reviewer=reviewer, role=role, decision=decision, report=report, threshold=threshold,
        comment=comment, key=key,
    )  # fmt: skip
    return record_review(verified, signed)


def _check_threshold_applies(verified: VerifiedArtifact, threshold: float | None) -> None:
    """A reviewer's threshold replaces the decision endpoint's (binary: the positive class; ordinal: the decision
    cut). Multi-class decides by the most probable class and multi-label has one operating point per finding, so
    there is no single threshold to replace: refused by name rather than recorded and silently ignored."""
    kind = verified.metadata["task"]["kind"]
    if threshold is None or kind in ("binary", "ordinal"):
        return
    reason = (
        "the most probable class is the decision, with no threshold"
        if kind == "multiclass"
        else "each finding has its own operating point from the report"
    )
    raise ConfigError(
        f"--threshold does not apply to a {kind} task: {reason}",
        where=verified.folder.name,
        fix="approve without --threshold (the report's operating points are what you approve), or reject it and "
        "have it evaluated again with another operating-point rule (`medtl evaluate --rule`)",
    )


def _files(event: AuditEvent) -> dict[str, str]:
    try:
        return evaluated_payload(event).files
    except DataContractError:
        return {}


def _now() -> str:
    from medtl.artifacts.audit import now_iso

    return now_iso()
