"""The ingest flow under a real (temporary) Prefect server: parameters validated first, results PHI-free."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport
from medtl.datasets.synth import make_cohort
from pipelines.ingest import IngestParameters, ingest_flow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow-cohort")
    make_cohort(root / "cohort", patients=4, seed=5, with_problems=True)
    return root / "cohort"


def test_bad_parameters_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValidationError):
        IngestParameters(sources=[], out=tmp_path / "out")
    with pytest.raises(ValidationError):
        IngestParameters(sources=[tmp_path], out=tmp_path / "out", workers=-1)
    with pytest.raises(ValidationError):
        IngestParameters(sources=[tmp_path], out=tmp_path / "out", worker=2)  # typo: extra="forbid"
    assert not (tmp_path / "out").exists()


def test_ingest_flow_writes_the_dataset_and_a_phi_free_summary(cohort, tmp_path):
    params = IngestParameters(
        sources=[cohort / "dicom"],
        out=tmp_path / "dataset",
        labels=cohort / "labels.csv",
        workers=1,
        allow_development_key=True,
    )
    state = ingest_flow(params, return_state=True)
    summary, run_id = state.result(), state.state_details.flow_run_id
    report = read_json(IngestReport, tmp_path / "dataset" / "ingest_report.json")
    assert summary["counts"] == report.counts
    assert summary["n_scans"] == report.n_scans > 0
    assert summary["reasons"]["structured_report"] == 1 and summary["reasons"]["decode_failed"] == 1
    truth = json.loads((cohort / "cohort.json").read_text())
    text = json.dumps(summary)
    for patient in truth["patients"]:
        assert patient["patient_id"] not in text

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    import anyio

    stored = anyio.run(artifacts)
    markdown = [a for a in stored if a.key == "ingest-summary" and a.flow_run_id == run_id]  # other flows make them too
    assert markdown and f"{report.n_scans} scans" in markdown[0].data
    assert all(p["patient_id"] not in str(a.data) for a in stored for p in truth["patients"])


def test_only_io_failures_are_retried():
    from prefect.states import Failed

    from medtl.errors import DataContractError, LeakageError
    from pipelines.common import retry_on_io_only

    def decide(error: Exception) -> bool:
        return retry_on_io_only(None, None, Failed(data=error))  # type: ignore[arg-type]

    assert decide(OSError("share went away")) is True
    assert decide(TimeoutError("nfs")) is True
    assert decide(LeakageError("patient on both sides")) is False
    assert decide(DataContractError("labels", [])) is False
    assert decide(ValueError("bug")) is False
