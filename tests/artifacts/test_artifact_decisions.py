"""Approvals only real reviewers can give: a decision counts only when a listed approver's own key signed it, for a
report that a pipeline-signed evaluation of this artifact produced; the latest counted decision wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medtl.artifacts import append_event, generate_signing_key, key_fingerprint, open_verified, verify
from medtl.artifacts.decisions import decode_decision, encode_decision, sign_decision
from medtl.artifacts.keys import resolve_signing_key
from medtl.contracts.artifact import DecisionStatement
from medtl.errors import ConfigError
from medtl.evaluation.approve import approve, record_review, sign_review
from medtl.hashing import sha256_file


def evaluated(artifact: Path, report: Path, key: Any) -> None:
    """What `medtl evaluate` records: the report files' hashes and the operating point, signed by `key`."""
    append_event(
        artifact, "evaluated", actor="medtl evaluate", signing_key=key,
        payload={"files": {"report.html": sha256_file(report / "report.html")},
                 "operating_point": {"threshold": 0.4, "rule": "youden", "chosen_on": "oof"}, "evaluated_on": ["oof"]},
    )  # fmt: skip


def decide(artifact: Path, report: Path, key: Path, decision: str = "approve", **extra: Any) -> Any:
    return approve(
        artifact,
        reviewer="Dr. A",
        role="radiologist",
        decision=decision,
        report=report,
        key=key,
        **extra,  # type: ignore[arg-type]
    )


def raw_event(artifact: Path, kind: str, payload: dict[str, Any]) -> None:
    """What an attacker with write access can append: a well-formed event with any payload."""
    append_event(artifact, kind, actor="Dr. Forged (radiologist)", payload=payload)  # type: ignore[arg-type]


