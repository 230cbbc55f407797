"""Every kind of tampering makes verification fail with a message that names the file or the event."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from artifact_support import Built
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtl.artifacts import append_event, open_verified, verify
from medtl.artifacts.audit import event_hash
from medtl.artifacts.cli import verify_command
from medtl.artifacts.keys import resolve_signing_key
from medtl.artifacts.verify import parse_manifest, render_manifest
from medtl.errors import ArtifactIntegrityError
from medtl.hashing import canonical_json
from support.forgery import reseal_with

ALL_FILES = [
    "manifest.json",
    "signature.bin",
    "audit.jsonl",
    "metadata.json",
    "model_card.md",
    "environment.txt",
    "config.yaml",
    "preprocessing.json",
    "label_map.json",
    "splits.json",
    "predictions/oof.parquet",
    "metrics/pooled.json",
    "metrics/fold0.json",
    "metrics/fold1.json",
    "weights/final.safetensors",
    "weights/fold0.safetensors",
    "weights/fold1.safetensors",
]


def flip(path: Path, position: int | None = None, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    position = len(data) // 2 if position is None else position % len(data)
    data[position] ^= mask
    path.write_bytes(bytes(data))


def failure(folder: Path, **kwargs: Any) -> str:
    with pytest.raises(ArtifactIntegrityError) as caught:
        verify(folder, **kwargs)
    assert caught.value.exit_code == 6
    return str(caught.value)


def events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]


def write_events(folder: Path, items: list[dict[str, Any]]) -> None:
    (folder / "audit.jsonl").write_bytes(b"".join(canonical_json(item) + b"\n" for item in items))


def with_history(folder: Path, keys: dict[str, Any]) -> None:
    append_event(folder, "evaluated", actor="eval-job", payload={"auroc": 0.9})
    append_event(folder, "approved", actor="Dr. Reviewer", payload={"note": "ok"}, signing_key=keys["private"])
    append_event(folder, "scored", actor="nightly", payload={"batch": "b1", "n": 3})


def test_listing_covers_every_file(pristine: Built) -> None:
    on_disk = sorted(p.relative_to(pristine.folder).as_posix() for p in pristine.folder.rglob("*") if p.is_file())
    assert on_disk == sorted(ALL_FILES)


@pytest.mark.parametrize("name", ALL_FILES)
def test_flipping_one_byte_names_the_file(artifact: Path, name: str) -> None:
    flip(artifact / name)
    message = failure(artifact)
    assert name in message


@pytest.mark.parametrize("name", ALL_FILES)
def test_deleting_a_file_names_it(artifact: Path, name: str) -> None:
    (artifact / name).unlink()
    assert name in failure(artifact)


@pytest.mark.parametrize("name", ["notes.txt", "weights/extra.safetensors", ".DS_Store", "metrics/x/y.json"])
def test_adding_a_file_names_it(artifact: Path, name: str) -> None:
    target = artifact / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"{}")
    message = failure(artifact)
    assert name in message and "not listed" in message


def test_a_symlink_is_refused(artifact: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (artifact / "linked.json").symlink_to(outside)
    assert "linked.json" in failure(artifact)


def test_replacing_a_file_by_a_symlink_to_an_identical_copy_is_refused(artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "config.yaml"
    shutil.copyfile(artifact / "config.yaml", copy)
    (artifact / "config.yaml").unlink()
    (artifact / "config.yaml").symlink_to(copy)
    assert "config.yaml" in failure(artifact)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, len(ALL_FILES) - 1), position=st.integers(0, 10**9), mask=st.integers(1, 255))
def test_any_single_byte_change_is_detected(pristine: Built, index: int, position: int, mask: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "artifact"
        shutil.copytree(pristine.folder, folder)
        name = ALL_FILES[index]
        flip(folder / name, position, mask)
        with pytest.raises(ArtifactIntegrityError) as caught:
            verify(folder)
        message = str(caught.value)
        if name == "signature.bin":
            assert "signature.bin" in message
        else:
            assert name in message, message


def test_editing_an_event_names_it(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    items = events(artifact)
    items[1]["payload"]["auroc"] = 0.99
    write_events(artifact, items)
    message = failure(artifact)
    assert "audit.jsonl line 2 (event 1 'evaluated')" in message and "edited" in message


def test_editing_an_event_and_its_hash_breaks_the_next_link(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    items = events(artifact)
    items[1]["actor"] = "someone-else"
    items[1]["hash"] = event_hash(items[1])
    write_events(artifact, items)
    message = failure(artifact)
    assert "line 3 (event 2 'approved')" in message and "prev_hash" in message


def test_changing_a_decision_breaks_its_signature_or_hash(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    items = events(artifact)
    items[2]["kind"] = "rejected"
    items[2]["hash"] = event_hash(items[2])  # a careful forger rehashes ...
    items[3]["prev_hash"] = items[2]["hash"]
    items[3]["hash"] = event_hash(items[3])  # ... and relinks the next event, but cannot re-sign the approval
    write_events(artifact, items)
    message = failure(artifact)
    assert "event 2 'rejected'" in message and "signature does not verify" in message


def test_reordering_events_names_the_event(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    items = events(artifact)
    items[1], items[2] = items[2], items[1]
    write_events(artifact, items)
    message = failure(artifact)
    assert "audit.jsonl line 2 (event 2 'approved')" in message and "reordered" in message


def test_removing_an_event_names_the_gap(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    items = events(artifact)
    del items[1]
    write_events(artifact, items)
    assert "audit.jsonl line 2 (event 2 'approved')" in failure(artifact)


def test_removing_the_created_event_is_detected(artifact: Path, keys: dict[str, Any]) -> None:
    with_history(artifact, keys)
    write_events(artifact, events(artifact)[1:])
    assert "audit.jsonl line 1 (event 1 'evaluated')" in failure(artifact)


def test_reformatting_an_event_line_is_detected(artifact: Path) -> None:
    items = events(artifact)
    (artifact / "audit.jsonl").write_text(json.dumps(items[0], indent=1).replace("\n", "") + "\n")
    assert "canonical" in failure(artifact)


def test_an_interrupted_append_is_detected(artifact: Path) -> None:
    with open(artifact / "audit.jsonl", "ab") as handle:
        handle.write(b'{"index": 1')
    assert "incomplete" in failure(artifact)


def test_swapping_the_signature_names_signature_bin(
    artifact: Path, tmp_path: Path, build: Any, keys: dict[str, Any]
) -> None:
    other = build(tmp_path / "other", signing_key=keys["private"], extra=lambda b: b.add_json("extra.json", {"x": 1}))
    shutil.copyfile(other.folder / "signature.bin", artifact / "signature.bin")
    message = failure(artifact)
    assert "signature.bin" in message and "replaced or corrupted" in message


def test_a_manifest_resigned_by_another_key_does_not_match_the_created_event(
    artifact: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDTL_TRUSTED_KEYS")  # even in development mode, where the signer is not checked
    monkeypatch.setenv("MEDTL_ALLOW_UNTRUSTED", "1")
    forger = resolve_signing_key(keys["other_private"])
    assert forger is not None
    manifest = parse_manifest((artifact / "manifest.json").read_bytes())
    manifest = manifest.model_copy(update={"public_key": keys["other_hex"], "key_fingerprint": None})
    data = render_manifest(manifest)
    (artifact / "manifest.json").write_bytes(data)
    (artifact / "signature.bin").write_bytes(forger.sign(data))
    message = failure(artifact)
    assert "manifest.json" in message and "audit.jsonl" in message


def _reseal_with(folder: Path, key: Ed25519PrivateKey) -> None:
    reseal_with(folder, key, lambda f: (f / "config.yaml").write_text("backbone: evil\n"))


def test_a_complete_forgery_is_refused_with_and_without_trust_variables(
    artifact: Path, keys: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    forger = resolve_signing_key(keys["other_private"])
    assert forger is not None
    _reseal_with(artifact, forger)
    message = failure(artifact)  # the site's anchor (MEDTL_TRUSTED_KEYS) names the real signer
    assert "untrusted key" in message and "signature.bin" in message
    assert verify_command(artifact, [keys["public"]]) == 6
    assert "untrusted key" in capsys.readouterr().err
    monkeypatch.delenv("MEDTL_TRUSTED_KEYS")  # no anchor at all: refused, saying what to set
    assert "no trust anchor is configured" in failure(artifact) and "MEDTL_TRUSTED_KEYS" in failure(artifact)
    assert verify_command(artifact) == 6
    assert "no trust anchor" in capsys.readouterr().err
    report = verify(artifact, allow_untrusted=True)  # development: self-consistent, and said to be UNTRUSTED
    assert report.trusted is False
    assert any("UNTRUSTED" in w and report.key_fingerprint in w for w in report.warnings)
    assert verify_command(artifact, allow_untrusted=True) == 0
    assert "UNTRUSTED" in capsys.readouterr().out


def test_trusted_keys_from_the_environment(
    artifact: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTL_TRUSTED_KEYS", os.pathsep.join([str(keys["other_public"])]))
    assert "untrusted key" in failure(artifact)
    monkeypatch.setenv("MEDTL_TRUSTED_KEYS", os.pathsep.join([str(keys["other_public"]), keys["hex"]]))
    assert verify(artifact).trusted is True


def test_a_file_changed_after_opening_is_refused_at_read_time(artifact: Path) -> None:
    loaded = open_verified(artifact)
    flip(artifact / "weights" / "final.safetensors")
    with pytest.raises(ArtifactIntegrityError, match=r"weights/final\.safetensors changed after"):
        loaded.load_weights("final")


def test_unlisted_files_cannot_be_read_through_the_reader(artifact: Path) -> None:
    loaded = open_verified(artifact)
    with pytest.raises(ArtifactIntegrityError, match="not part of the sealed artifact"):
        loaded.path("audit.jsonl")
    with pytest.raises(ArtifactIntegrityError, match="no weights named 'best'"):
        loaded.load_weights("best")


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    assert "does not exist" in failure(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "manifest.json is missing" in failure(tmp_path / "empty")


def test_tampered_artifact_fails_the_cli_with_the_file_name(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flip(artifact / "weights" / "fold1.safetensors")
    assert verify_command(artifact) == ArtifactIntegrityError.exit_code
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "weights/fold1.safetensors" in captured.err
