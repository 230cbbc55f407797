"""`medtl evaluate` and `medtl approve` on a trained synthetic model: metrics, report, audit events, sign-off."""

from __future__ import annotations

import json
import os

import pytest

from medtl.artifacts import open_verified
from medtl.contracts import read_json
from medtl.contracts.evaluation import Metrics
from medtl.errors import ConfigError, LeakageError
from medtl.evaluation.approve import approve
from medtl.evaluation.evaluate import evaluate
from medtl.training.train import train
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    with signing_key(root / "signing.pem"):
        for name, seed, n in (("dev", 21, 16), ("test", 22, 10)):
            ingested_cohort(root, name, patients=n, seed=seed, difficulty=0.0)
        config = tiny_config(epochs=2, early_stopping={"patience": 2, "min_epochs": 1})
        train(root / "dev-data", config, root / "artifact")
        yield root


def test_evaluate_writes_metrics_report_and_an_audit_event(trained):
    root = trained
    result = evaluate(
        root / "artifact", out=root / "report", test=root / "test-data", dataset=root / "dev-data", n_boot=200
    )
    metrics = read_json(Metrics, root / "report" / "metrics.json")
    assert [e.evaluated_on for e in metrics.evaluations] == ["oof", "test"]
    oof, test = metrics.evaluations
    assert oof.operating_point.threshold == test.operating_point.threshold  # frozen before the test was opened
    assert oof.n_patients == 16 and test.n_patients == 10
    assert sum(map(sum, test.confusion)) == test.n_scans
    names = {e.name for e in test.estimates}
    assert {"auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy"} <= names
    artifact = open_verified(root / "artifact")
    event = artifact.events[-1]
    assert event.kind == "evaluated"
    assert event.payload["files"]["report.html"] == result.files["report.html"]
    assert event.payload["test_manifest_hash"] is not None
    assert event.public_key in artifact.report.pipeline_keys  # signed by the pipeline key, so it can be approved
    html = (root / "report" / "report.html").read_text()
    assert "NOT FOR CLINICAL USE" in html.upper()
    assert "(a trusted pipeline key)" in html and "UNTRUSTED" not in html
    terms = json.loads((root / "dev-data" / "private" / "phi_terms.json").read_text())
    assert not [t for t in terms["patient_ids"] + terms["accession_numbers"] if t in html]


def test_approval_is_bound_to_the_report_and_signed(trained):
    root = trained
    with pytest.raises(ConfigError, match="not produced by this artifact"):
        tampered = root / "tampered.html"
        tampered.write_text((root / "report" / "report.html").read_text() + "<!-- edited -->")
        approve(root / "artifact", reviewer="Dr A. Reviewer", role="radiologist", decision="approve", report=tampered)
    event = approve(root / "artifact", reviewer="Dr A. Reviewer", role="radiologist", decision="approve",
                    report=root / "report", comment="fit for the research pilot")  # fmt: skip
    assert event.kind == "approved" and event.payload["signature"] and event.payload["public_key"]
    artifact = open_verified(root / "artifact")
    assert (
        artifact.is_approved and artifact.status.statement.report_sha256 == event.payload["statement"]["report_sha256"]
    )
    assert artifact.status.statement.comment == "fit for the research pilot"
    rejected = approve(
        root / "artifact", reviewer="Dr B", role="radiologist", decision="reject", report=root / "report"
    )
    assert rejected.kind == "rejected" and not open_verified(root / "artifact").is_approved


def test_a_test_set_sharing_patients_with_training_is_refused(trained):
    with pytest.raises(LeakageError, match=r"^\d+ in the model's training \(of \d+ test patients\)") as raised:
        evaluate(trained / "artifact", out=trained / "leaky", test=trained / "dev-data", n_boot=50, pdf=False)
    assert "P-" not in str(raised.value)  # counts, never pseudonyms


def test_the_approve_command_signs_with_the_reviewers_key_and_verify_reports_what_counts(trained, tmp_path):
    import shutil
    import subprocess
    import sys

    from medtl.artifacts.decisions import decode_decision
    from medtl.evaluation.approve import record_review

    root = trained
    artifact = tmp_path / "artifact"
    shutil.copytree(root / "artifact", artifact)
    evaluate(artifact, out=tmp_path / "report", n_boot=50, pdf=False, failure_cases=0)
    medtl = [sys.executable, "-m", "medtl.cli"]
    common = ["--reviewer", "Dr C", "--role", "radiologist", "--report", str(tmp_path / "report")]
    printed = subprocess.run([*medtl, "approve", str(artifact), *common, "--decision", "approve", "--sign-only"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert not open_verified(artifact).is_approved  # --sign-only records nothing
    record_review(artifact, decode_decision(printed.stdout))
    assert open_verified(artifact).status.statement.reviewer == "Dr C"
    with_pipeline_key = [*common, "--decision", "reject", "--key", os.environ["MEDTL_SIGNING_KEY"]]
    pipeline = subprocess.run([*medtl, "approve", str(artifact), *with_pipeline_key], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert pipeline.returncode == 2 and "decisions must come from a reviewer's own key" in pipeline.stderr
    verified = subprocess.run([*medtl, "verify", str(artifact)], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0 and "decision: approved by Dr C (radiologist)" in verified.stdout


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_existing_report_is_never_overwritten_and_a_foreign_folder_is_refused(trained, tmp_path):
    first = tmp_path / "report"
    evaluate(trained / "artifact", out=first, n_boot=50, pdf=False, failure_cases=0)
    written, events = _files(first), len(open_verified(trained / "artifact").events)
    assert set(written) == {"metrics.json", "report.html", "model_card.json", "configs/metadata.json"}

    with pytest.raises(ConfigError, match="a report is never overwritten") as refused:
        evaluate(trained / "artifact", out=first, n_boot=50, pdf=False, failure_cases=0, rule="specificity>=0.9")
    assert "pass a new folder" in str(refused.value)
    assert _files(first) == written  # byte for byte: an approval bound to its SHA-256 still holds
    assert len(open_verified(trained / "artifact").events) == events  # no `evaluated` event for a report not written

    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's notes\n")
    with pytest.raises(ConfigError, match="a report is never overwritten"):
        evaluate(trained / "artifact", out=foreign, n_boot=50, pdf=False, failure_cases=0)
    assert _files(foreign) == {"notes.txt": b"a user's notes\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "theirs"]  # no half-written folder beside them
