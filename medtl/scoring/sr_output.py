"""Write one DICOM SR per scored DICOM series, for return to PACS (site-local output: it carries real UIDs)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport
from medtl.ingest.pipeline import REPORT
from medtl.ingest.privacy import PRIVATE_DIR


def source_files_by_series(staging: Path, sources: Sequence[Path]) -> dict[str, Path]:
    """One ingested source file per pseudonymous series id, found through ingest's private file index."""
    with open(staging / PRIVATE_DIR / "source_index.csv", newline="") as handle:
        index = {row["file_id"]: (int(row["source_index"]), row["relative_path"]) for row in csv.DictReader(handle)}
    report = read_json(IngestReport, staging / REPORT)
    found: dict[str, Path] = {}
    for record in report.files:
        if record.status != "ingested" or record.series_id is None or record.series_id in found:
            continue
        source_number, relative = index[record.file_id]
        root = Path(sources[source_number])
        found[record.series_id] = (root.parent if root.is_file() else root) / relative
    return found


def write_structured_reports(
    scorer, rows: pd.DataFrame, staging: Path, sources: Sequence[Path], folder: Path
) -> list[Path]:
    from medtl.scoring.dicom_sr import AlgorithmInfo, build_sr, write_sr

    algorithm = AlgorithmInfo(
        model_id=scorer.artifact.metadata["model_id"],
        model_version=scorer.artifact.metadata["model_version"],
        artifact_sha256=scorer.artifact.manifest_hash,
        approved=scorer.approved,
        trusted=scorer.artifact.trusted,
    )
    files = source_files_by_series(staging, sources)
    written = []
    for row in rows.itertuples():
        source = files.get(row.series_id)
        if source is None or source.suffix.lower() in (".nii", ".gz"):
            continue  # NIfTI inputs have no DICOM study to return a report to
        dataset = build_sr(
            source,
            probability=_value(row.probability),
            decision=_value(row.decision),
            threshold=_value(row.threshold),
            flags=list(row.flags),
            algorithm=algorithm,
            positive_class=scorer.model.positive_class or "",
            seed_uid=f"{scorer.artifact.manifest_hash}:{row.input_hash}",
        )
        written.append(write_sr(dataset, folder))
    return written


def _value(value):
    """pandas stores a missing number as NaN; the SR needs None."""
    return None if value is None or (isinstance(value, float) and value != value) else value
