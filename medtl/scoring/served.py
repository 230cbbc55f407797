"""`medtl service which SCORES_DIR`: which artifact produced each batch of scores, and whether it was the one in
service (the verified service registry) when it scored.

Why ask: a scheduled job scores with whatever artifact path it was given; the registry says which artifact a
reviewer had put in service at that moment. A batch scored by any other artifact is named, so an auditor sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtl.artifacts.service import ServiceRegistry, parse_time
from medtl.contracts import read_table
from medtl.contracts.evaluation import ScoreRow
from medtl.errors import ConfigError
from medtl.scoring.score import _outputs


@dataclass(frozen=True)
class ServedBatch:
    artifact_hash: str
    model_id: str
    model_version: str
    rows: int
    first_scored_at: str
    last_scored_at: str
    in_service: bool  # the registry had this artifact in service at every one of these rows' scored_at
    in_service_then: str | None  # model id + version in service at the first row's scored_at (None: nothing)

    def describe(self) -> str:
        state = "in service" if self.in_service else f"NOT in service (then: {self.in_service_then or 'none'})"
        return (
            f"{self.rows} row(s) {self.first_scored_at} .. {self.last_scored_at}: {self.model_id} {self.model_version} "
            f"(artifact {self.artifact_hash[:16]}…) {state}"
        )


def served_batches(scores: Path, registry: ServiceRegistry) -> list[ServedBatch]:
    """One entry per artifact and per stretch in or out of service, oldest first."""
    files = _outputs(Path(scores))
    if not files:
        raise ConfigError(
            "no scores.parquet (or unmerged parts) in this folder", where=Path(scores).name,
            fix="pass the --out folder of `medtl score`",
        )  # fmt: skip
    frame = pd.concat([read_table(ScoreRow, path) for path in files], ignore_index=True)
    times = frame["scored_at"].map(parse_time)
    serving = times.map(registry.in_service_at)
    frame = frame.assign(
        _time=times,
        _in_service=[
            s is not None and s.artifact_manifest_hash == h
            for s, h in zip(serving, frame["artifact_hash"], strict=True)
        ],
        _then=[None if s is None else f"{s.model_id} {s.model_version}" for s in serving],
    ).sort_values("_time", kind="stable")
    batches = []
    for (digest, in_service), group in frame.groupby(["artifact_hash", "_in_service"], sort=False):
        first = group.iloc[0]
        then = first["_then"] if isinstance(first["_then"], str) else None  # pandas turns None into NaN
        batches.append(
            ServedBatch(
                artifact_hash=str(digest), model_id=str(first["model_id"]), model_version=str(first["model_version"]),
                rows=len(group), first_scored_at=str(first["scored_at"]),
                last_scored_at=str(group.iloc[-1]["scored_at"]),
                in_service=bool(in_service), in_service_then=then,
            )
        )  # fmt: skip
    return batches
