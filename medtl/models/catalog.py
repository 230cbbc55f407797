"""The catalogue of weight files medtl knows about: where each is expected, what hash it must have, is it there.

Why a catalogue: on an air-gapped machine the first question is "which files do I have to copy, and where to?";
`medtl weights list/show` answers it from here, and `register` pins a file's full SHA-256 for later loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medtl.errors import WeightsError
from medtl.models.backbones import BACKBONES, get_backbone
from medtl.models.bundle import bundle_key, bundle_model_file, read_bundle_metadata
from medtl.models.checkpoint import read_file
from medtl.models.pins import Pin, PinStore, normalise_sha256
from medtl.models.sources import medicalnet_directory, medicalnet_file_name, medicalnet_obtain, torchvision_checkpoint

State = Literal["missing", "present", "verified", "mismatch", "unpinned"]


@dataclass(frozen=True)
class ExpectedWeights:
    key: str  # pin key (file name for torchvision / MedicalNet / files)
    source: str
    label: str  # e.g. ResNet18_Weights.IMAGENET1K_V1
    backbones: tuple[str, ...]
    path: Path | None  # where the file is expected (None: a pin registered without a location)
    full_sha256: str | None
    prefix: str | None
    obtain: str

    def expected_text(self) -> str:
        if self.full_sha256:
            return f"sha256 {self.full_sha256} (pinned)"
        if self.prefix:
            return f"sha256 starts with {self.prefix} (file name); not pinned"
        return "no expected hash yet: pin it with `medtl weights register`"

    def short_expected(self) -> str:
        if self.full_sha256:
            return f"pinned {self.full_sha256[:12]}…"
        return f"prefix {self.prefix}" if self.prefix else "none: pin it"


@dataclass(frozen=True)
class WeightsStatus:
    state: State
    sha256: str | None
    detail: str


def known_weights() -> list[ExpectedWeights]:
    """Every torchvision and MedicalNet file the registry's backbones can use, then every other pinned file."""
    store = PinStore()
    entries: list[ExpectedWeights] = []
    covered: set[str] = set()
    for name in BACKBONES.names():
        spec = get_backbone(name)
        if spec.torchvision_weights is not None:
            for member in spec.torchvision_weights:
                ckpt = torchvision_checkpoint(spec, member.name)
                pin = store.find(ckpt.file_name, ckpt.file_name)
                entries.append(
                    ExpectedWeights(
                        key=ckpt.file_name,
                        source="torchvision",
                        label=ckpt.weights_name,
                        backbones=(name,),
                        path=ckpt.path,
                        full_sha256=pin.sha256 if pin else None,
                        prefix=ckpt.hash_prefix,
                        obtain=ckpt.obtain(),
                    )
                )
                covered.add(ckpt.file_name)
        if spec.medicalnet_depth is not None:
            file_name = medicalnet_file_name(spec.medicalnet_depth)
            pin = store.find(file_name, file_name)
            entries.append(
                ExpectedWeights(
                    key=file_name,
                    source="medicalnet",
                    label=f"MedicalNet ResNet-{spec.medicalnet_depth} (23 datasets)",
                    backbones=(name,),
                    path=medicalnet_directory() / file_name,
                    full_sha256=pin.sha256 if pin else None,
                    prefix=None,
                    obtain=medicalnet_obtain(spec.medicalnet_depth),
                )
            )
            covered.add(file_name)
    for pin in store.all():
        if pin.key in covered:
            continue
        entries.append(
            ExpectedWeights(
                key=pin.key,
                source=pin.source,
                label=pin.key,
                backbones=(),
                path=Path(pin.path) if pin.path else None,
                full_sha256=pin.sha256,
                prefix=None,
                obtain="registered by you",
            )
        )
    return entries


def check(entry: ExpectedWeights, *, verify: bool = True) -> WeightsStatus:
    """Is the file there, and (when `verify`) does its SHA-256 match what is expected?"""
    if entry.path is None or not entry.path.is_file():
        return WeightsStatus("missing", None, f"expected at {entry.path}" if entry.path else "no location recorded")
    if not verify:
        return WeightsStatus("present", None, "present; not hashed (use --verify or `show`)")
    actual = read_file(entry.path).sha256
    if entry.full_sha256:
        ok = actual == entry.full_sha256
        return WeightsStatus("verified" if ok else "mismatch", actual, "full pin" if ok else "does NOT match the pin")
    if entry.prefix:
        ok = actual.startswith(entry.prefix)
        return WeightsStatus(
            "verified" if ok else "mismatch",
            actual,
            "hash prefix matches (pin it for a full check)" if ok else "hash prefix does NOT match",
        )
    return WeightsStatus("unpinned", actual, "present but no expected hash: pin it to use it")


def register_file(
    path: Path,
    *,
    name: str | None = None,
    sha256: str | None = None,
    license: str | None = None,
    replace: bool = False,
) -> Pin:
    """Pin a weight file (or a MONAI bundle folder's weight file) by its full SHA-256; refuses any mismatch."""
    path = Path(path).expanduser()
    source = "file"
    key = None
    if path.is_dir():
        metadata = read_bundle_metadata(path)
        relative = bundle_model_file(path)
        key, path, source = bundle_key(path, metadata, relative), path / relative, "monai_bundle"
    if not path.is_file():
        raise WeightsError(f"cannot register {path.name}: no such file", where=str(path), fix="check the path")
    content = read_file(path)
    if sha256 is not None and content.sha256 != normalise_sha256(sha256, where="--sha256"):
        raise WeightsError(
            f"{path.name} has SHA-256 {content.sha256}, not the {sha256.lower()} you gave",
            where=str(path),
            fix="the file is not the one you meant to pin; re-copy it",
        )
    catalogue = {entry.key: entry for entry in known_weights() if entry.source in ("torchvision", "medicalnet")}
    known = catalogue.get(path.name)
    if known is not None and source == "file":
        source = known.source
        if known.prefix and not content.sha256.startswith(known.prefix):
            raise WeightsError(
                f"{path.name}'s SHA-256 {content.sha256} does not start with {known.prefix}, the prefix "
                "in its torchvision file name: it is not the published file",
                where=str(path),
                fix="copy the published file again",
            )
    pin = Pin(
        key=name or key or path.name,
        sha256=content.sha256,
        file_name=path.name,
        source=source,
        path=str(path.resolve()),
        license=license,
    )
    return PinStore().register(pin, replace=replace)
