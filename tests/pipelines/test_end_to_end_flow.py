"""The end-to-end flow on a tiny cohort: every stage runs once, a re-run skips what has not changed (by content),
a changed input re-runs what depends on it and keeps the superseded artifact, and bad parameters fail up front."""

from __future__ import annotations

import csv
import json

import pytest
from pydantic import ValidationError

from medtl.artifacts import open_verified
from medtl.contracts import PreprocessingSpec, read_json
from medtl.contracts.evaluation import Metrics
from medtl.contracts.task import TaskDeclaration
from medtl.datasets.synth import make_cohort
from pipelines.end_to_end import EndToEndParameters, end_to_end_flow
from support.trained import write_tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tree(folder):
    """Every file under FOLDER (the report folder holds configs/metadata.json) by its relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(tmp_path, trained):  # `trained` sets the signing key for the session
    make_cohort(tmp_path / "cohort", patients=12, seed=43)
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[3.0, 3.0, 6.0], target_shape=[16, 16, 8])
    (tmp_path / "spec.json").write_text(spec.model_dump_json(), encoding="utf-8")
    write_tiny_config(tmp_path / "train.yaml", seed=3)
    return {
        "sources": [tmp_path / "cohort" / "dicom"], "labels": tmp_path / "cohort" / "labels.csv",
        "workdir": tmp_path / "run", "spec": tmp_path / "spec.json", "config": tmp_path / "train.yaml",
        "n_boot": 100, "pdf": False, "allow_development_key": True, "workers": 1,
    }  # fmt: skip


def test_stages_run_once_and_a_rerun_skips_what_did_not_change(inputs):
    params = EndToEndParameters(**inputs)
    first = end_to_end_flow(params)
    assert first["skipped"] == []
    artifact = open_verified(first["artifact"])
    assert artifact.metadata["provenance"]["flow_run_id"]
    assert [e.kind for e in artifact.events].count("evaluated") == 1
    metrics = json.loads((first["report"] / "metrics.json").read_text())
    assert metrics["evaluations"][0]["evaluated_on"] == "oof"
    manifest = (first["artifact"] / "manifest.json").read_bytes()

    second = end_to_end_flow(params)
    assert second["skipped"] == ["ingest", "train", "evaluate"]
    assert (second["artifact"] / "manifest.json").read_bytes() == manifest
    assert [e.kind for e in open_verified(second["artifact"]).events].count("evaluated") == 1

    (first["report"] / "report.html").unlink()  # an output that disappeared is rebuilt, even with equal inputs
    third = end_to_end_flow(params)
    assert third["skipped"] == ["ingest", "train"] and (third["report"] / "report.html").exists()
    assert (inputs["workdir"] / "report.superseded-1" / "metrics.json").exists()  # the incomplete one, set aside
    evaluated = _tree(third["report"])

    labels = inputs["labels"]
    rows = list(csv.DictReader(labels.open()))
    rows[0]["label"] = "1" if rows[0]["label"] == "0" else "0"  # a corrected label: same paths, new content
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fourth = end_to_end_flow(params)
    assert fourth["skipped"] == []
    superseded = inputs["workdir"] / "artifact.superseded-1"
    assert (superseded / "manifest.json").read_bytes() == manifest  # the old artifact is kept, not overwritten
    assert (fourth["artifact"] / "manifest.json").read_bytes() != manifest
    kept = inputs["workdir"] / "report.superseded-2"  # a report is never overwritten: it may be the approved one
    assert _tree(kept) == evaluated


@pytest.mark.parametrize(
    "bad", [{"rule": "sens>=0.9"}, {"approval": "maybe"}, {"n_boot": 5}, {"sources": []}, {"surprise": 1}]
)
def test_bad_parameters_fail_before_any_work(inputs, bad):
    with pytest.raises(ValidationError):
        EndToEndParameters(**{**inputs, **bad})
    assert not inputs["workdir"].exists()


def test_a_graded_cohort_runs_end_to_end_as_declared_and_a_new_declaration_retrains(inputs, tmp_path):
    make_cohort(tmp_path / "graded", patients=20, seed=44, task="ordinal", grades=3)
    declared = TaskDeclaration(kind="ordinal", classes=["0", "1", "2"])
    params = EndToEndParameters(**{**inputs, "sources": [tmp_path / "graded" / "dicom"],
                                   "labels": tmp_path / "graded" / "labels.csv", "task": declared})  # fmt: skip
    first = end_to_end_flow(params)
    task = open_verified(first["artifact"]).metadata["task"]
    assert (task["kind"], task["decision_cut"], task["decision_cut_declared"]) == ("ordinal", "1", False)
    oof = read_json(Metrics, first["report"] / "metrics.json").evaluations[0]
    assert oof.task_kind == "ordinal" and [e.endpoint for e in oof.endpoints] == ["ge_1", "ge_2"]
    assert [e.endpoint for e in oof.endpoints if e.is_decision] == ["ge_1"]

    cut = params.model_copy(update={"task": declared.model_copy(update={"decision_cut": "2"})})
    second = end_to_end_flow(cut)  # the declaration is an input: a new one re-ingests and retrains
    assert second["skipped"] == []
    task = open_verified(second["artifact"]).metadata["task"]
    assert (task["decision_cut"], task["decision_cut_declared"]) == ("2", True)
