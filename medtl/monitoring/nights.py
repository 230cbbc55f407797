"""What scoring wrote, grouped into nights: score rows of one artifact with the input statistics of their scans.

Why nights by time and not by run: scores.parquet has no run id, and a folder scored night after night into the
same output holds every night's rows. A scheduled run falls inside one night when nights run from noon to noon UTC
(the default `night_starts_hour`), even when it crosses midnight; each night is labelled with the date it starts
on. Rows of other artifacts (an earlier model version scored into the same folder) are counted and left out: a
night is compared with the reference of the model that scored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtl.contracts import read_table
from medtl.contracts.evaluation import ScoreRow
from medtl.contracts.monitoring import ScanInputRow
from medtl.errors import ConfigError
from medtl.scoring.inputs import read_inputs
from medtl.scoring.score import SCORES


@dataclass
class Night:
    """One night's rows: `scores` (ScoreRow columns) and `inputs` (ScanInputRow columns of those scans)."""

    label: str
    scores: pd.DataFrame
    inputs: pd.DataFrame

    @property
    def first(self) -> str:
        return str(self.scores["scored_at"].min())

    @property
    def last(self) -> str:
        return str(self.scores["scored_at"].max())


@dataclass
class ScoredHistory:
    nights: list[Night]
    other_artifacts: int


def read_history(folders: Sequence[Path], artifact_hash: str, *, night_starts_hour: int = 12) -> ScoredHistory:
    """Every SCORES folder's scores.parquet (and scan_inputs.parquet, when scoring recorded one), as nights."""
    scores, inputs = [], []
    for folder in folders:
        path = Path(folder) / SCORES
        if not path.exists():
            raise ConfigError(
                f"no {SCORES} in a scores folder",
                where=Path(folder).name,
                fix="name the --out folders of `medtl score` (each holds scores.parquet)",
            )
        scores.append(read_table(ScoreRow, path))
        inputs.append(read_inputs(folder))
    return group_nights(pd.concat(scores, ignore_index=True), pd.concat(inputs, ignore_index=True), artifact_hash,
                        night_starts_hour=night_starts_hour)  # fmt: skip


def group_nights(
    scores: pd.DataFrame, inputs: pd.DataFrame, artifact_hash: str, *, night_starts_hour: int = 12
) -> ScoredHistory:
    """Rows of this artifact by night, oldest first; each scan once (a folder named twice adds nothing)."""
    mine = scores["artifact_hash"] == artifact_hash
    other = int((~mine).sum())
    rows = scores[mine].drop_duplicates(["input_hash", "artifact_hash"]).copy()
    inputs = inputs.drop_duplicates("input_hash").set_index("input_hash", drop=False)
    stamps = pd.to_datetime(rows["scored_at"], utc=True, format="ISO8601")
    rows["night"] = (stamps - pd.Timedelta(hours=night_starts_hour)).dt.strftime("%Y-%m-%d")
    nights = []
    for label, frame in sorted(rows.groupby("night"), key=lambda item: item[0]):
        frame = frame.drop(columns="night").reset_index(drop=True)
        known = [h for h in frame["input_hash"] if h in inputs.index]
        night_inputs = inputs.loc[known].reset_index(drop=True) if known else inputs.iloc[0:0]
        nights.append(Night(str(label), frame, night_inputs[list(ScanInputRow.model_fields)]))
    return ScoredHistory(nights, other)
