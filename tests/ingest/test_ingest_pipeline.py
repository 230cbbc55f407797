"""`ingest_sources` end to end on a small written cohort: every file accounted for, no PHI, cache and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.contracts import PreprocessingSpec, read_json, read_table
from medtl.contracts.ingest import Fingerprint, IngestReport, ManifestRow
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest import cache as cache_module
from medtl.ingest import worker as worker_module
from medtl.ingest.cache import DECODED_INDEX, ScanCache
from medtl.ingest.pipeline import ingest_sources
from medtl.ingest.preprocess import spec_hash
from support.dicom_factory import ct_series, dx_image

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
PHI = ["DOE", "JANE", "PAT001", "PAT002", "ACC123", "19700101"]


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    rng = np.random.default_rng(7)
    ct_series(src / "PAT001" / "ct", rng.integers(0, 2000, (6, 8, 8)).astype(np.uint16))
    # a 2-time-point series: both volumes at the same 4 positions
    stored = rng.integers(0, 2000, (8, 8, 8)).astype(np.uint16)
    uid = "1.2.826.0.1.3680043.8.498.77"
    ct_series(src / "PAT002" / "dyn_a", stored[:4], series_uid=uid, patient_id="PAT002")
    ct_series(src / "PAT002" / "dyn_b", stored[4:], series_uid=uid, patient_id="PAT002", names=list("wxyz"))
    import pydicom

    for index, path in enumerate(sorted((src / "PAT002" / "dyn_b").iterdir())):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = 10 + index
        ds.save_as(path)
    dx_image(src / "PAT001" / "chest.dcm", rng.integers(0, 4096, (16, 12)).astype(np.uint16))
    (src / "notes.txt").write_text("scanner notes, not an image")
    import pydicom
    from pydicom.uid import generate_uid

    extra = pydicom.dcmread(sorted((src / "PAT001" / "ct").iterdir())[2])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    extra.ImagePositionPatient = [-30.0, -20.0, 40.0]
    truncated = src / "PAT001" / "broken.dcm"
    extra.save_as(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 40])
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "patient_id,label,patient_name,birth_date\nPAT001,1,DOE^JANE,19700101\nPAT002,0,DOE^JOHN,19700101\n"
        "PAT999,1,NOBODY^X,19000101\n"
    )
    return tmp_path


def _ingest(cohort: Path, out: Path, **kwargs):
    return ingest_sources(
        [cohort / "src"], out=out, labels=cohort / "labels.csv", pseudonymizer=PSEUDO, workers=1, **kwargs
    )


def test_every_file_is_accounted_for_and_scans_are_right(cohort, tmp_path):
    out = tmp_path / "dataset"
    result = _ingest(cohort, out)
    report = read_json(IngestReport, out / "ingest_report.json")
    n_files = sum(1 for p in (cohort / "src").rglob("*") if p.is_file())
    assert len(report.files) == n_files == 6 + 8 + 1 + 1 + 1
    assert len({f.file_id for f in report.files}) == n_files
    statuses = {f.status for f in report.files}
    assert report.counts == {"ingested": 15, "skipped": 1, "quarantined": 1}, statuses
    broken = [f for f in report.files if f.status == "quarantined"]
    assert broken[0].reason_code == "decode_failed"
    assert [f.reason_code for f in report.files if f.status == "skipped"] == ["not_an_image"]

    manifest = read_table(ManifestRow, out / "manifest.parquet")
    assert len(manifest) == result.fingerprint.n_scans == 4  # CT, DX, two dynamic volumes
    dynamic = manifest[manifest.volumes_in_series == 2].sort_values("volume_index")
    assert list(dynamic.volume_index) == [0, 1] and dynamic.series_id.nunique() == 1
    assert [list(s) for s in dynamic["shape"]] == [[8, 8, 4], [8, 8, 4]]
    assert set(manifest.label) == {"0", "1"}
    assert manifest.groupby("patient_id").label.nunique().max() == 1
    assert (manifest.image_kind == "image2d").sum() == 1
    assert report.labels.unmatched_rows == [4] and report.labels.ignored_columns == ["patient_name", "birth_date"]


def test_no_phi_in_any_output_outside_private(cohort, tmp_path):
    out = tmp_path / "dataset"
    _ingest(cohort, out)
    texts = []
    for path in out.rglob("*"):
        if path.is_file() and "private" not in path.parts and path.suffix != ".npy":
            texts.append((path.name, path.read_bytes().decode("latin-1")))
    assert {"manifest.parquet", "fingerprint.json", "ingest_report.json", "qc_summary.md"} <= {n for n, _ in texts}
    for name, text in texts:
        for term in [*PHI, str(cohort), "notes.txt", "broken.dcm"]:
            assert term not in text, f"{term!r} leaked into {name}"
    terms = json.loads((out / "private" / "phi_terms.json").read_text())
    assert "DOE^JANE" in terms["patient_names"] and "PAT001" in terms["patient_ids"]


def _no_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a series whose files were decoded before was decoded again")

    monkeypatch.setattr(worker_module, "read_plan", refuse)
    monkeypatch.setattr(worker_module, "read_nifti", refuse)


def test_rerun_serves_the_cache_and_detects_changes(cohort, tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    _ingest(cohort, out)
    first = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id").reset_index(drop=True)
    _no_decoding(monkeypatch)
    _ingest(cohort, out)
    second = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, second)
    monkeypatch.undo()

    chest = cohort / "src" / "PAT001" / "chest.dcm"
    dx_image(chest, np.full((16, 12), 123, dtype=np.uint16))
    _ingest(cohort, out)
    third = read_table(ManifestRow, out / "manifest.parquet")
    volumes = first.image_kind == "volume"
    assert set(third.pixel_hash[third.image_kind == "volume"]) == set(first.pixel_hash[volumes])
    assert set(third.pixel_hash[third.image_kind == "image2d"]).isdisjoint(first.pixel_hash[~volumes])


def _index_lines(out: Path) -> list[str]:
    return (out / "cache" / DECODED_INDEX).read_text().splitlines()


def test_a_full_reread_is_served_by_the_decoded_index_and_adds_nothing_to_it(cohort, tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    _ingest(cohort, out)
    first = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    lines = _index_lines(out)
    # one line per decode: the CT, each volume of the two-time-point series, the radiograph
    assert len(lines) == 4 and sum(len(json.loads(line.split("\t")[1])) for line in lines) == len(first)
    assert not list((out / "cache").rglob("*.tmp")) and not (out / "cache" / "decoded").exists()
    _no_decoding(monkeypatch)
    _ingest(cohort, out, incremental=False)
    again = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    pd.testing.assert_frame_equal(first, again)
    assert _index_lines(out) == lines


def test_the_decoded_index_keeps_only_scans_in_use_once_it_has_grown(cohort, tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    _ingest(cohort, out)
    lines = _index_lines(out)
    key, records = lines[0].split("\t")[0], json.loads(lines[0].split("\t")[1])
    rng = np.random.default_rng(0)
    stale = []
    for _ in range(100):  # decodes of scans the dataset no longer has (e.g. earlier nights of a scoring inbox)
        fake = [dict(record, pixel_hash=rng.bytes(32).hex()) for record in records]
        stale.append(f"{rng.bytes(32).hex()}\t{json.dumps(fake)}")
    (out / "cache" / DECODED_INDEX).write_text("\n".join(lines + stale) + "\n")
    monkeypatch.setattr(cache_module, "COMPACT_SLACK", 0)  # the bound for a dataset of a few scans, not thousands
    _ingest(cohort, out)  # nothing new: the index is only checked against its bound
    assert sorted(_index_lines(out)) == sorted(lines)
    _no_decoding(monkeypatch)
    _ingest(cohort, out, incremental=False)  # what is in use is still served from the index
    assert ScanCache(out).lookup(key) is not None


def test_a_cache_removed_between_runs_of_one_process_is_made_again(cohort, tmp_path):
    """Cache folders are remembered per process once made; removed in between, they are made again."""
    out = tmp_path / "dataset"
    _ingest(cohort, out)  # one worker: the cache is written by this very process
    first = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    shutil.rmtree(out / "cache")
    _ingest(cohort, out, incremental=False)
    again = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    pd.testing.assert_frame_equal(first, again)
    assert all(ScanCache(out).has(path) for path in again.cache_path)


@pytest.mark.parametrize(
    "damage",
    [
        "cut",  # a run interrupted while appending
        "escape",  # a record naming an array outside the cache
        "wrong_type",  # a record that is not a manifest row's decoded part
        "no_array",  # the array the record names is gone
    ],
)
def test_a_damaged_decoded_index_means_decoding_again_not_an_error(cohort, tmp_path, damage):
    out = tmp_path / "dataset"
    _ingest(cohort, out)
    first = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    index = out / "cache" / DECODED_INDEX
    lines = index.read_text().splitlines()
    key, records = lines[0].split("\t")[0], json.loads(lines[0].split("\t")[1])
    if damage == "cut":
        lines[0] = lines[0][: len(lines[0]) // 2]
    elif damage == "no_array":
        (out / records[0]["cache_path"]).unlink()
    elif damage == "escape":  # the same array, outside the dataset folder
        shutil.copy(out / records[0]["cache_path"], tmp_path / "outside.npy")
        records[0]["cache_path"] = "../outside.npy"
    else:
        records[0]["shape"] = "64x64"
    if damage in ("escape", "wrong_type"):
        lines[0] = f"{key}\t{json.dumps(records)}"
    index.write_text("\n".join(lines) + "\n")
    _ingest(cohort, out, incremental=False)
    again = read_table(ManifestRow, out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
    pd.testing.assert_frame_equal(first, again)
    assert len(_index_lines(out)) == len(lines) + 1  # the series decoded again is indexed again
    assert ScanCache(out).lookup(key) is not None


def test_preprocessed_cache_is_keyed_by_spec(cohort, tmp_path):
    out = tmp_path / "dataset"
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[1.0, 1.0, 2.5], target_shape=[8, 8, 8])
    result = _ingest(cohort, out, spec=spec)
    assert result.spec == spec
    manifest = read_table(ManifestRow, out / "manifest.parquet")
    cache = ScanCache(out)
    volumes = manifest[manifest.image_kind == "volume"]
    for pixel_hash in volumes.pixel_hash:
        tensor = np.load(out / cache.preprocessed_relpath(pixel_hash, spec_hash(spec)))
        assert tensor.shape == (1, 8, 8, 8) and tensor.dtype == np.float32
        assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    other = spec.model_copy(update={"target_shape": [4, 4, 4]})
    _ingest(cohort, out, spec=other)
    assert spec_hash(other) != spec_hash(spec)
    tensor = np.load(out / cache.preprocessed_relpath(volumes.pixel_hash.iloc[0], spec_hash(other)))
    assert tensor.shape == (1, 4, 4, 4)
    fingerprint = read_json(Fingerprint, out / "fingerprint.json")
    assert fingerprint.preprocessing_hash == spec_hash(other)


def test_a_different_site_key_gives_different_pseudonyms(cohort, tmp_path):
    a = _ingest(cohort, tmp_path / "a")
    b = ingest_sources(
        [cohort / "src"], out=tmp_path / "b", pseudonymizer=Pseudonymizer(b"another-site-secret-key!"), workers=1
    )
    ids_a = set(read_table(ManifestRow, tmp_path / "a" / "manifest.parquet").patient_id)
    ids_b = set(read_table(ManifestRow, tmp_path / "b" / "manifest.parquet").patient_id)
    assert len(ids_a) == len(ids_b) == 2 and not ids_a & ids_b
    assert a.fingerprint.pseudonym_key_id == "development" != b.fingerprint.pseudonym_key_id


@pytest.mark.slow
def test_parallel_workers_give_the_same_manifest(cohort, tmp_path):
    _ingest(cohort, tmp_path / "serial")
    shutil.rmtree(tmp_path / "serial" / "cache")
    ingest_sources(
        [cohort / "src"], out=tmp_path / "parallel", labels=cohort / "labels.csv", pseudonymizer=PSEUDO, workers=2
    )
    serial = read_table(ManifestRow, tmp_path / "serial" / "manifest.parquet").sort_values("scan_id")
    parallel = read_table(ManifestRow, tmp_path / "parallel" / "manifest.parquet").sort_values("scan_id")
    pd.testing.assert_frame_equal(serial.reset_index(drop=True), parallel.reset_index(drop=True))


def test_worker_results_hold_no_reference_to_decoded_volumes():
    # a summary holding a view keeps its whole volume alive: memory would grow with every series ingested
    from medtl.ingest.intensity import summarize
    from medtl.ingest.worker import compact_lossless

    volume = np.arange(64 * 64 * 8, dtype=np.float32).reshape(64, 64, 8)
    assert not np.shares_memory(summarize(volume).sketch, volume)
    assert compact_lossless(volume, integral=True, low=0, high=volume.max()).dtype == np.int16
    assert compact_lossless(volume * 2, integral=True, low=0, high=volume.max() * 2).dtype == np.uint16
    assert compact_lossless(volume - 40000, integral=True, low=-40000, high=volume.max() - 40000).dtype == np.float32
    assert compact_lossless(volume + 0.5, integral=False, low=0.5, high=1e4).dtype == np.float32
    signed = compact_lossless(volume - 1024, integral=True, low=-1024, high=volume.max() - 1024)
    assert signed.dtype == np.int16 and np.array_equal(signed.astype(np.float32), volume - 1024)
