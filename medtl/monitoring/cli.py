"""`medtl monitor ARTIFACT SCORES_DIR... --out DIR`, as a plain function medtl/cli.py mounts.

The outputs are written first; then an alert on the latest night raises DriftAlertError, which the entry point
turns into exit code 11, so a cron job or a scheduler can notify on it. Earlier nights' alerts are in the status
file and on the page but do not fail tonight's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from medtl.artifacts.cli import AllowUntrusted
from medtl.errors import ConfigError, describe_validation_error


def monitor_command(
    artifact: Annotated[Path, typer.Argument(help="The artifact that scored (verified like scoring verifies it).")],
    scores: Annotated[list[Path], typer.Argument(help="Output folders of `medtl score` (each with scores.parquet).")],
    out: Annotated[Path, typer.Option(help="Folder for monitor_status.json and monitor.html.")],
    alpha: Annotated[float, typer.Option(help="False-alarm rate per night (Holm over the night's checks).")] = 0.01,
    window: Annotated[int, typer.Option(help="Earlier nights (that did not alert) in the trailing window.")] = 14,
    min_window_scans: Annotated[int, typer.Option(help="Scans the window needs before it is compared.")] = 30,
    night_starts_hour: Annotated[
        int, typer.Option(help="UTC hour a night starts at (its rows are scored before the same hour next day).")
    ] = 12,
    allow_untrusted: AllowUntrusted = False,
) -> None:
    """Drift of scheduled scoring's inputs and outputs against the training reference and a trailing window."""
    from medtl.artifacts import resolve_trust
    from medtl.monitoring.monitor import default_settings, monitor

    try:
        settings = default_settings(
            alpha=alpha, window=window, min_window_scans=min_window_scans, night_starts_hour=night_starts_hour
        )
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, root="options"), fix="see `medtl monitor --help`") from None
    result = monitor(artifact, scores, out=out, settings=settings, trust=resolve_trust(allow_untrusted=allow_untrusted))
    Console(highlight=False).print(result.describe(), markup=False, soft_wrap=True)
    result.raise_on_alert()