def test_an_approvers_signed_decision_counts_with_its_threshold(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"])
    event = decide(artifact, report, reviewer, threshold=0.35, comment="ok")
    status = open_verified(artifact).status
    assert status.approved and status.event == event and status.threshold == 0.35
    assert status.statement.reviewer == "Dr. A" and status.statement.threshold_changed
    assert status.reviewer_key == key_fingerprint(json.loads(event.model_dump_json())["payload"]["public_key"])
    assert status.evaluation.kind == "evaluated" and status.ignored == ()
    assert "decision: approved by Dr. A (radiologist)" in verify(artifact).describe()


def test_an_evaluation_whose_payload_breaks_its_contract_does_not_count(
    artifact: Path, report: Path, keys: dict[str, Any]
) -> None:
    append_event(  # signed by the pipeline key, but a threshold that is not a number: nothing may rest on it
        artifact, "evaluated", actor="medtl evaluate", signing_key=keys["private"],
        payload={"files": {"report.html": sha256_file(report / "report.html")}, "evaluated_on": ["oof"],
                 "operating_point": {"threshold": "0.4; drop", "rule": "youden", "chosen_on": "oof"}},
    )  # fmt: skip
    status = open_verified(artifact).status
    assert status.latest_evaluation is None
    assert [i.reason for i in status.ignored] == [
        "its payload does not follow the evaluated_payload contract (data_contracts/)"
    ]


def test_an_unsigned_approval_cannot_override_a_signed_rejection(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"])
    decide(artifact, report, reviewer, "reject")
    approval = json.loads(json.dumps(open_verified(artifact).events[-1].payload))
    approval["statement"]["decision"] = "approve"  # an edited statement: the signature no longer verifies
    raw_event(artifact, "approved", approval)
    raw_event(artifact, "approved", {"threshold": 0.0, "reviewer": "Dr. Forged"})
    verified = open_verified(artifact)
    assert verified.status.state == "rejected" and not verified.is_approved
    reasons = {item.index: item.reason for item in verified.status.ignored}
    assert reasons == {
        3: "the reviewer's signature does not verify the statement",
        4: "it carries no reviewer-signed statement",
    }


def test_a_replayed_approval_after_a_rejection_does_not_count(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"])
    decide(artifact, report, reviewer, "approve")
    copied = open_verified(artifact).events[-1].payload
    decide(artifact, report, reviewer, "reject")
    raw_event(artifact, "approved", copied)
    status = open_verified(artifact).status
    assert status.state == "rejected"
    assert [item.reason for item in status.ignored] == ["it repeats an earlier signed statement (a replayed decision)"]


def test_a_key_not_listed_as_approver_is_refused_and_ignored(
    artifact: Path, report: Path, reviewer: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"])
    stranger = tmp_path / "stranger.pem"
    generate_signing_key(stranger)
    with pytest.raises(ConfigError, match="not one of the approver keys"):
        decide(artifact, report, stranger)
    signed = sign_review(artifact, reviewer="X", role="Y", decision="approve", report=report, key=stranger)
    raw_event(artifact, "approved", signed.model_dump(mode="json"))
    status = open_verified(artifact).status
    assert status.state == "undecided" and "not one of the approver keys" in status.ignored[0].reason


def test_the_pipeline_key_cannot_approve(artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]) -> None:
    evaluated(artifact, report, keys["private"])
    with pytest.raises(ConfigError, match="signed by the pipeline key"):
        decide(artifact, report, keys["private"])
    signed = sign_review(artifact, reviewer="X", role="Y", decision="approve", report=report, key=keys["private"])
    raw_event(artifact, "approved", signed.model_dump(mode="json"))
    assert "decisions must come from a reviewer's own key" in open_verified(artifact).status.ignored[0].reason


def test_a_pipeline_key_listed_as_approver_still_cannot_approve(
    artifact: Path, report: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTL_APPROVER_KEYS", str(keys["public"]))  # a misconfiguration: roles must stay separate
    evaluated(artifact, report, keys["private"])
    with pytest.raises(ConfigError, match="signed by the pipeline key"):
        decide(artifact, report, keys["private"])


def test_a_forged_evaluation_cannot_be_approved(
    artifact: Path, report: Path, reviewer: Path, tmp_path: Path, keys: dict[str, Any]
) -> None:
    fabricated = tmp_path / "fabricated"
    fabricated.mkdir()
    (fabricated / "report.html").write_text("<html>AUROC 0.99 (fabricated)</html>")
    evaluated(artifact, fabricated, None)  # unsigned
    evaluated(artifact, fabricated, keys["other_private"])  # signed by a key that is not a pipeline key
    with pytest.raises(ConfigError, match="not signed by a pipeline key"):
        decide(artifact, fabricated, reviewer)
    # a genuine reviewer signature over the forged evaluation, appended by the forger, counts for nothing either
    forged = open_verified(artifact).events[-1]
    private = resolve_signing_key(reviewer)
    assert private is not None
    statement = DecisionStatement(
        artifact_manifest_sha256=forged.manifest_sha256, evaluation_event_hash=forged.hash,
        report_sha256=sha256_file(fabricated / "report.html"), decision="approve", threshold=0.0,
        reviewer="Dr. A", role="r", decided_at="2026-01-01T00:00:00Z", nonce="0" * 32,
    )  # fmt: skip
    raw_event(artifact, "approved", sign_decision(statement, private).model_dump(mode="json"))
    status = open_verified(artifact).status
    assert status.state == "undecided"
    reasons = [item.reason for item in status.ignored]
    assert reasons[0] == "not signed; an evaluation counts only when signed by a pipeline key"
    assert "which is not a trusted pipeline key" in reasons[1]
    assert reasons[2] == "the statement names no counted evaluation of this artifact before it"


def test_a_decision_for_another_artifact_or_report_does_not_count(
    artifact: Path, report: Path, reviewer: Path, tmp_path: Path, keys: dict[str, Any], build: Any
) -> None:
    evaluated(artifact, report, keys["private"])
    other = build(tmp_path / "other", signing_key=keys["private"], extra=lambda b: b.add_json("extra.json", {"x": 1}))
    evaluated(other.folder, report, keys["private"])
    signed = sign_review(other.folder, reviewer="Dr. A", role="r", decision="approve", report=report, key=reviewer)
    with pytest.raises(ConfigError, match="signed for another artifact"):
        record_review(artifact, signed)
    (report / "report.html").write_text("<html>edited after evaluation</html>")
    with pytest.raises(ConfigError, match="not produced by this artifact's evaluation"):
        decide(artifact, report, reviewer)


def test_without_approver_keys_no_decision_counts(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated(artifact, report, keys["private"])
    decide(artifact, report, reviewer)
    monkeypatch.delenv("MEDTL_APPROVER_KEYS")
    status = open_verified(artifact).status
    assert status.state == "undecided" and "no approver keys are configured" in status.ignored[0].reason


def test_a_signed_decision_travels_as_one_line(artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]):
    evaluated(artifact, report, keys["private"])
    signed = sign_review(artifact, reviewer="Dr. A", role="r", decision="approve", report=report, key=reviewer)
    line = encode_decision(signed)
    assert "\n" not in line and decode_decision(f"  {line}\n") == signed
    record_review(artifact, decode_decision(line))
    assert open_verified(artifact).is_approved
    for damaged in (line[:-8], "medtl-decision-v1.!!!", "hello", line + "A" * 20_000):
        with pytest.raises(ConfigError, match=r"signed medtl decision|damaged"):
            decode_decision(damaged)
