"""The machine-readable model card and the MONAI metadata of a trained artifact, written by `medtl evaluate` (with a
seed replicate and a locked test set) and by `medtl card`; replicates trained on other data are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medtl.artifacts import open_verified
from medtl.contracts import read_json
from medtl.contracts.evaluation import Metrics
from medtl.contracts.model_card import ModelCard
from medtl.errors import ConfigError
from medtl.evaluation.evaluate import evaluate
from medtl.training.train import train
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Artifacts A (seed 0) and B (seed 1) of one recipe on one dataset, and A evaluated with B as its replicate and
    a locked test set."""
    root = tmp_path_factory.mktemp("card")
    with signing_key(root / "signing.pem"):
        ingested_cohort(root, "dev", patients=12, seed=31, difficulty=0.0)
        ingested_cohort(root, "test", patients=8, seed=32, difficulty=0.0)
        train(root / "dev-data", tiny_config(), root / "a")
        train(root / "dev-data", tiny_config(seed=1), root / "b")
        evaluate(root / "a", out=root / "report", test=root / "test-data", replicates=[root / "b"], n_boot=50,
                 pdf=False, failure_cases=0)  # fmt: skip
        yield root


@pytest.fixture
def trained(evaluated, monkeypatch):
    """The module's artifacts with their own pipeline key as the trust anchor (this area's conftest sets another)."""
    monkeypatch.setenv("MEDTL_TRUSTED_KEYS", str(evaluated / "signing.pem.pub"))
    monkeypatch.setenv("MEDTL_SIGNING_KEY", str(evaluated / "signing.pem"))
    return evaluated


def _medtl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "medtl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip


def test_metrics_hold_decision_curves_and_the_seed_spread(trained):
    metrics = read_json(Metrics, trained / "report" / "metrics.json")
    assert [len(e.decision_curves) for e in metrics.evaluations] == [1, 1]  # oof and test, the positive class
    spread = metrics.seed_spread
    assert [run.seed for run in spread.runs] == [0, 1] and not spread.split_shared  # the seed drew the folds
    assert spread.runs[1].artifact_manifest_hash == open_verified(trained / "b").manifest_hash
    assert {s.name for s in spread.summary} == {"auroc", "auprc", "brier"}
    html = (trained / "report" / "report.html").read_text()
    spread_section = html[html.index('id="seed-spread"') : html.index("</section>", html.index('id="seed-spread"'))]
    assert "<td>0</td>" in spread_section and "<td>1</td>" in spread_section  # one row per seed
    assert html.count('alt="Decision curve, ') == 2
    event = open_verified(trained / "a").events[-1]
    assert {"model_card.json", "configs/metadata.json"} <= set(event.payload["files"])


def test_the_card_validates_and_its_numbers_are_those_of_metrics_json(trained):
    metrics = read_json(Metrics, trained / "report" / "metrics.json")
    card = read_json(ModelCard, trained / "report" / "model_card.json")
    results = card.key_metrics.usefulness_usability_efficacy.results
    expected = [(e.evaluated_on, est) for e in metrics.evaluations for est in e.estimates]
    assert len(results) == len(expected)
    for result, (evaluated_on, est) in zip(results, expected, strict=True):
        assert (result.label, result.evaluated_on) == (est.name, evaluated_on)
        assert (result.value, result.ci_low, result.ci_high, result.n) == (est.value, est.ci_low, est.ci_high, est.n)
    subgroups = card.key_metrics.fairness_equity.results
    assert len(subgroups) == sum(len(s.estimates) for e in metrics.evaluations for s in e.subgroups)
    safety = {r.label: r for r in card.key_metrics.safety_reliability.results if r.evaluated_on == "test"}
    test = metrics.evaluations[1]
    assert safety["calibration brier"].value == test.calibration.brier
    spread = {r.label: r.value for r in card.key_metrics.safety_reliability.results}
    assert spread["auroc SD over 2 training seeds"] == metrics.seed_spread.summary[0].sd
    lineage = card.lineage
    artifact = open_verified(trained / "a")
    assert lineage.artifact_manifest_hash == artifact.manifest_hash == metrics.artifact_manifest_hash
    assert lineage.data_manifest_hash == artifact.metadata["provenance"]["manifest_hash"]
    assert lineage.evaluation.recorded and not lineage.pretrained.medtl_artifact
    assert card.release_info.release_stage.startswith("research")


