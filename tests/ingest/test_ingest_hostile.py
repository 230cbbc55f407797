"""Hostile input: size lies, decompression bombs, exceptions from one series, symlinks, identity collisions, leaks.

Every case here used to stop a run, hide a file, merge identities or print an identifier; each test pins the
reason code a person reads in ingest_report.json.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medtl.contracts import read_json
from medtl.contracts.ingest import Fingerprint, IngestReport
from medtl.errors import LabelsError, LimitExceededError
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest import execution as execution_module
from medtl.ingest import header_pass
from medtl.ingest import worker as worker_module
from medtl.ingest.discover import classify_file
from medtl.ingest.execution import process_pool
from medtl.ingest.labels import read_labels
from medtl.ingest.pipeline import ingest_sources
from medtl.io.dicom.decode import decode_object
from medtl.io.limits import GIB, MIB, IngestLimits
from medtl.io.nifti import read_nifti
from support.dicom_factory import ct_series
from support.hostile_files import (
    PLANTED,
    crashing_on_patient,
    deflate_bomb_dicom,
    good_series,
    gzip_nifti_bomb,
    jpeg_size_lie_dicom,
    nifti_header_lie,
    rle_bomb_dicom,
    size_lie_dicom,
)

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


def _ingest(src: Path, out: Path, **kwargs):
    return ingest_sources([src], out=out, pseudonymizer=PSEUDO, workers=1, **kwargs)


def _fates(out: Path) -> tuple[IngestReport, dict[str, list[str]]]:
    report = read_json(IngestReport, out / "ingest_report.json")
    index = pd.read_csv(out / "private" / "source_index.csv")
    names = dict(zip(index.file_id, index.relative_path, strict=True))
    by_code: dict[str, list[str]] = {}
    for record in report.files:
        by_code.setdefault(record.reason_code or record.status, []).append(names[record.file_id])
    return report, {code: sorted(paths) for code, paths in by_code.items()}


def test_a_small_dicom_claiming_60000_squared_pixels_is_quarantined_and_the_run_completes(tmp_path):
    good_series(tmp_path / "src" / "good")
    liar = size_lie_dicom(tmp_path / "src" / "liar" / "big.dcm")
    assert liar.stat().st_size < 20_000
    _ingest(tmp_path / "src", tmp_path / "out")
    report, fates = _fates(tmp_path / "out")
    assert report.counts == {"ingested": 4, "skipped": 0, "quarantined": 1}
    assert fates["image_too_large"] == ["liar/big.dcm"]
    (reason,) = [r.reason for r in report.files if r.reason_code == "image_too_large"]
    assert "max_frame_pixels" in reason and "--max-frame-megapixels" in reason
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 1


def test_any_exception_from_one_series_quarantines_that_series_only(tmp_path, monkeypatch):
    src = tmp_path / "src"
    good_series(src / "good", patient_id="GOOD01")
    good_series(src / "oom", patient_id="OOM01")
    good_series(src / "boom", patient_id="BOOM01")
    real = worker_module.read_plan

    def flaky(plan, *args, **kwargs):
        patient = plan.headers[0].patient_id
        if patient == "OOM01":
            raise MemoryError
        if patient == "BOOM01":
            raise RuntimeError("a decoder library failed on value ZQX")
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(worker_module, "read_plan", flaky)
    _ingest(src, tmp_path / "out")
    report, fates = _fates(tmp_path / "out")
    assert report.counts == {"ingested": 4, "skipped": 0, "quarantined": 8}
    assert [Path(p).parent.name for p in fates["out_of_memory"]] == ["oom"] * 4
    assert [Path(p).parent.name for p in fates["unexpected_error"]] == ["boom"] * 4
    reasons = {r.reason for r in report.files if r.reason_code == "unexpected_error"}
    assert reasons == {"reading this scan raised RuntimeError; the files are quarantined, the rest of the run goes on"}
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_decoder_that_crashes_its_worker_process_costs_that_series_only(tmp_path, monkeypatch, workers):
    """A C decoder can kill its process instead of raising: only that series is lost, with one worker too (which
    reads in a process of its own, not in the ingest process)."""
    src = tmp_path / "src"
    for name in ("a", "b", "crash", "c", "d", "e"):
        good_series(src / name, patient_id=f"P{name.upper()}01")
    segfaulting = crashing_on_patient(worker_module.read_plan, "PCRASH01")
    monkeypatch.setattr(worker_module, "read_plan", segfaulting)  # inherited by the forked workers
    ingest_sources([src], out=tmp_path / "out", pseudonymizer=PSEUDO, workers=workers)
    report, fates = _fates(tmp_path / "out")
    assert report.counts == {"ingested": 20, "skipped": 0, "quarantined": 4}
    assert [Path(p).parent.name for p in fates["worker_crashed"]] == ["crash"] * 4
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 5
    assert all(
        (tmp_path / "out" / p).exists() for p in pd.read_parquet(tmp_path / "out" / "manifest.parquet").cache_path
    )


def test_a_crash_inside_a_batch_of_series_costs_that_series_only(tmp_path, monkeypatch):
    """Small series go to the workers in batches: a decoder that kills its process in the middle of one costs
    that series, not its batch-mates, which are decoded again (their batch alone, then each alone)."""
    src = tmp_path / "src"
    names = [f"s{number:02d}" for number in range(24)]
    for name in names:
        good_series(src / name, patient_id=f"P{name.upper()}")
    sizes = []
    real_batches = execution_module.batch_items
    segfaulting = crashing_on_patient(worker_module.read_plan, "PS05")

    def recorded(items, **kwargs):
        batches = real_batches(items, **kwargs)
        sizes.append([len(batch) for batch in batches])
        return batches

    monkeypatch.setattr(worker_module, "read_plan", segfaulting)  # inherited by the forked workers
    monkeypatch.setattr(execution_module, "batch_items", recorded)
    ingest_sources([src], out=tmp_path / "out", pseudonymizer=PSEUDO, workers=1)
    assert sizes[0] == [3] * 8  # 24 series, one worker: eight batches of three
    report, fates = _fates(tmp_path / "out")
    assert [Path(p).parent.name for p in fates["worker_crashed"]] == ["s05"] * 4
    assert report.counts == {"ingested": 23 * 4, "skipped": 0, "quarantined": 4}
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(manifest) == 23 and all((tmp_path / "out" / p).exists() for p in manifest.cache_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_header_reader_that_crashes_its_worker_process_costs_that_file_only(tmp_path, monkeypatch, workers):
    """The header pass is pure Python, but a worker dying there must not stop the run either: the file that kills
    its process alone is quarantined, every other file is read, and the passes after it run in new pools."""
    src = tmp_path / "src"
    for name in ("a", "b", "c", "d", "e"):
        good_series(src / name, patient_id=f"P{name.upper()}01")
    (src / "b" / "001.dcm").rename(src / "b" / "crash.dcm")
    real = header_pass.classify_file

    def segfaulting(index, path, relative, *args, **kwargs):
        if relative.endswith("crash.dcm"):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(index, path, relative, *args, **kwargs)

    monkeypatch.setattr(header_pass, "classify_file", segfaulting)  # inherited by the forked workers
    ingest_sources([src], out=tmp_path / "out", pseudonymizer=PSEUDO, workers=workers)
    report, fates = _fates(tmp_path / "out")
    assert fates["worker_crashed"] == ["b/crash.dcm"]
    assert report.counts["ingested"] == 19 and report.counts["quarantined"] == 1
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(manifest) == 5  # series b without its crashing slice: still assembled from the others
    assert all((tmp_path / "out" / p).exists() for p in manifest.cache_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_preprocessing_that_crashes_its_worker_process_costs_that_scan_only(tmp_path, monkeypatch, workers):
    """The last pass runs numpy and scipy on decoded, size-checked arrays, but a worker dying there must not stop
    the run either: the scan whose process dies alone is left out and its files quarantined, the rest are made."""
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    for k, rows in enumerate((6, 6, 9, 6, 6, 6)):  # the 9-row series is the one whose preprocessing crashes
        ct_series(src / f"s{k}", rng.integers(0, 3000, size=(4, rows, 8)).astype(np.uint16), patient_id=f"P{k}")
    real = worker_module.preprocess_array

    def segfaulting(array, affine, spec):
        if 9 in array.shape:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(array, affine, spec)

    monkeypatch.setattr(worker_module, "preprocess_array", segfaulting)  # inherited by the forked workers
    out = tmp_path / "out"
    result = ingest_sources([src], out=out, pseudonymizer=PSEUDO, workers=workers)
    report, fates = _fates(out)
    assert fates["preprocess_failed"] == [f"s2/{name}" for name in sorted(os.listdir(src / "s2"))]
    assert {r.reason for r in report.files if r.reason_code == "preprocess_failed"} == {
        "preprocessing this scan crashed its worker process; its files are quarantined, the run goes on"
    }
    assert report.counts == {"ingested": 20, "skipped": 0, "quarantined": 4}
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 5 == result.fingerprint.n_scans
    assert sorted(manifest.patient_id) == sorted(PSEUDO.patient(f"P{k}") for k in (0, 1, 3, 4, 5))
    assert all((out / p).exists() for p in manifest.cache_path)


def _square_unless_thirteen(value: int) -> int:
    if value == 13:
        os.kill(os.getpid(), signal.SIGSEGV)
    if value == 99:
        raise ValueError("the job's own error")
    return value * value


@pytest.mark.parametrize("workers, window", [(1, None), (2, None), (2, 4)])
def test_surviving_runs_every_job_once_in_order_through_a_worker_that_dies(workers, window):
    """What the header and preprocessing passes rely on: every job comes back in order, the one that kills its
    process alone gets what `alone` says, a job's own error still propagates, and the rest run in a new pool."""
    jobs = list(range(30))

    def alone(job: int) -> int:
        done = execution_module.run_alone(_square_unless_thirteen, job)
        return -1 if done is None else done

    with process_pool(workers) as pool:
        found = list(execution_module.surviving(pool, _square_unless_thirteen, jobs, workers, alone, window=window))
        assert execution_module.is_broken(pool)
    assert found == [(job, -1 if job == 13 else job * job) for job in jobs]
    with process_pool(workers) as pool, pytest.raises(ValueError, match="own error"):
        list(execution_module.surviving(pool, _square_unless_thirteen, [1, 99, 2], workers, alone, window=window))


