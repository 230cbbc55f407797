"""Source URIs, credentials, queries and the pull record: the parts that need no PACS."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from medtl.errors import ConfigError, SourceAuthError, SourceError
from medtl.sources.credentials import credentials_from_env
from medtl.sources.location import parse_location
from medtl.sources.query import PacsQuery, RemoteSeries, read_id_list
from medtl.sources.state import PullState


def test_uris_select_the_protocol_and_never_carry_a_password():
    folder = parse_location("/data/inbox")
    assert folder.kind == "folder" and folder.path == Path("/data/inbox") and not folder.is_remote
    assert parse_location("file:///data/inbox").path == Path("/data/inbox")
    web = parse_location("dicomweb+https://pacs.example:8443/dicom-web/")
    assert (web.kind, web.url) == ("dicomweb", "https://pacs.example:8443/dicom-web")
    dimse = parse_location("dimse://PACS01@10.0.0.5:104?calling=RESEARCH")
    assert (dimse.host, dimse.port, dimse.called_aet, dimse.calling_aet) == ("10.0.0.5", 104, "PACS01", "RESEARCH")
    assert parse_location("dimse://PACS01@10.0.0.5:104").calling_aet == "MEDTL"
    assert dimse.key != web.key and len(dimse.key) == 16

    with pytest.raises(SourceError, match="contains a password") as raised:
        parse_location("dicomweb+http://alice:hunter2@pacs:8042/dicom-web")
    assert "hunter2" not in str(raised.value) and "MEDTL_PACS_PASSWORD" in str(raised.value)
    with pytest.raises(SourceError, match="unknown source scheme"):
        parse_location("wado://pacs/dicom-web")
    with pytest.raises(SourceError, match="AE title and port"):
        parse_location("dimse://pacs:104")
    with pytest.raises(SourceError, match="not a valid AE title"):
        parse_location("dimse://A_VERY_LONG_AE_TITLE_NAME@pacs:104")


def test_credentials_come_from_the_environment_or_a_file(monkeypatch, tmp_path):
    for name in ("MEDTL_PACS_USERNAME", "MEDTL_PACS_PASSWORD", "MEDTL_PACS_TOKEN", "MEDTL_PACS_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    assert credentials_from_env().empty  # a PACS without authentication
    monkeypatch.setenv("MEDTL_PACS_USERNAME", "svc-medtl")
    with pytest.raises(SourceAuthError, match="only half"):
        credentials_from_env()
    monkeypatch.setenv("MEDTL_PACS_PASSWORD", "s3cret")
    credentials = credentials_from_env()
    assert credentials.password.get_secret_value() == "s3cret" and "s3cret" not in repr(credentials)

    secrets = tmp_path / "pacs.json"
    secrets.write_text(json.dumps({"token": "abc.def"}))
    monkeypatch.setenv("MEDTL_PACS_CREDENTIALS", str(secrets))
    assert credentials_from_env().token.get_secret_value() == "abc.def"  # the file wins over the variables
    secrets.write_text(json.dumps({"username": "u", "password": "p", "token": "t"}))
    with pytest.raises(SourceAuthError, match="not both"):
        credentials_from_env()
    secrets.write_text("{not json")
    with pytest.raises(SourceAuthError, match="not usable"):
        credentials_from_env()


def test_queries_are_validated_and_matched_here_whatever_the_server_did():
    with pytest.raises(ValidationError, match="after study_date_to"):
        PacsQuery(study_date_from="2024-02-01", study_date_to="2024-01-01")
    with pytest.raises(ValidationError, match="not both"):
        PacsQuery(study_date_from="2024-02-01", lookback_days=3)
    with pytest.raises(ValidationError):
        PacsQuery(modality="ct scan")
    with pytest.raises(ValidationError):
        PacsQuery(colour="blue")

    query = PacsQuery(lookback_days=7, modality="CT", series_description="*axial*")
    today = date(2026, 3, 10)
    assert query.dicom_date_range(today) == "20260303-"
    axial = RemoteSeries("1.2", "1.2.3", modality="CT", study_date="20260305", description="AXIAL 2mm")
    assert query.matches(axial, today)
    assert not query.matches(RemoteSeries("1.2", "1.2.4", modality="CT", study_date="20260301",
                                          description="AXIAL 2mm"), today)  # fmt: skip
    assert not query.matches(RemoteSeries("1.2", "1.2.5", modality="CT", study_date="20260305",
                                          description="SCOUT"), today)  # fmt: skip
    assert not query.matches(RemoteSeries("1.2", "1.2.6", modality="MR", study_date="20260305",
                                          description="AXIAL"), today)  # fmt: skip
    assert not query.matches(RemoteSeries("1.2", "1.2.7", modality="CT", description="AXIAL"), today)  # no date
    assert PacsQuery(study_date_to="2024-01-31").dicom_date_range() == "-20240131"
    assert PacsQuery().dicom_date_range() is None
    assert PacsQuery(body_part="chest").matches(RemoteSeries("1", "2", body_part="CHEST"))
    assert not PacsQuery().matches(RemoteSeries("1", "3", modality="SR"))  # reports, ours too, are never pulled


def test_id_lists_read_accessions_or_study_uids_and_refuse_anything_else(tmp_path):
    listed = tmp_path / "cohort.csv"
    listed.write_text("accession_number,label\nACC1,1\nACC2,0\nACC1,1\n,0\n")
    assert read_id_list(listed).accessions == ("ACC1", "ACC2")
    listed.write_text("StudyInstanceUID\n1.2.3\n")
    assert read_id_list(listed).study_uids == ("1.2.3",)
    listed.write_text("patient,label\nP1,1\n")
    with pytest.raises(ConfigError, match="no accession_number or study_uid column"):
        read_id_list(listed)
    with pytest.raises(ConfigError, match="cannot read the id list"):
        read_id_list(tmp_path / "missing.csv")
    assert "missing.csv" in PacsQuery(id_list=tmp_path / "missing.csv").describe()
    assert str(tmp_path) not in PacsQuery(id_list=tmp_path / "missing.csv").describe()


def test_a_series_that_keeps_failing_is_quarantined_and_a_record_survives_reopening(tmp_path):
    location = parse_location("dimse://PACS@pacs:104")
    state = PullState.open(tmp_path, location, "f" * 64, max_attempts=3)
    assert state.is_new("a") and state.is_new("b")
    state.mark_done(["a"])
    assert [state.mark_failed("b", "HTTP 500 from WADO-RS") for _ in range(3)] == [False, False, True]
    reopened = PullState.open(tmp_path, location, "f" * 64)
    assert not reopened.is_new("a") and not reopened.is_new("b")
    assert reopened.record.quarantined["b"].reason == "HTTP 500 from WADO-RS"
    assert reopened.record.quarantined["b"].attempts == 3 and "b" not in reopened.record.failures
    reopened.release("b")
    assert PullState.open(tmp_path, location, "f" * 64).is_new("b")
    assert PullState.open(tmp_path, location, "e" * 64).is_new("a")  # another artifact has its own watermark
