"""What an attacker with write access to an artifact folder and a key of their own can do: change files, reseal the
manifest consistently, rebuild the audit log, and sign an `evaluated` event and an approval with that key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from medtl.artifacts.audit import build_event
from medtl.artifacts.decisions import new_nonce, sign_decision
from medtl.artifacts.verify import parse_manifest, render_manifest
from medtl.contracts.artifact import DecisionStatement
from medtl.hashing import canonical_json, sha256_bytes


def reseal_with(folder: Path, key: Ed25519PrivateKey, change: Callable[[Path], None]) -> str:
    """Apply `change` to the folder, then rewrite manifest.json, signature.bin and the `created` event with `key`."""
    change(folder)
    manifest = parse_manifest((folder / "manifest.json").read_bytes())
    entries = [
        e.model_copy(update={"sha256": sha256_bytes((folder / e.path).read_bytes()),
                             "size_bytes": (folder / e.path).stat().st_size})
        for e in manifest.files
    ]  # fmt: skip
    public = key.public_key().public_bytes_raw().hex()
    manifest = manifest.model_copy(update={"files": entries, "public_key": public, "key_fingerprint": None})
    data = render_manifest(manifest)
    (folder / "manifest.json").write_bytes(data)
    (folder / "signature.bin").write_bytes(key.sign(data))
    created = json.loads((folder / "audit.jsonl").read_text().splitlines()[0])
    event = build_event(
        index=0, kind="created", actor=created["actor"], payload=created["payload"],
        manifest_sha256=sha256_bytes(data), prev_hash=None, key=key, time=created["time"],
    )  # fmt: skip
    (folder / "audit.jsonl").write_bytes(canonical_json(event) + b"\n")
    return sha256_bytes(data)


def self_approve(folder: Path, key: Ed25519PrivateKey, *, threshold: float = 0.0) -> None:
    """After reseal_with: a fabricated report, an `evaluated` event and an approval, all signed with `key`."""
    manifest_sha256 = json.loads((folder / "audit.jsonl").read_text().splitlines()[0])["manifest_sha256"]
    created = json.loads((folder / "audit.jsonl").read_text().splitlines()[0])
    report_sha256 = sha256_bytes(b"<html>fabricated report</html>")
    evaluated = build_event(
        index=1, kind="evaluated", actor="medtl evaluate", manifest_sha256=manifest_sha256, prev_hash=created["hash"],
        payload={"files": {"report.html": report_sha256}, "evaluated_on": ["oof"],
                 "operating_point": {"threshold": threshold, "rule": "youden", "chosen_on": "oof"}}, key=key,
    )  # fmt: skip
    statement = DecisionStatement(
        artifact_manifest_sha256=manifest_sha256, evaluation_event_hash=evaluated["hash"], report_sha256=report_sha256,
        decision="approve", threshold=threshold, reviewer="Dr. Forged", role="radiologist",
        decided_at="2026-01-01T00:00:00Z", nonce=new_nonce(),
    )  # fmt: skip
    approved = build_event(
        index=2, kind="approved", actor="Dr. Forged (radiologist)", manifest_sha256=manifest_sha256,
        prev_hash=evaluated["hash"], payload=sign_decision(statement, key).model_dump(mode="json"), key=key,
    )  # fmt: skip
    with open(folder / "audit.jsonl", "ab") as handle:
        handle.write(canonical_json(evaluated) + b"\n" + canonical_json(approved) + b"\n")
