"""Write one DICOM SR per scored DICOM series, for return to PACS (site-local output: it carries real UIDs).

One series' SR never stops the others: a source attribute with an invalid value is left out of its SR (the
keyword is reported), and a series whose SR cannot be written at all is reported with the kind of error. Reports,
logs and results name series by their pseudonymous id and attributes by keyword, never by a value from the file
(highdicom's and pydicom's own messages quote values, so they are not passed on).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport
from medtl.errors import MedTLError
from medtl.ingest.pipeline import REPORT
from medtl.ingest.privacy import PRIVATE_DIR

log = logging.getLogger(__name__)


@dataclass
class StructuredReports:
    """What SR writing did, by pseudonymous series id: written files, attributes left out, series without an SR."""

    written: list[Path] = field(default_factory=list)
    omitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # series id -> keywords left out of its SR
    failed: dict[str, str] = field(default_factory=dict)  # series id -> why no SR was written (no file values)


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
) -> StructuredReports:
    from medtl.scoring.dicom_sr import AlgorithmInfo, build_sr, omitted_attributes, source_reference, write_sr

    positive = scorer.model.positive_class or ""

    algorithm = AlgorithmInfo(
        model_id=scorer.artifact.metadata["model_id"],
        model_version=scorer.artifact.metadata["model_version"],
        artifact_sha256=scorer.artifact.manifest_hash,
        approved=scorer.approved,
        trusted=scorer.artifact.trusted,
    )
    files = source_files_by_series(staging, sources)
    done = StructuredReports()
    for row in rows.itertuples():
        source = files.get(row.series_id)
        if source is None or source.suffix.lower() in (".nii", ".gz"):
            continue  # NIfTI inputs have no DICOM study to return a report to
        try:
            series = source_reference(source)
            dataset = build_sr(
                series,
                probability=_value(row.probability),
                decision=_value(row.decision),
                threshold=_value(row.threshold),
                flags=list(row.flags),
                algorithm=algorithm,
                positive_class=positive,
                seed_uid=f"{scorer.artifact.manifest_hash}:{row.input_hash}",
                task_kind=row.task_kind,
                findings=endpoint_findings(row, positive) if row.task_kind != "binary" else (),
                abstained=bool(row.abstained),
            )
        except Exception as error:  # anything one series raises costs that series its SR, never the others'
            done.failed[row.series_id] = _reason(error)
            log.warning("no SR written for series %s: %s", row.series_id, done.failed[row.series_id])
            continue
        done.written.append(write_sr(dataset, folder))  # an unwritable folder stops the run: not one file's fault
        omitted = omitted_attributes(series, dataset)
        if omitted:
            done.omitted[row.series_id] = omitted
            log.warning("SR for series %s written without %s: invalid value(s) in the source file (left out)",
                        row.series_id, ", ".join(omitted))  # fmt: skip
    return done


def endpoint_findings(row, positive: str | None) -> list:
    """A scores row's endpoints as the SR's findings: id, the words the report uses, probability, threshold,
    decision (parallel lists of ScoreRow v2; an unscored row has no probabilities)."""
    from medtl.contracts.task import endpoints
    from medtl.scoring.dicom_sr import EndpointFinding

    display = {e.id: e.display for e in endpoints(row.task_kind, list(row.classes), positive or None)}
    ids = list(row.endpoints)
    probabilities = list(row.endpoint_probabilities) or [None] * len(ids)
    return [
        EndpointFinding(name, display.get(name, name), _value(p), _value(t), _value(d))
        for name, p, t, d in zip(ids, probabilities, list(row.thresholds), list(row.decisions), strict=True)
    ]


def _reason(error: Exception) -> str:
    """medtl's own messages carry no file values; other libraries' do (highdicom quotes them), so only their type."""
    if isinstance(error, MedTLError):
        return error.what
    return f"{type(error).__name__} while building the SR (details withheld: they may quote values from the file)"


def _value(value):
    """pandas stores a missing number as NaN (and numbers as numpy scalars); the SR needs None and plain values."""
    if hasattr(value, "item"):
        value = value.item()
    return None if value is None or (isinstance(value, float) and value != value) else value
