"""The unlabelled pool: every eligible scan of the given datasets, read through one preprocessing spec.

Why locked-test patients are removed from every dataset, not only from the one that marks them: a patient can be in
several exports of one site (pseudonyms are keyed per site, so the same person has the same id), and a backbone that
has seen a test patient's scans, even without labels, makes that patient's later test result optimistic. The rule:
a patient is excluded everywhere when any pretraining dataset puts them in its locked test split (the manifest's
`split == "test"`, or a persisted split's `locked_test`), or when they appear in a dataset named by
`exclude_patients_of`. The record lists every excluded pseudonym, so an auditor can check any later test set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medtl.contracts import PreprocessingSpec, read_json
from medtl.contracts.ingest import Fingerprint
from medtl.contracts.pretraining import DatasetUse, PatientExclusion
from medtl.contracts.training import Splits
from medtl.errors import ConfigError, DataContractError
from medtl.hashing import sha256_file
from medtl.ingest.pipeline import FINGERPRINT
from medtl.ingest.preprocess import applies_to, spec_hash
from medtl.pretraining.config import ScanFilter
from medtl.training.data import PRELOAD_LIMIT_BYTES, dataset_spec, ensure_preprocessed, read_manifest
from medtl.training.dataset_flags import keep_dataset_wide, kept_reason

log = logging.getLogger(__name__)


@dataclass
class Pool:
    paths: list[Path]  # one preprocessed tensor per scan
    spec: PreprocessingSpec
    spec_hash: str
    datasets: list[DatasetUse]
    exclusion: PatientExclusion
    folders: list[Path]
    modalities: list[str]
    patients: list[str]

    @property
    def spatial_dims(self) -> int:
        return self.spec.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.spec.channels


def locked_test_patients(dataset: Path, manifest: pd.DataFrame) -> set[str]:
    """The dataset's locked test patients: marked in the manifest, or in any split persisted beside it."""
    patients = set(manifest.loc[manifest["split"] == "test", "patient_id"])
    for path in sorted((Path(dataset) / "splits").glob("*.json")):
        try:
            patients |= set(read_json(Splits, path).locked_test)
        except DataContractError as error:
            raise ConfigError(
                f"a persisted split of the dataset cannot be read, so its locked test patients are unknown: {error}",
                where=f"{Path(dataset).name}/splits/{path.name}",
                fix="restore or remove that split file (training writes it again), then pretrain",
            ) from None
    return patients


def build_pool(datasets: list[Path], scan_filter: ScanFilter, spec: PreprocessingSpec | None,
               exclude_patients_of: list[Path]) -> Pool:  # fmt: skip
    """Select, exclude and preprocess; nothing here reads a label."""
    if not datasets:
        raise ConfigError("pretraining needs at least one ingested dataset", fix="name one or more DATASET folders")
    spec_given = spec is not None
    spec = spec or dataset_spec(datasets[0])
    kind = "volume" if spec.spatial_dims == 3 else "image2d"
    if not applies_to(spec, kind):
        raise ConfigError(f"the preprocessing spec does not apply to {kind} scans", where="preprocessing")
    key = spec_hash(spec)
    manifests = {Path(d): read_manifest(d) for d in datasets}
    excluded_test: set[str] = set()
    for dataset, manifest in manifests.items():
        excluded_test |= locked_test_patients(dataset, manifest)
    excluded_named: set[str] = set()
    for dataset in exclude_patients_of:
        excluded_named |= set(read_manifest(dataset)["patient_id"])
    excluded = excluded_test | excluded_named
    paths: list[Path] = []
    modalities: set[str] = set()
    patients: set[str] = set()
    uses: list[DatasetUse] = []
    excluded_scans = 0
    left_out: dict[str, int] = {}
    for dataset, manifest in manifests.items():
        exclude_flags, kept = _flags_for(manifest, kind, scan_filter)
        selected, counts = _select(manifest, kind, scan_filter.modalities, exclude_flags, excluded)
        if len(manifest) and counts.get(f"not {kind}") == len(manifest):  # named, and not one scan could be used
            other = "2D images" if kind == "volume" else "volumes"
            source = "the given spec" if spec_given else f"{datasets[0].name}'s spec"
            raise ConfigError(
                f"{dataset.name} holds {other} only, and the pool's preprocessing ({spec.spatial_dims}D, {source}) "
                f"takes {kind} scans",
                where=dataset.name,
                fix="pretrain 2D images and 3D volumes apart: one `medtl pretrain` for each kind",
            )
        for reason, count in counts.items():
            left_out[reason] = left_out.get(reason, 0) + count
        excluded_scans += counts.get(EXCLUDED_PATIENT, 0)
        tensors = ensure_preprocessed(dataset, selected, spec, key)
        paths += [dataset / name for name in tensors]
        modalities |= set(selected["modality"])
        patients |= set(selected["patient_id"])
        fingerprint = read_json(Fingerprint, dataset / FINGERPRINT)
        uses.append(
            DatasetUse(
                name=dataset.name,
                manifest_hash=fingerprint.manifest_hash,
                fingerprint_hash=sha256_file(dataset / FINGERPRINT),
                scans=len(selected),
                patients=int(selected["patient_id"].nunique()),
                left_out=counts,
                kept_flags=kept,
            )
        )
    if not paths:
        removed = "; ".join(f"{reason}: {count}" for reason, count in left_out.items()) or "the datasets are empty"
        raise ConfigError(
            f"no scan is left to pretrain on after the filters and the locked-test exclusion (scans left out: "
            f"{removed})",
            fix="check the datasets' image kind against the preprocessing spec (preprocessing), and the settings "
            "scans.modalities and scans.exclude_flags",
        )
    exclusion = PatientExclusion(
        rule="every locked-test patient of any pretraining dataset, and every patient of exclude_patients_of, is "
        "left out of every dataset",
        locked_test_patients=len(excluded_test),
        named_dataset_patients=len(excluded_named),
        scans=excluded_scans,
        patients=sorted(excluded),
    )
    log.info("pretraining pool: %d scans from %d datasets; %d patients excluded", len(paths), len(uses), len(excluded))
    return Pool(paths, spec, key, uses, exclusion, list(manifests), sorted(modalities), sorted(patients))


