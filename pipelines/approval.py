"""Clinician sign-off inside a flow run: pause after evaluation and wait for the reviewer's answer in Prefect's UI.

The answer is recorded exactly as `medtl approve` records it (a signed audit event in the artifact, tied to the
report's hash); Prefect only carries the form. No answer before the timeout leaves the artifact unapproved, and
scoring then refuses it unless told otherwise, so a forgotten review can never approve a model by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from medtl.evaluation.approve import approve


class ReviewDecision(RunInput):
    """The form the reviewer fills in after reading the report."""

    decision: Literal["approve", "reject"]
    reviewer: str = Field(min_length=1, description="full name, as it should appear in the audit trail")
    role: str = Field(min_length=1, description="e.g. consultant radiologist")
    comment: str | None = Field(None, description="why; required by most sites for a rejection")


def request_approval(artifact: Path, report: Path, *, timeout_s: int, poll_s: int = 10) -> dict[str, object]:
    """Pause the running flow for the reviewer; returns what was decided ("timed out" when nobody answered)."""
    logger = get_run_logger()
    report_file = Path(report) / "report.html"
    form = ReviewDecision.with_initial_data(
        description=(
            "## Review the evaluation report before this model is used\n\n"
            f"Report: [{report_file.name}]({report_file.resolve().as_uri()}) (also `report.pdf` beside it).\n\n"
            "Approve or reject; your name, role and comment are recorded in the artifact's signed audit trail."
        )
    )
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s, key="clinical-review")
    except FlowPauseTimeout:
        logger.warning("no review within %d s: the artifact stays unapproved; run `medtl approve` later", timeout_s)
        return {"decision": "timed out", "approved": False}
    event = approve(
        artifact, reviewer=answer.reviewer, role=answer.role, decision=answer.decision, report=report,
        comment=answer.comment,
    )  # fmt: skip
    logger.info("review recorded: %s (%s)", event.kind, answer.decision)
    return {"decision": answer.decision, "approved": answer.decision == "approve", "event": event.kind}
