"""Incremental ingest: a re-run reads only new and changed files, and its manifest equals a full re-ingest's."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtl.contracts import read_json, read_table
from medtl.contracts.ingest import Fingerprint, IngestReport, ManifestRow
from medtl.contracts.ingest_state import IngestState
from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest import header_pass, worker
from medtl.ingest.incremental import STATE
from medtl.ingest.pipeline import ingest_sources
from support.dicom_factory import ct_series, dx_image

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
SERIES_A = "1.2.826.0.1.3680043.8.498.501"
SERIES_B = "1.2.826.0.1.3680043.8.498.502"
AN_HOUR_AGO = time.time() - 3600


def _age(root: Path) -> None:
    """Files in an archive are older than the run that reads them (files written within the timestamp resolution
    of the last run's start are hashed again, on purpose; see incremental.RACY_WINDOW_NS)."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    ct_series(src / "P1" / "a", rng.integers(0, 2000, (4, 8, 8)).astype(np.uint16), series_uid=SERIES_A,
              patient_id="P1")  # fmt: skip
    ct_series(src / "P2" / "b", rng.integers(0, 2000, (3, 8, 8)).astype(np.uint16), series_uid=SERIES_B,
              patient_id="P2")  # fmt: skip
    dx_image(src / "P3" / "chest.dcm", rng.integers(0, 4096, (12, 10)).astype(np.uint16), patient_id="P3")
    (src / "P4").mkdir()
    nib.save(nib.Nifti1Image(rng.normal(size=(6, 6, 4)).astype(np.float32), np.eye(4)), src / "P4" / "t1.nii.gz")
    (src / "readme.txt").write_text("not an image")
    (tmp_path / "labels.csv").write_text("patient_id,label\nP1,1\nP2,0\nP3,1\nP4,0\n")
    _age(src)
    return tmp_path


