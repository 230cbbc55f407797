"""Trust settings: which keys may seal artifacts, which people may approve them, and what development allows.

Why three separate anchors: the pipeline's key is on every training, evaluation and scoring worker, so it cannot be
what proves that a clinician approved a model. The trust model therefore names
- artifact keys ($MEDTL_TRUSTED_KEYS): public keys allowed to seal artifacts and sign `evaluated` events;
- approver keys ($MEDTL_APPROVER_KEYS): public keys of the people allowed to approve or reject;
and nobody else's signature means anything. An artifact whose signer is not checked against an anchor proves only
that it is self-consistent, which anyone with write access can arrange; so without an artifact anchor, reading an
artifact is refused unless the caller says `allow_untrusted` (development, synthetic data), and every output made
from it then says UNTRUSTED.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from medtl.artifacts.keys import (
    APPROVER_KEYS_ENV,
    TRUSTED_KEYS_ENV,
    TrustedKeySource,
    load_approver_keys,
    load_trusted_keys,
)
from medtl.errors import ArtifactIntegrityError

ALLOW_UNSIGNED_ENV = "MEDTL_ALLOW_UNSIGNED"
ALLOW_UNTRUSTED_ENV = "MEDTL_ALLOW_UNTRUSTED"


@dataclass(frozen=True)
class TrustSettings:
    """Resolved once per command; passed down so that every check in one run uses the same anchors."""

    artifact_keys: frozenset[str] | None  # None: no anchor configured
    approver_keys: frozenset[str]
    allow_untrusted: bool = False
    allow_unsigned: bool = False  # implies allow_untrusted: an unsigned artifact has no signer to trust

    @property
    def anchored(self) -> bool:
        return self.artifact_keys is not None

    def require_anchor(self, where: str) -> None:
        """Refuse to go on without an artifact anchor, unless development mode was asked for explicitly."""
        if self.anchored or self.allow_untrusted or self.allow_unsigned:
            return
        raise ArtifactIntegrityError(
            "no trust anchor is configured, so nothing shows who sealed this artifact "
            "(anyone with write access can reseal a folder with a key of their own)",
            where=where,
            fix=f"set {TRUSTED_KEYS_ENV} to the pipeline's public key file(s) (or pass --trusted-key), and "
            f"{APPROVER_KEYS_ENV} to the reviewers' public keys; for development on synthetic or public data only, "
            f"pass --allow-untrusted (or set {ALLOW_UNTRUSTED_ENV}=1): every output then says UNTRUSTED",
        )


def _flag(value: bool, env: str) -> bool:
    return value or os.environ.get(env, "") == "1"


def resolve_trust(
    *,
    trusted_keys: Iterable[TrustedKeySource] | None = None,
    approver_keys: Iterable[TrustedKeySource] | None = None,
    allow_untrusted: bool = False,
    allow_unsigned: bool = False,
) -> TrustSettings:
    """Arguments first, then the environment: $MEDTL_TRUSTED_KEYS, $MEDTL_APPROVER_KEYS, $MEDTL_ALLOW_UNTRUSTED=1,
    $MEDTL_ALLOW_UNSIGNED=1."""
    unsigned = _flag(allow_unsigned, ALLOW_UNSIGNED_ENV)
    return TrustSettings(
        artifact_keys=load_trusted_keys(trusted_keys),
        approver_keys=load_approver_keys(approver_keys),
        allow_untrusted=_flag(allow_untrusted, ALLOW_UNTRUSTED_ENV) or unsigned,
        allow_unsigned=unsigned,
    )


__all__ = ["ALLOW_UNSIGNED_ENV", "ALLOW_UNTRUSTED_ENV", "TrustSettings", "resolve_trust"]
