"""`medtl service`: put an approved model in service, roll back, and say what served when (mounted by medtl/cli.py).

Registry changes are signed with the reviewer's own key ($MEDTL_REVIEWER_KEY) and verified against
$MEDTL_APPROVER_KEYS; every command verifies the whole registry first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from medtl.artifacts.cli import AllowUntrusted

service_app = typer.Typer(
    help="Which model artifact is in service: signed promotions and rollbacks in a registry folder.",
    no_args_is_help=True,
)
console = Console()
Registry = Annotated[Path, typer.Option("--registry", help="The site's service registry folder.")]
Reason = Annotated[str, typer.Option(help="Why (recorded in the signed event; no patient data).")]


def _trust(allow_untrusted: bool):
    from medtl.artifacts import resolve_trust

    return resolve_trust(allow_untrusted=allow_untrusted)


def _say(text: str) -> None:
    console.print(escape(text), highlight=False, soft_wrap=True)


@service_app.command("promote")
def promote_command(
    artifact: Annotated[Path, typer.Argument(help="The approved artifact to put in service.")],
    registry: Registry,
    reason: Reason,
    comparison: Annotated[
        Path | None,
        typer.Option(help="comparison.json of `medtl compare` (in service: champion; this artifact: challenger)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A new registry's name (default: the folder's name).")] = None,
    allow_untrusted: AllowUntrusted = False,
) -> None:
    """Put an approved artifact in service; over a model in service, only with its non-inferior comparison."""
    from medtl.artifacts.service import promote

    event = promote(registry, artifact, reason=reason, comparison=comparison, trust=_trust(allow_untrusted), name=name)
    _say(f"promoted {event.payload['model_id']} {event.payload['model_version']} (event {event.index})")


@service_app.command("rollback")
def rollback_command(registry: Registry, reason: Reason, allow_untrusted: AllowUntrusted = False) -> None:
    """Return to the artifact that was in service before the current one."""
    from medtl.artifacts.service import rollback

    event = rollback(registry, reason=reason, trust=_trust(allow_untrusted))
    _say(f"rolled back to {event.payload['model_id']} {event.payload['model_version']} (event {event.index})")


@service_app.command("status")
def status_command(registry: Registry, allow_untrusted: AllowUntrusted = False) -> None:
    """The artifact in service now (after verifying every event of the registry)."""
    from medtl.artifacts.service import open_registry

    found = open_registry(registry, trust=_trust(allow_untrusted))
    current = found.in_service
    if current is None:
        _say("nothing in service")
        return
    _say(
        f"in service: {current.model_id} {current.model_version} ({current.artifact_name}, artifact "
        f"{current.artifact_manifest_hash}); registry head {found.head_hash[:16]}…, {len(found.entries)} change(s)"
    )


@service_app.command("history")
def history_command(registry: Registry, allow_untrusted: AllowUntrusted = False) -> None:
    """Every promotion and rollback, oldest first, with who signed it and why."""
    from medtl.artifacts.service import open_registry

    for entry in open_registry(registry, trust=_trust(allow_untrusted)).entries:
        c = entry.change
        compared = f", comparison {c.comparison.verdict} (margin {c.comparison.margin:g})" if c.comparison else ""
        _say(
            f"{entry.event.time} {entry.event.kind}: {c.model_id} {c.model_version} ({c.artifact_name}) by "
            f"{entry.event.actor}, signed {entry.signer}{compared}: {c.reason}"
        )


@service_app.command("which")
def which_command(
    scores: Annotated[Path, typer.Argument(help="The --out folder of `medtl score`.")],
    registry: Registry,
    allow_untrusted: AllowUntrusted = False,
) -> None:
    """Which artifact scored each batch, and whether it was the one in service then. Exit code 1 if any was not."""
    from medtl.artifacts.service import open_registry
    from medtl.scoring.served import served_batches

    batches = served_batches(scores, open_registry(registry, trust=_trust(allow_untrusted)))
    for batch in batches:
        _say(batch.describe())
    if not all(b.in_service for b in batches):
        raise typer.Exit(1)
