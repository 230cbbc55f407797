"""The audit log: appending, signed decisions, approval lookup, and appends that refuse a broken artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from artifact_support import PHI

from medtl.artifacts import append_event, open_verified, verify
from medtl.artifacts.audit import EVENT_SIGNATURE_DOMAIN, event_hash
from medtl.artifacts.keys import key_fingerprint, signature_is_valid
from medtl.errors import ArtifactIntegrityError, ConfigError, PHIError


def test_events_are_chained_and_bound_to_the_manifest(artifact: Path, keys: dict[str, Any]) -> None:
    evaluated = append_event(artifact, "evaluated", actor="eval-job", payload={"auroc": 0.91, "report": "r1"})
    approved = append_event(
        artifact, "approved", actor="Dr. Reviewer", payload={"operating_point": 0.4}, signing_key=keys["private"]
    )
    report = verify(artifact, trusted_keys=[keys["public"]])
    assert [e.kind for e in report.events] == ["created", "evaluated", "approved"]
    assert [e.index for e in report.events] == [0, 1, 2]
    created = report.events[0]
    assert evaluated.prev_hash == created.hash and approved.prev_hash == evaluated.hash
    assert {e.manifest_sha256 for e in report.events} == {report.manifest_hash}
    lines = [json.loads(line) for line in (artifact / "audit.jsonl").read_text().splitlines()]
    assert [event_hash(line) for line in lines] == [e.hash for e in report.events]
    assert evaluated.signature is None and evaluated.public_key is None
    assert approved.public_key == keys["hex"] and approved.signature is not None
    assert signature_is_valid(
        approved.public_key, EVENT_SIGNATURE_DOMAIN + approved.hash.encode(), bytes.fromhex(approved.signature)
    )
    assert report.head_hash == approved.hash
    assert report.status.state == "undecided"  # an event signature is not a reviewer's signed decision
    assert report.event_signers == {0: key_fingerprint(keys["hex"]), 2: key_fingerprint(keys["hex"])}
    assert approved.time.endswith("Z") and approved.actor == "Dr. Reviewer"


def test_an_unsigned_approval_counts_for_nothing_and_says_why(artifact: Path) -> None:
    append_event(artifact, "approved", actor="Dr. A", payload={"threshold": 0.0})
    report = verify(artifact)
    assert report.status.state == "undecided" and not open_verified(artifact).is_approved
    assert "decision: none counted" in report.describe()
    assert "event 1 (approved) ignored: it carries no reviewer-signed statement" in report.warnings


def test_events_signed_by_other_keys_are_kept_with_their_signer(artifact: Path, keys: dict[str, Any]) -> None:
    append_event(artifact, "scored", actor="nightly", payload={"n": 3}, signing_key=keys["other_private"])
    report = verify(artifact)
    assert report.event_signers[1] == key_fingerprint(keys["other_hex"])
    assert report.status.state == "undecided" and report.warnings == []


def test_stripping_an_event_signature_breaks_the_chain(artifact: Path, keys: dict[str, Any]) -> None:
    append_event(artifact, "approved", actor="Dr. A", payload={}, signing_key=keys["private"])
    lines = [json.loads(line) for line in (artifact / "audit.jsonl").read_text().splitlines()]
    lines[1]["signature"] = None
    (artifact / "audit.jsonl").write_text(
        "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines)
    )
    with pytest.raises(ArtifactIntegrityError, match="line 2"):
        verify(artifact)


def test_append_refuses_a_tampered_artifact(artifact: Path) -> None:
    (artifact / "config.yaml").write_text("backbone: other\n")
    before = (artifact / "audit.jsonl").read_bytes()
    with pytest.raises(ArtifactIntegrityError, match=r"config\.yaml"):
        append_event(artifact, "approved", actor="Dr. A", payload={})
    assert (artifact / "audit.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "created", "actor": "x", "payload": {}}, "written by seal"),
        ({"kind": "scored", "actor": " ", "payload": {}}, "needs an actor"),
        ({"kind": "scored", "actor": "x", "payload": {"auc": float("nan")}}, "not plain JSON"),
        ({"kind": "scored", "actor": "x", "payload": {"when": object()}}, "not plain JSON"),
        ({"kind": "teleported", "actor": "x", "payload": {}}, "invalid audit event"),
    ],
)
def test_bad_events_are_refused(artifact: Path, kwargs: dict[str, Any], message: str) -> None:
    before = (artifact / "audit.jsonl").read_bytes()
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError, match=message):
        append_event(artifact, kind, **kwargs)
    assert (artifact / "audit.jsonl").read_bytes() == before


def test_payload_with_phi_is_refused_when_terms_are_given(artifact: Path) -> None:
    with pytest.raises(PHIError) as caught:
        append_event(artifact, "scored", actor="nightly", payload={"note": "scan of Anna Novak"}, phi_terms=PHI)
    assert "Novak" not in str(caught.value)
    assert len(verify(artifact).events) == 1
