"""Ingest and scoring with a real Orthanc as the source: the same results as from a folder, SRs stored back into
the right studies, re-runs that do nothing, a PACS outage in the middle of a scoring run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pandas as pd
import pydicom
import pytest
import requests

from medtl.artifacts import open_verified
from medtl.datasets.synth import make_cohort
from medtl.errors import ConfigError, SourceUnavailableError
from medtl.scoring.from_pacs import score_from_pacs
from medtl.scoring.score import score
from medtl.sources.pull import Puller
from medtl.sources.query import PacsQuery, series_key
from medtl.sources.remote import RetryPolicy
from medtl.training.train import train
from support.orthanc import PASSWORD, USER, dicom_files
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC, ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained artifact, and a new cohort (6 patients) to score from the PACS."""
    root = tmp_path_factory.mktemp("pacs-scoring")
    with signing_key(root / "key.pem"):
        train(ingested_cohort(root, "dev", patients=12, seed=61), tiny_config(), root / "artifact")
        make_cohort(root / "new", patients=6, seed=62)
        score(root / "artifact", [root / "new" / "dicom"], out=root / "from-folder", pseudonymizer=DEV_PSEUDONYMIZER,
              allow_unapproved=True, workers=1)  # fmt: skip
        yield root


def stored_reports(orthanc) -> list[pydicom.Dataset]:
    reports = []
    for series in orthanc.series_of_modality("SR"):
        for instance in series["Instances"]:
            raw = orthanc.get(f"/instances/{instance}/file").content
            reports.append(pydicom.dcmread(io.BytesIO(raw)))
    return reports


def referenced_series(report: pydicom.Dataset) -> set[str]:
    return {
        series.SeriesInstanceUID
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
    }


def by_scan(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("scan_id").set_index("scan_id")[["series_id", "probability", "decision", "abstained"]]


def test_scoring_from_dicomweb_equals_the_folder_run_and_stores_one_sr_per_series(orthanc, trained, tmp_path):
    files = dicom_files(trained / "new" / "dicom")
    orthanc.upload(files)
    series_study = {}
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        series_study[header.SeriesInstanceUID] = header.StudyInstanceUID
    events_before = len(open_verified(trained / "artifact").events)

    result = score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), out=tmp_path / "scores",
                             pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True, max_staging_bytes=400_000,
                             retry=FAST)  # fmt: skip

    assert result.batches > 1 and result.new_series == len(series_study) and not result.failed
    from_pacs = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    from_folder = pd.read_parquet(trained / "from-folder" / "scores.parquet")
    # Same pseudonymous ids, same probabilities: the PACS delivered the very files, ingested with the same spec.
    pd.testing.assert_frame_equal(by_scan(from_pacs), by_scan(from_folder), atol=1e-6)
    reports = stored_reports(orthanc)
    assert result.sent_back == len(reports) == len(from_pacs)
    for report in reports:
        (source_series,) = referenced_series(report)
        assert report.StudyInstanceUID == series_study[source_series]  # filed into the scanned study
    assert len({s for r in reports for s in referenced_series(r)}) == len(reports)  # one SR per series
    assert not (tmp_path / "scores" / "staging").exists() and not (tmp_path / "scores" / "ingest").exists()
    kept = [json.loads(p.read_text()) for p in sorted((tmp_path / "scores" / "ingest-reports").glob("*.json"))]
    assert len(kept) == result.batches  # every pulled file stays accounted for, batch by batch
    assert sum(sum(report["counts"].values()) for report in kept) == len(files)
    events = open_verified(trained / "artifact").events
    assert len(events) == events_before + 1 and events[-1].payload["source"] == orthanc.dicomweb_uri
    assert events[-1].payload["sent_back"] == len(reports)

    again = score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), out=tmp_path / "scores",
                            pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True, retry=FAST)  # fmt: skip
    assert (again.new_series, again.scored, again.sent_back) == (0, 0, 0)
    assert again.already_done == len(series_study)
    assert len(stored_reports(orthanc)) == len(reports)  # nothing stored twice
    assert len(open_verified(trained / "artifact").events) == len(events)  # a no-op leaves no event