def test_default_limits_admit_a_whole_body_ct_and_refuse_a_60000_square_image():
    limits = IngestLimits()
    assert limits.check_image(shape=(512, 512, 1, 1), bytes_per_sample=2, what="a slice") == 512 * 512 * 2
    limits.check_series(2000 * 512 * 512 * 2, n_files=2000)  # 1 GiB of int16 slices
    assert limits.max_image_bytes == 2 * GIB and limits.max_series_bytes == 4 * GIB
    assert limits.max_file_bytes == 3 * GIB and limits.max_frame_pixels == 16384**2
    for bytes_per_sample in (1, 2):
        with pytest.raises(LimitExceededError) as caught:
            limits.check_image(shape=(60000, 60000, 1, 1), bytes_per_sample=bytes_per_sample, what="an image")
        assert caught.value.reason_code == "image_too_large"
    with pytest.raises(LimitExceededError) as caught:
        limits.check_series(5 * GIB, n_files=3000)
    assert caught.value.reason_code == "series_too_large"
    assert "max_series_bytes" in caught.value.what and "--max-series-gb" in caught.value.what


def test_series_over_the_series_limit_is_quarantined_before_its_volume_is_allocated(tmp_path):
    good_series(tmp_path / "src" / "a", slices=6)
    limits = IngestLimits(max_series_bytes=5 * 16 * 16 * 2)  # five 16 x 16 int16 slices
    _ingest(tmp_path / "src", tmp_path / "out", limits=limits)
    report, fates = _fates(tmp_path / "out")
    assert report.counts["quarantined"] == 6 and len(fates["series_too_large"]) == 6


