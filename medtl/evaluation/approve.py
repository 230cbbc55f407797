"""`medtl approve`: a clinician's decision, recorded as a signed event bound to the exact report they read.

The event names the report by its SHA-256, which must match a report this artifact's own evaluation produced, so
an approval cannot be attached to a different (or edited) report. Scoring later refuses an artifact whose latest
decision is not an approval, unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medtl.artifacts import open_verified, resolve_signing_key
from medtl.contracts.artifact import AuditEvent
from medtl.errors import ConfigError
from medtl.hashing import sha256_file


def approve(
    artifact: Path,
    *,
    reviewer: str,
    role: str,
    decision: Literal["approve", "reject"],
    report: Path,
    threshold: float | None = None,
    comment: str | None = None,
    allow_unsigned: bool = False,
) -> AuditEvent:
    if decision not in ("approve", "reject"):
        raise ConfigError(f"decision must be approve or reject, not {decision!r}")
    if not reviewer.strip() or not role.strip():
        raise ConfigError("a decision needs the reviewer's name and role", fix="pass --reviewer and --role")
    report_file = Path(report) / "report.html" if Path(report).is_dir() else Path(report)
    if not report_file.is_file():
        raise ConfigError(
            "the report file does not exist", where=str(report_file), fix="pass the folder `medtl evaluate` wrote"
        )
    verified = open_verified(artifact, allow_unsigned=allow_unsigned)
    digest = sha256_file(report_file)
    evaluated = [
        event
        for event in verified.events
        if event.kind == "evaluated" and digest in event.payload.get("files", {}).values()
    ]
    if not evaluated:
        raise ConfigError(
            "this report was not produced by this artifact's evaluation (or it was edited afterwards)",
            where=report_file.name,
            fix="run `medtl evaluate` on this artifact and approve the report it writes",
        )
    event = evaluated[-1]
    point = event.payload.get("operating_point") or {}
    chosen = point.get("threshold") if threshold is None else threshold
    if chosen is None or not 0.0 <= float(chosen) <= 1.0:
        raise ConfigError(f"the threshold must be between 0 and 1 (got {chosen})")
    key = resolve_signing_key()
    if key is None and not allow_unsigned:
        raise ConfigError(
            "no signing key for the decision",
            fix="set MEDTL_SIGNING_KEY to the reviewer's (or site's) Ed25519 key: an approval must be signed",
        )
    return verified.append_event(
        "approved" if decision == "approve" else "rejected",
        actor=f"{reviewer.strip()} ({role.strip()})",
        payload={
            "decision": decision,
            "reviewer": reviewer.strip(),
            "role": role.strip(),
            "report_sha256": digest,
            "evaluation_event": event.index,
            "threshold": float(chosen),
            "operating_point_rule": point.get("rule"),
            "threshold_changed": threshold is not None and float(threshold) != float(point.get("threshold", -1)),
            "comment": comment or "",
        },
        signing_key=key,
    )
