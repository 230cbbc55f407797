"""Provenance recorded automatically: code version, environment, hardware, data and split hashes, weights, seeds, times.

Why automatic: an auditor's "which code, which environment, which data?" must be answerable for every artifact,
not only for the ones where somebody remembered to write it down. Nothing here imports Prefect (the library must
not): the flow-run id comes from the caller or from $PREFECT__FLOW_RUN_ID. Nothing here records local paths,
hostnames or git remotes (which can carry credentials).
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import medtl
from medtl.contracts.artifact import ArtifactMetadata, PretrainedSource, Provenance
from medtl.errors import ContractProblem, DataContractError
from medtl.hashing import sha256_bytes

FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"
KEY_PACKAGES = (
    "medtl",
    "torch",
    "torchvision",
    "monai",
    "numpy",
    "pydicom",
    "nibabel",
    "scikit-learn",
    "prefect",
    "safetensors",
    "pandas",
    "pyarrow",
    "pydantic",
    "cryptography",
)
_NORMALISE = re.compile(r"[-_.]+")


def _iso(value: datetime | str | None) -> str:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()  # naive means local time; record the offset explicitly
        return value.isoformat(timespec="milliseconds")
    return value


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment_lock() -> list[str]:
    """Every installed distribution as `name==version` (PEP 503 names), sorted: the environment.txt lines."""
    pins = set()
    for dist in importlib_metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            pins.add(f"{_NORMALISE.sub('-', name).lower()}=={dist.version}")
    return sorted(pins)


def environment_text(lock: list[str] | None = None) -> str:
    header = f"# python=={platform.python_version()} ({platform.python_implementation()}, {sys.platform})\n"
    return header + "".join(f"{line}\n" for line in (lock if lock is not None else environment_lock()))


def _git(source: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell; reads the medtl checkout only
            [git, "-C", str(source), *args], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(source_dir: str | Path | None = None) -> dict[str, Any]:
    """git commit + dirty flag when medtl runs from its own git checkout, else the installed package version.

    Dirty means any change git sees, untracked files included (respecting .gitignore): an auditor cannot tell
    a harmless scratch file from a changed module.
    """
    source = Path(source_dir) if source_dir else Path(medtl.__file__).resolve().parent.parent
    top = _git(source, "rev-parse", "--show-toplevel")
    # Only medtl's own checkout counts: an install inside somebody else's repository (a venv in a project) does not.
    if top and Path(top).resolve() == source.resolve():
        commit = _git(source, "rev-parse", "HEAD")
        status = _git(source, "status", "--porcelain")
        if commit and status is not None:
            return {"kind": "git", "version": medtl.__version__, "commit": commit, "dirty": bool(status)}
    return {"kind": "package", "version": medtl.__version__, "commit": None, "dirty": None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "ram_gb": _ram_gb(),
        "gpu": None,
        "gpu_count": 0,
        "cuda": None,
        "cudnn": None,
    }
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; the record says so rather than failing
        return info
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info.update(gpu=", ".join(names), gpu_count=count, cuda=torch.version.cuda, cudnn=str(cudnn) if cudnn else None)
    return info


def flow_run_id_from_env() -> str | None:
    value = os.environ.get(FLOW_RUN_ENV, "").strip()
    return value or None


def collect_provenance(
    *,
    manifest_hash: str,
    fingerprint_hash: str,
    split_hash: str,
    pretrained: PretrainedSource | dict[str, Any],
    seed: int,
    seeds: dict[str, int] | None = None,
    started_at: datetime | str,
    finished_at: datetime | str | None = None,
    flow_run_id: str | None = None,
    environment: str | None = None,
    source_dir: str | Path | None = None,
) -> dict[str, Any]:
    """A Provenance dict (validated) for metadata.json; `environment` is the environment.txt text to hash.

    Write the same text with ArtifactBuilder.add_environment(text) — seal() checks that the hashes agree.
    """
    code = code_version(source_dir)
    short = (
        f"git:{code['commit']}{'+dirty' if code['dirty'] else ''}"
        if code["kind"] == "git"
        else (f"package:{code['version']}")
    )
    record = {
        "medtl_version": medtl.__version__,
        "code_version": short,
        "code": code,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "packages": package_versions(),
        "environment_sha256": sha256_bytes((environment if environment is not None else environment_text()).encode()),
        "hardware": hardware_info(),
        "manifest_hash": manifest_hash,
        "fingerprint_hash": fingerprint_hash,
        "split_hash": split_hash,
        "pretrained": pretrained.model_dump(mode="json") if isinstance(pretrained, PretrainedSource) else pretrained,
        "seed": seed,
        "seeds": dict(seeds or {}),
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "flow_run_id": flow_run_id or flow_run_id_from_env(),
    }
    try:
        return Provenance.model_validate(record).model_dump(mode="json")
    except ValidationError as error:
        problems = [
            ContractProblem("$.provenance." + ".".join(str(p) for p in item["loc"]), item["msg"])
            for item in error.errors()
        ]
        raise DataContractError(ArtifactMetadata.schema_filename(), problems, where="provenance") from None
