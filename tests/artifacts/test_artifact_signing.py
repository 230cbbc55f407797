"""Signing keys and unsigned artifacts: keys from files and the environment; unsigned only when allowed, and flagged."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from artifact_support import Built
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from medtl.artifacts import generate_signing_key, load_trusted_keys, open_verified, resolve_signing_key, verify
from medtl.artifacts.cli import verify_command
from medtl.artifacts.keys import public_key_hex
from medtl.errors import ArtifactIntegrityError, ConfigError


def test_generate_writes_a_private_and_a_public_key(tmp_path: Path) -> None:
    public_hex = generate_signing_key(tmp_path / "keys" / "site.pem")
    private = tmp_path / "keys" / "site.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in (tmp_path / "keys" / "site.pem.pub").read_bytes()
    key = resolve_signing_key(private)
    assert key is not None and public_key_hex(key) == public_hex and len(public_hex) == 64
    with pytest.raises(ConfigError, match="refusing to replace"):
        generate_signing_key(private)


def test_keys_from_the_environment(tmp_path: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_signing_key(None) is None
    monkeypatch.setenv("MEDTL_SIGNING_KEY", str(keys["private"]))
    key = resolve_signing_key(None)
    assert key is not None and public_key_hex(key) == keys["hex"]
    monkeypatch.setenv("MEDTL_SIGNING_KEY", keys["private"].read_text())  # PEM text itself
    key = resolve_signing_key(None)
    assert key is not None and public_key_hex(key) == keys["hex"]
    monkeypatch.setenv("MEDTL_SIGNING_KEY", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_signing_key(None)


def test_bad_key_files_are_refused_without_echoing_them(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as caught:
        resolve_signing_key(garbage)
    assert "c2VjcmV0" not in str(caught.value)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        resolve_signing_key(rsa_path)


def test_trusted_keys_sources(tmp_path: Path, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDTL_TRUSTED_KEYS")
    assert load_trusted_keys(None) is None and load_trusted_keys([]) is None
    assert load_trusted_keys([keys["public"]]) == {keys["hex"]}
    listing = tmp_path / "trusted.txt"
    listing.write_text(f"# site signers\n{keys['hex']}  # training\n{keys['other_hex'].upper()}\n")
    assert load_trusted_keys([listing]) == {keys["hex"], keys["other_hex"]}
    assert load_trusted_keys([keys["hex"]]) == {keys["hex"]}
    monkeypatch.setenv("MEDTL_TRUSTED_KEYS", os.pathsep.join([str(keys["public"]), keys["other_hex"]]))
    assert load_trusted_keys(None) == {keys["hex"], keys["other_hex"]}
    with pytest.raises(ConfigError, match="private key"):
        load_trusted_keys([keys["private"]])
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_trusted_keys([bad])


def test_seal_with_the_environment_key(
    tmp_path: Path, build: Any, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTL_SIGNING_KEY", str(keys["private"]))
    built = build(tmp_path / "a", signing_key=None)
    assert verify(built.folder, trusted_keys=[keys["public"]]).trusted is True


def test_unsigned_is_refused_unless_allowed(tmp_path: Path, build: Any) -> None:
    with pytest.raises(ConfigError, match="no signing key"):
        build(tmp_path / "a", signing_key=None)
    assert not (tmp_path / "a" / "manifest.json").exists() and not (tmp_path / "a" / "audit.jsonl").exists()


@pytest.fixture
def unsigned(tmp_path: Path, build: Any, monkeypatch: pytest.MonkeyPatch) -> Built:
    """An unsigned artifact, read where no trust anchor is configured (with one, it is always refused)."""
    monkeypatch.delenv("MEDTL_TRUSTED_KEYS")
    return build(tmp_path / "unsigned", signing_key=None, allow_unsigned=True)


def test_an_allowed_unsigned_artifact_says_so_everywhere(unsigned: Built, capsys: pytest.CaptureFixture[str]) -> None:
    folder = unsigned.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["signed"] is False and manifest["public_key"] is None
    assert not (folder / "signature.bin").exists()
    assert "UNSIGNED ARTIFACT" in (folder / "model_card.md").read_text()
    with pytest.raises(ArtifactIntegrityError, match="no trust anchor"):
        verify(folder)
    with pytest.raises(ArtifactIntegrityError, match="UNSIGNED"):
        verify(folder, allow_untrusted=True)  # development mode still refuses an unsigned artifact ...
    with pytest.raises(ArtifactIntegrityError, match="UNSIGNED"):
        open_verified(folder, allow_untrusted=True)
    report = verify(folder, allow_unsigned=True)  # ... unless that too is allowed
    assert not report.signed and report.trusted is False
    assert any("UNSIGNED" in warning for warning in report.warnings)
    assert report.events[0].payload["signed"] is False and report.events[0].signature is None
    assert not open_verified(folder, allow_unsigned=True).is_signed
    assert verify_command(folder, allow_untrusted=True) == 6
    assert "UNSIGNED" in capsys.readouterr().err
    assert verify_command(folder, allow_unsigned=True) == 0
    out = capsys.readouterr().out
    assert "UNSIGNED" in out and "with warnings" in out


def test_unsigned_allowed_by_the_environment(unsigned: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTL_ALLOW_UNSIGNED", "1")
    assert not verify(unsigned.folder).signed


def test_trusted_keys_demand_a_signature(unsigned: Built, keys: dict[str, Any]) -> None:
    with pytest.raises(ArtifactIntegrityError, match="signature is required"):
        verify(unsigned.folder, trusted_keys=[keys["public"]], allow_unsigned=True)


def test_a_signature_next_to_an_unsigned_manifest_is_refused(unsigned: Built) -> None:
    (unsigned.folder / "signature.bin").write_bytes(b"\0" * 64)
    with pytest.raises(ArtifactIntegrityError, match=r"signature\.bin exists"):
        verify(unsigned.folder, allow_unsigned=True)


def test_a_downgrade_to_unsigned_is_detected(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    document.update(signed=False, public_key=None, key_fingerprint=None)
    (artifact / "manifest.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (artifact / "signature.bin").unlink()
    with pytest.raises(ArtifactIntegrityError, match="UNSIGNED"):
        verify(artifact)
    monkeypatch.delenv("MEDTL_TRUSTED_KEYS")
    with pytest.raises(ArtifactIntegrityError, match=r"manifest\.json was modified after sealing"):
        verify(artifact, allow_unsigned=True)


def test_a_sealed_folder_cannot_be_sealed_or_built_again(artifact: Path, keys: dict[str, Any]) -> None:
    from medtl.artifacts import ArtifactBuilder, PhiTerms, seal

    with pytest.raises(ConfigError, match="already sealed"):
        seal(artifact, signing_key=keys["private"], phi_terms=PhiTerms())
    with pytest.raises(ConfigError, match="already sealed"):
        ArtifactBuilder(artifact)


def test_a_hand_written_model_card_gets_an_integrity_section(tmp_path: Path, build: Any) -> None:
    built = build(
        tmp_path / "a",
        signing_key=None,
        allow_unsigned=True,
        extra=lambda b: b.add_model_card("# My own card\n\nWritten by hand.\n"),
    )
    card = (built.folder / "model_card.md").read_text()
    assert card.startswith("# My own card") and "## Integrity" in card and "UNSIGNED ARTIFACT" in card
