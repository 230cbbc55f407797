"""`medtl compare CHAMPION CHALLENGER --test DATASET --out DIR`: a command function medtl/cli.py mounts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from medtl.artifacts.cli import AllowUntrusted

console = Console()


def compare_command(
    champion: Annotated[Path, typer.Argument(help="The artifact in service (or the reference model).")],
    challenger: Annotated[Path, typer.Argument(help="The new artifact, e.g. this week's retrained model.")],
    test: Annotated[Path, typer.Option(help="Locked test dataset (ingested) that neither artifact trained on.")],
    out: Annotated[Path, typer.Option(help="New folder: comparison.json and comparison.html.")],
    margin: Annotated[
        float, typer.Option(help="Non-inferiority margin on the AUROC, declared before the run (recorded).")
    ] = 0.02,
    decision_margin: Annotated[
        float | None,
        typer.Option(help="Margin on sensitivity/specificity (or accuracy); default: reported, not judged."),
    ] = None,
    n_boot: Annotated[int, typer.Option(min=100, max=100_000, help="Patient bootstrap resamples.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    allow_untrusted: AllowUntrusted = False,
) -> None:
    """Paired comparison on the same locked test patients: AUROC difference with its CI, decisions at each model's
    operating point, and a non-inferiority verdict. Exit code 0 whatever the verdict; read `proposed`."""
    from medtl.artifacts import resolve_trust
    from medtl.evaluation.compare import compare

    result = compare(
        champion, challenger, test=test, out=out, margin=margin, decision_margin=decision_margin, n_boot=n_boot,
        seed=seed, trust=resolve_trust(allow_untrusted=allow_untrusted),
    )  # fmt: skip
    console.print(escape(result.describe()), highlight=False)
