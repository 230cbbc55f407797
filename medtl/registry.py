"""Explicit, name-keyed registries (backbones, weight sources, readers).

Why explicit: a clinical pipeline must be able to say exactly which components exist and which one ran. Registering
a name twice is a bug, and a typo in a config should get a "did you mean" answer, not a stack trace.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from medtl.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to components that refuses duplicates and suggests near misses."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered",
                fix=f"pick another name, or remove the earlier registration of {name!r}",
            )
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}",
                fix=f"{hint} Known {self.kind}s: {known}".strip(),
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