def test_rle_bomb_is_refused_from_its_header(tmp_path):
    good_series(tmp_path / "src" / "good")
    rle_bomb_dicom(tmp_path / "src" / "rle.dcm")
    _ingest(tmp_path / "src", tmp_path / "out")
    report, fates = _fates(tmp_path / "out")
    assert fates["image_too_large"] == ["rle.dcm"] and report.counts["ingested"] == 4


def test_jpeg_frame_declaring_more_than_its_header_is_refused_before_decoding(tmp_path):
    path = jpeg_size_lie_dicom(tmp_path / "jpeg.dcm", height=4096, width=4096)
    with pytest.raises(LimitExceededError) as caught:
        decode_object(path)
    assert caught.value.reason_code == "decompression_limit"
    assert "16,777,216 bytes" in caught.value.what and "4,096 bytes" in caught.value.what


def test_deflated_dicom_inflates_under_the_budget(tmp_path):
    limits = IngestLimits(max_image_bytes=1 * MIB)  # budget: 1 MiB + 64 MiB of headers
    bomb = deflate_bomb_dicom(tmp_path / "src" / "bomb.dcm", inflated_bytes=96 * MIB)
    assert bomb.stat().st_size < 200_000
    fate = classify_file(0, bomb, "bomb.dcm", limits=limits)
    assert (fate.status, fate.reason_code) == ("quarantined", "decompression_limit")
    small = deflate_bomb_dicom(tmp_path / "ok" / "small.dcm", inflated_bytes=16)
    decoded = decode_object(small, limits=limits)
    assert decoded.transfer_syntax == "Deflated Explicit VR Little Endian"
    np.testing.assert_array_equal(decoded.frames, np.full((1, 8, 8), -1024.0, dtype=np.float32))


