"""Contracts of PACS pulls: what an ingest pulled (beside its ingest report) and the watermark of scheduled runs.

Both name series and studies by one-way keys (medtl.sources.query.series_key / study_key), never by UID, and the
source by its credential-free URI, so they may sit beside the PHI-free outputs.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict


class PulledFailure(Strict):
    series_key: str
    reason: str


class PullReport(ContractModel):
    """pull_report.json in a dataset ingested from a PACS: which series the query found and which could not come."""

    contract_name: ClassVar[str] = "pull_report"
    contract_title: ClassVar[str] = "pull_report.json: the series a PACS ingest asked for, pulled and missed"

    source: str
    query: str
    series_found: int = Field(ge=0)
    series_pulled: int = Field(ge=0)
    failed: list[PulledFailure]


class Failure(Strict):
    attempts: int = Field(ge=1)
    last_error: str
    last_at: str


class Quarantined(Strict):
    reason: str
    attempts: int = Field(ge=1)
    at: str


class PullRecord(ContractModel):
    """OUT/pull-state/pull-<source>-<artifact>.json: what a consumer finished, what fails, what was given up on."""

    contract_name: ClassVar[str] = "pull_state"
    contract_title: ClassVar[str] = "pull-state: the watermark of scheduled PACS pulls, per source and artifact"

    source: str
    consumer: str = Field(description="the artifact manifest hash of the scoring runs")
    done: dict[str, str] = Field(default_factory=dict, description="series key -> when it was finished")
    failures: dict[str, Failure] = Field(default_factory=dict, description="series or study key -> failed runs")
    quarantined: dict[str, Quarantined] = Field(default_factory=dict)
    runs: int = Field(0, ge=0)
    last_run_at: str | None = None
