"""The status file follows its contract and the page is self-contained, aggregate-only and marks the alert nights."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from medtl.contracts import read_json, write_table
from medtl.contracts.monitoring import MonitorStatus, ScanInputRow
from medtl.monitoring.monitor import PAGE, STATUS, assess, default_settings, write_outputs
from medtl.monitoring.nights import group_nights
from medtl.scoring.inputs import input_rows, manufacturer_category
from support import drift


def _status(nights, ref, settings) -> MonitorStatus:
    assessed = assess(nights, ref, settings)
    return MonitorStatus(
        status=assessed[-1].status, latest_night=assessed[-1].night, model_id="chest", model_version="1.0.0",
        artifact_hash=drift.ARTIFACT, approved=True, trusted=True, generated_at="2026-02-01T00:00:00+00:00",
        settings=settings, reference_scans=ref.n, nights=assessed,
    )  # fmt: skip


def test_status_file_and_page(tmp_path):
    rng = np.random.default_rng(5)
    ref = drift.reference(rng)
    labels = drift.labels(12)
    nights = [drift.night(rng, label, 30) for label in labels[:-1]]
    nights.append(drift.night(rng, labels[-1], 30, drift.Shift(manufacturer="canon")))
    result = write_outputs(_status(nights, ref, default_settings()), ref, tmp_path / "monitor")
    status = read_json(MonitorStatus, tmp_path / "monitor" / STATUS)
    assert status.status == "alert" and result.alert and status.latest_night == labels[-1]
    assert [n.night for n in status.nights] == labels and status.nights[-1].summary.manufacturers == {"canon": 30}
    assert any("manufacturer vs training" in line for line in result.alert_lines())
    page = (tmp_path / "monitor" / PAGE).read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing fetched or run
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 8  # a time series per monitored quantity
    assert "class='alert'" in page and labels[-1] in page
    hashes = {h for n in nights for h in n.scores["input_hash"]}
    assert not any(h in page or h in (tmp_path / "monitor" / STATUS).read_text() for h in hashes)


def test_nights_run_from_the_configured_hour_and_other_artifacts_are_left_out():
    base = drift.night(np.random.default_rng(1), "2026-03-01", 4)
    scores = base.scores.copy()
    scores["scored_at"] = ["2026-03-01T23:50:00+00:00", "2026-03-02T00:20:00+00:00", "2026-03-02T13:00:00+00:00",
                           "2026-03-02T01:00:00+00:00"]  # fmt: skip
    scores.loc[3, "artifact_hash"] = "b" * 64
    history = group_nights(scores, base.inputs, drift.ARTIFACT, night_starts_hour=12)
    assert [n.label for n in history.nights] == ["2026-03-01", "2026-03-02"] and history.other_artifacts == 1
    assert len(history.nights[0].scores) == 2 and len(history.nights[0].inputs) == 2  # one run across midnight


def test_manufacturer_is_kept_as_a_coarse_category_only(tmp_path):
    assert manufacturer_category("SIEMENS") == manufacturer_category("Siemens Healthineers") == "siemens"
    assert manufacturer_category("GE MEDICAL SYSTEMS") == "ge" and manufacturer_category(None) == "unknown"
    assert manufacturer_category("  ;; ") == "unknown" and len(manufacturer_category("x" * 200)) == 24
    manifest = pd.DataFrame({
        "source_hash": ["c" * 64], "image_kind": ["volume"], "modality": ["CT"],
        "manufacturer": ["Philips Medical Systems, serial 12345 station CT-ROOM-3"], "spacing": [[0.7, 0.7, 2.5]],
        "shape": [[512, 512, 100]], "intensity_mean": [-500.0], "intensity_p01": [-1000.0], "intensity_p99": [900.0],
    })  # fmt: skip
    rows = input_rows(manifest)
    assert rows.loc[0, "manufacturer"] == "philips"
    write_table(ScanInputRow, rows, tmp_path / "scan_inputs.parquet")  # follows its contract
    assert "12345" not in (tmp_path / "scan_inputs.parquet").read_bytes().decode("latin-1")
