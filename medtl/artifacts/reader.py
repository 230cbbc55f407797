"""Loading a verified artifact: every read re-checks the bytes it parses, and nothing is unpickled.

Why re-check at read time: verification happens when the artifact is opened, but a scoring job may read weights
minutes later. Each `read_*` / `load_weights` reads the file once into memory, compares its SHA-256 with the manifest
and parses those same bytes — so what is used is exactly what was verified. `path()` hands out a path for tools that
must read a file themselves; they lose that guarantee.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from medtl.artifacts.audit import append_event
from medtl.artifacts.decisions import ApprovalStatus
from medtl.artifacts.keys import SigningKeySource, TrustedKeySource
from medtl.artifacts.layout import MANIFEST, METADATA, WEIGHTS_DIR, weights_path
from medtl.artifacts.trust import TrustSettings, resolve_trust
from medtl.artifacts.verify import VerificationReport, parse_manifest, verify_resolved
from medtl.contracts.artifact import ArtifactManifest, ArtifactMetadata, AuditEvent, EventKind
from medtl.contracts.base import validate_document
from medtl.errors import ArtifactIntegrityError, ConfigError
from medtl.hashing import sha256_bytes


class VerifiedArtifact:
    """An artifact folder that passed verify(); the only sanctioned way to read one."""

    def __init__(self, folder: Path, report: VerificationReport, *, trust: TrustSettings) -> None:
        self.folder = folder
        self.report = report
        self.trust = trust
        data = (folder / MANIFEST).read_bytes()
        if sha256_bytes(data) != report.manifest_hash:
            raise ArtifactIntegrityError(f"{MANIFEST} changed while the artifact was being opened", where=MANIFEST)
        self.manifest: ArtifactManifest = parse_manifest(data)
        self._entries = {entry.path: entry for entry in self.manifest.files}
        document = self.read_json(METADATA)
        self.metadata: dict[str, Any] = {k: v for k, v in document.items() if k not in ("contract", "contract_version")}

    def __repr__(self) -> str:
        return f"VerifiedArtifact({self.folder.name!r}, manifest_hash={self.manifest_hash[:16]}…)"

    @property
    def manifest_hash(self) -> str:
        return self.report.manifest_hash

    @property
    def is_signed(self) -> bool:
        return self.report.signed

    @property
    def events(self) -> list[AuditEvent]:
        return list(self.report.events)

    @property
    def trusted(self) -> bool:
        """Signed by a configured artifact key; False in development mode (outputs must then say UNTRUSTED)."""
        return self.report.trusted

    @property
    def status(self) -> ApprovalStatus:
        """The one answer to "who approved this, at which threshold" (decisions.judge)."""
        return self.report.status

    @property
    def is_approved(self) -> bool:
        return self.report.status.approved

    @property
    def files(self) -> list[str]:
        return list(self._entries)

    @property
    def weight_names(self) -> list[str]:
        prefix, suffix = f"{WEIGHTS_DIR}/", ".safetensors"
        return [p[len(prefix) : -len(suffix)] for p in self._entries if p.startswith(prefix) and p.endswith(suffix)]

    @property
    def kind(self) -> str:
        """`model` (a classifier) or `pretrained` (a self-supervised backbone; a weight source only)."""
        return str(self.metadata.get("kind", "model"))

    def require_model(self, action: str) -> None:
        """Refuse, by name, to evaluate, approve or score a pretrained backbone: it has no head and no task."""
        if self.kind != "model":
            raise ConfigError(
                f"{self.folder.name} is a {self.kind} artifact (a backbone from self-supervised pretraining, with no "
                f"head and no task): it cannot be {action}",
                where=self.folder.name,
                fix="train a model from it (training config `model: {weights: {source: artifact, path: ...}}`, or "
                "`medtl plan --weights-artifact`), then use that model artifact here",
            )

    def metadata_model(self) -> ArtifactMetadata:
        return validate_document(ArtifactMetadata, self.metadata, where=METADATA)

    def path(self, relative_name: str) -> Path:
        """Path of a file listed in the manifest (anything else raises, so unlisted content is never used)."""
        if relative_name not in self._entries:
            raise ArtifactIntegrityError(
                f"{relative_name} is not part of the sealed artifact",
                where=relative_name,
                fix=f"use one of the listed files: {', '.join(sorted(self._entries)[:12])} ...",
            )
        return self.folder / relative_name

    def read_bytes(self, relative_name: str) -> bytes:
        data = self.path(relative_name).read_bytes()
        if sha256_bytes(data) != self._entries[relative_name].sha256:
            raise ArtifactIntegrityError(
                f"{relative_name} changed after the artifact was verified",
                where=relative_name,
                fix="do not use this artifact; verify it again and restore it from a trusted copy",
            )
        return data

    def read_text(self, relative_name: str) -> str:
        return self.read_bytes(relative_name).decode("utf-8")

    def read_json(self, relative_name: str) -> Any:
        return json.loads(self.read_bytes(relative_name))

    def read_yaml(self, relative_name: str) -> Any:
        return yaml.safe_load(self.read_bytes(relative_name))

    def read_table(self, relative_name: str) -> pd.DataFrame:
        return pq.read_table(pa.BufferReader(self.read_bytes(relative_name))).to_pandas()

    def read_npy(self, relative_name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(relative_name)), allow_pickle=False)

    def load_weights(self, name: str = "final", *, device: str = "cpu") -> dict[str, Any]:
        """Tensors of weights/<name>.safetensors (safetensors never executes code)."""
        from safetensors.torch import load

        relative = weights_path(name)
        if relative not in self._entries:
            raise ArtifactIntegrityError(
                f"the artifact has no weights named {name!r}",
                where=relative,
                fix=f"choose one of: {', '.join(self.weight_names) or '(none)'}",
            )
        tensors = load(self.read_bytes(relative))
        return {key: value.to(device) for key, value in tensors.items()} if device != "cpu" else tensors

    def append_event(
        self,
        kind: EventKind,
        *,
        actor: str,
        payload: dict[str, Any],
        signing_key: SigningKeySource | None = None,
        phi_terms: Any = None,
    ) -> AuditEvent:
        """Append to the audit log (re-verifying under the same trust settings) and refresh `events`."""
        event = append_event(
            self.folder, kind, actor=actor, payload=payload, signing_key=signing_key, trust=self.trust,
            phi_terms=phi_terms,
        )  # fmt: skip
        self.report = verify_resolved(self.folder, self.trust)
        return event


def open_verified(
    folder: str | Path,
    *,
    trust: TrustSettings | None = None,
    trusted_keys: list[TrustedKeySource] | None = None,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
) -> VerifiedArtifact:
    """Verify everything (see verify()) and return a reader; raises ArtifactIntegrityError on the first problem.

    `trust` (resolved once by the caller) wins; otherwise the keyword arguments and the environment decide.
    """
    folder = Path(folder)
    if trust is None:
        trust = resolve_trust(trusted_keys=trusted_keys, allow_unsigned=allow_unsigned, allow_untrusted=allow_untrusted)
    return VerifiedArtifact(folder, verify_resolved(folder, trust), trust=trust)


def load_artifact_weights(
    folder: str | Path, name: str = "final", *, trusted_keys: list[TrustedKeySource] | None = None
) -> dict[str, Any]:
    """For weight sources: a medtl artifact as pretrained weights, verified exactly like any other load."""
    return open_verified(folder, trusted_keys=trusted_keys).load_weights(name)
