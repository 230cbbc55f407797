"""Reading the card's inputs (a metrics.json, a replacement record) and writing model_card.json and
configs/metadata.json.

Why the checks: a metrics.json is a file from outside until the artifact's audit log names it; the card repeats its
numbers to governance tools, so only a metrics.json that an `evaluated` event of this very artifact lists (by SHA-256)
is used, and the card says whether that event counts under the trust settings. Files are size-checked before they
are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.reader import VerifiedArtifact
from medtl.artifacts.service import ServiceRegistry
from medtl.cards.card import build_model_card
from medtl.cards.monai import monai_metadata
from medtl.contracts import read_json, validate_document
from medtl.contracts.base import atomic_write_bytes, contract_document
from medtl.contracts.evaluation import Metrics
from medtl.contracts.handoff import evaluated_payload
from medtl.contracts.model_card import EvaluationSource, ModelCard, Replacement
from medtl.errors import ConfigError
from medtl.hashing import sha256_bytes, sha256_file

CARD_NAME = "model_card.json"
MONAI_NAME = "configs/metadata.json"  # where a MONAI bundle keeps it
MAX_INPUT_BYTES = 64 * 1024**2


def _check_size(path: Path, what: str) -> None:
    if not path.is_file():
        raise ConfigError(f"{what} does not exist", where=path.name, fix=f"pass the path of {what}")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise ConfigError(
            f"{what} is larger than {MAX_INPUT_BYTES // 1024**2} MiB",
            where=path.name,
            fix=f"pass the {what} medtl wrote",
        )


def evaluation_metrics(contents: ArtifactContents, path: Path) -> tuple[Metrics, EvaluationSource]:
    """The metrics.json of one of this artifact's evaluations, and whether that evaluation counts."""
    path = Path(path)
    _check_size(path, "the metrics.json")
    digest = sha256_file(path)
    verified = contents.verified
    ignored = {event.index for event in verified.status.ignored}
    listed = [e for e in verified.events if e.kind == "evaluated" and digest in evaluated_payload(e).files.values()]
    if not listed:
        raise ConfigError(
            "this metrics.json was not written by an evaluation of this artifact (or it was edited afterwards)",
            where=path.name,
            fix="pass the metrics.json from a report folder of `medtl evaluate` on this artifact",
        )
    metrics = read_json(Metrics, path)
    recorded = any(event.index not in ignored for event in listed)
    return metrics, EvaluationSource(metrics_sha256=digest, recorded=recorded)


def read_replacement(path: Path) -> Replacement:
    """A JSON object {artifact_hash, model_version, reason, comparison_verdict} (as a service registry records it)."""
    path = Path(path)
    _check_size(path, "the replacement record")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(
            "the replacement record is not a JSON object",
            where=path.name,
            fix="write {artifact_hash, model_version, reason, comparison_verdict} as JSON",
        ) from None
    return validate_document(Replacement, data, where=path.name)


def replacement_from_registry(verified: VerifiedArtifact, registry: ServiceRegistry) -> Replacement | None:
    """What this artifact replaced, read from a verified service registry's latest promotion of it (None when it
    replaced nothing there). Preferred to a hand-written record: the registry's events are reviewer-signed."""
    promotions = [
        entry.change
        for entry in registry.entries
        if entry.event.kind == "promoted" and entry.change.artifact_manifest_hash == verified.manifest_hash
    ]
    if not promotions:
        raise ConfigError(
            "this artifact was never promoted in the given service registry",
            where=registry.folder.name,
            fix="pass the registry it was promoted in, or leave out --registry",
        )
    change = promotions[-1]
    if change.replaces is None:
        return None
    versions = {e.change.artifact_manifest_hash: e.change.model_version for e in registry.entries}
    verdict = change.comparison.verdict.replace("_", "-") if change.comparison is not None else None
    return Replacement(
        artifact_hash=change.replaces,
        model_version=versions.get(change.replaces, "unknown"),
        reason=change.reason,
        comparison_verdict=verdict,
    )


def card_files(card: ModelCard, monai: dict[str, Any]) -> dict[str, bytes]:
    """{relative name: bytes} of the two files, written the same way by `medtl card` and `medtl evaluate`."""

    def encode(document: dict[str, Any]) -> bytes:
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    return {CARD_NAME: encode(contract_document(card)), MONAI_NAME: encode(monai)}


def report_card_files(
    contents: ArtifactContents, metrics: Metrics, metrics_sha256: str, *, recorded: bool
) -> dict[str, bytes]:
    """The card files `medtl evaluate` writes beside its report, from the metrics.json it just wrote (that
    evaluation counts once its signed `evaluated` event is appended: `recorded`)."""
    source = EvaluationSource(metrics_sha256=metrics_sha256, recorded=recorded)
    return card_files(build_model_card(contents, metrics=metrics, evaluation=source), monai_metadata(contents))


def write_card_files(files: dict[str, bytes], folder: Path) -> dict[str, str]:
    """Write the files under FOLDER; returns {relative name: sha256}."""
    digests = {}
    for name, data in files.items():
        atomic_write_bytes(Path(folder) / name, data)
        digests[name] = sha256_bytes(data)
    return digests
