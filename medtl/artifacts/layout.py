"""The artifact folder's fixed names, and the rules every path and file format in it must follow.

Why fixed names: a reader (evaluate, score, an auditor with a text editor) finds everything without a lookup table,
and the rules below are what makes a folder portable (relative POSIX names only) and safe to load (no pickles).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from medtl.contracts.artifact import ARTIFACT_PATH, UNLISTED_FILES
from medtl.errors import ArtifactIntegrityError, ConfigError

MANIFEST = "manifest.json"
SIGNATURE = "signature.bin"
AUDIT_LOG = "audit.jsonl"
METADATA = "metadata.json"
MODEL_CARD = "model_card.md"
ENVIRONMENT = "environment.txt"
CONFIG = "config.yaml"
PREPROCESSING = "preprocessing.json"
LABEL_MAP = "label_map.json"
SPLITS = "splits.json"
OOF_PREDICTIONS = "predictions/oof.parquet"
POOLED_METRICS = "metrics/pooled.json"
TRANSFER_METRICS = "metrics/transfer.json"
RUN_METRICS = "metrics/run.json"
LINEAGE = "lineage.json"  # models: the patients the starting weights learnt from
PRETRAINING = "metrics/pretraining.json"  # pretrained artifacts: method, data, exclusion, loss curve
LABEL_EFFICIENCY = "metrics/label_efficiency.parquet"
OOD_FEATURES = "ood/features.safetensors"
OOD_SUMMARY = "ood/features.json"
FINGERPRINT = "fingerprint.json"
WEIGHTS_DIR = "weights"
METRICS_DIR = "metrics"
FIGURES_DIR = "figures"

REQUIRED = (METADATA,)
# what a sealed artifact should hold beside its weights: a pretrained backbone has no labels, splits or predictions
RECOMMENDED_PRETRAINED = (MODEL_CARD, ENVIRONMENT, CONFIG, PREPROCESSING)
RECOMMENDED = (*RECOMMENDED_PRETRAINED, LABEL_MAP, SPLITS, OOF_PREDICTIONS, POOLED_METRICS)

# Formats whose content can be read without executing anything, each with the check the PHI gate runs on it.
TEXT_SUFFIXES = frozenset({".json", ".jsonl", ".yaml", ".yml", ".csv", ".tsv", ".txt", ".md", ".html", ".htm"})
STRUCTURED_SUFFIXES = frozenset({".parquet", ".png", ".safetensors", ".npy"})
ALLOWED_SUFFIXES = TEXT_SUFFIXES | STRUCTURED_SUFFIXES
# Formats that unpickle (run code) when loaded: never inside an artifact, whatever they contain.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".npz", ".bin", ".dill"})

_PATH_RE = re.compile(ARTIFACT_PATH)
_WEIGHT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_relative_name(name: str) -> str:
    """Return `name` if it is a portable relative POSIX path for a new artifact file; raise ConfigError otherwise."""
    if not isinstance(name, str) or not _PATH_RE.match(name) or len(name) > 255:
        raise ConfigError(
            f"{name!r} is not a valid artifact file name",
            fix="use a relative POSIX path of letters, digits, '.', '_' and '-', each part starting with a letter "
            "or digit (e.g. metrics/fold0.json); absolute paths, '..' and hidden files are not allowed",
        )
    if name in UNLISTED_FILES:
        raise ConfigError(f"{name} is written by seal() and append_event(), not by hand", where=name)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ConfigError(
            f"{name}: {suffix} files unpickle (execute code) when loaded and are never stored in an artifact",
            where=name,
            fix="store tensors as safetensors (add_weights) and tables as Parquet",
        )
    if suffix not in ALLOWED_SUFFIXES:
        raise ConfigError(
            f"{name}: the format {suffix or '(no extension)'} is not allowed in an artifact",
            where=name,
            fix=f"use one of {', '.join(sorted(ALLOWED_SUFFIXES))}",
        )
    return name


def weights_path(name: str) -> str:
    """`final` → `weights/final.safetensors`; a full relative path to a .safetensors file is accepted as is."""
    if name.startswith(f"{WEIGHTS_DIR}/") and name.endswith(".safetensors"):
        return name
    if not _WEIGHT_NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ConfigError(
            f"{name!r} is not a valid weights name",
            fix="use a short name of letters, digits, '_', '.', '-' such as final or fold0",
        )
    return f"{WEIGHTS_DIR}/{name}.safetensors"


def walk_files(folder: Path) -> list[str]:
    """Every regular file under `folder` as a sorted relative POSIX path; links and special files raise.

    Why refuse links: a symlink makes the artifact's content depend on something outside it, which can change.
    """
    found: list[str] = []
    for root, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(root) / name
            relative = full.relative_to(folder).as_posix()
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise ArtifactIntegrityError(
                    f"{relative} is a symbolic link; an artifact holds only regular files",
                    where=relative,
                    fix="replace the link by a copy of the file, or remove it",
                )
            if stat.S_ISREG(mode):
                found.append(relative)
            elif not stat.S_ISDIR(mode):
                raise ArtifactIntegrityError(f"{relative} is not a regular file", where=relative)
    return sorted(found)
