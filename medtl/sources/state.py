"""The watermark of a scheduled pull: which series of a source a consumer (an artifact) has already processed,
which keep failing and which were given up on.

A series counts as done only after its consumer finished with it (scored, results sent back), so a run that stops
half way re-pulls exactly the unfinished series. Series are named by a one-way key, never by UID, so the record can
live beside the PHI-free outputs. The file is rewritten atomically after every change.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medtl.sources.location import SourceLocation

STATE_VERSION = 1


class Failure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempts: int
    last_error: str
    last_at: str


class Quarantined(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str
    attempts: int
    at: str


class PullRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    source: str
    consumer: str
    done: dict[str, str] = Field(default_factory=dict)  # series key -> when it was finished
    failures: dict[str, Failure] = Field(default_factory=dict)
    quarantined: dict[str, Quarantined] = Field(default_factory=dict)
    runs: int = 0
    last_run_at: str | None = None


class PullState:
    """One record per (source, consumer), in FOLDER/pull-<source key>-<consumer>.json."""

    def __init__(self, path: Path, record: PullRecord, *, max_attempts: int) -> None:
        self.path = path
        self.record = record
        self.max_attempts = max_attempts

    @classmethod
    def open(cls, folder: Path, location: SourceLocation, consumer: str, *, max_attempts: int = 3) -> PullState:
        path = Path(folder) / f"pull-{location.key}-{consumer[:16]}.json"
        if path.exists():
            record = PullRecord.model_validate_json(path.read_text())
        else:
            record = PullRecord(source=location.display, consumer=consumer)
        return cls(path, record, max_attempts=max_attempts)

    def is_new(self, key: str) -> bool:
        return key not in self.record.done and key not in self.record.quarantined

    def mark_done(self, keys: list[str]) -> None:
        now = _now()
        for key in keys:
            self.record.done[key] = now
            self.record.failures.pop(key, None)
        self.save()

    def mark_failed(self, key: str, reason: str) -> bool:
        """Count one more failed run for the series; True when this one quarantines it (no more retries)."""
        previous = self.record.failures.get(key)
        attempts = (previous.attempts if previous else 0) + 1
        if attempts >= self.max_attempts:
            self.record.failures.pop(key, None)
            self.record.quarantined[key] = Quarantined(reason=reason, attempts=attempts, at=_now())
        else:
            self.record.failures[key] = Failure(attempts=attempts, last_error=reason, last_at=_now())
        self.save()
        return attempts >= self.max_attempts

    def release(self, key: str) -> None:
        """Give a quarantined series another chance (after someone fixed it on the PACS)."""
        self.record.quarantined.pop(key, None)
        self.save()

    def finish_run(self) -> None:
        self.record.runs += 1
        self.record.last_run_at = _now()
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.record.model_dump(mode="json"), indent=1, sort_keys=True))
        os.replace(temporary, self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