EXCLUDED_PATIENT = "excluded patient (locked test or named dataset)"


def _flags_for(manifest: pd.DataFrame, kind: str, scan_filter: ScanFilter) -> tuple[list[str], dict[str, str]]:
    """The QC flags that exclude scans of this dataset, and the default exclusions kept with why: a flag on most of
    the dataset's scans describes it (`training.dataset_flags`). A configured list is used as written."""
    if "exclude_flags" in scan_filter.model_fields_set:
        return list(scan_filter.exclude_flags), {}
    qc_flags = manifest.loc[manifest["image_kind"] == kind, "qc_flags"]
    flags, kept = keep_dataset_wide(list(scan_filter.exclude_flags), qc_flags)
    return flags, {flag: kept_reason(flag, share) for flag, share in kept.items()}


def _select(manifest: pd.DataFrame, kind: str, modalities: list[str] | None, exclude_flags: list[str],
            excluded: set[str]) -> tuple[pd.DataFrame, dict[str, int]]:  # fmt: skip
    """The scans pretrained on, and how many each rule left out."""
    counts: dict[str, int] = {}
    selected = manifest
    rules = [
        (lambda frame: frame["image_kind"] != kind, f"not {kind}"),
        (lambda frame: ~frame["modality"].isin(modalities or list(frame["modality"])), "other modality"),
        (lambda frame: frame["qc_flags"].apply(lambda flags: bool(set(flags) & set(exclude_flags))),
         "excluded QC flag"),
        (lambda frame: frame["patient_id"].isin(excluded), EXCLUDED_PATIENT),
    ]  # fmt: skip
    for rule, reason in rules:
        mask = rule(selected).astype(bool)
        if mask.any():
            counts[reason] = int(mask.sum())
        selected = selected.loc[~mask]
    return selected, counts


class PoolSet(Dataset):
    """Scans as tensors, in memory when they fit (the usual case for small 2D and 3D inputs)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        first = np.load(self.paths[0], mmap_mode="r")
        self.sample_shape = tuple(first.shape)
        self._memory: torch.Tensor | None = None
        if int(first.nbytes) * len(self.paths) <= PRELOAD_LIMIT_BYTES:
            self._memory = torch.stack([self._load(i) for i in range(len(self.paths))])

    def _load(self, index: int) -> torch.Tensor:
        array = np.load(self.paths[index], allow_pickle=False)
        if tuple(array.shape) != self.sample_shape:
            raise ConfigError(
                f"a preprocessed tensor has shape {tuple(array.shape)}, not {self.sample_shape}",
                where=self.paths[index].name,
                fix="re-run `medtl ingest`: every scan of one spec must have the spec's shape",
            )
        return torch.from_numpy(np.ascontiguousarray(array, np.float32))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._memory[index] if self._memory is not None else self._load(index)
