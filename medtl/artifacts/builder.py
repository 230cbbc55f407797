"""Assemble an artifact folder and seal it: PHI gate, manifest, signature, first audit event.

Why a builder: train writes a dozen files of different kinds; going through one object keeps every name portable
(relative POSIX), every format safe to load later (safetensors, JSON, YAML, Parquet, no pickles) and every write
atomic. Sealing is the one-way step after which only the audit log may change.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel

import medtl
from medtl.artifacts.audit import build_event, default_actor, now_iso, write_first_event
from medtl.artifacts.card import INTEGRITY_PLACEHOLDER, integrity_text, render_model_card
from medtl.artifacts.keys import SigningKeySource, key_fingerprint, public_key_hex, resolve_signing_key, sign
from medtl.artifacts.layout import (
    ENVIRONMENT,
    METADATA,
    MODEL_CARD,
    RECOMMENDED,
    RECOMMENDED_PRETRAINED,
    WEIGHTS_DIR,
    check_relative_name,
    walk_files,
    weights_path,
)
from medtl.artifacts.phi import PhiTerms, raise_on_findings, scan_for_phi
from medtl.artifacts.provenance import environment_text
from medtl.artifacts.trust import TrustSettings
from medtl.artifacts.verify import render_manifest, verify_resolved
from medtl.contracts.artifact import UNLISTED_FILES, ArtifactManifest, ArtifactMetadata, FileEntry
from medtl.contracts.base import ContractModel, atomic_write_bytes, read_json, write_table
from medtl.errors import ConfigError
from medtl.hashing import sha256_bytes, sha256_file

_log = logging.getLogger(__name__)


def _json_bytes(data: Any) -> bytes:
    if isinstance(data, ContractModel):
        payload: Any = {"contract": data.contract_name, "contract_version": data.contract_version}
        payload.update(data.model_dump(mode="json"))
    elif isinstance(data, BaseModel):
        payload = data.model_dump(mode="json")
    else:
        payload = data
    try:
        return (json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"cannot store as JSON: {error}", fix="use plain values; write missing numbers as null"
        ) from None


class ArtifactBuilder:
    """Writes the files of one artifact folder; `seal()` finishes it."""

    def __init__(self, folder: str | Path, *, exist_ok: bool = False) -> None:
        self.folder = Path(folder)
        if (self.folder / "manifest.json").exists():
            raise ConfigError(
                f"{self.folder.name} is already sealed",
                where=self.folder.name,
                fix="write a new artifact folder; a sealed artifact never changes",
            )
        if self.folder.exists() and any(self.folder.iterdir()) and not exist_ok:
            raise ConfigError(
                f"{self.folder.name} is not empty",
                where=self.folder.name,
                fix="give an empty or new folder (or exist_ok=True to add to a folder you prepared)",
            )
        self.folder.mkdir(parents=True, exist_ok=True)

    def add_bytes(self, name: str, data: bytes) -> str:
        atomic_write_bytes(self.folder / check_relative_name(name), data)
        return name

    def add_weights(self, name: str, tensors: Mapping[str, Any], *, metadata: Mapping[str, str] | None = None) -> str:
        """`final` / `fold0` → weights/<name>.safetensors (tensors are copied to CPU, contiguous, unshared)."""
        from safetensors.torch import save

        relative = weights_path(name)
        if not tensors:
            raise ConfigError(f"no tensors given for weights {name!r}")
        plain = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
        header = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
        return self.add_bytes(relative, save(plain, metadata=header))

    def add_json(self, name: str, data: Any) -> str:
        return self.add_bytes(name, _json_bytes(data))

    def add_yaml(self, name: str, data: Any) -> str:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return self.add_bytes(name, text.encode("utf-8"))

    def add_text(self, name: str, text: str) -> str:
        return self.add_bytes(name, text.encode("utf-8"))

    def add_table(self, name: str, frame: pd.DataFrame, *, contract: type[ContractModel] | None = None) -> str:
        """Parquet; with `contract`, every row is validated and the contract is recorded in the file."""
        target = self.folder / check_relative_name(name)
        if not name.endswith(".parquet"):
            raise ConfigError(f"{name}: tables are stored as .parquet", where=name)
        if contract is not None:
            write_table(contract, frame, target)
            return name
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
        return self.add_bytes(name, sink.getvalue().to_pybytes())

    def add_file(self, name: str, source: str | Path) -> str:
        """Copy an existing file (a figure, a spec) under `name`; the format rules apply to `name`."""
        target = self.folder / check_relative_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return name

    def add_metadata(self, metadata: ArtifactMetadata | Mapping[str, Any]) -> str:
        model = metadata if isinstance(metadata, ArtifactMetadata) else ArtifactMetadata.model_validate(metadata)
        return self.add_json(METADATA, model)

    def add_environment(self, text: str | None = None) -> str:
        """environment.txt: the full name==version lock (the text collect_provenance hashed)."""
        return self.add_text(ENVIRONMENT, text if text is not None else environment_text())

    def add_model_card(
        self,
        text: str | None = None,
        *,
        metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        fold_metrics: Sequence[Mapping[str, Any]] | None = None,
        data_summary: Mapping[str, Any] | None = None,
        limitations: Sequence[str] | None = None,
    ) -> str:
        """model_card.md rendered from metadata.json (write that first), unless `text` is given."""
        if text is None:
            if not (self.folder / METADATA).is_file():
                raise ConfigError("add_metadata() must come before add_model_card()")
            metadata = read_json(ArtifactMetadata, self.folder / METADATA)
            text = render_model_card(
                metadata, metrics=metrics, fold_metrics=fold_metrics, data_summary=data_summary, limitations=limitations
            )
        return self.add_text(MODEL_CARD, text)

    def seal(
        self,
        *,
        signing_key: SigningKeySource | None,
        phi_terms: PhiTerms | str | Path,
        allow_unsigned: bool = False,
        actor: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> str:
        return seal(
            self.folder,
            signing_key=signing_key,
            allow_unsigned=allow_unsigned,
            phi_terms=phi_terms,
            actor=actor,
            payload=payload,
        )


def _check_contents(folder: Path, files: list[str]) -> ArtifactMetadata:
    for name in files:
        check_relative_name(name)
    if METADATA not in files:
        raise ConfigError(f"{folder.name} has no {METADATA}", where=folder.name, fix="call add_metadata() first")
    if not any(name.startswith(f"{WEIGHTS_DIR}/") and name.endswith(".safetensors") for name in files):
        raise ConfigError(f"{folder.name} has no weights", where=folder.name, fix="call add_weights() first")
    metadata = read_json(ArtifactMetadata, folder / METADATA)
    recorded = metadata.provenance.environment_sha256
    if recorded is not None and (ENVIRONMENT not in files or sha256_file(folder / ENVIRONMENT) != recorded):
        raise ConfigError(
            f"{ENVIRONMENT} is missing or differs from the environment hash in {METADATA}",
            where=ENVIRONMENT,
            fix="write environment.txt with the same text that collect_provenance() hashed (add_environment)",
        )
    recommended = RECOMMENDED if metadata.kind == "model" else RECOMMENDED_PRETRAINED
    missing = [name for name in recommended if name not in files]
    if missing:
        _log.info("artifact %s has no %s", folder.name, ", ".join(missing))
    return metadata


def seal(
    folder: str | Path,
    *,
    signing_key: SigningKeySource | None,
    phi_terms: PhiTerms | str | Path,
    allow_unsigned: bool = False,
    actor: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> str:
    """Run the PHI gate, write manifest.json, signature.bin and the `created` event; return the manifest sha256.

    `signing_key`: key object, PEM path or PEM text; None falls back to $MEDTL_SIGNING_KEY. Without any key the
    artifact is refused unless `allow_unsigned=True`, and is then marked UNSIGNED in the manifest, the model card,
    the `created` event and every verification report.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("the artifact folder does not exist", where=folder.name)
    present = [name for name in UNLISTED_FILES if (folder / name).exists()]
    if present:
        raise ConfigError(
            f"{folder.name} is already sealed ({', '.join(present)} exist)",
            where=folder.name,
            fix="build a new artifact; after sealing only the audit log grows (append_event)",
        )
    key = resolve_signing_key(signing_key)
    if key is None and not allow_unsigned:
        raise ConfigError(
            "no signing key: artifacts are signed unless unsigned ones are explicitly allowed",
            where=folder.name,
            fix="pass signing_key (a PEM file from generate_signing_key) or set MEDTL_SIGNING_KEY; "
            "for development only, allow_unsigned=True (the artifact then says UNSIGNED everywhere)",
        )
    terms = phi_terms if isinstance(phi_terms, PhiTerms) else PhiTerms.load(phi_terms)
    files = walk_files(folder)
    metadata = _check_contents(folder, files)
    findings = scan_for_phi(folder, terms)
    raise_on_findings(findings, where=folder.name)

    public = public_key_hex(key) if key is not None else None
    fingerprint = key_fingerprint(public) if public else None
    card = folder / MODEL_CARD
    card_text = card.read_bytes() if card.is_file() else None
    try:
        if card_text is not None:  # the card states the signing status; a hand-written card gets a section
            statement = integrity_text(signed=key is not None, fingerprint=fingerprint).encode()
            if INTEGRITY_PLACEHOLDER.encode() in card_text:
                filled = card_text.replace(INTEGRITY_PLACEHOLDER.encode(), statement)
            else:
                filled = card_text.rstrip(b"\n") + b"\n\n## Integrity\n\n" + statement + b"\n"
            atomic_write_bytes(card, filled)
        entries = [
            FileEntry(path=name, sha256=sha256_file(folder / name), size_bytes=(folder / name).stat().st_size)
            for name in files
        ]
        manifest = ArtifactManifest(
            files=entries,
            signed=key is not None,
            public_key=public,
            key_fingerprint=fingerprint,
            sealed_at=now_iso(),
            medtl_version=medtl.__version__,
        )
        data = render_manifest(manifest)
        digest = sha256_bytes(data)
        created = {
            "manifest_sha256": digest,
            "model_id": metadata.model_id,
            "model_version": metadata.model_version,
            "files": len(entries),
            "bytes": sum(entry.size_bytes for entry in entries),
            "signed": key is not None,
            "key_fingerprint": fingerprint,
            "phi_gate": {"passed": True, "files_scanned": len(files), "terms": terms.counts()},
            **dict(payload or {}),
        }
        atomic_write_bytes(folder / "manifest.json", data)
        if key is not None:
            atomic_write_bytes(folder / "signature.bin", sign(key, data))
        event = build_event(
            index=0,
            kind="created",
            actor=actor or default_actor(),
            payload=created,
            manifest_sha256=digest,
            prev_hash=None,
            key=key,
        )
        write_first_event(folder, event)
        verify_resolved(
            folder,
            TrustSettings(frozenset({public}) if public else None, frozenset(), allow_unsigned=key is None),
        )
    except BaseException:
        for name in UNLISTED_FILES:  # never leave a half-sealed folder that looks sealed
            (folder / name).unlink(missing_ok=True)
        if card_text is not None:
            atomic_write_bytes(card, card_text)
        raise
    if key is None:
        _log.warning("artifact %s was sealed UNSIGNED (explicitly allowed)", folder.name)
    return digest
