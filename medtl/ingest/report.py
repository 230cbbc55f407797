"""The ingest report (every file's fate) and a QC summary a person can read in a minute."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from medtl import __version__
from medtl.contracts import IngestReport
from medtl.contracts.ingest import FileRecords, Fingerprint, IngestTimings, LabelsSummary
from medtl.timing import Laps


def build_report(
    files: FileRecords, *, n_sources: int, n_scans: int, key_id: str, labels: LabelsSummary | None
) -> IngestReport:
    counts = Counter(files.columns.status)
    reasons = Counter(code for code in files.columns.reason_code if code)
    return IngestReport(
        medtl_version=__version__,
        pseudonym_key_id=key_id,
        n_sources=n_sources,
        counts={status: counts.get(status, 0) for status in ("ingested", "skipped", "quarantined")},
        reasons=dict(sorted(reasons.items())),
        n_scans=n_scans,
        files=files.ordered(),
        labels=labels,
    )


def ingest_timings(laps: Laps, steps: dict[str, float], workers: int) -> IngestTimings:
    """Rounded to the millisecond: enough to see which step costs what, and the laps still add up."""
    return IngestTimings(
        workers=workers,
        wall_seconds=round(laps.total(), 3),
        passes={name: round(seconds, 3) for name, seconds in laps.passes.items()},
        worker_steps={name: round(seconds, 3) for name, seconds in sorted(steps.items())},
    )


def qc_summary_markdown(
    report: IngestReport, rows: Sequence[dict[str, Any]], fingerprint: Fingerprint, spec_text: str
) -> str:
    lines = ["# Ingest QC summary", ""]
    if fingerprint.pseudonym_key_id == "development":
        lines += ["> Pseudonyms use the public development key: only for synthetic or public data.", ""]
    counts = report.counts
    lines += [
        f"Files: {sum(counts.values())} — ingested {counts['ingested']}, skipped {counts['skipped']}, "
        f"quarantined {counts['quarantined']}.",
        f"Scans: {fingerprint.n_scans} from {fingerprint.n_patients} patients and {fingerprint.n_studies} studies.",
        "",
        "## Files by reason",
        "",
        "| status | reason | files |",
        "|---|---|---|",
    ]
    columns = report.files.columns
    by_reason = Counter(
        (status, code or "-") for status, code in zip(columns.status, columns.reason_code, strict=True)
        if status != "ingested"
    )  # fmt: skip
    for (status, code), count in sorted(by_reason.items()):
        lines.append(f"| {status} | {code} | {count} |")
    lines += ["", "## Scans by modality and kind", "", "| modality | kind | scans | labelled |", "|---|---|---|---|"]
    kinds = Counter((row["modality"], row["image_kind"]) for row in rows)
    labelled = Counter((row["modality"], row["image_kind"]) for row in rows if row.get("label") is not None)
    for (modality, kind), count in sorted(kinds.items()):
        lines.append(f"| {modality} | {kind} | {count} | {labelled.get((modality, kind), 0)} |")
    lines += ["", "## Labels", ""]
    if fingerprint.labels:
        lines += ["| label | scans | patients |", "|---|---|---|"]
        for label, count in fingerprint.labels.items():
            lines.append(f"| {label} | {count} | {fingerprint.patients_per_label.get(label, 0)} |")
    else:
        lines.append("No labels were joined.")
    if report.labels is not None:
        summary = report.labels
        lines += [
            "",
            f"Label rows: {summary.n_rows}, matched {summary.n_rows_matched}; unmatched rows "
            f"{_rows(summary.unmatched_rows)}; duplicate rows {_rows(summary.duplicate_rows)}; conflicting rows "
            f"{_rows(summary.conflicting_rows)}; unlabelled scans {len(summary.unlabelled_scans)}.",
        ]
        if summary.ignored_columns:
            lines.append(f"Ignored columns (never copied): {', '.join(summary.ignored_columns)}.")
    lines += ["", "## Geometry and intensity per group", ""]
    lines += ["| kind | modality | scans | spacing (median, mm) | shape (median) | intensity p01 / p50 / p99 |"]
    lines += ["|---|---|---|---|---|---|"]
    for group in fingerprint.groups:
        spacing = " × ".join(f"{axis.median:.3g}" for axis in group.spacing)
        shape = " × ".join(f"{axis.median:.0f}" for axis in group.shape)
        stats = group.intensity
        lines.append(
            f"| {group.image_kind} | {group.modality} | {group.n_scans} | {spacing} | {shape} | "
            f"{stats.p01:.4g} / {stats.p50:.4g} / {stats.p99:.4g} |"
        )
    flags = Counter(flag for row in rows for flag in row["qc_flags"])
    lines += ["", "## QC flags", ""]
    if flags:
        lines += ["| flag | scans |", "|---|---|"] + [f"| {flag} | {n} |" for flag, n in sorted(flags.items())]
    else:
        lines.append("No scan was flagged.")
    lines += ["", "## Preprocessing spec", "", "```json", spec_text.strip(), "```", ""]
    return "\n".join(lines)


def _rows(numbers: Sequence[int], limit: int = 10) -> str:
    if not numbers:
        return "none"
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" (+{len(numbers) - limit} more)" if len(numbers) > limit else "")