class Reads:
    """Counts the files whose header or content ingest reads. The reading happens in worker processes (forked, so
    they inherit the patches), which append one line per file to a log that this process reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="medtl-reads-")  # removed with this object
        self._log = Path(self._folder.name) / "reads.tsv"
        self._log.touch()
        classify, prefetch = header_pass.classify_file, worker._prefetch

        def counting_classify(index, path, relative, root=None, **kwargs):
            self._append([("header", relative)])
            return classify(index, path, relative, root, **kwargs)

        def counting_prefetch(paths, result):
            self._append([("content", path.name) for path in paths])
            return prefetch(paths, result)

        monkeypatch.setattr(header_pass, "classify_file", counting_classify)
        monkeypatch.setattr(worker, "_prefetch", counting_prefetch)

    def _append(self, entries: list[tuple[str, str]]) -> None:
        with self._log.open("a", encoding="utf-8") as log:  # one short write in append mode: whole lines
            log.write("".join(f"{kind}\t{name}\n" for kind, name in entries))

    def _read(self, kind: str) -> list[str]:
        lines = self._log.read_text(encoding="utf-8").splitlines()
        return [name for entry_kind, name in (line.split("\t", 1) for line in lines) if entry_kind == kind]

    @property
    def headers(self) -> list[str]:
        return self._read("header")

    @property
    def contents(self) -> list[str]:
        return self._read("content")

    def reset(self) -> None:
        self._log.write_text("", encoding="utf-8")


def _ingest(root: Path, out: str, **options) -> IngestReport:
    ingest_sources([root / "src"], out=root / out, labels=root / "labels.csv", pseudonymizer=PSEUDO, workers=1,
                   **options)  # fmt: skip
    return read_json(IngestReport, root / out / "ingest_report.json")


def _manifest(folder: Path) -> pd.DataFrame:
    return read_table(ManifestRow, folder / "manifest.parquet").sort_values("scan_id").reset_index(drop=True)


def _assert_equals_full_reingest(root: Path) -> None:
    _ingest(root, "full", incremental=False)
    pd.testing.assert_frame_equal(_manifest(root / "data"), _manifest(root / "full"))
    incremental = read_json(Fingerprint, root / "data" / "fingerprint.json")
    assert incremental == read_json(Fingerprint, root / "full" / "fingerprint.json")
    ours = read_json(IngestReport, root / "data" / "ingest_report.json")
    full = read_json(IngestReport, root / "full" / "ingest_report.json")
    assert ours.files == full.files and ours.counts == full.counts and ours.labels == full.labels


def test_an_unchanged_rerun_reads_no_file_and_writes_the_same_dataset(cohort, monkeypatch):
    first = _ingest(cohort, "data")
    assert first.changes.mode == "full" and first.changes.files_read == 10
    before = _manifest(cohort / "data")
    reads = Reads(monkeypatch)
    again = _ingest(cohort, "data")
    assert reads.headers == [] and reads.contents == []
    assert again.changes.mode == "incremental" and again.changes.files_read == 0
    assert again.changes.files_unchanged == 10 and again.changes.groups_reassembled == 0
    pd.testing.assert_frame_equal(_manifest(cohort / "data"), before)
    assert again.files == first.files
    state = read_json(IngestState, cohort / "data" / STATE)
    assert len(state.files.file_id) == 10 and len(state.scans.scan_id) == len(before)
    assert sorted(state.scans.scan_id) == sorted(before["scan_id"])
    assert "P1" not in state.model_dump_json() and ".dcm" not in state.model_dump_json()


def test_a_new_series_is_the_only_thing_read(cohort, monkeypatch):
    _ingest(cohort, "data")
    reads = Reads(monkeypatch)
    ct_series(cohort / "src" / "P5" / "c", np.full((3, 8, 8), 7, dtype=np.uint16), patient_id="P5")
    report = _ingest(cohort, "data")
    assert sorted(reads.headers) == ["P5/c/000.dcm", "P5/c/001.dcm", "P5/c/002.dcm"]
    assert sorted(reads.contents) == ["000.dcm", "001.dcm", "002.dcm"]
    assert report.changes.files_new == 3 and report.changes.groups_reassembled == 1
    _assert_equals_full_reingest(cohort)


def test_a_new_slice_reassembles_its_series_only(cohort, monkeypatch):
    _ingest(cohort, "data")
    reads = Reads(monkeypatch)
    ct_series(cohort / "src" / "P1" / "a", np.full((1, 8, 8), 9, dtype=np.uint16), series_uid=SERIES_A,
              origin=(-30.0, -20.0, 20.0), names=["004.dcm"], patient_id="P1")  # fmt: skip
    report = _ingest(cohort, "data")
    assert sorted(reads.headers) == [f"P1/a/00{k}.dcm" for k in range(5)]
    assert report.changes.files_new == 1 and report.changes.files_read == 5
    assert int(_manifest(cohort / "data").query("n_files == 5").shape[0]) == 1
    _assert_equals_full_reingest(cohort)


def test_a_changed_file_is_rehashed_and_reingested(cohort, monkeypatch):
    _ingest(cohort, "data")
    old = _manifest(cohort / "data")
    reads = Reads(monkeypatch)
    dx_image(cohort / "src" / "P3" / "chest.dcm", np.full((12, 10), 5, dtype=np.uint16), patient_id="P3")
    report = _ingest(cohort, "data")
    assert reads.headers == ["P3/chest.dcm"] and reads.contents == ["chest.dcm"]
    assert report.changes.files_changed == 1 and report.changes.files_new == 0
    new = _manifest(cohort / "data")
    assert set(new.pixel_hash) - set(old.pixel_hash) and len(new) == len(old)
    _assert_equals_full_reingest(cohort)


def test_a_vanished_file_is_reported_and_its_scan_leaves(cohort, monkeypatch):
    _ingest(cohort, "data")
    chest = cohort / "src" / "P3" / "chest.dcm"
    chest_id = PSEUDO.file("0/P3/chest.dcm")
    chest.unlink()
    reads = Reads(monkeypatch)
    report = _ingest(cohort, "data")
    assert report.changes.files_vanished == [chest_id] and reads.headers == []
    assert chest_id not in {r.file_id for r in report.files}
    assert PSEUDO.patient("P3") not in set(_manifest(cohort / "data").patient_id)
    _assert_equals_full_reingest(cohort)


def test_edited_labels_join_without_reading_a_file(cohort, monkeypatch):
    _ingest(cohort, "data")
    (cohort / "labels.csv").write_text("patient_id,label,split\nP1,0,test\nP2,0,\nP3,0,\nP4,1,\n")
    reads = Reads(monkeypatch)
    _ingest(cohort, "data")
    assert reads.headers == [] and reads.contents == []
    manifest = _manifest(cohort / "data")
    assert manifest.loc[manifest.patient_id == PSEUDO.patient("P1"), "split"].tolist() == ["test"]
    _assert_equals_full_reingest(cohort)


def test_full_and_verify_read_everything_again(cohort, monkeypatch):
    _ingest(cohort, "data")
    reads = Reads(monkeypatch)
    verified = _ingest(cohort, "data", verify=True)
    # every file hashed and found equal, nothing re-assembled; a file never read whole (not an image) is sniffed again
    assert reads.headers == ["readme.txt"] and reads.contents == [] and verified.changes.files_read == 10
    reads.reset()
    full = _ingest(cohort, "data", incremental=False)
    assert len(reads.headers) == 10 and full.changes.mode == "full" and "asked" in full.changes.full_reason


def test_a_file_rewritten_within_the_timestamp_resolution_is_hashed_again(cohort, monkeypatch):
    _ingest(cohort, "data")
    chest = cohort / "src" / "P3" / "chest.dcm"
    recent = time.time_ns() + 60_000_000_000  # after the next run's start, however slow or loaded the machine
    os.utime(chest, ns=(recent, recent))
    _ingest(cohort, "data")  # records the file with a time close to the run's start
    stat = chest.stat()
    content = bytearray(chest.read_bytes())
    content[-240::2] = bytes(b ^ 1 for b in content[-240::2])  # the pixels (12 x 10 uint16, last): each low byte
    chest.write_bytes(bytes(content))  # other values, the same size
    os.utime(chest, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same time
    assert chest.stat().st_size == stat.st_size
    report = _ingest(cohort, "data")
    assert report.changes.files_changed == 1
    _assert_equals_full_reingest(cohort)


def test_verify_hashes_every_file_and_reassembles_nothing_when_nothing_changed(tmp_path):
    from medtl.datasets.synth import make_cohort

    make_cohort(tmp_path / "syn", patients=2, seed=5)  # CT series with scouts (skipped, never decoded) and DX
    _age(tmp_path / "syn")
    sources = [tmp_path / "syn" / "dicom"]
    first = ingest_sources(sources, out=tmp_path / "data", pseudonymizer=PSEUDO, workers=1).report
    assert first.counts["skipped"] > 0
    again = ingest_sources(sources, out=tmp_path / "data", pseudonymizer=PSEUDO, workers=1, verify=True).report
    total = sum(first.counts.values())
    assert again.changes.files_read == total and again.changes.groups_reassembled == 0
    assert again.files == first.files


@pytest.mark.parametrize("damaged", ["manifest.parquet", "ingest_state.json", "ingest_report.json"])
def test_a_damaged_dataset_folder_means_a_full_reread_not_a_failed_run(cohort, monkeypatch, damaged):
    _ingest(cohort, "data")
    (cohort / "data" / damaged).write_bytes(b"PAR1 truncated by a full disk")
    reads = Reads(monkeypatch)
    report = _ingest(cohort, "data")
    assert report.changes.mode == "full" and "unreadable" in report.changes.full_reason
    assert len(reads.headers) == 10
    _assert_equals_full_reingest(cohort)


@pytest.mark.parametrize("document", [STATE, "ingest_report.json"])
def test_a_record_from_an_older_medtl_means_one_full_reread_then_incremental_again(cohort, monkeypatch, document):
    import json

    first = _ingest(cohort, "data")
    path = cohort / "data" / document
    state = read_json(IngestState, cohort / "data" / STATE)
    older = json.loads(path.read_text())  # version 1 listed one object per entry (file, scan)
    older["contract_version"] = 1
    for part in ("files", "scans") if document == STATE else ("files",):
        columns = older[part]
        older[part] = [dict(zip(columns, entry, strict=True)) for entry in zip(*columns.values(), strict=True)]
    path.write_text(json.dumps(older))
    reads = Reads(monkeypatch)
    report = _ingest(cohort, "data")
    assert report.changes.mode == "full" and "older medtl" in report.changes.full_reason
    assert len(reads.headers) == 10
    rewritten = read_json(IngestState, cohort / "data" / STATE)
    assert rewritten.file_states() == state.file_states() and rewritten.scan_states() == state.scan_states()
    assert report.files == first.files and len(report.files) == 10
    assert _ingest(cohort, "data").changes.files_read == 0


@pytest.mark.parametrize("document", [STATE, "ingest_report.json"])
def test_columns_of_unequal_length_are_refused(cohort, document):
    import json

    from medtl.contracts import IngestReport
    from medtl.errors import DataContractError

    _ingest(cohort, "data")
    path = cohort / "data" / document
    payload = json.loads(path.read_text())
    payload["files"]["sha256"].pop()  # one file's hash lost: entry i no longer describes file i
    path.write_text(json.dumps(payload))
    with pytest.raises(DataContractError, match="same number of entries"):
        read_json(IngestState if document == STATE else IngestReport, path)


def test_missing_or_damaged_intensity_summaries_are_rebuilt_from_the_cache(cohort, monkeypatch):
    from medtl.ingest.incremental import INTENSITIES

    _ingest(cohort, "data")
    ct_series(cohort / "src" / "P5" / "c", np.full((3, 8, 8), 7, dtype=np.uint16), patient_id="P5")
    (cohort / "data" / INTENSITIES).write_bytes(b"PK\x03\x04 not a zip archive")
    reads = Reads(monkeypatch)
    report = _ingest(cohort, "data")
    assert report.changes.mode == "incremental" and len(reads.headers) == 3  # only the new series was read
    _assert_equals_full_reingest(cohort)  # the fingerprint's pooled statistics included


def test_the_manifest_hash_with_rows_known_from_the_last_run_is_the_hash_of_all_rows():
    import hashlib

    from medtl.hashing import canonical_json
    from medtl.ingest.fingerprint import manifest_hash, row_digests

    def by_definition(rows: list[dict]) -> str:  # the rows' digests in scan-id order, one per line
        ordered = sorted(rows, key=lambda row: row["scan_id"])
        lines = "".join(hashlib.sha256(canonical_json(row)).hexdigest() + "\n" for row in ordered)
        return hashlib.sha256(lines.encode()).hexdigest()

    rows = [{"scan_id": f"X-{i:016x}", "label": str(i % 2), "shape": [2, 3], "note": "ü"} for i in (3, 1, 2)]
    expected = by_definition(rows)
    assert manifest_hash(row_digests(rows)) == manifest_hash(row_digests(rows[::-1])) == expected
    # the last run's rows with their recorded digests (one deliberately wrong, to show when it is taken)
    known = {row["scan_id"]: (dict(row), hashlib.sha256(canonical_json(row)).hexdigest()) for row in rows}
    known[rows[1]["scan_id"]] = (dict(rows[1]), "f" * 64)
    known["X-0000000000000009"] = ({"scan_id": "X-0000000000000009"}, "e" * 64)  # a scan that has left since
    assert row_digests(rows, known)[rows[1]["scan_id"]] == "f" * 64  # an unchanged row is not serialised again
    rows[1]["label"] = "0"  # a label edited since the last run: that row is serialised again
    assert manifest_hash(row_digests(rows, known)) == by_definition(rows) != expected
    assert manifest_hash(row_digests([], known)) == hashlib.sha256(b"").hexdigest()


def test_a_rerun_serialises_only_the_rows_it_did_not_carry_over(cohort, monkeypatch):
    import medtl.ingest.fingerprint as fingerprint

    _ingest(cohort, "data")
    serialised: list[str] = []
    original = fingerprint.row_digest
    monkeypatch.setattr(fingerprint, "row_digest", lambda row: serialised.append(row["scan_id"]) or original(row))
    ct_series(cohort / "src" / "P5" / "c", np.full((3, 8, 8), 7, dtype=np.uint16), patient_id="P5")
    _ingest(cohort, "data")
    assert len(serialised) == 1  # the new series' scan; the four carried rows took their recorded digests
    _assert_equals_full_reingest(cohort)  # the fingerprint's manifest hash included
    serialised.clear()
    _ingest(cohort, "data", verify=True)  # trusts nothing recorded: every row serialised again
    assert len(serialised) == 5
