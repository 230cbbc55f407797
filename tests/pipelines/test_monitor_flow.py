"""Monitoring in the flows: the scoring flow's last step, and the monitoring flow ending Failed on an alert (after
writing its outputs and an alert artifact), which is what a deployment notifies on."""

from __future__ import annotations

import pandas as pd
import pytest
from prefect.artifacts import Artifact

from medtl.contracts import read_json, read_table, write_table
from medtl.contracts.evaluation import ScoreRow
from medtl.contracts.monitoring import MonitorStatus, ScanInputRow
from medtl.scoring.inputs import SCAN_INPUTS
from medtl.scoring.score import SCORES
from pipelines.monitor import MonitorParameters, monitor_flow
from pipelines.score import ScoreParameters, score_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scoring_flow_monitors_its_folder_and_an_alert_fails_the_monitoring_flow(trained, tmp_path):
    params = ScoreParameters(artifact=trained / "artifact", sources=[trained / "dev" / "dicom"],
                             out=tmp_path / "scores", allow_unapproved=True, allow_development_key=True,
                             monitor_out=tmp_path / "monitor")  # fmt: skip
    state = score_flow(params, return_state=True)
    status = read_json(MonitorStatus, tmp_path / "monitor" / "monitor_status.json")
    assert len(status.nights) == 1 and status.nights[0].summary.n_scans > 0
    assert state.is_failed() == (status.status == "alert")  # an alert fails the run; the scores stay either way
    assert (tmp_path / "scores" / SCORES).exists() and (tmp_path / "monitor" / "monitor.html").exists()

    rows = read_table(ScoreRow, tmp_path / "scores" / SCORES)
    inputs = read_table(ScanInputRow, tmp_path / "scores" / SCAN_INPUTS)
    renamed = {h: f"{i:064x}" for i, h in enumerate(rows["input_hash"])}
    later = (pd.Timestamp(rows["scored_at"].max()) + pd.Timedelta(days=1)).isoformat()
    write_table(ScoreRow, rows.assign(input_hash=rows["input_hash"].map(renamed), scored_at=later),
                tmp_path / "next" / SCORES)  # fmt: skip
    write_table(ScanInputRow, inputs.assign(input_hash=inputs["input_hash"].map(renamed), manufacturer="othervendor"),
                tmp_path / "next" / SCAN_INPUTS)  # fmt: skip
    monitored = monitor_flow(
        MonitorParameters(
            artifact=trained / "artifact",
            scores=[tmp_path / "scores", tmp_path / "next"],
            out=tmp_path / "monitor-next",
        ),
        return_state=True,
    )
    assert monitored.is_failed()
    assert read_json(MonitorStatus, tmp_path / "monitor-next" / "monitor_status.json").status == "alert"
    alert = Artifact.get("monitoring-alert")
    assert alert is not None and "manufacturer vs training" in str(alert.data) and "othervendor" not in str(alert.data)


def test_monitoring_parameters_are_checked_before_anything_is_read(trained, tmp_path):
    with pytest.raises(ValueError):
        MonitorParameters(artifact=trained / "artifact", scores=[], out=tmp_path)
    with pytest.raises(ValueError):
        MonitorParameters(artifact=trained / "artifact", scores=[tmp_path], out=tmp_path, alpha=0.9)
