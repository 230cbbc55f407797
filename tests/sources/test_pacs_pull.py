"""Queries and pulls against a real Orthanc, over DICOMweb and DIMSE: the right series, every byte of them,
incremental runs, bounded staging, failing series quarantined, a PACS that goes away mid-run, bad credentials."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from medtl.errors import ConfigError, IngestError, SourceAuthError, SourceError, SourceUnavailableError
from medtl.ingest.from_pacs import ingest_from_pacs
from medtl.sources.pull import Puller, open_remote
from medtl.sources.query import PacsQuery
from medtl.sources.remote import RetryPolicy
from medtl.sources.state import PullState
from support.orthanc import Orthanc, dicom_files
from support.trained import DEV_PSEUDONYMIZER

pytestmark = [pytest.mark.integration]
FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)
PROTOCOLS = ["dicomweb", "dimse"]


def uri(server: Orthanc, protocol: str) -> str:
    return server.dicomweb_uri if protocol == "dicomweb" else server.dimse_uri


def truth(files: list[Path]) -> dict[str, dict]:
    """Per series, straight from the files: what a query must find and a pull must deliver."""
    series: dict[str, dict] = defaultdict(lambda: {"pixels": set()})
    for path in files:
        ds = pydicom.dcmread(path)
        entry = series[ds.SeriesInstanceUID]
        entry.update(modality=ds.Modality, date=ds.StudyDate, description=ds.SeriesDescription,
                     accession=ds.AccessionNumber, study=ds.StudyInstanceUID)  # fmt: skip
        entry["pixels"].add((ds.SOPInstanceUID, hashlib.sha256(ds.PixelData).hexdigest()))
    return dict(series)


def pulled_pixels(folder: Path) -> dict[str, set]:
    found: dict[str, set] = defaultdict(set)
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        found[ds.SeriesInstanceUID].add((ds.SOPInstanceUID, hashlib.sha256(ds.PixelData).hexdigest()))
    return dict(found)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_queries_find_exactly_the_matching_series(orthanc, cohort, protocol, tmp_path):
    files = dicom_files(cohort / "dicom")
    orthanc.upload(files)
    series = truth(files)
    source = open_remote(uri(orthanc, protocol), FAST)

    def found(**query) -> set[str]:
        return {s.series_uid for s in source.find_series(PacsQuery(**query))}

    assert found() == set(series)
    assert found(modality="CT") == {uid for uid, s in series.items() if s["modality"] == "CT"}
    assert found(study_date_from="2020-01-01", study_date_to="2021-12-31") == {
        uid for uid, s in series.items() if "20200101" <= s["date"] <= "20211231"
    }
    assert found(modality="CT", series_description="*axial*") == {
        uid for uid, s in series.items() if s["description"].startswith("AXIAL")
    }
    accessions = sorted({s["accession"] for s in series.values()})[:2]
    (tmp_path / "ids.csv").write_text("accession_number\n" + "\n".join(accessions) + "\nACC-NOT-IN-PACS\n")
    assert found(id_list=tmp_path / "ids.csv") == {uid for uid, s in series.items() if s["accession"] in accessions}
    study = next(iter(series.values()))["study"]
    (tmp_path / "uids.csv").write_text(f"study_uid\n{study}\n")
    assert found(id_list=tmp_path / "uids.csv", modality="CT") == {
        uid for uid, s in series.items() if s["study"] == study and s["modality"] == "CT"
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_incremental_pulls_deliver_every_instance_once_within_the_staging_limit(orthanc, cohort, protocol, tmp_path):
    patients = sorted(folder.name for folder in (cohort / "dicom").iterdir())
    first_half = [p for p in dicom_files(cohort / "dicom") if p.relative_to(cohort / "dicom").parts[0] in patients[:3]]
    second_half = sorted(set(dicom_files(cohort / "dicom")) - set(first_half))
    assert first_half and second_half
    orthanc.upload(first_half)
    source = open_remote(uri(orthanc, protocol), FAST)
    limit = 300_000  # a few series per batch

    def run() -> tuple[dict[str, set], Puller]:
        state = PullState.open(tmp_path / "state", source.location, "a" * 64)
        puller = Puller(source, tmp_path / "staging", state=state, max_staging_bytes=limit)
        received: dict[str, set] = {}
        for batch in puller.batches(puller.plan(PacsQuery())):
            received.update(pulled_pixels(batch.folder))
            puller.commit(batch)
            assert not batch.folder.exists()  # freed as soon as the consumer is done
        return received, puller

    received, puller = run()
    expected = {uid: s["pixels"] for uid, s in truth(first_half).items()}
    assert received == expected  # the same instances, pixel for pixel (original transfer syntax)
    assert puller.summary.batches > 1
    largest_series = max(sum(len(p.read_bytes()) for p in group) for group in _by_series(first_half).values())
    assert puller.summary.peak_staging_bytes <= limit + largest_series * 1.1
    assert not (tmp_path / "staging").exists()

    again, puller = run()
    assert again == {} and puller.summary.pulled == 0  # nothing new: a no-op

    orthanc.upload(second_half)
    later, _ = run()
    assert later == {uid: s["pixels"] for uid, s in truth(second_half).items()}


def test_a_series_the_pacs_cannot_deliver_is_retried_then_quarantined(orthanc, cohort, tmp_path):
    files = dicom_files(cohort / "dicom")
    orthanc.upload(files)
    broken = next(uid for uid, s in sorted(truth(files).items()) if len(s["pixels"]) > 10)
    stored = orthanc.attachment_files(broken)
    stored[len(stored) // 2].unlink()  # as a failed disk on the PACS would: Orthanc then ends the stream early
    source = open_remote(orthanc.dicomweb_uri, FAST)
    outcomes = []
    for _ in range(3):
        state = PullState.open(tmp_path / "state", source.location, "b" * 64, max_attempts=3)
        puller = Puller(source, tmp_path / "staging", state=state)
        plan = puller.plan(PacsQuery())
        for batch in puller.batches(plan):
            assert broken not in pulled_pixels(batch.folder)
            puller.commit(batch)
        outcomes.append((len(plan.new), puller.summary.pulled, len(puller.summary.failed), puller.summary))
    n = len(truth(files))
    assert outcomes[0][:3] == (n, n - 1, 1)  # the others are not held up
    assert outcomes[1][:3] == (1, 0, 1) and not outcomes[1][3].quarantined_now
    assert outcomes[2][:3] == (1, 0, 1) and len(outcomes[2][3].quarantined_now) == 1
    record = PullState.open(tmp_path / "state", source.location, "b" * 64).record
    (reason,) = [q.reason for q in record.quarantined.values()]
    assert reason.startswith("received ") and broken not in reason  # why, without the UID
    state = PullState.open(tmp_path / "state", source.location, "b" * 64)
    assert Puller(source, tmp_path / "staging", state=state).plan(PacsQuery()).new == []  # not retried forever


def test_a_study_the_pacs_cannot_list_is_left_out_then_quarantined_and_not_asked_about_again(orthanc, cohort, tmp_path):
    files = dicom_files(cohort / "dicom")
    orthanc.upload(files)
    series = truth(files)
    broken_series = sorted(series)[0]
    broken_study = series[broken_series]["study"]
    for path in orthanc.attachment_files(broken_series):
        path.unlink()  # Orthanc's DICOMweb plugin reads a stored file to list a study's series: HTTP 500 for it
    source = open_remote(orthanc.dicomweb_uri, FAST)
    with pytest.raises(SourceError, match="HTTP 500"):
        source.find_series(PacsQuery())  # a one-off query says so; a scheduled run goes on without that study
    others = {uid for uid, s in series.items() if s["study"] != broken_study}
    plans = []
    for _ in range(4):
        state = PullState.open(tmp_path / "state", source.location, "d" * 64, max_attempts=3)
        puller = Puller(source, tmp_path / "staging", state=state)
        plan = puller.plan(PacsQuery())
        plans.append(
            ({s.series_uid for s in plan.new}, list(puller.summary.failed), list(puller.summary.quarantined_now))
        )
        for batch in puller.batches(plan):
            puller.commit(batch)
    assert plans[0][0] == others and len(plans[0][1]) == 1  # the other studies are pulled on the first night
    assert plans[1][0] == set() and len(plans[1][1]) == 1 and not plans[1][2]
    assert plans[2][0] == set() and len(plans[2][1]) == 1 and len(plans[2][2]) == 1
    assert plans[3] == (set(), [], [])  # quarantined: not even queried any more
    record = PullState.open(tmp_path / "state", source.location, "d" * 64).record
    (reason,) = [q.reason for q in record.quarantined.values()]
    assert "could not be listed" in reason and broken_study not in reason


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pacs_that_stops_mid_pull_gives_a_clear_error_and_the_next_run_resumes(orthanc, cohort, protocol, tmp_path):
    files = dicom_files(cohort / "dicom")
    orthanc.upload(files)
    source = open_remote(uri(orthanc, protocol), FAST)

    def puller() -> Puller:
        state = PullState.open(tmp_path / "state", source.location, "c" * 64)
        return Puller(source, tmp_path / "staging", state=state, max_staging_bytes=200_000)

    first = puller()
    received: dict[str, set] = {}
    with pytest.raises(SourceUnavailableError) as stopped:
        for batch in first.batches(first.plan(PacsQuery())):
            received.update(pulled_pixels(batch.folder))
            first.commit(batch)
            orthanc.stop()  # the PACS goes down after the first batch
    assert "resumes where this one stopped" in str(stopped.value) and stopped.value.transient
    assert first.summary.batches == 1 and not (tmp_path / "staging").exists()
    assert not PullState.open(tmp_path / "state", source.location, "c" * 64).record.failures  # not the series' fault

    orthanc.start()  # same storage, same ports
    second = puller()
    for batch in second.batches(second.plan(PacsQuery())):
        assert not set(pulled_pixels(batch.folder)) & set(received)  # nothing twice
        received.update(pulled_pixels(batch.folder))
        second.commit(batch)
    assert received == {uid: s["pixels"] for uid, s in truth(files).items()}


def test_wrong_credentials_and_unknown_ae_titles_are_refused_with_what_to_do(orthanc, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTL_PACS_PASSWORD", "not-the-password")
    with pytest.raises(SourceAuthError, match="refused our credentials") as refused:
        open_remote(orthanc.dicomweb_uri, FAST).find_series(PacsQuery())
    assert "MEDTL_PACS_USERNAME" in str(refused.value) and "not-the-password" not in str(refused.value)

    strict = Orthanc(tmp_path / "strict", check_called_aet=True).start()
    try:
        wrong_title = strict.dimse_uri.replace("dimse://ORTHANC@", "dimse://NOTORTHANC@")
        with pytest.raises(SourceAuthError, match="rejected the association"):
            open_remote(wrong_title, FAST).ping()
    finally:
        strict.stop(graceful=False)


def _by_series(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        groups[pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID].append(path)
    return groups


def test_an_ingest_larger_than_the_staging_limit_stops_before_ingest_and_leaves_nothing_staged(
    orthanc, cohort, tmp_path
):
    orthanc.upload(dicom_files(cohort / "dicom"))
    with pytest.raises(IngestError, match="exceeds the staging limit") as stopped:
        ingest_from_pacs(orthanc.dicomweb_uri, PacsQuery(), out=tmp_path / "dataset", pseudonymizer=DEV_PSEUDONYMIZER,
                         max_staging_bytes=200_000, retry=FAST)  # fmt: skip
    assert "--max-staging-gb" in str(stopped.value)
    assert (
        not (tmp_path / "dataset" / "pull-staging").exists()
        and not (tmp_path / "dataset" / "manifest.parquet").exists()
    )


def _plant(folder: Path) -> Path:
    """A user's file where medtl would stage: it must survive every run."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.txt").write_text("not medtl's\n")
    return folder / "mine.txt"


