"""Clinician sign-off inside a flow run: pause after evaluation and wait for the reviewer's signed decision.

Why the form takes a signed decision and not a name: Prefect's server has no authentication of its own, so anyone
who can reach its UI could type any reviewer's name. The reviewer signs on their own machine with their own key
(`medtl approve ... --sign-only` prints one line) and pastes that line; the flow records it only when it would count
(an approver key, this artifact, this report: medtl.artifacts.decisions.judge). Anything else is refused and the
form is shown again until the timeout. No decision before the timeout leaves the artifact unapproved, and scoring
then refuses it unless told otherwise, so a forgotten review never approves a model by default.

The reviewer must be able to open the report where they review: give `report_url` (where the site publishes the
report folder, e.g. a web server or a shared drive); otherwise the form names the path on the worker and the
report's SHA-256, so that a copied report can be checked to be the one being signed.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from medtl.artifacts.decisions import decode_decision
from medtl.errors import ConfigError
from medtl.evaluation.approve import record_review
from medtl.hashing import sha256_file

MAX_ATTEMPTS = 5  # a reviewer who pastes a wrong line gets the form again, a few times


class SignedReview(RunInput):
    """The form the reviewer fills in after reading the report."""

    signed_decision: str = Field(
        min_length=1,
        max_length=16_384,
        description="the one line printed by `medtl approve ARTIFACT --report REPORT --decision approve|reject "
        "--reviewer NAME --role ROLE --sign-only` (signed with your own key)",
    )


def review_description(artifact: Path, report: Path, report_url: str | None, problem: str | None = None) -> str:
    report_file = Path(report) / "report.html"
    where = (
        f"[open the report]({report_url})"
        if report_url
        else f"on the worker at `{report_file}` (ask for a copy, or set `report_url` where reports are published)"
    )
    lines = [
        "## Review the evaluation report before this model is used",
        "",
        f"Report: {where}; `report.html` SHA-256 `{sha256_file(report_file)}`.",
        "",
        "Sign your decision with your own key and paste the line it prints:",
        "",
        f'`medtl approve {artifact.name} --report report.html --decision approve|reject --reviewer "NAME" '
        '--role "ROLE" --sign-only`',
        "",
        "Only keys listed in MEDTL_APPROVER_KEYS count; this server does not authenticate you, your signature does.",
    ]
    if problem:
        lines += ["", f"**The last decision was not recorded:** {problem}"]
    return "\n".join(lines)


def request_approval(
    artifact: Path, report: Path, *, timeout_s: int, poll_s: int = 10, report_url: str | None = None
) -> dict[str, object]:
    """Pause the running flow for the reviewer; returns what was decided ("timed out" when nobody answered)."""
    logger = get_run_logger()
    problem = None
    for attempt in range(MAX_ATTEMPTS):
        form = SignedReview.with_initial_data(description=review_description(artifact, report, report_url, problem))
        try:
            answer = pause_flow_run(
                wait_for_input=form, timeout=timeout_s, poll_interval=poll_s, key=f"clinical-review-{attempt}"
            )
        except FlowPauseTimeout:
            logger.warning("no review within %d s: the artifact stays unapproved; run `medtl approve` later", timeout_s)
            return {"decision": "timed out", "approved": False}
        try:
            event = record_review(artifact, decode_decision(answer.signed_decision))
        except ConfigError as error:
            problem = error.what
            logger.warning("a submitted decision was not recorded: %s", problem)
            continue
        logger.info("review recorded: %s", event.kind)
        return {"decision": event.kind, "approved": event.kind == "approved", "event": event.kind}
    return {"decision": "not recorded", "approved": False}
