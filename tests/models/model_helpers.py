"""Helpers for the model tests: distinctive random state dicts, file hashes, weight files where sources expect them,
and a stand-in for earlier artifacts."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medtl.errors import ArtifactIntegrityError
from medtl.hashing import sha256_file


def randomise(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Distinctive values for every tensor (BN statistics included), so a load that skips a tensor is visible.

    Kernels get He-scaled noise and norm layers values near their identity, so deep networks still respond to their
    input (tiny uniform noise everywhere would make the output constant and equality tests vacuous).
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        noise = torch.randn(value.shape, generator=generator) if value.is_floating_point() else None
        if noise is None:
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            out[key] = noise * 0.1
        elif value.ndim == 1:  # norm-layer scale
            out[key] = 1 + noise * 0.1
        else:
            out[key] = noise * (2.0 / (value.numel() / value.shape[0])) ** 0.5
    return out


def sha(path: Path) -> str:
    return sha256_file(path)


def install_torchvision_file(state: dict, monkeypatch: pytest.MonkeyPatch, member, stem: str, **save) -> Path:
    """Write `state` as torchvision would cache it and point the Weights enum at a URL with the file's hash prefix.

    A real file name (resnet18-f37072fd.pth) encodes the published file's hash, which a test fixture cannot have; the
    URL is the only thing patched — the loader still reads the name from torchvision's enum.
    """
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    scratch = checkpoints / "scratch.pth"
    torch.save(state, scratch, **save)
    path = checkpoints / f"{stem}-{sha(scratch)[:8]}.pth"
    scratch.rename(path)
    monkeypatch.setattr(member.value, "url", f"https://download.pytorch.org/models/{path.name}")
    return path


def fake_artifacts_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for medtl.artifacts with the agreed API: open_verified(folder) -> .metadata, .files, .path(relative),
    .read_json(relative)."""

    class Verified:
        def __init__(self, folder: Path) -> None:
            self.folder = folder
            self.metadata = json.loads((folder / "metadata.json").read_text())

        def path(self, relative: str) -> Path:
            return self.folder / relative

        @property
        def files(self) -> list[str]:
            return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())

        def read_json(self, relative: str):
            return json.loads((self.folder / relative).read_text())

    def open_verified(folder):
        folder = Path(folder)
        if (folder / "TAMPERED").exists():
            raise ArtifactIntegrityError("weights/final.safetensors does not match the manifest", where=str(folder))
        return Verified(folder)

    module = types.ModuleType("medtl.artifacts")
    module.open_verified = open_verified
    monkeypatch.setitem(sys.modules, "medtl.artifacts", module)


def write_artifact(folder: Path, built) -> None:
    (folder / "weights").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in built.model.state_dict().items()}, folder / "weights" / "final.safetensors"
    )
    metadata = {"model_id": "chest-xray-pretask", "model_version": "1.2.0", "model": built.spec,
                "provenance": {"pretrained": {"source": "none", "name": "none", "license": None}}}  # fmt: skip
    (folder / "metadata.json").write_text(json.dumps(metadata))
