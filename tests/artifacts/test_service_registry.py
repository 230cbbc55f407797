"""The service registry: signed promotions and rollbacks that verify, and every way one is refused or detected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medtl.artifacts import append_event, generate_signing_key, open_verified
from medtl.artifacts.service import open_registry, parse_time, promote, rollback
from medtl.cards.files import replacement_from_registry
from medtl.contracts import write_json, write_table
from medtl.contracts.artifact import TaskSpec
from medtl.contracts.comparison import ComparedArtifact
from medtl.contracts.evaluation import ScoreRow
from medtl.errors import ArtifactIntegrityError, ConfigError, NotApprovedError
from medtl.evaluation.approve import approve
from medtl.evaluation.compare import measure
from medtl.hashing import sha256_file
from medtl.scoring.served import served_batches


def approved(folder: Path, build: Any, keys: dict[str, Any], reviewer: Path, tmp_path: Path) -> Path:
    """A sealed artifact with a pipeline-signed evaluation and a reviewer's signed approval."""
    built = build(folder, signing_key=keys["private"], extra=lambda b: b.add_json("notes.json", {"name": folder.name}))
    report = tmp_path / f"report-{folder.name}"
    report.mkdir()
    (report / "report.html").write_text(f"<html>{folder.name}</html>")
    append_event(
        built.folder, "evaluated", actor="medtl evaluate", signing_key=keys["private"],
        payload={"files": {"report.html": sha256_file(report / "report.html")},
                 "operating_point": {"threshold": 0.5, "rule": "youden", "chosen_on": "oof"}, "evaluated_on": ["oof"]},
    )  # fmt: skip
    approve(built.folder, reviewer="Dr. A", role="radiologist", decision="approve", report=report, key=reviewer)
    return built.folder


def comparison_file(champion: Path, challenger: Path, out: Path, keys: dict[str, Any], *, worse: bool = False) -> Path:
    """comparison.json as `medtl compare` writes it (statistics on planted frames), recorded pipeline-signed in the
    challenger's audit log."""
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(int)
    noise = rng.normal(size=200)

    def frame(signal: float) -> pd.DataFrame:
        p = 1 / (1 + np.exp(-(signal * (y - 0.5) + noise)))
        ids = [f"{i:016x}" for i in range(200)]
        return pd.DataFrame({"scan_id": ["S-" + i for i in ids], "patient_id": ["P-" + i for i in ids],
                             "p_neg": 1 - p, "p_pos": p, "y": y})  # fmt: skip

    def described(folder: Path) -> ComparedArtifact:
        v = open_verified(folder)
        return ComparedArtifact(
            artifact_manifest_hash=v.manifest_hash, model_id=v.metadata["model_id"], model_version="1",
            trusted=True, approval="approved", thresholds={"pos": 0.5}, thresholds_approved=True,
        )  # fmt: skip

    result = measure(
        frame(3.0), frame(0.5 if worse else 3.0), task=TaskSpec(kind="binary", classes=["neg", "pos"],
        positive_class="pos"), champion=described(champion), challenger=described(challenger),
        test_manifest_hash="c" * 64, margin=0.02, decision_margin=None, n_boot=100,
    )  # fmt: skip
    out.mkdir(parents=True)
    write_json(result, out / "comparison.json")
    payload = {"comparison_sha256": sha256_file(out / "comparison.json"), "verdict": result.verdict}
    append_event(challenger, "compared", actor="medtl compare", signing_key=keys["private"], payload=payload)
    return out / "comparison.json"


@pytest.fixture
def pair(tmp_path: Path, build: Any, keys: dict[str, Any], reviewer: Path) -> tuple[Path, Path]:
    return tuple(approved(tmp_path / name, build, keys, reviewer, tmp_path) for name in ("model-a", "model-b"))


