"""What ingest reported for each input file, by its path relative to the source (read from the private index)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport


def fates_by_path(dataset: Path) -> dict[str, tuple[str, str]]:
    """relative path -> (status, reason code or "") for every file of the dataset's ingest report."""
    report = read_json(IngestReport, Path(dataset) / "ingest_report.json")
    index = pd.read_csv(Path(dataset) / "private" / "source_index.csv")
    names = dict(zip(index.file_id, index.relative_path, strict=True))
    return {names[record.file_id]: (record.status, record.reason_code or "") for record in report.files}


def sorted_manifest(dataset: Path) -> pd.DataFrame:
    """The manifest in scan-id order: runs that decode in another order must still give these rows."""
    frame = pd.read_parquet(Path(dataset) / "manifest.parquet")
    return frame.sort_values("scan_id", ignore_index=True)
