"""`medtl card ARTIFACT --out DIR`: model_card.json and configs/metadata.json from a verified artifact, optionally
with its evaluation's metrics.json, the artifact it replaced and the change history across artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medtl.artifacts.cli import AllowUntrusted
from medtl.errors import ConfigError

console = Console()
OWNER = "medtl card"


def card_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `medtl train`.")],
    out: Annotated[Path, typer.Option(help="Folder for model_card.json and configs/metadata.json.")],
    metrics: Annotated[
        Path | None,
        typer.Option(help="metrics.json of this artifact's evaluation: performance with CIs, subgroups, calibration."),
    ] = None,
    history: Annotated[
        list[Path] | None,
        typer.Option(help="Another artifact of this model's history (repeatable); ordered by training time."),
    ] = None,
    replaced: Annotated[
        Path | None,
        typer.Option(help="JSON {artifact_hash, model_version, reason, comparison_verdict}: what this model replaced."),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="Service registry the artifact was promoted in: what it replaced and why, verified."),
    ] = None,
    developer: Annotated[
        str | None, typer.Option(help="The developing team or organisation (the card's authors).")
    ] = None,
    allow_untrusted: AllowUntrusted = False,
) -> None:
    """A machine-readable model card (CHAI Applied Model Card sections) and a MONAI bundle metadata.json."""
    from medtl.artifacts import open_verified, resolve_trust
    from medtl.artifacts.contents import ArtifactContents
    from medtl.artifacts.service import open_registry
    from medtl.cards.card import build_model_card
    from medtl.cards.files import (
        card_files,
        evaluation_metrics,
        read_replacement,
        replacement_from_registry,
        write_card_files,
    )
    from medtl.cards.history import change_history
    from medtl.cards.monai import monai_metadata
    from medtl.outputs import clear_for, mark

    if replaced is not None and registry is not None:
        raise ConfigError(
            "--replaced and --registry both say what this model replaced",
            fix="pass --registry (its promotions are signed) or --replaced, not both",
        )
    clear_for(out, owner=OWNER, what="the model card", dry_run=True)  # before any work
    trust = resolve_trust(allow_untrusted=allow_untrusted)
    contents = ArtifactContents(open_verified(artifact, trust=trust), action="described by a model card")
    others = [
        ArtifactContents(open_verified(path, trust=trust), action="listed in a history") for path in history or []
    ]
    entries = change_history([contents, *others]) if others else []
    loaded, source = evaluation_metrics(contents, metrics) if metrics is not None else (None, None)
    card = build_model_card(
        contents,
        metrics=loaded,
        evaluation=source,
        developer=developer,
        history=entries,
        replaced=(
            replacement_from_registry(contents.verified, open_registry(registry, trust=trust))
            if registry is not None
            else read_replacement(replaced)
            if replaced is not None
            else None
        ),
    )
    files = card_files(card, monai_metadata(contents, history=entries, authors=developer))
    clear_for(out, owner=OWNER, what="the model card")
    mark(out, owner=OWNER)
    write_card_files(files, out)
    console.print(f"wrote {', '.join(sorted(files))} to {out}")
    if source is not None and not source.recorded:
        console.print(
            "[yellow]warning:[/] the evaluation that wrote this metrics.json does not count under the "
            "current trust settings (see `medtl verify`); the card says so",
            highlight=False,
        )
