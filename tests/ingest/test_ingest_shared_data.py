"""Ingest on real public DICOM and NIfTI (../shared/data): the cases loaders commonly get wrong."""

from __future__ import annotations

import pytest

from medtl.contracts import read_json, read_table
from medtl.contracts.ingest import IngestReport, ManifestRow
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.pipeline import ingest_sources

pytestmark = pytest.mark.shared_data
PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


@pytest.fixture
def ingested(shared_data, tmp_path):
    out = tmp_path / "dataset"
    ingest_sources([shared_data / "dicom", shared_data / "nifti"], out=out, pseudonymizer=PSEUDO, workers=1)
    return read_table(ManifestRow, out / "manifest.parquet"), read_json(IngestReport, out / "ingest_report.json")


def test_ge_4d_fmri_is_ten_volumes_of_fifteen_slices(ingested):
    manifest, _ = ingested
    epi = manifest[(manifest.modality == "MR") & (manifest.volumes_in_series == 10)]
    assert len(epi) == 10
    assert all(list(shape) == [64, 64, 15] for shape in epi["shape"])
    assert sorted(epi.volume_index) == list(range(10))
    assert all(spacing[2] == pytest.approx(5.0) for spacing in epi["spacing"])
    # time points differ (it is a time series, not ten copies)
    assert epi.pixel_hash.nunique() == 10


def test_enhanced_mr_is_one_six_slice_volume(ingested):
    manifest, _ = ingested
    enhanced = manifest[manifest.sop_class == "Enhanced MR Image Storage"]
    assert len(enhanced) == 1
    assert list(enhanced.iloc[0]["shape"]) == [64, 64, 6]
    assert list(enhanced.iloc[0]["spacing"]) == pytest.approx([3.375, 3.375, 2.4], abs=1e-3)


def test_mosaic_and_readme_files_are_skipped_with_reasons(ingested):
    _, report = ingested
    assert report.reasons == {"not_an_image": 2, "siemens_mosaic_unsupported": 2}
    assert report.counts["quarantined"] == 0
    assert sum(report.counts.values()) == len(report.files) == 160


def test_nifti_4d_is_split_and_a_lesion_mask_is_flagged(ingested):
    manifest, _ = ingested
    nifti = manifest[manifest.source_format == "nifti"]
    four_d = nifti[nifti.volumes_in_series == 2]
    assert len(four_d) == 2 and all(list(s) == [128, 96, 24] for s in four_d["shape"])
    assert len(nifti[nifti.volumes_in_series == 20]) == 20
    masks = nifti[nifti.qc_flags.apply(lambda flags: "possible_label_map" in list(flags))]
    assert len(masks) == 1 and masks.iloc[0].intensity_max == 3.0
    assert all(orientation == "RAS" for orientation in nifti.orientation)


def test_medmnist_import_then_ingest_keeps_images_labels_and_official_split(shared_data, tmp_path):
    from medtl.datasets.medmnist import import_medmnist

    source = shared_data / "medmnist" / "breastmnist.npz"
    if not source.exists():
        pytest.skip("breastmnist.npz not in the shared data")
    import numpy as np

    arrays = np.load(source)
    import_medmnist("breastmnist", source=str(source), out=tmp_path / "breast", limit=12)
    out = tmp_path / "dataset"
    ingest_sources([tmp_path / "breast"], out=out, labels=tmp_path / "breast" / "labels.csv", pseudonymizer=PSEUDO)
    manifest = read_table(ManifestRow, out / "manifest.parquet")
    assert len(manifest) == 36 and set(manifest.modality) == {"US"} and set(manifest.image_kind) == {"image2d"}
    assert manifest.split.value_counts().to_dict() == {"train": 12, "val": 12, "test": 12}
    assert all(list(shape) == [28, 28] for shape in manifest["shape"])
    for split in ("train", "val", "test"):
        expected_labels = sorted(str(int(v)) for v in arrays[f"{split}_labels"][:12, 0])
        assert sorted(manifest.label[manifest.split == split]) == expected_labels
        images = {np.load(out / p).astype(np.float32).tobytes() for p in manifest.cache_path[manifest.split == split]}
        assert images == {arrays[f"{split}_images"][i].astype(np.float32).tobytes() for i in range(12)}