def test_monai_metadata_has_the_bundle_keys_and_the_artifact_shapes(trained):
    from monai.bundle.utils import DEFAULT_METADATA

    monai = json.loads((trained / "report" / "configs" / "metadata.json").read_text())
    assert set(DEFAULT_METADATA) <= set(monai)
    meta = open_verified(trained / "a").metadata
    image = monai["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == meta["input"]["channels"] == 1
    assert image["spatial_shape"] == meta["input"]["spatial_shape"] == [16, 16, 8]
    assert image["value_range"] == list(meta["input"]["value_range"]) and image["channel_def"] == {"0": "CT"}
    pred = monai["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 2 and pred["channel_def"] == {"0": "0", "1": "1"}
    packages = meta["provenance"]["packages"]
    assert monai["pytorch_version"] == packages["torch"].split("+")[0] and monai["version"] == meta["model_version"]


def test_card_command_writes_history_and_replacement_and_refuses_foreign_metrics(trained, tmp_path):
    replaced = tmp_path / "replaced.json"
    replaced.write_text(json.dumps({"artifact_hash": "f" * 64, "model_version": "0.0.9", "reason": "retrained on "
                                    "more data", "comparison_verdict": "non-inferior"}))  # fmt: skip
    done = _medtl("card", str(trained / "b"), "--out", str(tmp_path / "card"), "--history", str(trained / "a"),
                  "--replaced", str(replaced), "--developer", "Imaging AI team")  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = read_json(ModelCard, tmp_path / "card" / "model_card.json")
    history = card.lineage.history
    hashes = [open_verified(trained / name).manifest_hash for name in ("a", "b")]
    assert [h.artifact_hash for h in history] == hashes  # A was trained first
    assert history[0].changes == [] and "seed 0 -> 1" in history[1].changes
    assert any(c.startswith("config ") for c in history[1].changes)  # the config differs by its seed
    assert card.lineage.replaced.reason == "retrained on more data" and card.basic_info.model_developer
    assert card.key_metrics.usefulness_usability_efficacy.results[0].evaluated_on == "training"
    monai = json.loads((tmp_path / "card" / "configs" / "metadata.json").read_text())
    assert len(monai["changelog"]) == 2 and monai["authors"] == "Imaging AI team"
    # A's metrics.json is not B's evaluation, and an edited one is nobody's
    foreign = _medtl("card", str(trained / "b"), "--out", str(tmp_path / "card2"), "--metrics",
                     str(trained / "report" / "metrics.json"))  # fmt: skip
    assert foreign.returncode == ConfigError.exit_code and "not written by an evaluation" in foreign.stderr
    edited = tmp_path / "metrics.json"
    edited.write_text((trained / "report" / "metrics.json").read_text().replace('"oof"', '"oof" '))
    assert _medtl("card", str(trained / "a"), "--out", str(tmp_path / "card3"), "--metrics", str(edited)).returncode
    with_metrics = _medtl("card", str(trained / "a"), "--out", str(tmp_path / "card4"), "--metrics",
                          str(trained / "report" / "metrics.json"))  # fmt: skip
    assert with_metrics.returncode == 0, with_metrics.stderr
    assert (tmp_path / "card4" / "model_card.json").read_bytes() == (
        trained / "report" / "model_card.json"
    ).read_bytes()


def test_a_replicate_trained_on_other_data_is_refused(trained, tmp_path):
    train(trained / "test-data", tiny_config(seed=2), tmp_path / "other")  # signed by the same pipeline key
    with pytest.raises(ConfigError, match=r"not a seed replicate.*the data manifest"):
        evaluate(trained / "a", out=tmp_path / "report", replicates=[tmp_path / "other"], n_boot=20, pdf=False)
    assert not (tmp_path / "report").exists()
