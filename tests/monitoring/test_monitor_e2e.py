"""`medtl score` then `medtl monitor` on a small trained artifact: the scoring run leaves its input statistics, the
monitor reads them with the artifact's reference, and a night from another vendor exits 11 (DriftAlertError)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medtl.contracts import read_json, read_table, write_table
from medtl.contracts.evaluation import ScoreRow
from medtl.contracts.monitoring import MonitorStatus, ScanInputRow
from medtl.datasets.synth import make_cohort
from medtl.errors import DriftAlertError
from medtl.scoring.inputs import SCAN_INPUTS
from medtl.scoring.score import SCORES, score
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER, ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    with signing_key(root / "key.pem"):
        train(ingested_cohort(root, "dev", patients=12, seed=81), tiny_config(), root / "artifact")
        make_cohort(root / "new", patients=6, seed=82)
        score(root / "artifact", [root / "new" / "dicom"], out=root / "scores", pseudonymizer=DEV_PSEUDONYMIZER,
              allow_unapproved=True, workers=1)  # fmt: skip
        yield root


def _monitor(root: Path, *folders: str, out: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "medtl.cli", "monitor", str(root / "artifact"),
               *(str(root / f) for f in folders), "--out", str(root / out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_scoring_records_input_statistics_and_the_monitor_reads_them(scored):
    root = scored
    rows = read_table(ScoreRow, root / "scores" / SCORES)
    inputs = read_table(ScanInputRow, root / "scores" / SCAN_INPUTS)
    assert set(inputs["input_hash"]) == set(rows["input_hash"]) and len(rows) > 0
    done = _monitor(root, "scores", out="monitor")
    status = read_json(MonitorStatus, root / "monitor" / "monitor_status.json")
    assert done.returncode == 0 and status.status == "ok", done.stdout + done.stderr
    night = status.nights[-1]
    assert len(status.nights) == 1 and night.summary.n_scans == len(rows) == night.summary.n_with_inputs
    assert status.reference_scans > 0 and not status.approved and status.trusted
    compared = {(c.quantity, c.reference) for c in night.checks}
    assert {("modality", "training"), ("manufacturer", "training"), ("spacing[2]", "training")} <= compared
    assert any(s.startswith("window") for s in night.skipped)  # one night: no window yet
    kinds = next(c for c in night.checks if c.quantity == "flag:kind_mismatch")  # 2D images came in training too
    assert kinds.expected != "at most 2.0%" and not kinds.alert
    assert (root / "monitor" / "monitor.html").stat().st_size > 10_000


def test_a_night_from_another_vendor_exits_with_the_alert_code(scored):
    root = scored
    rows = read_table(ScoreRow, root / "scores" / SCORES)
    inputs = read_table(ScanInputRow, root / "scores" / SCAN_INPUTS)
    next_night = pd.Timestamp(rows["scored_at"].max()) + pd.Timedelta(days=1)
    renamed = {h: f"{i:064x}" for i, h in enumerate(rows["input_hash"])}  # other scans, same numbers
    rows = rows.assign(input_hash=rows["input_hash"].map(renamed), scored_at=next_night.isoformat())
    inputs = inputs.assign(input_hash=inputs["input_hash"].map(renamed), manufacturer="othervendor")
    write_table(ScoreRow, rows, root / "next" / SCORES)
    write_table(ScanInputRow, inputs, root / "next" / SCAN_INPUTS)
    done = _monitor(root, "scores", "next", out="monitor-next")
    assert done.returncode == DriftAlertError.exit_code, done.stdout + done.stderr
    assert "manufacturer vs training" in done.stdout + done.stderr
    assert "othervendor" not in done.stdout + done.stderr  # category names stay in the files, never in messages
    status = read_json(MonitorStatus, root / "monitor-next" / "monitor_status.json")
    assert status.status == "alert" and len(status.nights) == 2
    assert any(c.quantity == "manufacturer" and c.alert for c in status.nights[-1].checks)
