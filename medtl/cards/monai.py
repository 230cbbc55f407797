"""monai_metadata: the artifact described as a MONAI bundle's configs/metadata.json.

Why: MONAI tooling (bundle loading, the model zoo, MONAI Deploy) reads a bundle's metadata.json to know the network's
input and output; writing it from the sealed metadata and preprocessing means a site can wrap the model as a bundle
without retyping shapes, channels and value ranges. The keys are those of MONAI's bundle metadata schema
(meta_schema_20240725: version, changelog, monai_version, pytorch_version, numpy_version, required_packages_version,
task, description, authors, copyright, network_data_format), plus the model-zoo keys that describe use and data.
Package versions are the ones the model was trained with (provenance), not the ones installed now.
"""

from __future__ import annotations

from typing import Any

from medtl.artifacts.contents import ArtifactContents
from medtl.contracts.model_card import HistoryEntry

MONAI_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
_FRAMEWORK = ("monai", "torch", "numpy")
_NOT_FOR_INFERENCE = ("prefect",)  # orchestration only: serving the network does not need it
_NOT_INSTALLED = "not installed"


def _version(packages: dict[str, str], name: str) -> str:
    value = packages.get(name, _NOT_INSTALLED)
    return value.split("+")[0]  # MONAI's own default drops local build tags (2.4.0+cu121 -> 2.4.0)


def _changelog(version: str, summary: str, history: list[HistoryEntry]) -> dict[str, str]:
    """Newest first, as MONAI bundles order it: one line per artifact of the history (or this one alone)."""
    if not history:
        return {version: summary}
    log: dict[str, str] = {}
    for entry in reversed(history):
        text = "; ".join(entry.changes) if entry.changes else "first recorded version"
        key = (
            entry.model_version
            if entry.model_version not in log
            else f"{entry.model_version}+{entry.artifact_hash[:8]}"
        )
        log[key] = f"{text} (artifact {entry.artifact_hash[:12]}, trained {entry.trained_at})"
    return log


def _intensity_format(modalities: list[str]) -> str:
    return "hounsfield" if modalities == ["CT"] else "magnitude"


def monai_metadata(
    contents: ArtifactContents, *, history: list[HistoryEntry] | None = None, authors: str | None = None
) -> dict[str, Any]:
    meta, task, preprocessing = contents.metadata, contents.task, contents.preprocessing
    inp, packages = meta.input, meta.provenance.packages
    modality = "/".join(inp.modalities) or "unknown"
    channel_names = {str(c): modality if inp.channels == 1 else f"{modality} channel {c}" for c in range(inp.channels)}
    classes = list(task.classes)
    outputs = {
        "type": "probabilities",
        "format": "classes",
        "num_channels": len(classes),
        "spatial_shape": [1],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_onehot": False,
        "channel_def": {str(i): name for i, name in enumerate(classes)},
    }
    author = authors or "not recorded"
    trained = meta.provenance.finished_at
    return {
        "schema": MONAI_SCHEMA,
        "version": meta.model_version,
        "changelog": _changelog(
            meta.model_version, f"trained {trained} by medtl {meta.provenance.medtl_version}", history or []
        ),
        "monai_version": _version(packages, "monai"),
        "pytorch_version": _version(packages, "torch"),
        "numpy_version": _version(packages, "numpy"),
        "required_packages_version": {
            name: version
            for name, version in sorted(packages.items())
            if name not in _FRAMEWORK + _NOT_FOR_INFERENCE and version != _NOT_INSTALLED
        },
        "name": meta.model_id,
        "task": f"{task.kind} classification of {modality} {inp.image_kind} images: {', '.join(classes)}",
        "description": f"{meta.intended_use} Network: {meta.model.get('backbone', 'network')}, "
        f"{meta.model.get('spatial_dims', len(inp.spatial_shape))}D; weights: the artifact's safetensors "
        f"(artifact {contents.verified.manifest_hash[:12]}).",
        "authors": author,
        "copyright": f"Copyright (c) {author}",
        "intended_use": meta.intended_use,
        "data_source": f"site data, manifest sha256 {meta.provenance.manifest_hash}",
        "data_type": "dicom or nifti, ingested and preprocessed by medtl",
        "image_classes": f"{inp.channels} channel(s), {modality}, resampled to spacing "
        f"{preprocessing.target_spacing} and shape {preprocessing.target_shape}, values scaled to "
        f"[{inp.value_range[0]:g}, {inp.value_range[1]:g}]",
        "label_classes": ", ".join(f"{i}: {name}" for i, name in enumerate(classes)),
        "pred_classes": f"{len(classes)} probabilities, one per {'finding' if task.kind == 'multilabel' else 'class'}",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": _intensity_format(inp.modalities),
                    "modality": modality,
                    "num_channels": inp.channels,
                    "spatial_shape": list(inp.spatial_shape),
                    "dtype": "float32",
                    "value_range": [float(inp.value_range[0]), float(inp.value_range[1])],
                    "is_patch_data": False,
                    "channel_def": channel_names,
                }
            },
            "outputs": {"pred": outputs},
        },
    }
