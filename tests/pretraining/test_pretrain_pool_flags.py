"""The pretraining pool and the plan share one rule for QC flags: a flag on most of a dataset's scans describes the
dataset (shape masks), a flag on a few marks outliers; a configured list is used as written, and when nothing is left
the error says what removed the scans."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medtl.contracts import read_table, write_table
from medtl.contracts.ingest import ManifestRow
from medtl.errors import ConfigError
from medtl.pretraining.config import ScanFilter
from medtl.pretraining.pool import build_pool
from support.medmnist_like import make_dataset


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("masks"), "adrenalmnist3d", sizes={"train": 10, "val": 2, "test": 4})


def flag(dataset: Path, how_many: int) -> Path:
    """Mark the first `how_many` scans of the manifest as possible label maps."""
    frame = read_table(ManifestRow, dataset / "manifest.parquet")
    frame["qc_flags"] = [[*flags, "possible_label_map"] if k < how_many else list(flags)
                         for k, flags in enumerate(frame["qc_flags"])]  # fmt: skip
    write_table(ManifestRow, frame, dataset / "manifest.parquet")
    return dataset


@pytest.fixture(scope="module")
def images_with_two_outliers(tmp_path_factory) -> Path:
    dataset = make_dataset(tmp_path_factory.mktemp("img"), "breastmnist", sizes={"train": 12, "val": 2, "test": 2})
    return flag(dataset, 2)


def test_a_dataset_of_masks_is_pretrained_on_and_the_record_says_why(masks):
    pool = build_pool([masks], ScanFilter(), None, [])
    frame = read_table(ManifestRow, masks / "manifest.parquet")
    assert frame["qc_flags"].apply(lambda f: "possible_label_map" in f).all()  # every scan is a mask
    assert len(pool.paths) == int((frame["split"] != "test").sum())  # all but the locked test
    (use,) = pool.datasets
    assert set(use.kept_flags) == {"possible_label_map"} and "100%" in use.kept_flags["possible_label_map"]
    assert "excluded QC flag" not in use.left_out


def test_a_flag_on_a_few_scans_still_marks_outliers(images_with_two_outliers):
    pool = build_pool([images_with_two_outliers], ScanFilter(), None, [])
    (use,) = pool.datasets
    assert use.kept_flags == {} and use.left_out["excluded QC flag"] == 2


def test_a_configured_flag_list_is_used_as_written_and_the_error_counts_what_was_removed(masks, tmp_path):
    written = ScanFilter(exclude_flags=["possible_label_map"])
    with pytest.raises(ConfigError) as raised:
        build_pool([masks], written, None, [])
    message = str(raised.value)
    assert "excluded QC flag: 16" in message  # every scan: the flag rule comes before the locked-test exclusion
    assert "scans.exclude_flags" in message


def test_the_rule_is_applied_per_dataset_in_a_mixed_pool(images_with_two_outliers, tmp_path):
    every_scan_flagged = flag(shutil.copytree(images_with_two_outliers, tmp_path / "copy"), 16)
    pool = build_pool([images_with_two_outliers, every_scan_flagged], ScanFilter(), None, [])
    outliers, masks_like = pool.datasets
    assert outliers.kept_flags == {} and outliers.left_out["excluded QC flag"] == 2
    assert set(masks_like.kept_flags) == {"possible_label_map"} and "excluded QC flag" not in masks_like.left_out
    # the same patients in both: the two locked-test scans are left out of both; the rest of the copy is all kept
    assert masks_like.scans == 16 - 2 and len(pool.paths) == outliers.scans + masks_like.scans


def test_a_named_dataset_of_the_other_image_kind_stops_the_pool_instead_of_vanishing(masks, images_with_two_outliers):
    """Volumes and 2D images cannot share one pool: a dataset that would give it nothing is an error naming it,
    not a pool that silently leaves it out."""
    with pytest.raises(ConfigError, match=r"holds 2D images only, and the pool's preprocessing \(3D"):
        build_pool([masks, images_with_two_outliers], ScanFilter(), None, [])
    with pytest.raises(ConfigError, match=r"holds volumes only, and the pool's preprocessing \(2D"):
        build_pool([images_with_two_outliers, masks], ScanFilter(), None, [])
