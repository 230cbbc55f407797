"""`medtl demo`, the README's main command, end to end on small cohorts (the real command uses bigger ones)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from medtl.artifacts import open_verified
from medtl.demo import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_every_built_stage_and_transfers_from_its_source_model(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_SIGNING_KEY", raising=False)
    paths = run_demo(tmp_path / "demo", patients=12, seed=1, epochs=2, console=Console(quiet=True))
    target = open_verified(paths["target"])
    assert target.is_signed
    pretrained = target.metadata["provenance"]["pretrained"]
    assert pretrained["source"] == "artifact"
    transfer = json.loads(target.read_text("metrics/transfer.json"))
    assert [entry["arm"] for entry in transfer] == ["main", "linear_probe", "scratch"]
    report = json.loads((paths["dataset"] / "ingest_report.json").read_text())
    assert report["counts"]["quarantined"] >= 1 and report["counts"]["skipped"] >= 1  # the planted problems
    assert (tmp_path / "demo" / "keys" / "demo-signing.pem").exists()
    assert target.is_approved and [e.kind for e in target.events][-2:] == ["approved", "scored"]
    assert (paths["report"] / "report.html").exists()
    import pandas as pd

    scores = pd.read_parquet(paths["scores"] / "scores.parquet")
    assert len(scores) > 0 and scores.approved.all() and scores.scan_id.is_unique
    assert len(list((paths["scores"] / "sr").glob("SR_*.dcm"))) == len(scores)
