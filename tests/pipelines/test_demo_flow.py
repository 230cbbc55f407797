"""`medtl demo`, the README's main command, as the flows run it, on small cohorts (the command uses bigger ones)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.service import open_registry
from medtl.contracts import read_json
from medtl.contracts.monitoring import MonitorStatus
from pipelines.demo import DemoParameters, demo_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_flow_runs_every_stage_and_transfers_from_its_source_model(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_SIGNING_KEY", raising=False)
    site_anchor = "ab" * 32  # a site's own anchor stays, and the demo's key joins it for this run only
    for name, value in (("MEDTL_TRUSTED_KEYS", site_anchor), ("MEDTL_APPROVER_KEYS", "")):
        monkeypatch.setenv(name, value)
    for store in ("TORCH_HOME", "MEDTL_HOME"):  # no pretrained weights here: the demo trains its own source model
        monkeypatch.setenv(store, str(tmp_path / store.lower()))
    result = demo_flow(DemoParameters(out=tmp_path / "demo", patients=12, seed=1, epochs=2))
    assert os.environ["MEDTL_TRUSTED_KEYS"].split(os.pathsep)[0] == site_anchor
    target = open_verified(result["target"])
    assert target.is_signed
    assert target.metadata["provenance"]["pretrained"]["source"] == "artifact"
    assert result["source"] is not None and "synthetic source cohort" in result["transfer"]
    assert target.metadata["provenance"]["flow_run_id"]  # trained inside the flow, and the artifact says which run
    assert [entry.arm for entry in ArtifactContents(target).transfer.arms] == ["main", "linear_probe", "scratch"]
    report = json.loads((result["dataset"] / "ingest_report.json").read_text())
    assert report["counts"]["quarantined"] >= 1 and report["counts"]["skipped"] >= 1  # the planted problems
    assert (tmp_path / "demo" / "keys" / "demo-signing.pem").exists()
    assert target.is_approved and [e.kind for e in target.events][-2:] == ["approved", "scored"]
    assert json.loads((result["report"] / "metrics.json").read_text())["artifact_manifest_hash"]
    scores = pd.read_parquet(result["scores"] / "scores.parquet")
    assert len(scores) == result["scored"]["scored"] > 0
    assert scores.approved.all() and scores.scan_id.is_unique
    assert len(list((result["scores"] / "sr").glob("SR_*.dcm"))) == len(scores)
    # scored only because the reviewer put it in service; its first night monitored, same distribution: no alert
    assert open_registry(result["registry"]).in_service.artifact_manifest_hash == target.manifest_hash
    status = read_json(MonitorStatus, result["monitoring"] / "monitor_status.json")
    assert result["scored"]["monitoring"]["status"] == status.status == "ok" and len(status.nights) == 1
    assert status.nights[0].summary.n_scans == len(scores)
