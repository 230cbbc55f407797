"""`medtl verify ARTIFACT`: the auditor's check, as a plain function that medtl/cli.py mounts.

Returns the exit code instead of exiting, so that it can be called from Python and tests: 0 when every check
passed (warnings, e.g. an unknown signer or an allowed unsigned artifact, are printed but do not fail), and
ArtifactIntegrityError.exit_code (6) naming the first problem otherwise; other medtl errors (a bad trusted-key file)
return their own exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medtl.artifacts.verify import verify
from medtl.errors import ArtifactIntegrityError, MedTLError


def verify_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder to check.")],
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted-key",
            help="Public key file of a trusted signer (repeatable); "
            "default: $MEDTL_TRUSTED_KEYS. Without any, the signer is reported as unknown.",
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Accept an unsigned artifact (development only); it is flagged.")
    ] = False,
) -> int:
    """Check every hash, the signature and the audit chain of an artifact; non-zero exit naming the first problem."""
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        report = verify(
            artifact, trusted_keys=list(trusted_key) if trusted_key else None, allow_unsigned=allow_unsigned
        )
    except ArtifactIntegrityError as error:
        err.print(f"[bold red]FAILED[/] {artifact.name}: ", end="")
        err.print(str(error), markup=False)
        return error.exit_code
    except MedTLError as error:
        err.print("[bold red]error:[/] ", end="")
        err.print(str(error), markup=False)
        return error.exit_code
    out.print(f"[bold green]OK[/] {artifact.name}" + (" [bold yellow](with warnings)[/]" if report.warnings else ""))
    out.print(report.describe(), markup=False)
    for check in report.checks:
        out.print(f"  checked: {check}", markup=False)
    return 0