def test_promotion_and_rollback_are_signed_events_that_verify(tmp_path, pair, keys, reviewer):
    a, b = pair
    registry = tmp_path / "registry"
    first = promote(registry, a, reason="first model in service", reviewer_key=reviewer)
    assert first.kind == "promoted" and first.payload["replaces"] is None and first.signature
    with pytest.raises(ConfigError, match="needs a comparison"):
        promote(registry, b, reason="weekly retrain", reviewer_key=reviewer)
    comparison = comparison_file(a, b, tmp_path / "cmp", keys)
    second = promote(registry, b, reason="weekly retrain", comparison=comparison, reviewer_key=reviewer)
    found = open_registry(registry)
    assert found.in_service.artifact_manifest_hash == open_verified(b).manifest_hash
    assert second.payload["comparison"]["verdict"] in ("non_inferior", "superior")
    assert found.in_service_at(parse_time(first.time)).artifact_name == "model-a"
    replaced = replacement_from_registry(open_verified(b), found)  # what b's model card says it replaced
    assert replaced.artifact_hash == open_verified(a).manifest_hash and replaced.reason == "weekly retrain"
    assert replaced.comparison_verdict in ("non-inferior", "superior")
    assert replacement_from_registry(open_verified(a), found) is None
    back = rollback(registry, reason="site reported drift", reviewer_key=reviewer)
    found = open_registry(registry)
    assert back.kind == "rolled_back" and found.in_service.artifact_name == "model-a"
    assert [e.event.kind for e in found.entries] == ["promoted", "promoted", "rolled_back"]
    assert found.entries[-1].change.reason == "site reported drift"
    with pytest.raises(ConfigError, match="nothing to roll back to"):
        rollback(registry, reason="again", reviewer_key=reviewer)


@pytest.mark.parametrize("edit", ["reason", "drop_last", "registry_json"])
def test_a_tampered_registry_fails_verification(tmp_path, pair, reviewer, edit):
    a, _ = pair
    registry = tmp_path / "registry"
    promote(registry, a, reason="first", reviewer_key=reviewer)
    promote_again = registry / "audit.jsonl"
    lines = promote_again.read_text().splitlines(keepends=True)
    if edit == "reason":
        event = json.loads(lines[1])
        event["payload"]["reason"] = "something else"
        lines[1] = json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"
        promote_again.write_text("".join(lines))
    elif edit == "drop_last":
        promote_again.write_text(lines[0] + lines[1].replace('"index":1', '"index":2'))
    else:
        record = registry / "registry.json"
        record.write_text(record.read_text().replace('"name": "registry"', '"name": "other"'))
    with pytest.raises(ArtifactIntegrityError):
        open_registry(registry)


def test_only_an_approver_key_can_change_what_is_in_service(tmp_path, pair, keys, reviewer, monkeypatch):
    a, _ = pair
    with pytest.raises(ConfigError, match="not an approver key"):
        promote(tmp_path / "r1", a, reason="by the pipeline", reviewer_key=keys["private"])
    stranger = tmp_path / "stranger.pem"
    generate_signing_key(stranger)
    with pytest.raises(ConfigError, match="not an approver key"):
        promote(tmp_path / "r2", a, reason="by a stranger", reviewer_key=stranger)
    promote(tmp_path / "r3", a, reason="by the reviewer", reviewer_key=reviewer)
    monkeypatch.setenv("MEDTL_APPROVER_KEYS", f"{stranger}.pub")  # the reviewer is no longer an approver
    with pytest.raises(ArtifactIntegrityError, match="not an approver key"):
        open_registry(tmp_path / "r3")


def test_an_unapproved_artifact_cannot_be_promoted(tmp_path, build, keys, reviewer):
    built = build(tmp_path / "unapproved", signing_key=keys["private"])
    with pytest.raises(NotApprovedError, match="not approved"):
        promote(tmp_path / "registry", built.folder, reason="try", reviewer_key=reviewer)
    assert not (tmp_path / "registry").exists()


def test_an_inferior_or_unrecorded_comparison_does_not_promote(tmp_path, pair, keys, reviewer):
    a, b = pair
    registry = tmp_path / "registry"
    promote(registry, a, reason="first", reviewer_key=reviewer)
    worse = comparison_file(a, b, tmp_path / "worse", keys, worse=True)
    with pytest.raises(ConfigError, match=r"found the challenger (inferior|inconclusive)"):
        promote(registry, b, reason="weekly", comparison=worse, reviewer_key=reviewer)
    good = comparison_file(a, b, tmp_path / "good", keys)
    edited = json.loads(good.read_text())
    edited["margin"] = 0.1
    good.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match="no pipeline-signed record"):
        promote(registry, b, reason="weekly", comparison=good, reviewer_key=reviewer)
    swapped = comparison_file(b, a, tmp_path / "swapped", keys)
    with pytest.raises(ConfigError, match="not of these two artifacts"):
        promote(registry, b, reason="weekly", comparison=swapped, reviewer_key=reviewer)
    assert open_registry(registry).in_service.artifact_name == "model-a"


