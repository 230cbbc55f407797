"""What every benchmark's JSON records: the machine it ran on and each figure as a median with its spread.

Why shared: the figures are compared across runs and machines, so each must carry the same fields; scripts written
after this module use it (older ones still spell the same fields out)."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median over rounds with min and max (not the best round)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
