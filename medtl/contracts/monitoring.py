"""Contracts of monitoring: the input statistics each scoring run leaves behind, and the monitor's status file.

Why scoring records input statistics of its own: its staging folder (with the ingest manifest) is removed after a
PACS batch, and a folder re-scored into the same output is re-ingested, so the manifest only ever describes the
latest run. `scan_inputs.parquet` keeps, per scored input, the few aggregate-safe numbers monitoring compares over
months: modality, a coarse manufacturer category, spacing, shape and intensity summaries. No identifiers besides
the content hash that joins it to scores.parquet.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import SHA256, ImageKind


class ScanInputRow(ContractModel):
    """One scored input's statistics, as ingest measured them with the artifact's spec (keyed by content hash)."""

    contract_name: ClassVar[str] = "scan_inputs"
    contract_unit: ClassVar[str] = "rows"
    contract_title: ClassVar[str] = "scan_inputs.parquet: input statistics of every scored scan, for monitoring"

    input_hash: str = Field(pattern=SHA256, description="the scan's source hash, as scores.parquet's input_hash")
    image_kind: ImageKind
    modality: str = Field(max_length=16)
    manufacturer: str = Field(
        pattern=r"^[a-z0-9]{1,24}$",
        description="a coarse category: the first word of the Manufacturer attribute, lower case ('unknown' when "
        "absent); never a model name, serial number or station name",
    )
    spacing: list[float] = Field(min_length=2, max_length=3, description="mm per array axis")
    shape: list[int] = Field(min_length=2, max_length=3)
    intensity_mean: float
    intensity_p01: float
    intensity_p99: float
    recorded_at: str = Field(description="when scoring staged the scan (UTC, ISO 8601)")


CheckTest = Literal["category_shares", "ks", "quantile_band", "rate_above", "two_rates"]
CheckReference = Literal["training", "window"]


class Check(Strict):
    """One comparison of one night's quantity with a reference: the training data or the trailing window."""

    quantity: str = Field(description="e.g. manufacturer, spacing[2], intensity_mean, score:1, positive_rate:1")
    reference: CheckReference
    test: CheckTest = Field(
        description="category_shares: Fisher's exact test per category, Bonferroni over categories; ks: two-sample "
        "Kolmogorov-Smirnov; quantile_band: one-sided binomial tests of the shares beyond the reference's p05, "
        "median and p95 (Bonferroni over the four); rate_above: one-sided binomial test of a rate against a tolerated "
        "rate; two_rates: Fisher's exact test of two rates"
    )
    statistic: float
    p_value: float = Field(ge=0, le=1)
    p_adjusted: float = Field(ge=0, le=1, description="Holm-adjusted over every check of the night")
    effect: float = Field(
        description="category_shares: total variation distance; ks: D; quantile_band: the largest excess share; "
        "rate_above: rate minus the tolerated rate; two_rates: the absolute difference"
    )
    min_effect: float = Field(ge=0, description="the effect an alert needs, whatever the p-value")
    n: int = Field(ge=0, description="scans of the night the check rests on")
    n_reference: int = Field(ge=0, description="scans (or the nominal size) of the reference")
    value: str = Field(description="what the night shows, in words (shares, medians, rates)")
    expected: str = Field(description="what the reference shows")
    alert: bool = Field(description="p_adjusted < alpha and effect >= min_effect")


class EndpointSummary(Strict):
    endpoint: str
    n_scored: int = Field(ge=0)
    score_p10: float | None
    score_median: float | None
    score_p90: float | None
    positive_rate: float | None = Field(None, description="share decided positive among scans with a decision")
    n_decided: int = Field(0, ge=0)


class NightSummary(Strict):
    """Aggregates of one night: counts, shares, medians and rates only."""

    n_scans: int = Field(ge=0)
    n_with_inputs: int = Field(ge=0, description="scans whose input statistics scoring recorded")
    modalities: dict[str, int]
    manufacturers: dict[str, int]
    spacing_median: list[float]
    shape_median: list[float]
    intensity_mean_median: float | None
    flag_rates: dict[str, float] = Field(description="share of the night's scans carrying each flag")
    abstention_rate: float
    endpoints: list[EndpointSummary]


class NightStatus(Strict):
    night: str = Field(description="the night's label: the UTC date its window starts on (YYYY-MM-DD)")
    first_scored_at: str
    last_scored_at: str
    status: Literal["ok", "alert"]
    summary: NightSummary
    checks: list[Check]
    skipped: list[str] = Field(default_factory=list, description="comparisons left out, with the reason")


class MonitorSettingsRecord(Strict):
    alpha: float = Field(gt=0, lt=1, description="family-wise false-alarm rate per night (Holm over its checks)")
    window: int = Field(ge=1, description="earlier nights pooled into the trailing-window reference")
    min_window_scans: int = Field(ge=1)
    night_starts_hour: int = Field(ge=0, le=23, description="a night runs from this UTC hour to the same hour next day")
    min_share_change: float
    min_ks: float
    min_band_excess: float
    flag_tolerance: float


class MonitorStatus(ContractModel):
    """monitor_status.json: drift of scheduled scoring's inputs and outputs, night by night, for one artifact."""

    contract_name: ClassVar[str] = "monitor_status"
    contract_title: ClassVar[str] = "monitor_status.json: drift checks of scheduled scoring, per night"

    status: Literal["ok", "alert", "no_data"] = Field(description="the latest night's status")
    latest_night: str | None
    model_id: str
    model_version: str
    artifact_hash: str = Field(pattern=SHA256)
    approved: bool
    trusted: bool
    generated_at: str
    settings: MonitorSettingsRecord
    reference_scans: int = Field(ge=0, description="out-of-fold scans of the training reference")
    rows_of_other_artifacts: int = Field(0, ge=0, description="score rows of other models, not monitored here")
    nights: list[NightStatus]
