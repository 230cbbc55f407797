"""Pseudonymous identifiers derived from a site secret.

Patient identity drives the cross-validation splits, so it must be resolved at ingest; but no output may carry the
real PatientID, accession number or path. A keyed hash (HMAC-SHA256) gives ids that are stable at one site, cannot be
reversed or recomputed without the site's key, and differ between sites with different keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from medtl.errors import PseudonymKeyError

KEY_ENV = "MEDTL_PSEUDONYM_KEY"
DEV_KEY_ENV = "MEDTL_ALLOW_DEV_PSEUDONYM_KEY"
# Public on purpose: it protects nothing, and outputs made with it say so (key_id "development").
DEVELOPMENT_KEY = b"medtl-development-key--synthetic-and-public-data-only"
_PREFIX = {"patient": "P", "study": "S", "series": "R", "scan": "X", "file": "F"}
_KNOWN_MAX = 1 << 18  # pseudonyms remembered (about 60 MB at most); past that, start again
_log = logging.getLogger(__name__)


class Pseudonymizer:
    """Maps real identifiers to short keyed-hash pseudonyms, one namespace per kind of id."""

    def __init__(self, key: bytes, *, key_id: str | None = None) -> None:
        if len(key) < 16:
            raise PseudonymKeyError(
                "the pseudonym key is shorter than 16 bytes",
                fix=f"set {KEY_ENV} to a long random secret, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`",
            )
        self._key = key
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # keyed once; each pseudonym continues a copy
        # An archive asks for the same series' and files' pseudonyms several times each: computed once.
        self._known: dict[tuple[str, str], str] = {}
        # The key id lets later stages check they use the same key as training without revealing it.
        self.key_id = key_id or hashlib.sha256(b"medtl-key-id|" + key).hexdigest()[:12]

    @property
    def is_development(self) -> bool:
        return self.key_id == "development"

    def pseudonym(self, kind: str, value: str) -> str:
        known = self._known.get((kind, value))
        if known is not None:
            return known
        if kind not in _PREFIX:
            raise ValueError(f"unknown identifier kind {kind!r}")
        keyed = self._mac.copy()
        keyed.update(f"{kind}\x00{value}".encode())
        mac = keyed.hexdigest()
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[kind, value] = pseudonym = f"{_PREFIX[kind]}-{mac[:16]}"
        return pseudonym

    def __getstate__(self) -> dict[str, object]:
        # sent to workers without what this process has looked up, and without the keyed state (not picklable)
        return {name: value for name, value in self.__dict__.items() if name not in ("_known", "_mac")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state, _known={}, _mac=hmac.new(state["_key"], digestmod=hashlib.sha256))  # type: ignore[arg-type]

    def patient(self, patient_id: str) -> str:
        return self.pseudonym("patient", patient_id)

    def study(self, study_uid: str) -> str:
        return self.pseudonym("study", study_uid)

    def series(self, series_uid: str) -> str:
        return self.pseudonym("series", series_uid)

    def file(self, relative_path: str) -> str:
        return self.pseudonym("file", relative_path)


def pseudonymizer_from_env(*, allow_development_key: bool = False) -> Pseudonymizer:
    """The site's pseudonymizer, or the public development one when explicitly allowed (logged, and recorded)."""
    secret = os.environ.get(KEY_ENV)
    if secret:
        return Pseudonymizer(secret.encode("utf-8"))
    if allow_development_key or os.environ.get(DEV_KEY_ENV) == "1":
        _log.warning(
            "using the public development pseudonym key: outputs are only pseudonymous for synthetic or public data"
        )
        return Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    raise PseudonymKeyError(
        f"no pseudonym key: {KEY_ENV} is not set",
        fix=f"set {KEY_ENV} to the site's secret (keep it out of version control; the same key must be used for "
        f"training and scoring), or, for synthetic or public data only, pass --dev-pseudonym-key "
        f"(or set {DEV_KEY_ENV}=1)",
    )
