"""The nightly PACS scoring flow under Prefect: pulls from a real Orthanc, sends SRs back, and the next night's
run finds nothing new; bad parameters fail before anything is pulled."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.pacs import PacsScoreParameters, pacs_score_flow
from support.orthanc import dicom_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_nightly_flow_scores_what_is_new_and_sends_srs_back(orthanc, trained, tmp_path):
    orthanc.upload(dicom_files(trained / "dev" / "dicom"))
    query = {"modality": "CT", "series_description": "AXIAL*"}  # the volumes, not the scouts
    params = PacsScoreParameters(artifact=trained / "artifact", source=orthanc.dimse_uri, query=query,
                                 out=tmp_path / "scores", allow_unapproved=True,
                                 allow_development_key=True)  # fmt: skip
    first = pacs_score_flow(params)
    rows = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    ct_series = sum(
        s["MainDicomTags"]["SeriesDescription"].startswith("AXIAL") for s in orthanc.series_of_modality("CT")
    )
    assert first["new_series"] == ct_series == len(rows) == first["sent_back"] and first["failed"] == 0
    assert len(orthanc.series_of_modality("SR")) == ct_series
    inputs = pd.read_parquet(tmp_path / "scores" / "scan_inputs.parquet")  # for monitoring: staging is gone by now
    assert set(inputs.input_hash) == set(rows.input_hash) and not (tmp_path / "scores" / "ingest").exists()
    second = pacs_score_flow(params)
    assert (second["new_series"], second["already_done"], second["sent_back"]) == (0, ct_series, 0)


def test_bad_pacs_parameters_fail_before_anything_is_pulled(trained, tmp_path):
    artifact = trained / "artifact"
    with pytest.raises(ValueError, match="password"):
        PacsScoreParameters(artifact=artifact, source="dicomweb+http://u:secret@pacs/dicom-web", out=tmp_path)
    with pytest.raises(ValueError, match="needs a dicomweb"):
        PacsScoreParameters(artifact=artifact, source="/data/inbox", out=tmp_path)
    with pytest.raises(ValueError):
        PacsScoreParameters(artifact=artifact, source="dimse://PACS@pacs:104", out=tmp_path,
                            query={"lookback_days": 0})  # fmt: skip
