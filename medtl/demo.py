"""`medtl demo`: every stage that is built, run offline on a synthetic cohort, with a summary of where things are.

The demo uses the public development pseudonym key on purpose (the data is synthetic) and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer

# Stages of DESIGN.md's data flow that this version does not run yet; the demo lists them instead of faking them.
NOT_YET_BUILT = ("train", "evaluate", "approve", "score")


def run_demo(out: Path, *, patients: int, seed: int, console: Console | None = None) -> dict[str, Path]:
    from medtl.datasets.synth import make_cohort
    from medtl.ingest.pipeline import ingest_sources

    console = console or Console()
    out = Path(out)
    cohort_dir, dataset_dir = out / "cohort", out / "dataset"
    if cohort_dir.exists():
        shutil.rmtree(cohort_dir)  # the demo owns its output folder; a re-run starts from a fresh cohort
    console.rule("1/2 synthesize a cohort")
    cohort = make_cohort(cohort_dir, patients=patients, seed=seed, with_problems=True)
    console.print(cohort.describe())
    console.rule("2/2 ingest")
    console.print("[yellow]pseudonyms use the public development key: synthetic data only[/]")
    result = ingest_sources(
        [cohort_dir / "dicom"],
        out=dataset_dir,
        labels=cohort_dir / "labels.csv",
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        progress=True,
    )
    console.print(result.describe())
    console.rule("done")
    console.print(f"cohort:      {cohort_dir}")
    console.print(f"dataset:     {dataset_dir} (read {dataset_dir / 'qc_summary.md'})")
    console.print(f"not built yet in this version: {', '.join(NOT_YET_BUILT)} (see README, Roadmap)")
    return {"cohort": cohort_dir, "dataset": dataset_dir}