def test_a_staging_folder_holding_foreign_files_is_refused_and_left_alone_but_leftovers_are_cleared(
    orthanc, cohort, tmp_path
):
    orthanc.upload(dicom_files(cohort / "dicom"))
    source = open_remote(orthanc.dicomweb_uri, FAST)
    planted = _plant(tmp_path / "staging")
    puller = Puller(source, tmp_path / "staging")
    with pytest.raises(ConfigError, match="holds files medtl did not write") as refused:
        list(puller.batches(puller.plan(PacsQuery())))
    assert "another output folder" in str(refused.value)
    assert sorted(p.name for p in planted.parent.iterdir()) == ["mine.txt"] and planted.read_text() == "not medtl's\n"
    assert puller.summary.pulled == 0

    kept = _plant(tmp_path / "dataset" / "pull-staging")  # ingest from a PACS stages inside the dataset folder
    with pytest.raises(ConfigError, match="holds files medtl did not write"):
        ingest_from_pacs(orthanc.dicomweb_uri, PacsQuery(), out=tmp_path / "dataset", pseudonymizer=DEV_PSEUDONYMIZER,
                         workers=1, retry=FAST)  # fmt: skip
    assert sorted(p.name for p in kept.parent.iterdir()) == ["mine.txt"] and kept.read_text() == "not medtl's\n"

    first = Puller(source, tmp_path / "own")
    batches = first.batches(first.plan(PacsQuery()))
    next(batches)  # a run killed here leaves its staging behind (a kill runs no cleanup): the next run clears it
    assert (tmp_path / "own" / "batch-0000").is_dir()
    again = Puller(source, tmp_path / "own")
    pulled = [len(batch.series) for batch in again.batches(again.plan(PacsQuery()))]
    assert sum(pulled) == len(again.plan(PacsQuery()).new) > 0 and not (tmp_path / "own").exists()
    batches.close()
