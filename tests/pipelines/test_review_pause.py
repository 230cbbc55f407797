"""Sign-off inside a flow run: the flow pauses for the reviewer's form; the answer becomes the same signed audit
event as `medtl approve`; no answer before the timeout leaves the artifact unapproved."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run

from medtl.artifacts import open_verified
from medtl.evaluation.evaluate import evaluate
from pipelines.approval import request_approval

pytestmark = [pytest.mark.integration, pytest.mark.slow]


STARTED: list[str] = []  # flow parameters are copied by validation, so the run id comes back through here


@flow(name="review-under-test")
def review_flow(artifact, report, timeout_s: int) -> dict:
    STARTED.append(flow_run.get_id())
    return request_approval(artifact, report, timeout_s=timeout_s, poll_s=1)


@pytest.fixture
def evaluated(trained, tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(trained / "artifact", artifact)
    evaluate(artifact, out=tmp_path / "report", n_boot=100, pdf=False)
    return artifact, tmp_path / "report"


def _wait_until_paused(seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if STARTED and client.read_flow_run(STARTED[-1]).state.is_paused():
                time.sleep(1)  # the form's schema is saved just after the state changes
                return STARTED[-1]
            time.sleep(0.3)
    raise AssertionError("the flow never paused for review")


def test_the_reviewers_answer_is_recorded_as_a_signed_approval(evaluated):
    artifact, report = evaluated
    STARTED.clear()
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(review_flow(artifact, report, 120)))
    runner.start()
    run_id = _wait_until_paused()
    assert not open_verified(artifact).is_approved  # nothing is decided while the form waits
    resume_flow_run(run_id, run_input={"decision": "approve", "reviewer": "A. Reviewer", "role": "radiologist",
                                       "comment": "calibration acceptable"})  # fmt: skip
    runner.join(timeout=120)
    assert outcome == [{"decision": "approve", "approved": True, "event": "approved"}]
    verified = open_verified(artifact)
    assert verified.is_approved and verified.approval.actor == "A. Reviewer (radiologist)"
    assert verified.approval.payload["comment"] == "calibration acceptable"


def test_no_answer_before_the_timeout_leaves_the_artifact_unapproved(evaluated):
    artifact, report = evaluated
    assert review_flow(artifact, report, 3) == {"decision": "timed out", "approved": False}
    assert not open_verified(artifact).is_approved
