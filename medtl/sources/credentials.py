"""PACS credentials: from the environment or a file the site controls, never from a config or a URI.

    MEDTL_PACS_USERNAME / MEDTL_PACS_PASSWORD   HTTP basic authentication for DICOMweb
    MEDTL_PACS_TOKEN                            a bearer token instead (an OAuth / OIDC access token)
    MEDTL_PACS_CREDENTIALS                      a JSON file {"username": ..., "password": ...} or {"token": ...};
                                                it should be readable by the service account only

DIMSE has no passwords: the PACS admits us by our AE title (and address), configured on its side.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from medtl.errors import SourceAuthError

log = logging.getLogger(__name__)
ENV_USERNAME, ENV_PASSWORD, ENV_TOKEN, ENV_FILE = (
    "MEDTL_PACS_USERNAME", "MEDTL_PACS_PASSWORD", "MEDTL_PACS_TOKEN", "MEDTL_PACS_CREDENTIALS",
)  # fmt: skip


class Credentials(BaseModel):
    """Secrets stay SecretStr: a repr, a log line or a Prefect parameter shows '**********'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Credentials:
        if self.token is not None and (self.username or self.password):
            raise ValueError("give either username/password or a token, not both")
        if (self.password is None) != (self.username is None):
            raise ValueError("a password needs a username and a username a password")
        return self

    @property
    def empty(self) -> bool:
        return self.username is None and self.token is None


def credentials_from_env(username_hint: str | None = None) -> Credentials:
    """The credentials for a DICOMweb source; none at all is allowed (a PACS without authentication)."""
    path = os.environ.get(ENV_FILE)
    if path:
        return _from_file(Path(path))
    token = os.environ.get(ENV_TOKEN)
    username = os.environ.get(ENV_USERNAME) or username_hint
    password = os.environ.get(ENV_PASSWORD)
    try:
        if token:
            return Credentials(token=token)
        if username and password:
            return Credentials(username=username, password=password)
    except ValidationError as error:  # pragma: no cover - the branches above build valid pairs
        raise SourceAuthError(str(error)) from None
    if username or password:
        raise SourceAuthError(
            "only half of the PACS credentials are set",
            fix=f"set both {ENV_USERNAME} and {ENV_PASSWORD} (or {ENV_TOKEN}, or {ENV_FILE} pointing to a JSON file)",
        )
    return Credentials()


def _from_file(path: Path) -> Credentials:
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
        credentials = Credentials.model_validate(data)
    except FileNotFoundError:
        raise SourceAuthError(f"{ENV_FILE} names a file that does not exist", where=ENV_FILE,
                              fix="point it at the JSON credentials file, or unset it") from None  # fmt: skip
    except (json.JSONDecodeError, ValidationError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else "; ".join(e["msg"] for e in error.errors())
        raise SourceAuthError(
            f"the PACS credentials file is not usable: {detail}", where=ENV_FILE,
            fix='write {"username": "...", "password": "..."} or {"token": "..."}',
        ) from None  # fmt: skip
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the PACS credentials file can be read by other users: chmod 600 it")
    return credentials