def test_dimse_scoring_cut_off_by_a_pacs_outage_resumes_without_duplicates(orthanc, trained, tmp_path, monkeypatch):
    files = dicom_files(trained / "new" / "dicom")
    orthanc.upload(files)
    commit = Puller.commit

    def commit_then_fail(self, batch):
        commit(self, batch)
        orthanc.stop()  # the PACS goes down once the first batch is scored and its SRs stored

    monkeypatch.setattr(Puller, "commit", commit_then_fail)
    options = dict(out=tmp_path / "scores", pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True,
                   max_staging_bytes=400_000, retry=FAST)  # fmt: skip
    with pytest.raises(SourceUnavailableError, match="resumes where this one stopped"):
        score_from_pacs(trained / "artifact", orthanc.dimse_uri, PacsQuery(), **options)
    partial = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    assert 0 < len(partial) < len(pd.read_parquet(trained / "from-folder" / "scores.parquet"))

    monkeypatch.setattr(Puller, "commit", commit)
    orthanc.start()
    first_reports = len(stored_reports(orthanc))
    resumed = score_from_pacs(trained / "artifact", orthanc.dimse_uri, PacsQuery(), **options)
    assert resumed.already_done > 0 and resumed.new_series > 0  # only what the first run did not finish
    complete = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    expected = pd.read_parquet(trained / "from-folder" / "scores.parquet")
    pd.testing.assert_frame_equal(by_scan(complete), by_scan(expected), atol=1e-6)
    reports = stored_reports(orthanc)
    assert len(reports) == len(complete) > first_reports  # C-STORE sent the rest, nothing twice


def test_ingest_from_the_pacs_by_accession_list_equals_ingest_from_the_folder(orthanc, trained, tmp_path):
    cohort = trained / "new"
    orthanc.upload(dicom_files(cohort / "dicom"))
    labels = pd.read_csv(cohort / "labels.csv")
    labels[["accession_number"]].to_csv(tmp_path / "accessions.csv", index=False)
    command = [sys.executable, "-m", "medtl.cli", "ingest", orthanc.dicomweb_uri, "--id-list",
               str(tmp_path / "accessions.csv"), "--labels", str(cohort / "labels.csv"), "--out",
               str(tmp_path / "from-pacs"), "--dev-pseudonym-key", "--workers", "1", "--spec",
               str(tmp_path / "spec.json")]  # fmt: skip
    (tmp_path / "spec.json").write_text(TINY_SPEC.model_dump_json())
    env = {**os.environ, "MEDTL_PACS_USERNAME": USER, "MEDTL_PACS_PASSWORD": PASSWORD}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pulled" in done.stdout and PASSWORD not in done.stdout + done.stderr
    local = ingested_cohort(tmp_path, "local", patients=6, seed=62)  # the same synthetic cohort, from files

    columns = ["scan_id", "patient_id", "series_id", "pixel_hash", "label"]
    pacs_manifest = pd.read_parquet(tmp_path / "from-pacs" / "manifest.parquet")[columns].sort_values("scan_id")
    folder_manifest = pd.read_parquet(local / "manifest.parquet")[columns].sort_values("scan_id")
    pd.testing.assert_frame_equal(pacs_manifest.reset_index(drop=True), folder_manifest.reset_index(drop=True))
    assert not (tmp_path / "from-pacs" / "pull-staging").exists()  # staged DICOM deleted after ingest
    assert requests.get(orthanc.rest + "/system", timeout=5).status_code == 401  # and Orthanc still wants a login


