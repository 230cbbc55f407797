"""The user's weight pins: full SHA-256 hashes recorded for local weight files (`$MEDTL_HOME/weights.json`).

Why pins: torchvision file names carry only a 32-bit hash prefix, and MedicalNet / MONAI bundle files carry no hash at
all. A site that has checked a file once pins its full SHA-256 (`medtl weights register`); from then on every load
must match the pin exactly. Pins are keyed by a name — by default the key the weight sources look up: the file name
for torchvision / MedicalNet / plain files, `<bundle name>/<relative path>` for MONAI bundles.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from medtl.errors import ConfigError, WeightsError

PINS_VERSION = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def medtl_home() -> Path:
    """`$MEDTL_HOME`, default `~/.cache/medtl`: where medtl keeps user-level state such as weight pins."""
    configured = os.environ.get("MEDTL_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "medtl"


def pins_path() -> Path:
    return medtl_home() / "weights.json"


def normalise_sha256(value: str, *, where: str = "sha256") -> str:
    text = value.strip().lower()
    if not SHA256_RE.match(text):
        raise ConfigError(
            f"not a SHA-256 hex digest: {value!r}", where=where, fix="give the 64 hexadecimal characters of the hash"
        )
    return text


@dataclass(frozen=True)
class Pin:
    key: str
    sha256: str
    file_name: str
    source: str  # which weight source the file is meant for, or "file"
    path: str | None = None  # where it was registered from (user-local; never copied into artifacts)
    license: str | None = None
    registered_at: str = ""


class PinStore:
    """The pins file; every write rewrites it atomically so a crash never leaves half a JSON document."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or pins_path()
        self._pins: dict[str, Pin] = {}
        if self.path.exists():
            self._pins = self._read()

    def _read(self) -> dict[str, Pin]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            entries = document["pins"]
            pins = {k: Pin(key=k, **{f: v for f, v in entry.items() if f != "key"}) for k, entry in entries.items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WeightsError(
                f"the weight pins file is unreadable ({type(error).__name__}: {error})",
                where=str(self.path),
                fix="repair the JSON by hand or move the file away and register the weight files again",
            ) from None
        for pin in pins.values():
            normalise_sha256(pin.sha256, where=f"{self.path}: pin {pin.key!r}")
        return pins

    def get(self, key: str) -> Pin | None:
        return self._pins.get(key)

    def all(self) -> list[Pin]:
        return [self._pins[key] for key in sorted(self._pins)]

    def find(self, key: str, file_name: str | None = None) -> Pin | None:
        """The pin for `key`, else the single pin registered for `file_name` under another key."""
        if key in self._pins:
            return self._pins[key]
        if file_name is None:
            return None
        matches = [pin for pin in self._pins.values() if pin.file_name == file_name]
        if len({pin.sha256 for pin in matches}) > 1:
            raise WeightsError(
                f"several pins with different hashes exist for file name {file_name!r}: "
                f"{', '.join(pin.key for pin in matches)}",
                where=str(self.path),
                fix=f"remove the stale pins, or register the file under the key {key!r}",
            )
        return matches[0] if matches else None

    def register(self, pin: Pin, *, replace: bool = False) -> Pin:
        existing = self._pins.get(pin.key)
        if existing and existing.sha256 != pin.sha256 and not replace:
            raise WeightsError(
                f"{pin.key!r} is already pinned to a different hash ({existing.sha256}; new file: {pin.sha256})",
                where=str(self.path),
                fix="if the new file is the one you trust, register again with --replace",
            )
        stamped = Pin(**{**asdict(pin), "registered_at": pin.registered_at or datetime.now(UTC).isoformat()})
        self._pins[pin.key] = stamped
        self._write()
        return stamped

    def _write(self) -> None:
        document = {
            "version": PINS_VERSION,
            "pins": {k: {f: v for f, v in asdict(pin).items() if f != "key"} for k, pin in sorted(self._pins.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
