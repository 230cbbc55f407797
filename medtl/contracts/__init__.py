"""Data contracts: the files that cross stage boundaries, as pydantic models (the single source of truth)."""

from medtl.contracts.artifact import ArtifactManifest, ArtifactMetadata, AuditEvent, SignedDecision
from medtl.contracts.base import (
    ContractModel,
    read_json,
    read_rows,
    read_table,
    validate_document,
    validate_rows,
    write_json,
    write_rows,
    write_table,
)
from medtl.contracts.comparison import Comparison
from medtl.contracts.evaluation import Metrics, ScoreRow, ScoreRowV1
from medtl.contracts.handoff import (
    EvaluatedPayload,
    LabelEfficiencyRow,
    OodReferenceSummary,
    OofRow,
    ScoredPayload,
    TransferRecord,
)
from medtl.contracts.ingest import Fingerprint, IngestReport, ManifestRow
from medtl.contracts.ingest_state import IngestState
from medtl.contracts.labels import LabelRow
from medtl.contracts.lineage import Lineage
from medtl.contracts.model_card import ModelCard
from medtl.contracts.monitoring import MonitorStatus, ScanInputRow
from medtl.contracts.planning import PlanRecord
from medtl.contracts.preprocessing import PreprocessingSpec
from medtl.contracts.pretraining import PretrainingRecord
from medtl.contracts.pull import PullRecord, PullReport
from medtl.contracts.service import ServiceChange, ServiceRegistryRecord
from medtl.contracts.task import TaskDeclaration
from medtl.contracts.training import Splits

# Every contract, in data-flow order; data_contracts/ holds one JSON Schema file per entry.
ALL_CONTRACTS: tuple[type[ContractModel], ...] = (
    LabelRow,
    ManifestRow,
    Fingerprint,
    IngestReport,
    IngestState,
    PullReport,
    PreprocessingSpec,
    TaskDeclaration,
    PlanRecord,
    Splits,
    PretrainingRecord,
    Lineage,
    OofRow,
    LabelEfficiencyRow,
    TransferRecord,
    OodReferenceSummary,
    ArtifactMetadata,
    ArtifactManifest,
    AuditEvent,
    EvaluatedPayload,
    ScoredPayload,
    SignedDecision,
    Metrics,
    ModelCard,
    ScoreRow,
    ScoreRowV1,
    PullRecord,
    Comparison,
    ServiceRegistryRecord,
    ServiceChange,
    ScanInputRow,
    MonitorStatus,
)

__all__ = [
    "ALL_CONTRACTS",
    "ArtifactManifest",
    "ArtifactMetadata",
    "AuditEvent",
    "Comparison",
    "ContractModel",
    "Fingerprint",
    "IngestReport",
    "IngestState",
    "LabelRow",
    "Lineage",
    "ManifestRow",
    "Metrics",
    "ModelCard",
    "MonitorStatus",
    "PlanRecord",
    "PreprocessingSpec",
    "PullRecord",
    "PullReport",
    "ScanInputRow",
    "ScoreRow",
    "ScoreRowV1",
    "ServiceChange",
    "ServiceRegistryRecord",
    "SignedDecision",
    "Splits",
    "TaskDeclaration",
    "read_json",
    "read_rows",
    "read_table",
    "validate_document",
    "validate_rows",
    "write_json",
    "write_rows",
    "write_table",
]
