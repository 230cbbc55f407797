"""The monitoring flow, and the monitoring step the scoring flows end with when given a `monitor_out` folder.

An alert must reach a person: the outputs are written first, then a markdown artifact names what drifted (aggregate
numbers only) and the flow run ends Failed (DriftAlertError), which a deployment's automation can notify on. A
night without alert leaves a short summary artifact and a Completed run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from medtl.artifacts import resolve_trust
from medtl.monitoring.monitor import PAGE, STATUS, MonitorResult, default_settings, monitor
from medtl.scoring.score import SCORES


class MonitorParameters(BaseModel):
    """Validated before anything is read. Folders: site-level scoring outputs, never patient-named ones."""

    model_config = ConfigDict(extra="forbid")

    artifact: Path
    scores: list[Path] = Field(min_length=1, description="output folders of scoring (each with scores.parquet)")
    out: Path
    alpha: float = Field(0.01, gt=0, lt=0.5)
    window: int = Field(14, ge=1, le=365)
    min_window_scans: int = Field(30, ge=1)
    night_starts_hour: int = Field(12, ge=0, le=23)
    allow_untrusted: bool = Field(
        False, description="development only: no trust anchor (MEDTL_TRUSTED_KEYS) needed; outputs say UNTRUSTED"
    )


@task(name="monitor-drift")
def run_monitor(params: MonitorParameters) -> MonitorResult:
    settings = default_settings(alpha=params.alpha, window=params.window, min_window_scans=params.min_window_scans,
                                night_starts_hour=params.night_starts_hour)  # fmt: skip
    return monitor(params.artifact, params.scores, out=params.out, settings=settings,
                   trust=resolve_trust(allow_untrusted=params.allow_untrusted))  # fmt: skip


def report_drift(result: MonitorResult) -> dict:
    """The UI artifact for the latest night; on alert, raise after it so the run ends Failed."""
    status = result.status
    lines = result.alert_lines()
    header = f"# Monitoring: {status.model_id} {status.model_version}\n\nlatest night `{status.latest_night}`: "
    body = (
        "**ALERT**\n\n" + "\n".join(f"- {line}" for line in lines)
        if result.alert
        else f"{status.status} ({len(result.latest.checks) if result.latest else 0} checks)"
    )
    create_markdown_artifact(
        key="monitoring-alert" if result.alert else "monitoring-summary",
        markdown=header + body + f"\n\nSee `{STATUS}` and `{PAGE}` in the monitoring output folder.",
    )
    result.raise_on_alert()
    return {"status": status.status, "latest_night": status.latest_night, "nights": len(status.nights)}


@flow(name="medtl-monitor", validate_parameters=True)
def monitor_flow(params: MonitorParameters) -> dict:
    return report_drift(run_monitor(params))


def monitor_after_scoring(artifact: Path, scores: Path, monitor_out: Path, *, allow_untrusted: bool) -> dict:
    """The scoring flows' last step: the scores folder they wrote, monitored with the default settings (nothing to
    monitor before the first scan is scored)."""
    if not (Path(scores) / SCORES).exists():
        return {"status": "no_data", "latest_night": None, "nights": 0}
    params = MonitorParameters(artifact=artifact, scores=[scores], out=monitor_out, allow_untrusted=allow_untrusted)
    return report_drift(run_monitor(params))