def test_the_score_command_with_a_pacs_uri_and_no_send_back_keeps_the_srs_local(orthanc, trained, tmp_path):
    orthanc.upload(dicom_files(trained / "new" / "dicom"))
    command = [sys.executable, "-m", "medtl.cli", "score", str(trained / "artifact"), orthanc.dimse_uri, "--out",
               str(tmp_path / "scores"), "--allow-unapproved", "--dev-pseudonym-key", "--no-send-back",
               "--series-description", "AXIAL*"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    scored = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    axial = [s for s in orthanc.series_of_modality("CT") if s["MainDicomTags"]["SeriesDescription"].startswith("AXIAL")]
    assert len(scored) == len(axial) and "0 SR(s) sent back" in done.stdout and "UNAPPROVED" in done.stdout
    assert len(list((tmp_path / "scores" / "sr").glob("SR_*.dcm"))) == len(axial)  # written, kept here
    assert orthanc.series_of_modality("SR") == []  # and not sent


def _first_ct_series(files) -> str:
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.Modality == "CT" and "LOCALIZER" not in header.get("ImageType", []):
            return header.SeriesInstanceUID
    raise AssertionError("the cohort has no CT series")


def _holds_series(sources, series_uid: str) -> bool:
    return any(
        pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID == series_uid
        for source in sources
        for path in dicom_files(source)
    )


def _pull_state(out) -> dict:
    (path,) = (out / "pull-state").glob("pull-*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("stage", ["ingest", "sr"])
def test_a_series_failing_after_retrieval_is_retried_then_quarantined_and_never_fails_the_batch(
    orthanc, trained, tmp_path, monkeypatch, stage
):
    """Ingest raising for one series (the batch is then scored series by series), or its SR failing to build: the
    other series are scored and sent back, and that one counts toward quarantine like a failed download."""
    files = dicom_files(trained / "new" / "dicom")
    orthanc.upload(files)
    bad = _first_ct_series(files)
    if stage == "ingest":
        import medtl.scoring.score as scoring

        real_ingest = scoring.ingest_sources

        def ingest(sources, **options):
            if _holds_series(sources, bad):
                raise RuntimeError("a decoder crashed on 1946-02-04")  # a library error quoting a file value
            return real_ingest(sources, **options)

        monkeypatch.setattr(scoring, "ingest_sources", ingest)
    else:
        import medtl.scoring.dicom_sr as dicom_sr

        real_build = dicom_sr.build_sr

        def build(source, **options):
            if source.series_instance_uid == bad:
                raise ValueError("Unable to convert '1946-02-04' to 'DA' object")  # as highdicom says it
            return real_build(source, **options)

        monkeypatch.setattr(dicom_sr, "build_sr", build)
    out = tmp_path / "scores"
    options = dict(out=out, pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True, max_attempts=2, retry=FAST)
    all_series = len({pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in files})

    first = score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), **options)
    key = series_key(bad)
    assert first.failed == [key] and first.quarantined_now == []
    expected = by_scan(pd.read_parquet(trained / "from-folder" / "scores.parquet"))
    scored = by_scan(pd.read_parquet(out / "scores.parquet"))
    if stage == "ingest":  # the bad series has no rows; every other series was scored as from the folder
        missing = expected.drop(scored.index)
        assert len(missing) >= 1 and missing.series_id.nunique() == 1
        pd.testing.assert_frame_equal(scored, expected.loc[scored.index], atol=1e-6)
    else:  # scored, but without its SR the series is not done
        pd.testing.assert_frame_equal(scored, expected, atol=1e-6)
    assert first.sent_back == len(stored_reports(orthanc)) == len(scored) - (stage == "sr")
    state = _pull_state(out)
    assert state["failures"][key]["attempts"] == 1 and key not in state["done"]
    assert len(state["done"]) == all_series - 1
    assert "1946" not in json.dumps(state)  # the reason names no file value

    second = score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), **options)
    assert (second.new_series, second.failed, second.quarantined_now) == (1, [key], [key])
    assert _pull_state(out)["quarantined"][key]["attempts"] == 2

    third = score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), **options)
    assert (third.new_series, third.quarantined_before, third.failed) == (0, 1, [])


@pytest.mark.parametrize("folder", ["staging", "ingest"])
def test_pacs_scoring_refuses_staging_folders_holding_foreign_files(orthanc, trained, tmp_path, folder):
    orthanc.upload(dicom_files(trained / "new" / "dicom"))
    planted = tmp_path / "scores" / folder / "mine.txt"
    planted.parent.mkdir(parents=True)
    planted.write_text("not medtl's\n")
    with pytest.raises(ConfigError, match="holds files medtl did not write"):
        score_from_pacs(trained / "artifact", orthanc.dicomweb_uri, PacsQuery(), out=tmp_path / "scores",
                        pseudonymizer=DEV_PSEUDONYMIZER, allow_unapproved=True, retry=FAST)  # fmt: skip
    assert sorted(p.name for p in planted.parent.iterdir()) == ["mine.txt"] and planted.read_text() == "not medtl's\n"
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [folder]  # nothing pulled, scored or recorded
