"""model_card.json: the machine-readable model card, in the sections of the CHAI Applied Model Card (v0.2).

Why CHAI's structure: it is a published schema for health AI model cards (https://mc.chai.org/v0.2/schema.xsd) that
procurement and governance tools read; its section and field names are kept (in snake_case: `BasicInfo/ModelName` is
`basic_info.model_name`), metric results carry numbers with their intervals instead of CHAI's free-text JSON, and
medtl adds one section CHAI leaves to the developer: `lineage` (the artifact's own provenance, the artifact it
replaced and why, and the change history across artifacts), so a service registry can fill in `replaced` later.
A field medtl cannot know (funding, contact, stakeholders) is null: "not recorded", never invented.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medtl.contracts.base import ContractModel, Strict
from medtl.contracts.ingest import SHA256

CHAI_SCHEMA = "https://mc.chai.org/v0.2/schema.xsd"


class BasicInfo(Strict):
    model_name: str
    model_developer: str | None = None
    developer_contact: str | None = None


class ReleaseInfo(Strict):
    release_stage: str = Field(description="from the audit log: approved for use, rejected, or not approved")
    release_date: str | None = Field(None, description="when the counted approval was signed (ISO time)")
    release_version: str
    global_availability: str | None = None
    regulatory_approval: str | None = None


class ModelSummary(Strict):
    summary: str
    keywords: list[str] = Field(default_factory=list)


class UsesAndDirections(Strict):
    intended_use_and_workflow: str
    primary_intended_users: str | None = None
    how_to_use: str
    targeted_patient_population: str
    cautioned_out_of_scope_settings: str


class Warnings(Strict):
    known_risks_and_limitations: list[str]
    known_biases_or_ethical_considerations: list[str] = Field(default_factory=list)
    clinical_risk_level: str | None = None


class AISystemFacts(Strict):
    outcomes_and_outputs: str
    model_type: str
    input_data_source: str
    output_and_input_data_types: str
    development_data_characterization: str
    bias_mitigation_approaches: str | None = None
    ongoing_maintenance: str
    security: str
    transparency: str


class TransparencyInformation(Strict):
    funding_source: str | None = None
    stakeholders_consulted: str | None = None


class TrustIngredients(Strict):
    ai_system_facts: AISystemFacts
    transparency_information: TransparencyInformation = Field(default_factory=TransparencyInformation)


class MetricResult(Strict):
    label: str = Field(description="e.g. 'auroc', 'sensitivity', 'auroc, sex=F'")
    evaluated_on: str = Field(description="test (locked test set), oof (cross-validation) or training")
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    n: int | None = None


class MetricSection(Strict):
    metric_goal: str
    results: list[MetricResult] = Field(default_factory=list)
    interpretation: str
    test_type: str
    testing_data_description: str
    validation_process_and_justification: str


class KeyMetrics(Strict):
    usefulness_usability_efficacy: MetricSection
    fairness_equity: MetricSection
    safety_reliability: MetricSection


class Resources(Strict):
    evaluation_references: str | None = None
    peer_reviewed_publications: str | None = None
    patient_consent_or_disclosure: str | None = None


class PretrainedLineage(Strict):
    source: str
    name: str
    sha256: str | None = Field(None, pattern=SHA256)
    license: str | None = None
    medtl_artifact: bool = Field(description="the weights are another medtl artifact, named by its hash")


class LearntFromSummary(Strict):
    """A source the starting weights learnt from (the artifact's lineage.json), by count: the card names no patient."""

    kind: str = Field(description="pretrained (a self-supervised backbone) or model (fine-tuned from earlier)")
    artifact_name: str
    artifact_manifest_hash: str = Field(pattern=SHA256)
    patients: int = Field(ge=0, description="patients that source learnt from; none of them may be a test patient")


class Replacement(Strict):
    """Which artifact this one replaced in service and why (from a service registry; optional)."""

    artifact_hash: str = Field(pattern=SHA256)
    model_version: str
    reason: str
    comparison_verdict: str | None = Field(None, description="e.g. non-inferior on the same locked test set")


class HistoryEntry(Strict):
    """One artifact in the change history, oldest first; `changes` says what differs from the one before."""

    artifact_hash: str = Field(pattern=SHA256)
    model_id: str
    model_version: str
    trained_at: str
    data_manifest_hash: str = Field(pattern=SHA256)
    config_hash: str = Field(pattern=SHA256)
    code_version: str
    seed: int
    oof_auroc: float | None = Field(None, description="the training run's pooled out-of-fold AUROC (main arm)")
    changes: list[str] = Field(default_factory=list)


class EvaluationSource(Strict):
    metrics_sha256: str = Field(pattern=SHA256, description="the metrics.json the performance sections come from")
    recorded: bool = Field(description="that metrics.json is listed in a counted `evaluated` event of the artifact")


class Lineage(Strict):
    artifact_manifest_hash: str = Field(pattern=SHA256)
    signed_by: str | None = Field(None, description="key fingerprint; None: unsigned")
    signer_trusted: bool
    data_manifest_hash: str = Field(pattern=SHA256)
    split_hash: str = Field(pattern=SHA256)
    config_hash: str = Field(pattern=SHA256)
    preprocessing_hash: str = Field(pattern=SHA256)
    code_version: str
    seed: int
    trained_at: str
    pretrained: PretrainedLineage
    learnt_from: list[LearntFromSummary] = Field(
        default_factory=list, description="what the starting weights learnt from, with its own lineage"
    )
    evaluation: EvaluationSource | None = None
    replaced: Replacement | None = None
    history: list[HistoryEntry] = Field(default_factory=list)


class ModelCard(ContractModel):
    contract_name: ClassVar[str] = "model_card"
    contract_title: ClassVar[str] = "model_card.json: machine-readable model card (CHAI Applied Model Card sections)"

    card_format: str = Field(CHAI_SCHEMA, description="the published card schema whose sections this follows")
    model_id: str
    basic_info: BasicInfo
    release_info: ReleaseInfo
    model_summary: ModelSummary
    uses_and_directions: UsesAndDirections
    warnings: Warnings
    trust_ingredients: TrustIngredients
    key_metrics: KeyMetrics
    resources: Resources = Field(default_factory=Resources)
    lineage: Lineage
