"""The synthetic archive: deterministic by seed, the promised mix, and an expected outcome that ingest meets for
every file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydicom.uid import UID

from medtl.datasets.synth.archive import SOURCE, SUMMARY, ArchiveOptions, iter_expected, make_archive
from medtl.errors import ConfigError
from medtl.ingest.pipeline import ingest_sources
from support.outcomes import fates_by_path
from support.trained import DEV_PSEUDONYMIZER

SMALL = {"slices": (2, 3), "matrix": 32, "bad_fraction": 0.25}


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive") / "a"
    make_archive(out, ArchiveOptions(series=15, seed=4, **SMALL))
    return out


def test_the_same_seed_writes_the_same_bytes_whatever_the_writer_processes(archive, tmp_path):
    make_archive(tmp_path / "again", ArchiveOptions(series=15, seed=4, **SMALL), workers=2)
    make_archive(tmp_path / "other", ArchiveOptions(series=15, seed=5, **SMALL))
    make_archive(tmp_path / "fewer", ArchiveOptions(series=6, seed=4, **SMALL))
    written = _files(archive)
    assert len(written) > 25 and _files(tmp_path / "again") == written
    other = _files(tmp_path / "other")
    assert [name for name in other if other[name] != written.get(name)]  # another seed: other files
    fewer = {name: data for name, data in _files(tmp_path / "fewer").items() if name.startswith(f"{SOURCE}/P")}
    assert fewer and all(written[name] == data for name, data in fewer.items())  # a prefix of the larger archive


def test_the_archive_has_ct_and_mr_five_syntaxes_and_every_kind_of_bad_file(archive):
    rows = list(iter_expected(archive))
    assert {row["modality"] for row in rows if row["status"] == "ingested"} == {"CT", "MR"}
    assert {row["transfer_syntax"] for row in rows if row["status"] == "ingested"} == {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
    }
    bad = sorted((row["status"], row["reason_code"]) for row in rows if row["status"] != "ingested")
    assert bad == [("quarantined", "decode_failed")] * 2 + [
        ("skipped", "not_an_image"),
        ("skipped", "presentation_state"),
    ]
    summary = json.loads((archive / SUMMARY).read_text())
    assert summary["files"] == len(rows) == len(_files(archive / SOURCE))
    assert summary["counts"] == {"ingested": len(rows) - 4, "quarantined": 2, "skipped": 2}


def test_ingest_reports_the_expected_outcome_for_every_file(archive, tmp_path):
    ingest_sources([archive / SOURCE], out=tmp_path / "ds", pseudonymizer=DEV_PSEUDONYMIZER, workers=1)
    expected = {row["relative_path"]: (row["status"], row["reason_code"]) for row in iter_expected(archive)}
    assert fates_by_path(tmp_path / "ds") == expected
    manifest = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    image_series = {row["series"] for row in iter_expected(archive) if row["status"] == "ingested"}
    assert len(manifest) == len(image_series)  # one scan per image series
    written = {UID(row["transfer_syntax"]).name for row in iter_expected(archive) if row["status"] == "ingested"}
    assert set(manifest.transfer_syntax) == written  # every syntax read back (the manifest names them)


@pytest.mark.parametrize(
    "options",
    [{"series": 0}, {"series": 2, "slices": (5, 3)}, {"series": 2, "matrix": 8}, {"series": 2, "bad_fraction": 0.9}],
)
def test_impossible_options_are_refused_before_anything_is_written(options, tmp_path):
    with pytest.raises(ConfigError):
        make_archive(tmp_path / "out", ArchiveOptions(**options))
    assert not (tmp_path / "out").exists()


def test_the_command_writes_an_archive_and_refuses_a_folder_that_holds_one(tmp_path):
    command = [sys.executable, "-m", "medtl.cli", "synth-archive", str(tmp_path / "a"), "--series", "3",
               "--slices", "1", "--max-slices", "2", "--matrix", "32", "--seed", "2"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert first.returncode == 0, first.stderr
    assert "expected outcome of every file" in first.stdout
    assert len(list(iter_expected(tmp_path / "a"))) == len(list((tmp_path / "a" / SOURCE).rglob("*.*")))
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == ConfigError.exit_code and "not empty" in again.stderr


def test_instance_uids_do_not_collide_where_concatenated_numbers_would():
    from medtl.datasets.synth.archive import _Ident

    one, eleven = _Ident(0, 0, 0, 1), _Ident(0, 0, 0, 11)
    assert one.uid("sop", 1, 16) != eleven.uid("sop", 11, 6)
    assert len({_Ident(0, 0, 0, s).uid("sop", s, k) for s in range(30) for k in range(30)}) == 900
