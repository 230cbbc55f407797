"""Weight source: the weights of an earlier medtl artifact ("train on a related task, then transfer").

Which weights: the refit model's (`weights/final.safetensors`) when the artifact has one. An ensemble artifact has
only its fold models, and independently trained networks cannot be averaged into one; the fold model that did best
on its own tuning patients (`metrics/foldN.json`) is the starting point then, and the record names the file.

Why through `medtl.artifacts.open_verified`: an artifact is only trusted as a whole — manifest hashes, signature and
audit chain — so its weights are read only after the artifact's own integrity check has passed (it raises
`ArtifactIntegrityError` otherwise), and through `read_bytes`, which re-checks the weights against the manifest as
they are read. The record keeps the SHA-256 of the exact bytes loaded here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medtl.errors import WeightsError
from medtl.hashing import sha256_bytes
from medtl.models.backbones import BackboneSpec
from medtl.models.checkpoint import FileBytes, load_state_dict_file, read_file, strip_prefix
from medtl.models.records import ResolvedWeights, WeightRecord

WEIGHTS_FILE = "weights/final.safetensors"
FOLD_WEIGHTS = re.compile(r"^weights/fold(\d+)\.safetensors$")


def source_weights_file(artifact: Any) -> str:
    """The artifact's weights a later model starts from (see the module docstring)."""
    files = set(artifact.files)
    if WEIGHTS_FILE in files:
        return WEIGHTS_FILE
    folds = {int(m.group(1)): name for name in files if (m := FOLD_WEIGHTS.match(name))}
    if not folds:
        raise WeightsError(
            "the artifact holds no model weights (weights/final.safetensors or weights/foldN.safetensors)",
            where=str(getattr(artifact, "folder", "artifact")),
            fix="name an artifact written by `medtl train`",
        )

    def tuning_auc(index: int) -> float:
        name = f"metrics/fold{index}.json"
        value = artifact.read_json(name).get("best_tune_auc") if name in files else None
        return float(value) if isinstance(value, int | float) else float("-inf")

    return folds[max(sorted(folds), key=tuning_auc)]  # ties: the lowest fold index


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
    summary = (
        "an earlier medtl artifact folder: its refit weights (or its best fold model), verified by the artifact's "
        "integrity check"
    )

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
        weights_file = source_weights_file(artifact)
        reader = getattr(artifact, "read_bytes", None)
        if callable(reader):  # re-checks the bytes against the manifest as they are read
            data = reader(weights_file)
            content = FileBytes(data=data, sha256=sha256_bytes(data), file_name=Path(weights_file).name)
        else:
            content = read_file(Path(artifact.path(weights_file)))
        state = load_state_dict_file(content, where=f"{folder} ({weights_file})")
        if model_spec.get("adapt_3d") == "2.5d" and model_spec.get("spatial_dims") == 3:
            state = strip_prefix(state, "net.")  # the 2.5D wrapper's attribute; weights belong to the 2D network
        model_id = metadata.get("model_id", folder.name)
        upstream = (metadata.get("provenance") or {}).get("pretrained") or {}
        licence = f"medtl artifact {model_id}; upstream pretrained weights: {upstream.get('license') or 'none'}"
        record = WeightRecord(
            source=self.kind,
            name=f"{model_id}@{metadata.get('model_version', 'unversioned')}",
            path_name=weights_file,
            sha256=content.sha256,
            license=licence,
            verified_by="artifact integrity check (manifest hashes, signature, audit chain)",
            details={"backbone": str(model_spec["backbone"]), "upstream": str(upstream.get("name", "none"))},
        )
        return ResolvedWeights(state=state, record=record, model_spec=dict(model_spec))
