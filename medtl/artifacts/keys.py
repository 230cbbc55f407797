"""Ed25519 signing keys: generate, load (file or environment), fingerprint, sign and verify.

Why Ed25519: small keys, deterministic signatures, no parameters to get wrong, and `cryptography` ships it. A key is
identified by its raw 32-byte public key (hex) and shown as a short fingerprint; private key material is never
printed, logged or written into an artifact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medtl.errors import ConfigError

SIGNING_KEY_ENV = "MEDTL_SIGNING_KEY"
SIGNING_KEY_PASSWORD_ENV = "MEDTL_SIGNING_KEY_PASSWORD"  # noqa: S105 - the name of a variable
TRUSTED_KEYS_ENV = "MEDTL_TRUSTED_KEYS"
APPROVER_KEYS_ENV = "MEDTL_APPROVER_KEYS"
REVIEWER_KEY_ENV = "MEDTL_REVIEWER_KEY"
PUBLIC_SUFFIX = ".pub"

SigningKeySource = Ed25519PrivateKey | Path | str
TrustedKeySource = Ed25519PublicKey | Path | str

_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.DOTALL)
_log = logging.getLogger(__name__)


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def key_fingerprint(public_hex: str) -> str:
    """Short, stable name of a public key for messages and the model card."""
    return "ed25519:" + hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def generate_signing_key(path: str | Path, *, overwrite: bool = False) -> str:
    """Write a new private key (PEM, mode 0600) to `path` and its public key to `path` + '.pub'; return it as hex."""
    path = Path(path)
    public_path = path.with_name(path.name + PUBLIC_SUFFIX)
    if not overwrite and (path.exists() or public_path.exists()):
        raise ConfigError(
            f"{path.name} already exists; refusing to replace a signing key",
            where=str(path.name),
            fix="choose another file name, or delete the old key deliberately (artifacts it signed stay valid)",
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if overwrite else os.O_EXCL)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), 0o600)  # also when overwriting a file that had wider permissions
        handle.write(pem)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path.write_bytes(public_pem)
    return public_key_hex(key)


def _private_from_pem(pem: bytes, where: str, password_env: str = SIGNING_KEY_PASSWORD_ENV) -> Ed25519PrivateKey:
    password = os.environ.get(password_env)
    try:
        key = serialization.load_pem_private_key(pem, password=password.encode() if password else None)
    except (ValueError, TypeError) as error:
        # The library's message never contains key material; keep only its first line.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"cannot read the signing key: {reason}",
            where=where,
            fix=f"give an unencrypted PEM Ed25519 private key, or set {password_env} for an encrypted one; "
            "create one with `medtl keys generate PATH`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the signing key is a {type(key).__name__}, not Ed25519", where=where)
    return key


def resolve_signing_key(
    source: SigningKeySource | None = None, *, env: str = SIGNING_KEY_ENV
) -> Ed25519PrivateKey | None:
    """The key from `source` (key object, PEM file path, or PEM text), else from the variable `env`, else None.

    `env` names whose key it is: the pipeline's ($MEDTL_SIGNING_KEY) or a reviewer's ($MEDTL_REVIEWER_KEY); an
    encrypted PEM takes its password from the same name + "_PASSWORD".
    """
    where = "argument"
    if source is None:
        source = os.environ.get(env) or None
        where = f"${env}"
        if source is None:
            return None
    if isinstance(source, Ed25519PrivateKey):
        return source
    password_env = f"{env}_PASSWORD"
    text = str(source)
    if isinstance(source, str) and text.lstrip().startswith("-----BEGIN"):
        return _private_from_pem(text.strip().encode(), where, password_env)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"the key file given by {where} does not exist",
            where=path.name,
            fix=f"point {env} (or the command's key option) at a PEM file; create one with `medtl keys generate PATH`",
        )
    if os.name == "posix" and path.stat().st_mode & 0o077:
        _log.warning("private key %s is readable by group or others; chmod 600 it", path.name)
    return _private_from_pem(path.read_bytes(), path.name, password_env)


def _public_from_bytes(data: bytes, where: str) -> list[str]:
    keys: list[str] = []
    blocks = _PEM_BLOCK.findall(data)
    if blocks:
        for block in blocks:
            if b"PRIVATE KEY" in block:
                raise ConfigError(
                    "a trusted-key file contains a private key",
                    where=where,
                    fix="give the public key (the .pub file written next to the private key), never the private key",
                )
            try:
                public = serialization.load_pem_public_key(block)
            except ValueError:
                raise ConfigError("a trusted-key file has an unreadable PEM block", where=where) from None
            if not isinstance(public, Ed25519PublicKey):
                raise ConfigError(f"trusted key is a {type(public).__name__}, not Ed25519", where=where)
            keys.append(public_key_hex(public))
        return keys
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not _HEX_KEY.match(line):
            raise ConfigError(
                f"line {number} is neither a PEM public key nor 64 hex digits",
                where=where,
                fix="list one raw Ed25519 public key (hex) per line, or give PEM public keys",
            )
        keys.append(line.lower())
    return keys


def load_trusted_keys(sources: Iterable[TrustedKeySource] | None = None) -> frozenset[str] | None:
    """Public keys (hex) allowed to seal artifacts and sign `evaluated` events: from `sources`, else
    $MEDTL_TRUSTED_KEYS. None means "no trust anchor configured" (verification then refuses unless told that
    untrusted artifacts are acceptable, for development)."""
    return load_key_set(sources, env=TRUSTED_KEYS_ENV)


def load_approver_keys(sources: Iterable[TrustedKeySource] | None = None) -> frozenset[str]:
    """Public keys (hex) of the people allowed to approve or reject: from `sources`, else $MEDTL_APPROVER_KEYS.

    Empty when none are configured: then no decision in any audit log counts.
    """
    return load_key_set(sources, env=APPROVER_KEYS_ENV) or frozenset()


def load_key_set(sources: Iterable[TrustedKeySource] | None, *, env: str) -> frozenset[str] | None:
    """Public keys (hex) from files / hex strings / key objects, else from the variable `env` (paths or hex keys
    separated by os.pathsep; a file holds PEM public keys or one hex key per line). None when nothing is given."""
    items = list(sources) if sources is not None else []
    if not items:
        value = os.environ.get(env, "").strip()
        items = [part for part in value.split(os.pathsep) if part.strip()] if value else []
    if not items:
        return None
    keys: set[str] = set()
    for item in items:
        if isinstance(item, Ed25519PublicKey):
            keys.add(public_key_hex(item))
        elif isinstance(item, str) and _HEX_KEY.match(item.strip()):
            keys.add(item.strip().lower())
        else:
            path = Path(item).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"public key file {path.name} does not exist",
                    where=path.name,
                    fix=f"pass existing public key files, or fix ${env}",
                )
            keys.update(_public_from_bytes(path.read_bytes(), path.name))
    if not keys:
        raise ConfigError(f"the public-key files given by ${env} contain no keys", fix="add at least one Ed25519 key")
    return frozenset(keys)


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def signature_is_valid(public_hex: str, data: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
