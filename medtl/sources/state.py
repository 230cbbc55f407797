"""The watermark of a scheduled pull: which series of a source a consumer (an artifact) has already processed,
which keep failing and which were given up on.

A series counts as done only after its consumer finished with it (scored, results sent back), so a run that stops
half way re-pulls exactly the unfinished series. Series are named by a one-way key, never by UID, so the record can
live beside the PHI-free outputs. The file is rewritten atomically after every change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from medtl.contracts import read_json, write_json
from medtl.contracts.pull import Failure, PullRecord, Quarantined
from medtl.sources.location import SourceLocation


class PullState:
    """One record per (source, consumer), in FOLDER/pull-<source key>-<consumer>.json (contract pull_state)."""

    def __init__(self, path: Path, record: PullRecord, *, max_attempts: int) -> None:
        self.path = path
        self.record = record
        self.max_attempts = max_attempts

    @classmethod
    def open(cls, folder: Path, location: SourceLocation, consumer: str, *, max_attempts: int = 3) -> PullState:
        path = Path(folder) / f"pull-{location.key}-{consumer[:16]}.json"
        if path.exists():
            record = read_json(PullRecord, path)
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
        write_json(self.record, self.path)  # atomic: a crash leaves the previous record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
