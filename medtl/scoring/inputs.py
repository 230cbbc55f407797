"""Input statistics of every scored scan, kept in OUT/scan_inputs.parquet for monitoring (contracts/monitoring.py).

Why here and not in monitoring: only scoring sees the ingest manifest of a run (a PACS batch's staging folder is
removed once it is scored), so each run contributes its scans' numbers while it has them. The manufacturer is
reduced to a coarse category (the first word, lower case): enough to see a new scanner vendor arrive, and nothing
that could name a device or a site.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medtl.contracts import read_table, write_table
from medtl.contracts.monitoring import ScanInputRow

SCAN_INPUTS = "scan_inputs.parquet"
UNKNOWN = "unknown"
_WORD = re.compile(r"[a-z0-9]+")


def manufacturer_category(value: object) -> str:
    """'SIEMENS', 'Siemens Healthineers' -> 'siemens'; 'GE MEDICAL SYSTEMS' -> 'ge'; absent -> 'unknown'."""
    if not isinstance(value, str):
        return UNKNOWN
    words = _WORD.findall(value.lower())
    return words[0][:24] if words else UNKNOWN


def input_rows(manifest: pd.DataFrame, *, now: str | None = None) -> pd.DataFrame:
    """The monitored columns of manifest rows (one per scan, keyed by source hash)."""
    now = now or datetime.now(UTC).isoformat(timespec="seconds")
    frame = pd.DataFrame(
        {
            "input_hash": manifest["source_hash"].astype(str),
            "image_kind": manifest["image_kind"].astype(str),
            "modality": manifest["modality"].astype(str).str.slice(0, 16),
            "manufacturer": [manufacturer_category(v) for v in manifest.get("manufacturer", [None] * len(manifest))],
            "spacing": [[float(v) for v in s] for s in manifest["spacing"]],
            "shape": [[int(v) for v in s] for s in manifest["shape"]],
            "intensity_mean": manifest["intensity_mean"].astype(float),
            "intensity_p01": manifest["intensity_p01"].astype(float),
            "intensity_p99": manifest["intensity_p99"].astype(float),
            "recorded_at": now,
        },
        columns=list(ScanInputRow.model_fields),
    )
    return frame.drop_duplicates("input_hash").reset_index(drop=True)


def record_inputs(manifest: pd.DataFrame, out: Path) -> Path:
    """Add the scans of this run that OUT/scan_inputs.parquet does not hold yet (a re-run adds nothing)."""
    path = Path(out) / SCAN_INPUTS
    new = input_rows(manifest)
    if path.exists():
        existing = read_table(ScanInputRow, path)
        new = new[~new["input_hash"].isin(set(existing["input_hash"]))]
        if new.empty:
            return path
        new = pd.concat([existing, new], ignore_index=True)
    if not new.empty or not path.exists():
        write_table(ScanInputRow, new.reset_index(drop=True), path)
    return path


def read_inputs(folder: Path) -> pd.DataFrame:
    """FOLDER/scan_inputs.parquet, or an empty frame where scoring ran before it recorded input statistics."""
    path = Path(folder) / SCAN_INPUTS
    if not path.exists():
        return pd.DataFrame(columns=list(ScanInputRow.model_fields))
    return read_table(ScanInputRow, path)
