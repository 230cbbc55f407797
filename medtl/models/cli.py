"""`medtl weights`: which pretrained weight files exist, where they must be, whether they verify; pin local files.

Mounted by medtl/cli.py as `app.add_typer(weights_app, name="weights")`. Errors are `MedTLError`s, which the main
entry point prints with what to do and turns into exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

weights_app = typer.Typer(
    help="Pretrained weights: where each file is expected, whether it is present and verified; pin local files.",
    no_args_is_help=True,
)
console = Console()

_STYLE = {"verified": "green", "present": "yellow", "unpinned": "yellow", "missing": "red", "mismatch": "bold red"}


@weights_app.command("list")
def list_weights(
    verify: Annotated[bool, typer.Option("--verify", help="Hash every present file (reads each file once).")] = False,
) -> None:
    """List the weight sources and every known weight file, with its expected location and status."""
    from medtl.models.catalog import check, known_weights
    from medtl.models.sources import SOURCES

    sources = Table(title="Weight sources", show_lines=False)
    sources.add_column("source")
    sources.add_column("what it loads")
    for kind in SOURCES.names():
        sources.add_row(kind, SOURCES.get(kind).summary)
    console.print(sources)

    by_folder: dict[str, list] = {}
    for entry in known_weights():
        by_folder.setdefault(str(entry.path.parent) if entry.path else "(no location recorded)", []).append(entry)
    for folder, entries in by_folder.items():
        console.print(f"\n[bold]{folder}[/]", soft_wrap=True, highlight=False)
        files = Table(show_edge=False)
        for column in ("file", "source", "backbone", "expected hash", "status"):
            files.add_column(column, overflow="fold", no_wrap=column in ("file", "status"))
        for entry in entries:
            status = check(entry, verify=verify)
            name = entry.path.name if entry.path else entry.key
            state = f"[{_STYLE[status.state]}]{status.state}[/]"
            files.add_row(name, entry.source, ", ".join(entry.backbones), entry.short_expected(), state)
        console.print(files)
    _list_pretrained_artifacts()


def _list_pretrained_artifacts() -> None:
    """The site's pretrained backbones (`medtl pretrain`), each opened through its full verification."""
    from medtl.models.artifact_index import check_entry, index_path, read_index

    entries = read_index()
    console.print(f"\n[bold]Pretrained artifacts[/] ({index_path()})", soft_wrap=True, highlight=False)
    if not entries:
        console.print("  none: `medtl pretrain DATASET... --out FOLDER` makes one from the site's unlabelled scans")
        return
    table = Table(show_edge=False)
    for column in ("artifact", "backbone", "dims", "method", "scans", "status"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        status = check_entry(entry)
        style = _STYLE.get(status.state, "bold red")
        table.add_row(entry.path, entry.backbone, f"{entry.spatial_dims}D", entry.method, str(entry.scans),
                      f"[{style}]{status.state}[/]")  # fmt: skip
    console.print(table)


@weights_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A backbone name, a file name / pin key, or a weights label.")],
) -> None:
    """Show where a backbone's (or one file's) weights are expected, the expected hash, and verify what is there."""
    from medtl.errors import UnknownNameError
    from medtl.models.backbones import BACKBONES
    from medtl.models.catalog import check, known_weights

    entries = [e for e in known_weights() if name in (e.key, e.label) or name in e.backbones]
    if not entries:
        keys = sorted({e.key for e in known_weights()} | set(BACKBONES.names()))
        raise UnknownNameError(
            f"no weight file or backbone named {name!r}", fix=f"use `medtl weights list`; known: {', '.join(keys)}"
        )
    for entry in entries:
        status = check(entry, verify=True)
        lines = [
            f"[bold]{entry.label}[/] ({entry.source}; backbone: {', '.join(entry.backbones) or '-'})",
            f"  file:      {entry.key}",
            f"  location:  {entry.path or '-'}",
            f"  expected:  {entry.expected_text()}",
            f"  status:    [{_STYLE[status.state]}]{status.state}[/] — {status.detail}",
        ]
        if status.sha256:
            lines.append(f"  sha256:    {status.sha256}")
        if status.state == "missing":
            lines.append(f"  to obtain: {escape(entry.obtain)}")
        for line in lines:  # soft wrap keeps paths and commands whole, for copy and paste
            console.print(line, soft_wrap=True, highlight=False)


@weights_app.command("register")
def register(
    file: Annotated[Path, typer.Argument(help="The weight file, or a MONAI bundle folder.")],
    name: Annotated[
        str | None, typer.Option(help="Pin key; default: the key sources look up (the file name; bundle/path).")
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected full SHA-256; refused when the file differs.")] = None,
    license: Annotated[str | None, typer.Option("--license", help="Licence of the weights, recorded.")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing pin with a different hash.")] = False,
) -> None:
    """Pin a local weight file's full SHA-256 in $MEDTL_HOME/weights.json; later loads must match it exactly.

    A pretrained medtl artifact folder is verified and listed in $MEDTL_HOME/pretrained.json instead."""
    from medtl.models.artifact_index import index_path, is_artifact_folder, register_artifact
    from medtl.models.catalog import register_file

    if is_artifact_folder(file):
        entry = register_artifact(file)
        console.print(f"listed pretrained artifact [bold]{entry.model_id}[/] ({entry.backbone}, manifest "
                      f"{entry.manifest_sha256[:16]}...) in {index_path()}", highlight=False)  # fmt: skip
        return
    from medtl.models.pins import pins_path

    pin = register_file(file, name=name, sha256=sha256, license=license, replace=replace)
    console.print(f"pinned [bold]{pin.key}[/] ({pin.source}) sha256 {pin.sha256} in {pins_path()}", highlight=False)
