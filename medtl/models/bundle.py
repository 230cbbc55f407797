"""Weight source: a MONAI bundle folder (configs/metadata.json + models/model.safetensors or models/model.pt).

Why a separate check: MONAI's bundle download does not verify the weights, so medtl requires a full SHA-256 (config or
pin) like for any other file, and also checks the hash the bundle itself declares in large_files.yml when present.
Pins are keyed `<bundle name>/<relative path>`: "model.pt" alone would be ambiguous across bundles.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from medtl.errors import WeightsError
from medtl.models.backbones import BackboneSpec
from medtl.models.checkpoint import (
    FileBytes,
    check_hash,
    expected_hash,
    load_state_dict_file,
    read_file,
    refuse_unverifiable,
    require_file,
    strip_prefix,
)
from medtl.models.records import ResolvedWeights, WeightRecord


def read_bundle_metadata(folder: Path) -> dict[str, Any]:
    meta_path = folder / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise WeightsError(
            "not a MONAI bundle folder: configs/metadata.json is missing",
            where=str(folder),
            fix="point weights.path at the bundle's root folder (the one holding configs/ and models/)",
        )
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WeightsError(f"unreadable bundle metadata ({error})", where=str(meta_path)) from None


def bundle_model_file(folder: Path, model_file: str | None = None) -> str:
    if model_file:
        return model_file
    for candidate in ("models/model.safetensors", "models/model.pt", "models/model.pth"):
        if (folder / candidate).is_file():
            return candidate
    if (folder / "models" / "model.ts").is_file():
        raise WeightsError(
            "the bundle holds only a TorchScript model (models/model.ts), not a state dict",
            where=str(folder),
            fix="export the network's state_dict to models/model.safetensors",
        )
    return "models/model.pt"


def bundle_key(folder: Path, metadata: dict[str, Any], relative: str) -> str:
    """The pin key of a bundle's weight file: `<bundle name>/<relative path>`."""
    return f"{metadata.get('name') or folder.name}/{relative}"


def _bundle_license(folder: Path, metadata: dict[str, Any]) -> str:
    license_file = folder / "LICENSE"
    if license_file.is_file():
        lines = [line.strip() for line in license_file.read_text(encoding="utf-8", errors="replace").splitlines()]
        first = next((line for line in lines if line), "")
        if first:
            return f"bundle LICENSE: {first[:200]}"
    return str(metadata.get("license") or "not stated in the bundle (no LICENSE file)")


def _check_large_files(folder: Path, relative: str, content: FileBytes) -> str:
    """Check the hash the bundle itself declares in large_files.yml/.json (which MONAI's download skips)."""
    for name in ("large_files.yml", "large_files.yaml", "large_files.json"):
        listing = folder / name
        if not listing.is_file():
            continue
        try:
            document = yaml.safe_load(listing.read_text(encoding="utf-8")) or {}
            entries = [e for e in document.get("large_files", []) if isinstance(e, dict)]
        except (OSError, ValueError, AttributeError, yaml.YAMLError) as error:
            raise WeightsError(f"unreadable {name} ({error})", where=str(listing)) from None
        for entry in entries:
            if str(entry.get("path", "")).removeprefix("./") != relative or not entry.get("hash_val"):
                continue
            kind = str(entry.get("hash_type") or "md5").lower()
            try:
                actual = hashlib.new(kind, content.data).hexdigest()
            except ValueError:
                raise WeightsError(f"{name} declares an unknown hash type {kind!r}", where=str(listing)) from None
            if actual != str(entry["hash_val"]).lower():
                raise WeightsError(
                    f"{relative} does not match the {kind} hash declared in {name}",
                    where=str(folder / relative),
                    fix="re-copy the bundle's weight file",
                )
            return f"; also matches the {kind} in {name}"
    return ""


class MonaiBundleSource:
    kind = "monai_bundle"
    summary = "a MONAI bundle folder: configs/metadata.json + models/model.safetensors or models/model.pt"

    def resolve(self, choice: Any, spec: BackboneSpec) -> ResolvedWeights:
        folder = Path(choice.path).expanduser()
        metadata = read_bundle_metadata(folder)
        relative = bundle_model_file(folder, choice.model_file)
        path = folder / relative
        key = bundle_key(folder, metadata, relative)
        full, label = expected_hash(key, None, choice.sha256)  # "model.pt" alone would be ambiguous across bundles
        require_file(
            path,
            what=f"MONAI bundle {key}",
            expected=full or "unknown until you pin it",
            obtain="copy the whole bundle folder (e.g. from `monai.bundle.download` on a connected machine)",
        )
        content = read_file(path)
        if full is None:
            refuse_unverifiable(content, path, key)
        check_hash(content, where=str(path), expected=full)
        label += _check_large_files(folder, relative, content)
        state = load_state_dict_file(content, where=str(path))
        if choice.strip_prefix:
            state = strip_prefix(state, choice.strip_prefix)
        version = str(metadata.get("version", "unversioned"))
        name = f"{metadata.get('name') or folder.name}@{version}"
        record = WeightRecord(
            source=self.kind,
            name=name,
            path_name=relative,
            sha256=content.sha256,
            license=_bundle_license(folder, metadata),
            verified_by=label,
            details={"bundle_version": version, "monai_version": str(metadata.get("monai_version"))},
        )
        return ResolvedWeights(state=state, record=record)
