"""Nightly scoring over a growing inbox: the re-run reads and scores only the new scans."""

from __future__ import annotations

import os
import shutil
import time

import pandas as pd
import pytest

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport
from medtl.datasets.synth import make_cohort
from medtl.scoring.score import STAGING, score
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _age(folder):
    old = time.time() - 3600  # an inbox's files are older than the run reading them (see ingest's racy guard)
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def test_a_rerun_over_a_grown_inbox_reads_and_scores_only_the_new_scans(tmp_path):
    with signing_key(tmp_path / "key.pem"):
        dataset = ingested_cohort(tmp_path, "dev", patients=8, seed=41, difficulty=0.0)
        train(dataset, tiny_config(epochs=1, early_stopping={"patience": 1, "min_epochs": 1}), tmp_path / "artifact")
        make_cohort(tmp_path / "night1", patients=4, seed=42)
        make_cohort(tmp_path / "night2", patients=2, seed=43)
        inbox = tmp_path / "inbox"
        shutil.copytree(tmp_path / "night1" / "dicom", inbox / "night1")
        _age(inbox)
        out = tmp_path / "scores"
        options = dict(out=out, pseudonymizer=PSEUDO, allow_unapproved=True, workers=1)
        first = score(tmp_path / "artifact", [inbox], **options)
        shutil.copytree(tmp_path / "night2" / "dicom", inbox / "night2")
        new_files = sum(1 for path in (inbox / "night2").rglob("*") if path.is_file())
        second = score(tmp_path / "artifact", [inbox], **options)
    report = read_json(IngestReport, out / STAGING / "ingest_report.json")
    assert report.changes.mode == "incremental" and report.changes.files_read == new_files
    assert report.changes.files_unchanged == report.counts["ingested"] + report.counts["skipped"] + report.counts[
        "quarantined"] - new_files  # fmt: skip
    rows = pd.read_parquet(out / "scores.parquet")
    assert first.scored > 0 and second.scored > 0 and second.skipped_existing == first.scored
    assert len(rows) == first.scored + second.scored and rows.scan_id.is_unique
