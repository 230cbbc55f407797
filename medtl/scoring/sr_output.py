"""Write one DICOM SR per scored DICOM series, for return to PACS (site-local output: it carries real UIDs).

A re-run over a growing inbox builds only the SRs whose content would change: each SR written is recorded under a
digest of everything it is made from (the artifact, the scan's input hash, the source file's hash, the result and
the approval state) in `sr_index.json` beside the SR folder, and a row whose digest and file are both there keeps
its SR unread and unrebuilt. Anything else (a new scan, a changed file, a newly approved artifact, another
threshold) builds it again, with the same deterministic UIDs as before.

One series' SR never stops the others: a source attribute with an invalid value is left out of its SR (the
keyword is reported), and a series whose SR cannot be written at all is reported with the kind of error. Reports,
logs and results name series by their pseudonymous id and attributes by keyword, never by a value from the file
(highdicom's and pydicom's own messages quote values, so they are not passed on).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medtl.contracts import read_json
from medtl.contracts.base import atomic_write_bytes
from medtl.contracts.ingest import IngestReport
from medtl.errors import MedTLError
from medtl.hashing import sha256_json
from medtl.ingest.pipeline import REPORT
from medtl.ingest.privacy import PRIVATE_DIR

log = logging.getLogger(__name__)
SR_INDEX = "sr_index.json"  # beside the SR folder, so that folder holds only the SRs to send
MAX_INDEX_BYTES = 512 * 1024**2  # ~3 million SRs; a larger file is not what medtl wrote: every SR is built again


@dataclass
class StructuredReports:
    """What SR writing did, by pseudonymous series id: written files, attributes left out, series without an SR."""

    written: list[Path] = field(default_factory=list)  # built by this run
    kept: list[Path] = field(default_factory=list)  # an earlier run's SR with the same content, left as it was
    omitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # series id -> keywords left out of its SR
    failed: dict[str, str] = field(default_factory=dict)  # series id -> why no SR was written (no file values)


def source_files_by_series(staging: Path, sources: Sequence[Path]) -> dict[str, Path]:
    """One ingested source file per pseudonymous series id, found through ingest's private file index."""
    return {series: path for series, (path, _) in _source_files(staging, sources).items()}


def _source_files(staging: Path, sources: Sequence[Path]) -> dict[str, tuple[Path, str | None]]:
    """Per pseudonymous series id: one ingested source file, and its SHA-256 as ingest recorded it."""
    with open(staging / PRIVATE_DIR / "source_index.csv", newline="") as handle:
        index = {row["file_id"]: (int(row["source_index"]), row["relative_path"]) for row in csv.DictReader(handle)}
    report = read_json(IngestReport, staging / REPORT)
    found: dict[str, tuple[Path, str | None]] = {}
    for record in report.files:
        if record.status != "ingested" or record.series_id is None or record.series_id in found:
            continue
        source_number, relative = index[record.file_id]
        root = Path(sources[source_number])
        found[record.series_id] = ((root.parent if root.is_file() else root) / relative, record.sha256)
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
    files = _source_files(staging, sources)
    index_path = Path(folder).with_name(SR_INDEX)
    before = _read_index(index_path)
    index: dict[str, dict] = {}
    done = StructuredReports()
    for row in rows.itertuples():
        source, source_sha256 = files.get(row.series_id, (None, None))
        if source is None or source.suffix.lower() in (".nii", ".gz"):
            continue  # NIfTI inputs have no DICOM study to return a report to
        arguments = {
            "probability": _value(row.probability),
            "decision": _value(row.decision),
            "threshold": _value(row.threshold),
            "flags": list(row.flags),
            "algorithm": algorithm,
            "positive_class": positive,
            "seed_uid": f"{scorer.artifact.manifest_hash}:{row.input_hash}",
            "task_kind": row.task_kind,
            "findings": endpoint_findings(row, positive) if row.task_kind != "binary" else [],
            "abstained": bool(row.abstained),
        }
        key = _content_key(arguments, source_sha256)
        earlier = before.get(key)
        if key is not None and earlier is not None and (Path(folder) / earlier["file"]).is_file():
            done.kept.append(Path(folder) / earlier["file"])
            index[key] = earlier
            if earlier["omitted"]:
                done.omitted[row.series_id] = tuple(earlier["omitted"])
            continue
        try:
            series = source_reference(source)
            dataset = build_sr(series, **arguments)
        except Exception as error:  # anything one series raises costs that series its SR, never the others'
            done.failed[row.series_id] = _reason(error)
            log.warning("no SR written for series %s: %s", row.series_id, done.failed[row.series_id])
            continue
        written = write_sr(dataset, folder)  # an unwritable folder stops the run: not one file's fault
        done.written.append(written)
        omitted = omitted_attributes(series, dataset)
        if key is not None:
            index[key] = {"file": written.name, "omitted": list(omitted)}
        if omitted:
            done.omitted[row.series_id] = omitted
            log.warning("SR for series %s written without %s: invalid value(s) in the source file (left out)",
                        row.series_id, ", ".join(omitted))  # fmt: skip
    if index or before:
        atomic_write_bytes(index_path, json.dumps({**before, **index}, sort_keys=True).encode("utf-8"))
    if done.kept:
        log.info("%d SR(s) kept from an earlier run (same content), %d built", len(done.kept), len(done.written))
    return done


def _content_key(arguments: dict, source_sha256: str | None) -> str | None:
    """A digest of everything an SR is made from; None (always rebuilt) when the source file's hash is unknown."""
    if source_sha256 is None:
        return None
    return sha256_json({"source_sha256": source_sha256, **{k: repr(v) for k, v in arguments.items()}})


def _read_index(path: Path) -> dict[str, dict]:
    """The SRs earlier runs wrote, by content digest; anything unreadable or malformed counts as none (rebuilt)."""
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            log.warning("%s is larger than %d MB: ignored, every SR is built again", SR_INDEX, MAX_INDEX_BYTES >> 20)
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: {"file": entry["file"], "omitted": [str(k) for k in entry["omitted"]]}
        for key, entry in data.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("file"), str)
        and Path(entry["file"]).name == entry["file"]
        and entry["file"].startswith("SR_")
        and isinstance(entry.get("omitted"), list)
    }


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