def test_nifti_header_lies_and_gzip_bombs_are_quarantined_with_their_codes(tmp_path):
    src = tmp_path / "src"
    nifti_header_lie(src / "lie.nii")
    gzip_nifti_bomb(src / "bomb.nii.gz", extra_gib=0.25)
    nib.save(nib.Nifti1Image(np.arange(512, dtype=np.int16).reshape(8, 8, 8), np.eye(4)), src / "ok.nii.gz")
    _ingest(src, tmp_path / "out")
    _, fates = _fates(tmp_path / "out")
    assert fates["image_too_large"] == ["lie.nii"]
    assert fates["decompression_limit"] == ["bomb.nii.gz"]
    assert fates["ingested"] == ["ok.nii.gz"]
    with pytest.raises(LimitExceededError, match=r"128\.0 GiB"):
        read_nifti(src / "lie.nii")


def test_symlinks_out_of_a_source_are_skipped_and_links_inside_are_read_once(tmp_path):
    outside = tmp_path / "elsewhere"
    good_series(outside / "series", patient_id="OUT01")
    src = tmp_path / "src"
    good_series(src / "series", patient_id="IN01", slices=3)
    (src / "links").mkdir()
    os.symlink(outside / "series" / "000.dcm", src / "links" / "outside.dcm")
    os.symlink(outside / "series", src / "links" / "outside_folder")
    os.symlink(src / "series" / "000.dcm", src / "links" / "inside.dcm")
    os.symlink(tmp_path / "missing.dcm", src / "links" / "dangling.dcm")
    _ingest(src, tmp_path / "out")
    report, fates = _fates(tmp_path / "out")
    assert fates["symlink_outside_source"] == ["links/outside.dcm", "links/outside_folder"]
    assert fates["broken_symlink"] == ["links/dangling.dcm"]
    assert len(fates["ingested"]) == 3  # the inside link and its target are one file
    assert report.counts == {"ingested": 3, "skipped": 3, "quarantined": 0}
    assert "OUT01" not in json.dumps(json.loads((tmp_path / "out" / "private" / "phi_terms.json").read_text()))


def test_a_source_reached_through_a_linked_folder_still_reads_a_linked_file_once(tmp_path):
    # real paths of plain files come from the source's resolved path plus the walked names: the link's target and
    # the file itself must still meet as one file when the source path itself goes through a link
    src = tmp_path / "real" / "src"
    good_series(src / "series", patient_id="IN01", slices=3)
    (src / "links").mkdir()
    os.symlink(src / "series" / "001.dcm", src / "links" / "inside.dcm")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    _ingest(tmp_path / "alias" / "src", tmp_path / "out")
    report, fates = _fates(tmp_path / "out")
    assert report.counts == {"ingested": 3, "skipped": 0, "quarantined": 0}
    assert sorted(fates["ingested"]) == ["links/inside.dcm", "series/000.dcm", "series/002.dcm"]


