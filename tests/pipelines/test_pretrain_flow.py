"""The pretraining flow: the library's artifact, a summary for the UI, and the locked test patients left out."""

from __future__ import annotations

import json

import pytest
import yaml

from pipelines.pretrain import PretrainParameters, pretrain_flow
from support.trained import ingested_cohort, signing_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flow_pretrains_and_summarises(tmp_path):
    with signing_key(tmp_path / "key.pem"):
        dataset = ingested_cohort(tmp_path, "site", patients=8, seed=7)
        config = tmp_path / "pretrain.yaml"
        config.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 4, "method": "simclr"}), encoding="utf-8")
        summary = pretrain_flow(PretrainParameters(datasets=[dataset], out=tmp_path / "pre", config=config,
                                                   method="masked"))  # fmt: skip
    record = json.loads((tmp_path / "pre" / "metrics" / "pretraining.json").read_text())
    assert summary["method"] == record["method"] == "masked"  # the parameter overrides the file
    assert summary["scans"] == record["scans"] > 0
    assert summary["epochs"] == 1 and summary["last_loss"] == record["curve"][-1]["loss"]
    assert (
        record["datasets"][0]["manifest_hash"]
        == json.loads((dataset / "fingerprint.json").read_text())["manifest_hash"]
    )


def test_unknown_method_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="method"):
        PretrainParameters(datasets=[tmp_path], out=tmp_path / "pre", method="mae")
