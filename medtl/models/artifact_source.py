"""Weight source: the final weights of an earlier medtl artifact ("train on a related task, then transfer").

Why through `medtl.artifacts.open_verified`: an artifact is only trusted as a whole — manifest hashes, signature and
audit chain — so its weights are read only after the artifact's own integrity check has passed (it raises
`ArtifactIntegrityError` otherwise), and through `read_bytes`, which re-checks the weights against the manifest as
they are read. The record keeps the SHA-256 of the exact bytes loaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtl.errors import WeightsError
from medtl.hashing import sha256_bytes
from medtl.models.backbones import BackboneSpec
from medtl.models.checkpoint import FileBytes, load_state_dict_file, read_file, strip_prefix
from medtl.models.records import ResolvedWeights, WeightRecord

WEIGHTS_FILE = "weights/final.safetensors"


def _open_verified(folder: Path) -> Any:
    try:
        from medtl.artifacts import open_verified
    except ImportError as error:
        raise WeightsError(
            f"the artifact weight source needs medtl.artifacts, which cannot be imported here ({error})",
            where=str(folder),
            fix="install a medtl version that includes artifacts, or export the weights and use {source: file}",
        ) from None
    return open_verified(folder)


class ArtifactSource:
    kind = "artifact"
    summary = "an earlier medtl artifact folder: weights/final.safetensors, verified by the artifact's integrity check"

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights:
        folder = Path(choice.path).expanduser()
        artifact = _open_verified(folder)
        metadata = dict(artifact.metadata)
        model_spec = metadata.get("model")
        if not isinstance(model_spec, dict) or "backbone" not in model_spec:
            raise WeightsError(
                "the artifact's metadata has no model spec (metadata['model'] with a 'backbone')",
                where=str(folder),
                fix="use an artifact written by a medtl version that records its model spec",
            )
        reader = getattr(artifact, "read_bytes", None)
        if callable(reader):  # re-checks the bytes against the manifest as they are read
            data = reader(WEIGHTS_FILE)
            content = FileBytes(data=data, sha256=sha256_bytes(data), file_name=Path(WEIGHTS_FILE).name)
        else:
            content = read_file(Path(artifact.path(WEIGHTS_FILE)))
        state = load_state_dict_file(content, where=f"{folder} ({WEIGHTS_FILE})")
        if model_spec.get("adapt_3d") == "2.5d" and model_spec.get("spatial_dims") == 3:
            state = strip_prefix(state, "net.")  # the 2.5D wrapper's attribute; weights belong to the 2D network
        model_id = metadata.get("model_id", folder.name)
        upstream = (metadata.get("provenance") or {}).get("pretrained") or {}
        licence = f"medtl artifact {model_id}; upstream pretrained weights: {upstream.get('license') or 'none'}"
        record = WeightRecord(
            source=self.kind,
            name=f"{model_id}@{metadata.get('model_version', 'unversioned')}",
            path_name=WEIGHTS_FILE,
            sha256=content.sha256,
            license=licence,
            verified_by="artifact integrity check (manifest hashes, signature, audit chain)",
            details={"backbone": str(model_spec["backbone"]), "upstream": str(upstream.get("name", "none"))},
        )
        return ResolvedWeights(state=state, record=record, model_spec=dict(model_spec))
