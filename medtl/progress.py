"""Progress for long work: a rich bar on a terminal, log lines otherwise (library calls and Prefect flows)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("medtl.progress")


class Progress:
    """Context manager; `track` wraps an iterable, `update` reports a step of work done elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=False)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def track(self, iterable: Iterable[Any], label: str, total: int | None, *, flat: bool = False) -> Iterator[Any]:
        """Yield the items (flattened one level when `flat`), advancing the bar by one per item; a total of None:
        not known in advance (the bar counts without an end)."""
        log.info("%s: %s", label, "..." if total is None else total)
        task = self._bar.add_task(label, total=total) if self._bar is not None else None
        for value in iterable:
            for element in value if flat else [value]:
                yield element
                if task is not None:
                    self._bar.advance(task)

    def update(self, label: str, done: int, total: int, *, key: str = "work") -> None:
        log.info("%s (%d/%d)", label, done, total)
        if self._bar is None:
            return
        if key not in self._tasks:
            self._tasks[key] = self._bar.add_task(label, total=total)
        self._bar.update(self._tasks[key], completed=done, total=total, description=label)  # a budget may cut it
