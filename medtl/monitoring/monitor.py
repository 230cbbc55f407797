"""`medtl monitor`: every night of scheduled scoring against the training reference and its trailing window.

Writes OUT/monitor_status.json (contract monitor_status) and OUT/monitor.html, and returns whether the latest
night alerts; the caller decides what an alert does (the CLI exits non-zero, the flow fails its run). Nights are
assessed oldest first, and a night that alerted is left out of later nights' windows, so that a drift does not
become the reference it is compared with; the training comparison keeps alarming while a drift lasts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medtl.artifacts import TrustSettings, open_verified
from medtl.contracts import write_json
from medtl.contracts.base import atomic_write_bytes
from medtl.contracts.monitoring import MonitorSettingsRecord, MonitorStatus, NightStatus
from medtl.errors import DriftAlertError
from medtl.monitoring.checks import night_checks
from medtl.monitoring.nights import Night, read_history
from medtl.monitoring.reference import Reference, training_reference
from medtl.monitoring.summary import summarize

STATUS = "monitor_status.json"
PAGE = "monitor.html"


def default_settings(**overrides: float | int) -> MonitorSettingsRecord:
    """alpha 1% per night; 14 earlier nights of at least 30 scans; an alert needs a 10-point change of a share or
    rate, a KS distance of 0.2, or 15 points more scans beyond a reference quantile than it allows."""
    values: dict[str, float | int] = dict(
        alpha=0.01, window=14, min_window_scans=30, night_starts_hour=12, min_share_change=0.10, min_ks=0.20,
        min_band_excess=0.15, flag_tolerance=0.02,
    )  # fmt: skip
    return MonitorSettingsRecord.model_validate(values | overrides)


@dataclass
class MonitorResult:
    status: MonitorStatus
    out: Path

    @property
    def alert(self) -> bool:
        return self.status.status == "alert"

    @property
    def latest(self) -> NightStatus | None:
        return self.status.nights[-1] if self.status.nights else None

    def alert_lines(self) -> list[str]:
        """The latest night's alerts for a terminal, an error or a Prefect artifact: quantity, effect and p-value
        only. The values (category names come from header attributes) stay in the status file and the page."""
        night = self.latest
        if night is None:
            return []
        return [
            f"{c.quantity} vs {c.reference}: {c.test} effect {c.effect:.3g} (min {c.min_effect:g}), "
            f"p_adj {c.p_adjusted:.2g}, {c.n} scans"
            for c in night.checks
            if c.alert
        ]

    def describe(self) -> str:
        s = self.status
        alerts = sum(night.status == "alert" for night in s.nights)
        text = f"{len(s.nights)} night(s) monitored, {alerts} alerted; latest night {s.latest_night}: {s.status}"
        lines = self.alert_lines()
        if lines:
            text += "\n" + "\n".join(f"  - {line}" for line in lines)
        note = "" if s.approved else " (UNAPPROVED artifact: provisional thresholds)"
        note += "" if s.trusted else " (UNTRUSTED artifact: development only)"
        return f"{text}{note}\nwrote {self.out / STATUS} and {self.out / PAGE}"

    def raise_on_alert(self) -> None:
        if self.alert:
            raise DriftAlertError(
                f"the latest night ({self.status.latest_night}) drifted: "
                + "; ".join(self.alert_lines()[:5])
                + (" ..." if len(self.alert_lines()) > 5 else ""),
                where=STATUS,
                fix=f"read {PAGE}: check the scanners and protocols of that night's scans, and whether the case mix "
                "changed; if the change is expected, have the model re-validated on such scans",
            )


def monitor(
    artifact: Path,
    scores: Sequence[Path],
    *,
    out: Path,
    settings: MonitorSettingsRecord | None = None,
    trust: TrustSettings | None = None,
) -> MonitorResult:
    """Verify the artifact, read every scores folder, assess the nights, write the status file and the page."""
    settings = settings or default_settings()
    verified = open_verified(artifact, trust=trust)
    reference = training_reference(verified, flag_tolerance=settings.flag_tolerance)
    history = read_history(scores, verified.manifest_hash, night_starts_hour=settings.night_starts_hour)
    nights = assess(history.nights, reference, settings)
    metadata = verified.metadata
    status = MonitorStatus(
        status=nights[-1].status if nights else "no_data",
        latest_night=nights[-1].night if nights else None,
        model_id=metadata["model_id"],
        model_version=metadata["model_version"],
        artifact_hash=verified.manifest_hash,
        approved=verified.status.approved,
        trusted=verified.trusted,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        settings=settings,
        reference_scans=reference.n,
        rows_of_other_artifacts=history.other_artifacts,
        nights=nights,
    )
    return write_outputs(status, reference, Path(out))


def write_outputs(status: MonitorStatus, reference: Reference, out: Path) -> MonitorResult:
    from medtl.monitoring.page import render_page  # matplotlib: only when a page is written

    out.mkdir(parents=True, exist_ok=True)
    write_json(status, out / STATUS)
    atomic_write_bytes(out / PAGE, render_page(status, reference).encode("utf-8"))
    return MonitorResult(status, out)


def assess(nights: Sequence[Night], reference: Reference, settings: MonitorSettingsRecord) -> list[NightStatus]:
    """Each night's checks, oldest first; alerted nights stay out of later windows."""
    assessed: list[NightStatus] = []
    calm: list[Night] = []  # earlier nights that did not alert, newest last
    for night in nights:
        window = pooled(calm[-settings.window :], settings.min_window_scans)
        checks, skipped = night_checks(night, window, reference, settings)
        alert = any(check.alert for check in checks)
        assessed.append(
            NightStatus(
                night=night.label,
                first_scored_at=night.first,
                last_scored_at=night.last,
                status="alert" if alert else "ok",
                summary=summarize(night, reference.endpoints, reference.image_kind),
                checks=checks,
                skipped=skipped,
            )
        )
        if not alert:
            calm.append(night)
    return assessed


def pooled(nights: Sequence[Night], min_scans: int) -> Night | None:
    """The trailing window as one Night; None when it holds fewer than MIN_SCANS scans."""
    if sum(len(n.scores) for n in nights) < min_scans:
        return None
    return Night(
        "window",
        pd.concat([n.scores for n in nights], ignore_index=True),
        pd.concat([n.inputs for n in nights], ignore_index=True),
    )