def test_nifti_study_folders_of_different_patients_are_different_studies(tmp_path):
    src = tmp_path / "src"
    volume = np.arange(512, dtype=np.int16).reshape(8, 8, 8)
    for patient in ("patA", "patB", "patC"):
        (src / patient / "study1").mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), src / patient / "study1" / "t1.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), src / "patA" / "study1" / "t2.nii.gz")
    _ingest(src, tmp_path / "out")
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest.patient_id.nunique() == 3
    assert manifest.study_id.nunique() == 3
    assert manifest.groupby("patient_id").study_id.nunique().tolist() == [1, 1, 1]
    assert read_json(Fingerprint, tmp_path / "out" / "fingerprint.json").n_studies == 3


def test_no_planted_identifier_reaches_logs_stderr_warnings_or_messages(tmp_path, caplog, capsys):
    src = tmp_path / "src"
    paths = ct_series(src / "series", np.zeros((3, 8, 8), np.uint16), patient_id=PLANTED["patient_id"],
                      series_uid=PLANTED["series_uid"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pydicom").disabled = True
        try:
            for path in paths:
                ds = pydicom.dcmread(path)
                ds.PatientName, ds.StudyInstanceUID = PLANTED["name"], PLANTED["study_uid"]
                ds.StudyDate = ds.PatientBirthDate = PLANTED["bad_date"]
                ds.SpecificCharacterSet = PLANTED["bad_date"]  # pydicom quotes an unknown character set
                ds.save_as(path)
            other = pydicom.dcmread(paths[0])
            other.SOPClassUID = other.file_meta.MediaStorageSOPClassUID = PLANTED["study_uid"] + ".5"
            other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = PLANTED["series_uid"] + ".9"
            other.save_as(src / "unknown_class.dcm")
        finally:
            logging.getLogger("pydicom").disabled = False
    labels = tmp_path / "labels.csv"
    labels.write_text(f"patient_id,label\n{PLANTED['patient_id']},{PLANTED['label_cell']}\n")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _ingest(src, tmp_path / "out")
        with pytest.raises(LabelsError) as labels_error:
            read_labels(labels)
    assert result.report.counts == {"ingested": 3, "skipped": 1, "quarantined": 0}
    assert "row 2, column label" in str(labels_error.value)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert "nonconforming_header_values" in list(manifest.qc_flags[0])
    captured = capsys.readouterr()
    seen = "\n".join(
        [
            caplog.text,
            captured.out,
            captured.err,
            str(labels_error.value),
            *(str(w.message) for w in caught),
            (tmp_path / "out" / "ingest_report.json").read_text(),
            (tmp_path / "out" / "qc_summary.md").read_text(),
        ]
    )
    for kind, value in PLANTED.items():
        assert value not in seen, kind
    shutil.rmtree(tmp_path / "out")


def test_a_series_declaring_an_impossible_spacing_is_quarantined_and_a_tiny_one_resampled(tmp_path):
    """Beside series of 0.7 mm: one declaring 1e-5 mm pixels (finer than any scanner, but a number) asks for a shrink
    by 70,000 in plane, whose anti-aliasing kernel spans 280,000 taps; it is preprocessed like the others. One
    declaring 1e-9 mm (0 in the manifest's 6-decimal affine) stopped the whole run with a ZeroDivisionError in the
    preprocessing pass; it is now quarantined at decode, with the reason, and the run goes on."""
    import time

    from medtl.ingest.cache import ScanCache
    from medtl.ingest.preprocess import spec_hash

    rng = np.random.default_rng(3)
    pixel_spacings = {"normal0": 0.7, "normal1": 0.7, "normal2": 0.7, "fine": 1e-5, "impossible": 1e-9}
    for index, (name, spacing) in enumerate(pixel_spacings.items()):
        ct_series(tmp_path / "src" / name, rng.integers(0, 2000, (6, 24, 24)).astype(np.uint16),
                  spacing=(spacing, spacing), patient_id=f"P{index}")  # fmt: skip
    started = time.perf_counter()
    result = ingest_sources([tmp_path / "src"], out=tmp_path / "out", pseudonymizer=PSEUDO, workers=1)
    assert time.perf_counter() - started < 60
    assert result.spec is not None and result.spec.target_spacing[:2] == [0.7, 0.7]
    quarantined = [record for record in result.report.files if record.status == "quarantined"]
    assert len(quarantined) == 6 and {r.reason_code for r in quarantined} == {"scan_rejected"}
    assert all("voxel spacing outside" in (r.reason or "") for r in quarantined)
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(frame) == 4 and sorted(round(row[0], 5) for row in frame["spacing"]) == [1e-05, 0.7, 0.7, 0.7]
    cache, key = ScanCache(tmp_path / "out"), spec_hash(result.spec)
    tensors = [cache.load_array(cache.preprocessed_relpath(row.pixel_hash, key)) for row in frame.itertuples()]
    assert all(tensor.shape == (1, *result.spec.target_shape) for tensor in tensors)
    assert all(np.isfinite(tensor).all() and tensor.max() > 0 for tensor in tensors)


@pytest.mark.parametrize("spacing", [1e-9, 0.0, float("nan"), float("inf"), 1e6])
def test_a_spacing_no_scanner_records_quarantines_a_volume_and_flags_a_2d_image(spacing):
    from medtl.errors import ReadError
    from medtl.ingest.qc import check_scan, intensity_stats
    from medtl.io.scan import Scan

    volume = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    image = volume[..., 0]
    bad_axis = np.diag([0.7, spacing, 2.5, 1.0])
    with pytest.raises(ReadError, match="voxel spacing outside"):
        check_scan(Scan(volume, bad_axis, "volume", "RAS"), intensity_stats(volume))
    flat = Scan(image, bad_axis, "image2d", "image")
    check_scan(flat, intensity_stats(image))
    assert flat.qc_flags == ["implausible_spacing"]
    fine = Scan(volume, np.diag([1e-5, 0.7, 1e5, 1.0]), "volume", "RAS")  # the bounds themselves are plausible
    check_scan(fine, intensity_stats(volume))
    assert "implausible_spacing" not in fine.qc_flags


def _pool_kind(answers) -> None:
    with process_pool(1) as executor:
        answers.put(None if executor is None else executor.submit(os.getpid).result() != os.getpid())


def test_one_worker_reads_in_a_process_of_its_own_unless_this_process_may_not_start_one(caplog, monkeypatch):
    """Isolation is what keeps a crashing decoder from ending the run; only a daemonic process (which may not start
    children) reads files itself, and says so."""
    with process_pool(1) as executor:
        assert executor is not None and executor.submit(os.getpid).result() != os.getpid()
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    daemonic = context.Process(target=_pool_kind, args=(answers,), daemon=True)
    daemonic.start()
    assert answers.get(timeout=60) is None
    daemonic.join(timeout=60)
    assert daemonic.exitcode == 0
    monkeypatch.setattr(execution_module, "current_process", lambda: daemonic)  # as seen from inside it
    with caplog.at_level(logging.WARNING, logger="medtl.ingest.execution"), process_pool(2) as executor:
        assert executor is None
    assert "a decoder that crashes on a file ends the run" in caplog.text


@pytest.mark.parametrize(
    "relatives",
    [["b/2.dcm", "a b/é.dcm", " lead.dcm", "a/1.dcm"], ["a,b.dcm", 'q"x.dcm', "line\nbreak.dcm", "ok.dcm"]],
    ids=["plain paths", "paths the csv module quotes"],
)
def test_the_private_source_index_reads_back_every_path_exactly(tmp_path, relatives):
    """source_index.csv is how a site finds the file behind a quarantine entry: whatever its path holds, the csv
    module reads it back unchanged, and the file is what the csv module itself would write."""
    from medtl.ingest.privacy import PrivateRecords

    private = PrivateRecords(tmp_path, Pseudonymizer(DEVELOPMENT_KEY, key_id="development"))
    private.keep(
        (f"F-{i:016x}", i % 2, relative, "ingested" if i else "skipped") for i, relative in enumerate(relatives)
    )
    private.write([tmp_path], None)
    text = (tmp_path / "private" / "source_index.csv").read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["file_id", "source_index", "relative_path", "status"]
    expected = sorted(((i % 2, relative), f"F-{i:016x}") for i, relative in enumerate(relatives))
    assert [(int(row[1]), row[2]) for row in rows[1:]] == [place for place, _ in expected]
    assert [row[0] for row in rows[1:]] == [file_id for _, file_id in expected]
    written = io.StringIO()
    csv.writer(written).writerows(rows)
    assert text == written.getvalue()
