"""Reading weight files safely: check the exact bytes against the expected hash, then decode without running code.

Why read into memory first: the SHA-256 that is checked (and recorded) is the hash of the very bytes that are decoded,
so a file swapped between the check and the load cannot slip through. Decoding uses safetensors or
`torch.load(weights_only=True)`, which refuses arbitrary Python objects (pickled learners can run code on load).
The expected hash comes from the config, else from the user's pins; the rules and messages live here so that every
source fails the same way.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medtl.errors import WeightsError
from medtl.hashing import sha256_bytes
from medtl.models.pins import PinStore

# torch.hub's own rule for the hash prefix in a checkpoint file name (e.g. resnet18-f37072fd.pth -> "f37072fd").
HASH_PREFIX_RE = re.compile(r"-([a-f0-9]*)\.")

# Containers that training libraries wrap a state dict in, tried in this order.
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "network", "net")
# Prefixes added by wrappers rather than by the architecture: DataParallel/DDP and torch.compile.
PIN_HINT = "pin its full hash once with `medtl weights register FILE`"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Old torchvision DenseNet checkpoints name layers "norm.1" where the module is now "norm1".
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class FileBytes:
    """A weight file's content and the SHA-256 of exactly that content."""

    data: bytes
    sha256: str
    file_name: str


@dataclass
class StateDict:
    """Tensors keyed like `model.state_dict()`, and the normalisation steps that got them there."""

    tensors: dict[str, torch.Tensor]
    steps: list[str] = field(default_factory=list)


def hash_prefix_of(file_name: str) -> str | None:
    """The hash prefix torch.hub would check for this file name, or None when the name carries none."""
    match = HASH_PREFIX_RE.search(file_name)
    return match.group(1) if match and match.group(1) else None


def read_file(path: Path) -> FileBytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(
            f"cannot read weight file {path.name}: {error.strerror or error}",
            where=str(path),
            fix="check the path and the file permissions",
        ) from None
    return FileBytes(data=data, sha256=sha256_bytes(data), file_name=path.name)


def check_hash(
    content: FileBytes, *, where: str, expected: str | None = None, prefix: str | None = None, fix: str = ""
) -> None:
    """Refuse bytes whose SHA-256 differs from the full expected hash, or does not start with the expected prefix."""
    if expected is not None and content.sha256 != expected.lower():
        raise WeightsError(
            f"SHA-256 mismatch for {content.file_name}: expected {expected.lower()}, got {content.sha256}; "
            "the file is corrupt, tampered with, or a different version",
            where=where,
            fix=fix or "replace the file with the exact published one, or correct the expected hash",
        )
    if prefix is not None and not content.sha256.startswith(prefix.lower()):
        raise WeightsError(
            f"SHA-256 of {content.file_name} does not start with {prefix!r} (the hash prefix in its file name): "
            f"got {content.sha256}; the file is corrupt, truncated or tampered with",
            where=where,
            fix=fix or "delete the file and copy the published one again",
        )


def expected_hash(key: str, file_name: str | None, configured: str | None) -> tuple[str | None, str]:
    """The full SHA-256 a file must have (config first, then pins) and a label saying where it came from."""
    if configured:
        return configured, "full SHA-256 given in the config"
    pin = PinStore().find(key, file_name)
    if pin:
        return pin.sha256, f"full SHA-256 pinned as {pin.key!r} in weights.json"
    return None, ""


def require_file(path: Path, *, what: str, expected: str, obtain: str) -> None:
    if path.is_file():
        return
    raise WeightsError(
        f"{what}: file {path.name} not found",
        where=str(path),
        fix=f"put {path.name} (expected SHA-256: {expected}) into {path.parent}/ — {obtain}",
    )


def refuse_unverifiable(content: FileBytes, path: Path, key: str) -> None:
    raise WeightsError(
        f"no expected SHA-256 for {content.file_name}: medtl loads only weights whose hash is checked; "
        f"this file's SHA-256 is {content.sha256}",
        where=str(path),
        fix=f"if you trust this file, add `sha256: {content.sha256}` to the weights config, or pin it with "
        f"`medtl weights register {path} --name {key}`",
    )


def decode(content: FileBytes, *, where: str) -> Any:
    """Decode a safetensors or torch file without executing pickled code."""
    if content.file_name.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(content.data)
        except Exception as error:
            raise WeightsError(
                f"{content.file_name} is not a valid safetensors file ({error})", where=where, fix="re-copy the file"
            ) from None
    try:
        return torch.load(io.BytesIO(content.data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"{content.file_name} contains pickled Python objects other than tensors; medtl does not unpickle them "
            f"because that can run arbitrary code ({first_line})",
            where=where,
            fix="on a trusted machine, load it and save only its state dict (safetensors preferred); use that file",
        ) from None
    except Exception as error:
        raise WeightsError(
            f"{content.file_name} is not a readable PyTorch weight file ({type(error).__name__}: {error})",
            where=where,
            fix="check that the file is complete (not an HTML error page or a partial download) and re-copy it",
        ) from None


def extract_state_dict(obj: Any, *, where: str) -> StateDict:
    """Find the flat name→tensor mapping inside common checkpoint layouts, recording each unwrapping step."""
    steps: list[str] = []
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return StateDict(tensors={str(k): v for k, v in obj.items()}, steps=steps)
        inner = next((key for key in _NESTING_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        steps.append(f"unwrapped checkpoint[{inner!r}]")
        obj = obj[inner]
    shown = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"no state dict (a mapping of parameter names to tensors) found in the weight file; top level: {shown}",
        where=where,
        fix=f"save `model.state_dict()` directly, or nest it under one of {list(_NESTING_KEYS)}",
    )


def strip_prefix(state: StateDict, prefix: str) -> StateDict:
    """Remove `prefix` from every key; refuses when some key lacks it (a partial match means a different layout)."""
    lacking = [key for key in state.tensors if not key.startswith(prefix)]
    if lacking:
        raise WeightsError(
            f"cannot strip key prefix {prefix!r}: {len(lacking)} key(s) do not start with it (e.g. {lacking[0]!r})",
            fix="check the `strip_prefix` setting against the keys in the file",
        )
    tensors = {key[len(prefix) :]: value for key, value in state.tensors.items()}
    return StateDict(tensors=tensors, steps=[*state.steps, f"stripped key prefix {prefix!r}"])


def strip_wrapper_prefixes(state: StateDict) -> StateDict:
    """Strip DDP/DataParallel `module.` and torch.compile `_orig_mod.` prefixes when every key carries them."""
    changed = True
    while changed and state.tensors:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state.tensors):
                state = strip_prefix(state, prefix)
                changed = True
    return state


def rename_legacy_densenet(state: StateDict) -> StateDict:
    """Map old torchvision DenseNet keys (`denselayer1.norm.1.weight`) to the current ones (`norm1.weight`)."""
    renamed: dict[str, torch.Tensor] = {}
    count = 0
    for key, value in state.tensors.items():
        match = _LEGACY_DENSENET.match(key)
        if match:
            key = match.group(1) + match.group(2)
            count += 1
        renamed[key] = value
    if not count:
        return state
    return StateDict(tensors=renamed, steps=[*state.steps, f"renamed {count} legacy DenseNet keys (norm.1 -> norm1)"])


def load_state_dict_file(content: FileBytes, *, where: str) -> StateDict:
    """Decode verified bytes into a normalised state dict (nesting unwrapped, wrapper prefixes stripped)."""
    return strip_wrapper_prefixes(extract_state_dict(decode(content, where=where), where=where))
