"""Contracts of the service registry: which artifact is in service at a site, as a signed, hash-chained log.

The registry folder holds registry.json (what the registry is; every event is bound to its SHA-256) and audit.jsonl
(the same hash-chained event format as an artifact's audit log: contracts/artifact.py AuditEvent). The payload of a
`promoted` or `rolled_back` event is a ServiceChange.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medtl.contracts.artifact import ISO_TIME
from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.comparison import Verdict
from medtl.contracts.ingest import SHA256


class ServiceRegistryRecord(ContractModel):
    contract_name: ClassVar[str] = "service_registry"
    contract_title: ClassVar[str] = "registry.json: a site's record of which model artifact is in service"

    name: str = Field(min_length=1, max_length=200, description="what the registry serves, e.g. the deployment")
    created_at: str = Field(pattern=ISO_TIME)
    medtl_version: str


class ComparisonReference(Strict):
    comparison_sha256: str = Field(pattern=SHA256, description="SHA-256 of the comparison.json that was shown")
    champion_manifest_hash: str = Field(pattern=SHA256)
    challenger_manifest_hash: str = Field(pattern=SHA256)
    verdict: Verdict
    margin: float


class ServiceChange(ContractModel):
    """Payload of a `promoted` / `rolled_back` event: the artifact now in service and why."""

    contract_name: ClassVar[str] = "service_change"
    contract_title: ClassVar[str] = "payload of a promoted/rolled_back registry event"

    artifact_manifest_hash: str = Field(pattern=SHA256, description="the artifact in service from this event on")
    model_id: str
    model_version: str
    artifact_name: str = Field(description="the artifact folder's name (never a full path)")
    replaces: str | None = Field(None, pattern=SHA256, description="the artifact in service before")
    approval_event_hash: str | None = Field(
        None, pattern=SHA256, description="promotion: the counted approval in the artifact's audit log"
    )
    comparison: ComparisonReference | None = Field(
        None, description="promotion over a champion: the non-inferior comparison of exactly these two artifacts"
    )
    reason: str = Field(min_length=1, max_length=4000)
