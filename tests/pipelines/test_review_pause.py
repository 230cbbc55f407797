"""Sign-off inside a flow run: the flow pauses for the reviewer's form, which takes the one-line decision the
reviewer signed with their own key (`medtl approve --sign-only`); a line that would not count is refused and the
form shown again; no answer before the timeout leaves the artifact unapproved."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run

from medtl.artifacts import generate_signing_key, open_verified
from medtl.artifacts.decisions import encode_decision
from medtl.evaluation.approve import sign_review
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


def _wait_until_paused(seconds: float = 60, previous_pauses: int = 0) -> str:
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(STARTED[-1]) if STARTED else None
            if (
                run is not None
                and run.state.is_paused()
                and run.state.state_details.pause_key.endswith(f"-{previous_pauses}")
            ):
                time.sleep(1)  # the form's schema is saved just after the state changes
                return STARTED[-1]
            time.sleep(0.3)
    raise AssertionError("the flow never paused for review")


def test_only_the_reviewers_signed_decision_is_recorded(evaluated, tmp_path):
    artifact, report = evaluated
    STARTED.clear()
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(review_flow(artifact, report, 120)))
    runner.start()
    run_id = _wait_until_paused()
    assert not open_verified(artifact).is_approved  # nothing is decided while the form waits
    stranger = tmp_path / "stranger.pem"
    generate_signing_key(stranger)  # a valid signature, but not an approver's key: typed names prove nothing
    forged = sign_review(artifact, reviewer="A. Reviewer", role="radiologist", decision="approve", report=report,
                         key=stranger)  # fmt: skip
    resume_flow_run(run_id, run_input={"signed_decision": encode_decision(forged)})
    run_id = _wait_until_paused(previous_pauses=1)
    assert not open_verified(artifact).is_approved
    signed = sign_review(
        artifact,
        reviewer="A. Reviewer",
        role="radiologist",
        decision="approve",
        report=report,
        comment="calibration acceptable",
    )  # fmt: skip  (MEDTL_REVIEWER_KEY: an approver's key)
    resume_flow_run(run_id, run_input={"signed_decision": encode_decision(signed)})
    runner.join(timeout=120)
    assert outcome == [{"decision": "approved", "approved": True, "event": "approved"}]
    status = open_verified(artifact).status
    assert status.approved and status.event.actor == "A. Reviewer (radiologist)"
    assert status.statement.comment == "calibration acceptable" and status.ignored == ()


def test_no_answer_before_the_timeout_leaves_the_artifact_unapproved(evaluated):
    artifact, report = evaluated
    assert review_flow(artifact, report, 3) == {"decision": "timed out", "approved": False}
    assert not open_verified(artifact).is_approved
