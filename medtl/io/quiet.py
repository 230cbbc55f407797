"""Keep what imaging libraries say about a file's values out of logs and stderr.

Why: pydicom reports an invalid date, age or person name by quoting it ("Invalid value for VR DA: '...'"), as a
warning and as a log record; nibabel does the same for odd header fields. Those values are PHI, and logs are a PHI
sink. While reading a file, the warnings are recorded instead of shown and the libraries' loggers are muted; the
caller learns only how many there were and records a generic QC flag.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LIBRARY_LOGGERS = ("pydicom", "nibabel")
# What the QC flag and report say instead of the messages themselves.
FLAG = "nonconforming_header_values"


@dataclass
class Muted:
    """How many messages the libraries produced while muted (their text is dropped on purpose)."""

    count: int = 0


class _Counter(logging.Handler):
    def __init__(self, muted: Muted) -> None:
        super().__init__(logging.DEBUG)
        self.muted = muted

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.muted.count += 1


@contextmanager
def muted_library_messages() -> Iterator[Muted]:
    """Record (not show) warnings and swallow pydicom / nibabel log records for the duration of the block."""
    muted = Muted()
    handler = _Counter(muted)
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, list(logger.handlers)))
        logger.handlers = [handler]
        logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield muted
            finally:
                muted.count += len(caught)
                caught.clear()
    finally:
        for logger, propagate, handlers in saved:
            logger.handlers = handlers
            logger.propagate = propagate
