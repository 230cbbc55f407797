"""`medtl synth-archive`: a synthetic DICOM archive at scale, to measure ingest without large real data.

Mounted by medtl/cli.py as `app.command("synth-archive")(synth_archive_command)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def synth_archive_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the archive into (new or empty).")],
    series: Annotated[int, typer.Option("--series", "-n", min=1, help="Number of series (~6 per patient).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes byte-identical files.")] = 0,
    slices: Annotated[int, typer.Option(min=1, help="Fewest slices per image series.")] = 8,
    max_slices: Annotated[int, typer.Option(min=1, help="Most slices per image series.")] = 24,
    matrix: Annotated[int, typer.Option(min=32, max=1024, help="Rows and columns of each slice.")] = 64,
    bad_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of series that are one bad file instead.")
    ] = 0.02,
    workers: Annotated[int, typer.Option(min=1, max=256, help="Writer processes (the files do not depend on it).")] = 1,
) -> None:
    """Write CT and MR series in five transfer syntaxes (explicit/implicit little endian, RLE, JPEG-LS, JPEG 2000,
    all lossless) with a few bad files, and expected.csv: the outcome ingest must report for every file."""
    from medtl.datasets.synth.archive import ArchiveOptions, make_archive

    options = ArchiveOptions(
        series=series, seed=seed, slices=(slices, max_slices), matrix=matrix, bad_fraction=bad_fraction
    )
    summary = make_archive(out, options, workers=workers)
    console.print(escape(summary.describe()), highlight=False)
