"""`medtl verify ARTIFACT` and `medtl keys`: the auditor's check and key handling, as plain functions medtl/cli.py
mounts.

verify returns the exit code instead of exiting, so that it can be called from Python and tests: 0 when every check
passed (warnings, e.g. development mode or events that do not count, are printed but do not fail), and
ArtifactIntegrityError.exit_code (6) naming the first problem otherwise (no trust anchor configured included); other
medtl errors (a bad key file) return their own exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medtl.artifacts.keys import generate_signing_key, key_fingerprint, load_key_set
from medtl.artifacts.verify import verify
from medtl.errors import ArtifactIntegrityError, MedTLError

AllowUntrusted = Annotated[
    bool,
    typer.Option(
        "--allow-untrusted",
        help="Development only: read an artifact although no trust anchor (MEDTL_TRUSTED_KEYS) is configured; "
        "every output then says UNTRUSTED.",
    ),
]

keys_app = typer.Typer(help="Make and inspect Ed25519 keys (pipeline and reviewer keys).", no_args_is_help=True)


def verify_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder to check.")],
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted-key",
            help="Public key file of a trusted pipeline signer (repeatable); default: $MEDTL_TRUSTED_KEYS.",
        ),
    ] = None,
    approver_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--approver-key",
            help="Public key file of a reviewer allowed to approve (repeatable); default: $MEDTL_APPROVER_KEYS.",
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Accept an unsigned artifact (development only); it is flagged.")
    ] = False,
    allow_untrusted: AllowUntrusted = False,
) -> int:
    """Check every hash, the signature, its signer and the audit chain, and say which decision counts."""
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        report = verify(
            artifact,
            trusted_keys=list(trusted_key) if trusted_key else None,
            approver_keys=list(approver_key) if approver_key else None,
            allow_unsigned=allow_unsigned,
            allow_untrusted=allow_untrusted,
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


@keys_app.command("generate")
def generate_command(
    path: Annotated[Path, typer.Argument(help="Private key file to write (mode 0600); PATH.pub gets the public key.")],
) -> None:
    """Make a new Ed25519 key pair: a pipeline signing key, or a reviewer's personal key."""
    public_hex = generate_signing_key(path)
    Console(highlight=False).print(
        f"wrote {path.name} (private: keep it to its owner) and {path.name}.pub; fingerprint "
        f"{key_fingerprint(public_hex)}",
        markup=False,
    )


@keys_app.command("fingerprint")
def fingerprint_command(
    public: Annotated[Path, typer.Argument(help="Public key file (PEM or hex lines).")],
) -> None:
    """Show the fingerprint(s) of a public key file, as verify and the audit log name them."""
    for public_hex in sorted(load_key_set([public], env="") or ()):
        Console(highlight=False).print(key_fingerprint(public_hex), markup=False)
