"""A dataset folder is written by someone else as far as training knows: a damaged cached tensor is made again
from its scan's cached array (once that array's hash is confirmed) before any training; a damaged array as well
stops the run there, with what to do, instead of failing when the tensor is loaded."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medtl.errors import DataContractError
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.cache import ScanCache
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.preprocess import spec_hash
from medtl.training.data import dataset_spec, ensure_preprocessed, read_manifest
from support.dicom_factory import ct_series

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(11)
    for index in range(4):
        ct_series(tmp_path / "src" / f"s{index}", rng.integers(0, 1500, (5, 20, 20)).astype(np.uint16),
                  patient_id=f"P{index}")  # fmt: skip
    ingest_sources([tmp_path / "src"], out=tmp_path / "ds", pseudonymizer=PSEUDO, workers=1)
    return tmp_path / "ds"


def _write_npy_header(path, shape):
    """A .npy that declares `shape` of float32 but holds 16 bytes of data."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(b"\0" * 16)


def test_damaged_tensors_are_made_again_with_the_values_ingest_made(dataset):
    scans, spec = read_manifest(dataset), dataset_spec(dataset)
    key = spec_hash(spec)
    cache = ScanCache(dataset)
    paths = ensure_preprocessed(dataset, scans, spec, key)
    originals = [np.load(dataset / path) for path in paths]
    shape = originals[0].shape
    damaged = [dataset / path for path in paths]
    damaged[0].write_bytes(damaged[0].read_bytes()[:-100])  # truncated
    np.save(damaged[1], originals[1].reshape(shape[0], *reversed(shape[1:])))  # same size, another shape
    _write_npy_header(damaged[2], (10**6, 10**6))  # declares 4 TB
    damaged[3].unlink()
    assert not any(cache.holds_tensor(path, shape) for path in paths)

    again = ensure_preprocessed(dataset, scans, spec, key)
    assert again == paths and all(cache.holds_tensor(path, shape) for path in again)
    for path, original in zip(again, originals, strict=True):
        np.testing.assert_array_equal(np.load(dataset / path), original)


def test_a_damaged_array_under_a_damaged_tensor_stops_before_training_and_says_what_to_do(dataset):
    scans, spec = read_manifest(dataset), dataset_spec(dataset)
    key = spec_hash(spec)
    paths = ensure_preprocessed(dataset, scans, spec, key)
    (dataset / paths[1]).unlink()
    array_path = dataset / scans["cache_path"].iloc[1]
    array = np.load(array_path)
    np.save(array_path, array + 1)  # readable, but not the content ingest hashed
    with pytest.raises(DataContractError, match="cached array is missing or damaged") as caught:
        ensure_preprocessed(dataset, scans, spec, key)
    assert "--full" in str(caught.value) and scans["scan_id"].iloc[1] in str(caught.value)
    _write_npy_header(array_path, (10**6, 10**6))
    with pytest.raises(DataContractError, match="cached array is missing or damaged"):
        ensure_preprocessed(dataset, scans, spec, key)
    shutil.rmtree(dataset / "cache")  # what the message asks for
    ingest_sources([dataset.parent / "src"], out=dataset, pseudonymizer=PSEUDO, workers=1, incremental=False)
    assert ensure_preprocessed(dataset, read_manifest(dataset), spec, key) == paths
    np.testing.assert_array_equal(np.load(array_path), array)
