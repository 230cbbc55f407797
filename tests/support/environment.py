"""Environment variables that a test, or the code under test, may set: put back as they were afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def environment_restored(names: Iterable[str]) -> Iterator[None]:
    """On leaving, each named variable has its value from before again, or is unset if it was unset.

    Why not monkeypatch: `monkeypatch.delenv` of an unset variable records nothing, so it cannot undo a variable
    that the code under test sets itself; and a session-scoped fixture has no monkeypatch."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
