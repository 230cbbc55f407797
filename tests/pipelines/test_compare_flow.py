"""The weekly flow's champion/challenger step: compared with the model in service, and sign-off asked only for a
proposed challenger."""

from __future__ import annotations

import logging
import shutil

import pytest

from medtl.artifacts import open_verified
from medtl.artifacts.service import open_registry, promote
from medtl.evaluation.approve import approve
from medtl.evaluation.evaluate import evaluate
from pipelines.end_to_end import EndToEndParameters, _compare_with_champion, sign_off
from support.trained import ingested_cohort

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOG = logging.getLogger("test-compare-flow")


@pytest.fixture(scope="module")
def in_service(trained, tmp_path_factory):
    """A registry with an approved copy of the shared artifact in service, and a locked test set."""
    root = tmp_path_factory.mktemp("service")
    shutil.copytree(trained / "artifact", root / "current")
    evaluate(root / "current", out=root / "report", n_boot=100, pdf=False)
    approve(root / "current", reviewer="Dr A", role="radiologist", decision="approve", report=root / "report")
    promote(root / "registry", root / "current", reason="first model")
    ingested_cohort(root, "locked", patients=8, seed=77, difficulty=0.0)
    return root


def _params(root, work, approval="pause"):
    return EndToEndParameters(
        sources=[root], labels=root / "labels.csv", workdir=work, registry=root / "registry",
        champion=root / "current", test=root / "locked-data", n_boot=100, approval=approval,
    )  # fmt: skip


def test_the_flow_compares_the_new_model_with_the_one_in_service(in_service, tmp_path):
    root = in_service
    shutil.copytree(root / "current", tmp_path / "artifact")  # this week's model: here the same bytes
    summary = _compare_with_champion(tmp_path / "artifact", tmp_path, _params(root, tmp_path), LOG)
    assert summary["verdict"] == "non_inferior" and summary["proposed"] and summary["margin"] == 0.02
    assert (tmp_path / "comparison" / "comparison.json").exists()
    again = _compare_with_champion(tmp_path / "artifact", tmp_path, _params(root, tmp_path), LOG)
    assert again["reused"] and again["verdict"] == "non_inferior"  # a re-run does not compare twice
    assert [e.kind for e in open_verified(tmp_path / "artifact").events].count("compared") == 1
    assert open_registry(root / "registry").in_service.artifact_name == "current"


def test_no_sign_off_is_requested_for_a_challenger_not_shown_non_inferior(in_service, tmp_path, caplog):
    logger = LOG
    with caplog.at_level(logging.WARNING):
        review = sign_off(tmp_path / "a", tmp_path / "r", _params(in_service, tmp_path),
                          {"proposed": False, "verdict": "inferior", "margin": 0.02}, logger)  # fmt: skip
    assert review == {"decision": "not requested: inferior", "approved": False}
    assert "no sign-off is requested" in caplog.text
    assert (
        sign_off(tmp_path / "a", tmp_path / "r", _params(in_service, tmp_path, approval="none"), None, logger) is None
    )
