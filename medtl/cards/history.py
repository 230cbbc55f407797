"""The change history across artifacts: what changed from one model to the next (data, config, code, seed, weights,
out-of-fold AUROC), oldest first.

Why from the artifacts alone: each artifact carries its own provenance, sealed and signed, so the history can be
rebuilt and checked by anyone holding the artifacts; the order is the training end time each one records. A service
registry that knows which artifact replaced which can pass the same entries on; nothing here needs it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.layout import CONFIG, POOLED_METRICS
from medtl.contracts import validate_document
from medtl.contracts.model_card import HistoryEntry
from medtl.errors import ConfigError


class _PooledArm(BaseModel):
    """One arm of metrics/pooled.json as training writes it: {arm: {"oof_auc": value}}."""

    model_config = ConfigDict(extra="allow")
    oof_auc: float | None = None


def training_oof_auroc(contents: ArtifactContents) -> float | None:
    """The main arm's pooled out-of-fold AUROC that training recorded (None when the file or the arm is absent)."""
    verified = contents.verified
    if POOLED_METRICS not in verified.files:
        return None
    data = verified.read_json(POOLED_METRICS)
    main = data.get("main") if isinstance(data, dict) else None
    if main is None:
        return None
    return validate_document(_PooledArm, main, where=POOLED_METRICS).oof_auc


def history_entry(contents: ArtifactContents) -> HistoryEntry:
    meta = contents.metadata
    prov = meta.provenance
    return HistoryEntry(
        artifact_hash=contents.verified.manifest_hash,
        model_id=meta.model_id,
        model_version=meta.model_version,
        trained_at=prov.finished_at,
        data_manifest_hash=prov.manifest_hash,
        config_hash=meta.config_hash,
        code_version=prov.code_version,
        seed=prov.seed,
        oof_auroc=training_oof_auroc(contents),
    )


def _config_keys(contents: ArtifactContents) -> dict[str, Any]:
    config = contents.verified.read_yaml(CONFIG) if CONFIG in contents.verified.files else {}
    return config if isinstance(config, dict) else {}


def _changes(before: ArtifactContents, after: ArtifactContents, old: HistoryEntry, new: HistoryEntry) -> list[str]:
    changes = []
    if old.data_manifest_hash != new.data_manifest_hash:
        changes.append(f"data manifest {old.data_manifest_hash[:12]} -> {new.data_manifest_hash[:12]}")
    if old.config_hash != new.config_hash:
        a, b = _config_keys(before), _config_keys(after)
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        changes.append(f"config {old.config_hash[:12]} -> {new.config_hash[:12]} ({', '.join(keys) or 'layout'})")
    if old.code_version != new.code_version:
        changes.append(f"code {old.code_version} -> {new.code_version}")
    if old.seed != new.seed:
        changes.append(f"seed {old.seed} -> {new.seed}")
    weights_before, weights_after = before.metadata.provenance.pretrained, after.metadata.provenance.pretrained
    if (weights_before.source, weights_before.sha256) != (weights_after.source, weights_after.sha256):
        changes.append(
            f"pretrained weights {weights_before.source}:{weights_before.name} -> "
            f"{weights_after.source}:{weights_after.name}"
        )
    if old.oof_auroc != new.oof_auroc:
        changes.append(f"out-of-fold AUROC {_number(old.oof_auroc)} -> {_number(new.oof_auroc)}")
    return changes


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def change_history(artifacts: list[ArtifactContents]) -> list[HistoryEntry]:
    """Oldest first by training end time; each entry lists what changed since the one before (the first: nothing)."""
    seen: dict[str, str] = {}
    for contents in artifacts:
        digest = contents.verified.manifest_hash
        if digest in seen:
            raise ConfigError(
                "the same artifact is listed twice in the history",
                where=f"{seen[digest]}, {contents.verified.folder.name}",
                fix="name each artifact once",
            )
        seen[digest] = contents.verified.folder.name
    ordered = sorted(
        artifacts, key=lambda c: (datetime.fromisoformat(c.metadata.provenance.finished_at), c.verified.manifest_hash)
    )
    entries = [history_entry(contents) for contents in ordered]
    for index in range(1, len(entries)):
        changes = _changes(ordered[index - 1], ordered[index], entries[index - 1], entries[index])
        entries[index] = entries[index].model_copy(update={"changes": changes or ["nothing recorded changed"]})
    return entries
