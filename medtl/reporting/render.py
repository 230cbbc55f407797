"""write_report: render the report to OUT/report.html (and OUT/report.pdf) and return their SHA-256 digests.

Why return digests: the caller records them (metrics, audit log) so that the document a clinician signed can be
matched, byte for byte, with the artifact it describes. Files are written to a temporary name first and then renamed,
so an interrupted run never leaves a half-written report that looks complete.
"""

from __future__ import annotations

import os
from pathlib import Path

from medtl.hashing import sha256_bytes
from medtl.reporting.html import render_html
from medtl.reporting.model import ReportInput

HTML_NAME = "report.html"
PDF_NAME = "report.pdf"


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_report(report: ReportInput, out: Path, *, pdf: bool = True) -> dict[str, str]:
    """Write the report files into `out` (created if needed); returns {file name: sha256 hex} for each one written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html = render_html(report).encode("utf-8")
    files = {HTML_NAME: html}
    if pdf:
        from medtl.reporting.pdf import render_pdf  # lazily: WeasyPrint is an optional extra

        files[PDF_NAME] = render_pdf(html.decode("utf-8"))
    for name, data in files.items():
        _write_atomic(out / name, data)
    return {name: sha256_bytes(data) for name, data in files.items()}
