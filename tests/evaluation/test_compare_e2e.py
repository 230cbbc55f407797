"""`medtl compare` on small trained artifacts: a model against itself, a planted worse challenger, and leakage."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys

import pytest

from medtl.artifacts import open_verified
from medtl.contracts import read_json
from medtl.contracts.comparison import Comparison
from medtl.datasets.synth import make_cohort
from medtl.errors import LeakageError
from medtl.evaluation.compare import compare
from medtl.evaluation.evaluate import evaluate
from medtl.ingest.pipeline import ingest_sources
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC, ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_BOOT = 200


def _shuffled_cohort(root, name: str, *, patients: int, seed: int):
    """A cohort whose labels were shuffled: a model trained on it learns nothing (a planted worse challenger)."""
    make_cohort(root / name, patients=patients, seed=seed, difficulty=0.0)
    labels = root / name / "labels.csv"
    rows = list(csv.DictReader(labels.open()))
    values = [row["label"] for row in rows]
    random.Random(seed).shuffle(values)
    for row, value in zip(rows, values, strict=True):
        row["label"] = value
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ingest_sources([root / name / "dicom"], out=root / f"{name}-data", labels=labels, spec=TINY_SPEC,
                   pseudonymizer=DEV_PSEUDONYMIZER, workers=1)  # fmt: skip
    return root / f"{name}-data"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    with signing_key(root / "signing.pem"):
        dev = ingested_cohort(root, "dev", patients=16, seed=31, difficulty=0.0)
        ingested_cohort(root, "test", patients=24, seed=32, difficulty=0.0)
        noise = _shuffled_cohort(root, "noise", patients=16, seed=33)
        config = tiny_config(epochs=2, early_stopping={"patience": 2, "min_epochs": 1})
        train(dev, config, root / "champion")
        train(noise, tiny_config(epochs=1), root / "challenger")
        for name in ("champion", "challenger"):
            evaluate(root / name, out=root / f"report-{name}", n_boot=100, pdf=False)
        yield root


def test_an_artifact_compared_with_itself_differs_by_zero(artifacts, tmp_path):
    root = artifacts
    result = compare(
        root / "champion", root / "champion", test=root / "test-data", out=tmp_path / "self", n_boot=N_BOOT
    )
    written = read_json(Comparison, tmp_path / "self" / "comparison.json")
    d = written.auroc.difference
    assert d.value == 0.0 and d.ci_low <= 0.0 <= d.ci_high
    assert written.verdict == "non_inferior" and written.proposed and written.margin == 0.02
    assert written.n_patients == 24 and written.champion == written.challenger
    assert "non-inferior" in (tmp_path / "self" / "comparison.html").read_text()
    event = open_verified(root / "champion").events[-1]
    assert event.kind == "compared" and event.payload["comparison_sha256"] == result.sha256
    assert event.public_key in open_verified(root / "champion").report.pipeline_keys


def test_a_challenger_trained_on_shuffled_labels_is_not_proposed(artifacts, tmp_path):
    root = artifacts
    result = compare(root / "champion", root / "challenger", test=root / "test-data", out=tmp_path / "c", n_boot=N_BOOT)
    c = result.comparison  # models this small are not reliably better or worse: 24 patients cannot show it either
    assert c.auroc.difference.ci_low < -c.margin < c.auroc.difference.ci_high
    assert c.verdict in ("inferior", "inconclusive") and not c.proposed
    assert c.delong is not None and c.agreement is not None
    assert c.champion.approval == "undecided" and not c.champion.thresholds_approved  # provisional points


def test_test_patients_seen_in_training_are_refused_by_count(artifacts, tmp_path):
    root = artifacts
    with pytest.raises(LeakageError, match=r"16 in the champion's training") as caught:
        compare(root / "champion", root / "challenger", test=root / "dev-data", out=tmp_path / "leak", n_boot=N_BOOT)
    assert "P-" not in str(caught.value)  # counts, never pseudonyms
    assert not (tmp_path / "leak").exists()
    done = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "compare", str(root / "champion"), str(root / "challenger"),
         "--test", str(root / "noise-data"), "--out", str(tmp_path / "leak-cli")],
        capture_output=True, text=True, env={**os.environ, "MEDTL_SIGNING_KEY": str(root / "signing.pem"),
        "MEDTL_TRUSTED_KEYS": f"{root / 'signing.pem'}.pub"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == LeakageError.exit_code, done.stderr
    assert "in the challenger's training" in done.stderr
