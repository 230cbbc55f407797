"""The site's pretrained artifacts (`$MEDTL_HOME/pretrained.json`): where each is, and the manifest it was sealed with.

Why an index: a `pretrained` artifact is a weight source like an ImageNet file, so `medtl weights list` shows it
and `medtl plan` can choose it without the user remembering a folder. The index only says where to look: every use
opens the artifact through its own verification (manifest hashes, signature, audit chain), and an entry whose
folder now holds a different manifest is reported, never used.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medtl.errors import ConfigError, MedTLError, WeightsError
from medtl.models.pins import medtl_home

INDEX_VERSION = 1


@dataclass(frozen=True)
class IndexedArtifact:
    path: str  # absolute folder path on this machine (site-local state, never copied into an artifact)
    model_id: str
    manifest_sha256: str
    backbone: str
    spatial_dims: int
    method: str
    scans: int
    registered_at: str


@dataclass(frozen=True)
class IndexedStatus:
    entry: IndexedArtifact
    state: str  # verified | missing | changed | invalid
    detail: str
    model: dict[str, Any] | None = None  # the verified artifact's model section (how its network is built)


def index_path() -> Path:
    return medtl_home() / "pretrained.json"


def read_index() -> list[IndexedArtifact]:
    path = index_path()
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return [IndexedArtifact(**entry) for entry in document["artifacts"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(
            f"the pretrained-artifact index is unreadable ({type(error).__name__})",
            where=str(path),
            fix="repair the JSON by hand, or move the file away and register the artifacts again "
            "(`medtl weights register ARTIFACT_FOLDER`)",
        ) from None


def remember(folder: Path, manifest_sha256: str, details: dict[str, Any]) -> IndexedArtifact:
    """Add (or refresh) one artifact; the folder is the key."""
    entry = IndexedArtifact(
        path=str(Path(folder).resolve()),
        manifest_sha256=manifest_sha256,
        registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    )
    entries = [e for e in read_index() if e.path != entry.path] + [entry]
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    document = {"version": INDEX_VERSION, "artifacts": [asdict(e) for e in sorted(entries, key=lambda e: e.path)]}
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return entry


def is_artifact_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file() and (Path(path) / "metadata.json").is_file()


def register_artifact(folder: Path) -> IndexedArtifact:
    """Verify a pretrained artifact and add it to the index (`medtl weights register ARTIFACT_FOLDER`)."""
    from medtl.artifacts import open_verified
    from medtl.artifacts.contents import pretraining_record

    verified = open_verified(Path(folder))
    if verified.kind != "pretrained":
        raise ConfigError(
            f"{Path(folder).name} is a {verified.kind} artifact; the index lists pretrained backbones",
            where=Path(folder).name,
            fix="a trained model is used as a weight source by naming it: weights: {source: artifact, path: ...}",
        )
    record = pretraining_record(verified)
    model = verified.metadata["model"]
    return remember(
        Path(folder),
        verified.manifest_hash,
        {
            "model_id": str(verified.metadata["model_id"]),
            "backbone": str(model["backbone"]),
            "spatial_dims": int(model.get("spatial_dims", 2)),
            "method": record.method,
            "scans": record.scans,
        },
    )


def check_entry(entry: IndexedArtifact) -> IndexedStatus:
    """Open the artifact through its full verification; the index's manifest hash must still be the folder's."""
    from medtl.artifacts import open_verified

    if not Path(entry.path).is_dir():
        return IndexedStatus(entry, "missing", "the folder is gone")
    try:
        verified = open_verified(Path(entry.path))
    except MedTLError as error:
        return IndexedStatus(entry, "invalid", f"verification failed: {error.what}")
    if verified.manifest_hash != entry.manifest_sha256:
        return IndexedStatus(entry, "changed", "the folder now holds another artifact; register it again")
    return IndexedStatus(entry, "verified", "manifest hashes, signature and audit chain verified",
                         dict(verified.metadata["model"]))  # fmt: skip


def usable(spatial_dims: int) -> list[IndexedStatus]:
    """Verified pretrained artifacts of this dimensionality, newest first."""
    found = [s for s in map(check_entry, read_index()) if s.state == "verified"]
    mine = (s for s in found if s.entry.spatial_dims == spatial_dims)
    return sorted(mine, key=lambda s: s.entry.registered_at, reverse=True)
