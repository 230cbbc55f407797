"""Where scans come from, as one string in a config or on the command line.

    /data/inbox  or  file:///data/inbox          a folder (or file) of DICOM / NIfTI, read in place
    dicomweb+http://pacs:8042/dicom-web          a DICOMweb server (QIDO-RS, WADO-RS, STOW-RS); +https for TLS
    dimse://ORTHANC@pacs:4242?calling=MEDTL      a DIMSE peer: called AE title @ host:port; our AE title (C-FIND,
                                                 C-GET, C-STORE; the PACS must know our AE title)

A location never holds a password: configs, Prefect parameters and logs show it, so credentials come from the
environment (see credentials.py). `display` is what may be shown; `key` names the source in pull records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from medtl.errors import SourceError

Kind = Literal["folder", "dicomweb", "dimse"]
SCHEMES = {"file": "folder", "dicomweb+http": "dicomweb", "dicomweb+https": "dicomweb", "dimse": "dimse"}
DEFAULT_CALLING_AET = "MEDTL"
_EXAMPLES = "file:///data/inbox, dicomweb+http://pacs:8042/dicom-web, dimse://PACS_AET@pacs:4242?calling=MEDTL"


@dataclass(frozen=True)
class SourceLocation:
    kind: Kind
    path: Path | None = None  # folder
    url: str | None = None  # dicomweb: the service root, http(s)://host:port/prefix
    host: str | None = None  # dimse
    port: int | None = None
    called_aet: str | None = None
    calling_aet: str = DEFAULT_CALLING_AET
    username: str | None = None  # a user name may be part of the URI (never a password)

    @property
    def is_remote(self) -> bool:
        return self.kind != "folder"

    @property
    def display(self) -> str:
        if self.kind == "folder":
            return f"file://{self.path}"
        if self.kind == "dicomweb":
            return f"dicomweb+{self.url}"
        return f"dimse://{self.called_aet}@{self.host}:{self.port}?calling={self.calling_aet}"

    @property
    def key(self) -> str:
        """A stable short name for records kept per source (the watermark), independent of credentials."""
        return hashlib.sha256(self.display.encode()).hexdigest()[:16]


def parse_location(text: str | Path) -> SourceLocation:
    """A folder path or a source URI; anything else is an error that shows the accepted forms."""
    if isinstance(text, Path):
        return SourceLocation(kind="folder", path=text)
    if "://" not in text:
        return SourceLocation(kind="folder", path=Path(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise SourceError(
            f"unknown source scheme {scheme!r}", where=_safe(text),
            fix=f"use a folder path or one of: {_EXAMPLES}",
        )  # fmt: skip
    if parts.password is not None:
        raise SourceError(
            "the source URI contains a password; URIs are shown in configs, flow parameters and logs",
            where=_safe(text),
            fix="remove it from the URI and set MEDTL_PACS_PASSWORD (or MEDTL_PACS_CREDENTIALS, a JSON file) instead",
        )
    if scheme == "file":
        return SourceLocation(kind="folder", path=Path(parts.path))
    if not parts.hostname:
        raise SourceError("the source URI names no host", where=_safe(text), fix=f"write it like: {_EXAMPLES}")
    if scheme.startswith("dicomweb"):
        base = scheme.split("+", 1)[1]
        port = f":{parts.port}" if parts.port else ""
        url = f"{base}://{parts.hostname}{port}{parts.path.rstrip('/')}"
        return SourceLocation(kind="dicomweb", url=url, username=parts.username)
    called = parts.username
    if not called or parts.port is None:
        raise SourceError(
            "a DIMSE source needs the PACS's AE title and port", where=_safe(text),
            fix="write it as dimse://PACS_AET@host:port (optionally ?calling=OUR_AET; default MEDTL)",
        )  # fmt: skip
    calling = parse_qs(parts.query).get("calling", [DEFAULT_CALLING_AET])[0]
    for title in (called, calling):
        if not 0 < len(title) <= 16 or not title.isascii() or "\\" in title:
            raise SourceError(f"{title!r} is not a valid AE title", where=_safe(text),
                              fix="AE titles are 1-16 ASCII characters without backslashes")  # fmt: skip
    return SourceLocation(kind="dimse", host=parts.hostname, port=parts.port, called_aet=called, calling_aet=calling)


def _safe(text: str) -> str:
    """The URI with any user:password part blanked, for error messages."""
    parts = urlsplit(text)
    if parts.password is None and parts.username is None:
        return text
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"***@{host}{port}").geturl()