def _scores(folder: Path, artifact: Path, times: list[str]) -> None:
    digest = open_verified(artifact).manifest_hash
    rows = [
        {"scan_id": f"S-{i:016x}", "series_id": f"X-{i:016x}", "study_id": None, "patient_id": f"P-{i:016x}",
         "input_hash": f"{i:064x}", "model_id": "tiny", "model_version": "1", "artifact_hash": digest,
         "probability": 0.7, "decision": "pos", "threshold": 0.5, "task_kind": "binary", "classes": ["neg", "pos"],
         "probabilities": [0.3, 0.7], "endpoints": ["pos"], "endpoint_probabilities": [0.7], "thresholds": [0.5],
         "decisions": [True], "flags": [], "abstained": False, "approved": True, "trusted": True, "scored_at": when}
        for i, when in enumerate(times)
    ]  # fmt: skip
    folder.mkdir(parents=True)
    write_table(ScoreRow, pd.DataFrame(rows), folder / "scores.parquet")


def test_which_names_the_artifact_that_served_and_whether_it_was_in_service(tmp_path, pair, keys, reviewer):
    a, b = pair
    registry = tmp_path / "registry"
    promoted = parse_time(promote(registry, a, reason="first", reviewer_key=reviewer).time)
    later = promoted.replace(year=promoted.year + 1).isoformat(timespec="seconds")
    earlier = promoted.replace(year=promoted.year - 1).isoformat(timespec="seconds")
    _scores(tmp_path / "scores-a", a, [later, later])
    (batch,) = served_batches(tmp_path / "scores-a", open_registry(registry))
    assert batch.in_service and batch.rows == 2 and batch.model_id == "tiny"
    _scores(tmp_path / "scores-b", b, [earlier, later])
    batches = served_batches(tmp_path / "scores-b", open_registry(registry))
    assert [(x.rows, x.in_service, x.in_service_then) for x in batches] == [(2, False, None)]
    assert "NOT in service" in batches[0].describe()


@pytest.mark.slow  # two `medtl` processes
def test_the_service_commands_report_and_exit_by_code(tmp_path, pair, reviewer):
    import os
    import subprocess
    import sys

    a, _ = pair
    registry = tmp_path / "registry"
    promote(registry, a, reason="first", reviewer_key=reviewer)

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "medtl.cli", "service", *args, "--registry", str(registry)]
        return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=120)

    done = run("history")
    assert done.returncode == 0 and "promoted" in done.stdout and "first" in done.stdout
    lines = (registry / "audit.jsonl").read_text().splitlines(keepends=True)
    (registry / "audit.jsonl").write_text(lines[0] + lines[1].replace('"first"', '"other"'))
    done = run("status")
    assert done.returncode == ArtifactIntegrityError.exit_code and "does not match" in done.stderr


def test_scoring_with_a_registry_refuses_an_artifact_not_in_service(tmp_path, pair, keys, reviewer):
    from medtl.artifacts.service import require_in_service
    from medtl.scoring.score import prepare

    a, b = pair
    registry = tmp_path / "registry"
    promote(registry, a, reason="first", reviewer_key=reviewer)
    assert require_in_service(open_verified(a), registry).artifact_name == "model-a"
    with pytest.raises(NotApprovedError, match="model-b is not the artifact in service"):
        prepare(b, registry=registry)  # approved, but a reviewer never put it in service
    promote(
        registry, b, reason="weekly", comparison=comparison_file(a, b, tmp_path / "cmp", keys), reviewer_key=reviewer
    )
    with pytest.raises(NotApprovedError, match="model-a is not the artifact in service"):
        prepare(a, registry=registry)  # replaced: a stale path in a scheduled job
