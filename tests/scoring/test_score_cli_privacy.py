"""`medtl score --sr` as a user runs it, on scans with distinctive identifiers and one series with malformed values:
every series gets its SR, the malformed values are left out by keyword, and nothing identifying reaches the
terminal at the default log level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medtl.datasets.synth import make_cohort
from medtl.training.train import train
from support.raw_values import INVALID, rewrite_with
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _plant_identifiers(cohort: Path) -> tuple[set[str], Path]:
    """Distinctive names and ids for every patient, malformed values in one CT series; returns the identifiers
    (names, ids and every UID of the files) and one file of the malformed series."""
    files = sorted(path for path in (cohort / "dicom").rglob("*.dcm") if path.is_file())
    patients: dict[str, int] = {}
    identifiers: set[str] = set()
    hostile_series, hostile_file = None, None
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        number = patients.setdefault(str(header.PatientID), len(patients))
        values = {"PatientName": f"QWXFAMILY{number}^QWXGIVEN", "PatientID": f"QWXPID{number:03d}"}
        if hostile_series is None and header.Modality == "CT" and "LOCALIZER" not in header.get("ImageType", []):
            hostile_series = header.SeriesInstanceUID
        if header.SeriesInstanceUID == hostile_series:
            values = {**values, **INVALID}
            hostile_file = path
        rewrite_with(path, values)
        identifiers |= {values["PatientID"], f"QWXFAMILY{number}"}
        identifiers |= {str(header[keyword].value) for keyword in UID_KEYWORDS if keyword in header}
    assert hostile_file is not None
    return identifiers, hostile_file


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-cli")
    with signing_key(root / "key.pem"):
        train(ingested_cohort(root, "dev", patients=12, seed=71), tiny_config(), root / "artifact")
        make_cohort(root / "new", patients=3, seed=72)
        identifiers, hostile = _plant_identifiers(root / "new")
        command = [sys.executable, "-m", "medtl.cli", "score", str(root / "artifact"), str(root / "new" / "dicom"),
                   "--out", str(root / "scores"), "--sr", "--allow-unapproved", "--dev-pseudonym-key",
                   "--workers", "1"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        yield root, done, identifiers, hostile


def test_every_series_gets_its_sr_and_malformed_values_are_left_out_by_keyword(scored):
    root, done, _, hostile = scored
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(root / "scores" / "scores.parquet")
    reports = [pydicom.dcmread(path) for path in sorted((root / "scores" / "sr").glob("SR_*.dcm"))]
    assert len(reports) == rows.series_id.nunique() > 1
    source = pydicom.dcmread(hostile, stop_before_pixels=True)
    (report,) = [r for r in reports if r.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                 .SeriesInstanceUID == source.SeriesInstanceUID]  # fmt: skip
    assert report.StudyInstanceUID == source.StudyInstanceUID and report.PatientID == source.PatientID
    for keyword in INVALID:
        assert report[keyword].value in (None, ""), keyword
    listed = ", ".join(f"{keyword} (1)" for keyword in sorted(INVALID))
    assert f"1 SR(s) written without invalid source attribute(s): {listed}" in done.stdout


def test_no_identifier_or_malformed_value_reaches_the_terminal(scored):
    _, done, identifiers, _ = scored
    said = done.stdout + done.stderr
    assert "INFO" in said or "scored" in said  # the run did speak at its default level
    leaked = sorted(value for value in identifiers | set(INVALID.values()) if value and value in said)
    assert leaked == []
    assert "QWXBAD" not in said and "QWXREF" not in said and "1946" not in said
