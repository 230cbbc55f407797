"""Seconds per named step, so that a report can say which step of a run cost what.

Why a module-level collector rather than a timer passed through every call: the steps worth timing (file reads,
hashing, decoding, rescaling, cache writes) sit several layers down, in io/ and ingest/, under functions whose
signatures other stages use. `timed("step")` adds to whichever collector is active in this process and costs two
perf_counter calls; with none active it costs nothing but the check. Worker processes start their own collector
per unit of work and send the totals back with the result.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

_active: list[dict[str, float]] = []


@contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Collect the `timed` steps run inside the block into the yielded dict (nested blocks collect separately)."""
    totals: dict[str, float] = {}
    _active.append(totals)
    try:
        yield totals
    finally:
        _active.remove(totals)


@contextmanager
def timed(step: str) -> Iterator[None]:
    if not _active:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        add(step, time.perf_counter() - started)


def add(step: str, seconds: float) -> None:
    """Book `seconds` to `step` in the innermost active collector (none active: dropped)."""
    if _active:
        totals = _active[-1]
        totals[step] = totals.get(step, 0.0) + seconds


def merge(into: dict[str, float], other: Mapping[str, float]) -> None:
    for step, seconds in other.items():
        into[step] = into.get(step, 0.0) + seconds


class Laps:
    """Wall time of consecutive passes: each lap runs from the end of the one before, so the laps add up to the
    time since the start and a reader can see where a run's minutes went without overlap or gaps."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.passes: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.passes[name] = self.passes.get(name, 0.0) + (now - self._last)
        self._last = now

    def total(self) -> float:
        return self._last - self.started


def duration(seconds: float, scale: float | None = None) -> str:
    """A run's wall time or budget as a person reads it: seconds below two minutes (a 36 s budget rounded to
    minutes reads "0 min", and "1.0 min of a 1 min budget: exceeded" hides by how much), minutes above. `scale`:
    the value whose unit to use, where the time is shown beside another."""
    return f"{seconds:.0f} s" if (seconds if scale is None else scale) < 120 else f"{seconds / 60:.1f} min"


def time_and_budget(seconds: float, budget: float | None) -> tuple[str, str | None]:
    """A time and the budget it is compared with, in one unit ("80 s of a 120 s budget", not "80 s of a 2.0 min
    budget"); None for no budget."""
    scale = max(seconds, budget or 0.0)
    return duration(seconds, scale), (duration(budget, scale) if budget else None)
