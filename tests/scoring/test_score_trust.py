"""What an attacker with write access to an approved artifact cannot do: reseal it with their own key, approve it
themselves, and have `medtl score` use it. And what development mode looks like: every output says UNTRUSTED."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pydicom
import pytest
from safetensors.torch import load_file, save_file

from medtl.artifacts import generate_signing_key, open_verified, resolve_trust
from medtl.artifacts.keys import resolve_signing_key
from medtl.errors import ArtifactIntegrityError, NotApprovedError
from medtl.evaluation.approve import approve
from medtl.evaluation.evaluate import evaluate
from medtl.scoring.score import score
from medtl.training.train import train
from support.forgery import reseal_with, self_approve
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import environment, ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def approved(tmp_path_factory):
    """An artifact a reviewer approved, and the site's trust configuration (active for the module)."""
    root = tmp_path_factory.mktemp("trust")
    with signing_key(root / "key.pem"):
        dataset = ingested_cohort(root, "dev", patients=12, seed=41, difficulty=0.0)
        train(dataset, tiny_config(epochs=1, final_model="refit"), root / "artifact")
        evaluate(root / "artifact", out=root / "report", n_boot=50, pdf=False, failure_cases=0)
        approve(root / "artifact", reviewer="Dr R", role="radiologist", decision="approve", report=root / "report")
        yield root


def _zero_weights(folder):
    for path in (folder / "weights").glob("*.safetensors"):
        save_file({name: tensor * 0 for name, tensor in load_file(path).items()}, path)


@pytest.fixture
def forged(approved, tmp_path):
    """Weights zeroed, resealed with the attacker's key, and self-approved at threshold 0."""
    folder = tmp_path / "forged"
    shutil.copytree(approved / "artifact", folder)
    attacker = tmp_path / "attacker.pem"
    generate_signing_key(attacker)
    key = resolve_signing_key(attacker)
    reseal_with(folder, key, _zero_weights)
    self_approve(folder, key, threshold=0.0)
    return folder


def _score(artifact, out, root, **options):
    return score(artifact, [root / "dev" / "dicom"], out=out, pseudonymizer=PSEUDO, workers=1, **options)


def test_a_resealed_self_approved_artifact_is_refused_with_and_without_trust_variables(approved, forged, tmp_path):
    with pytest.raises(ArtifactIntegrityError, match="untrusted key"):
        _score(forged, tmp_path / "a", approved)
    with environment(MEDTL_TRUSTED_KEYS=""), pytest.raises(ArtifactIntegrityError, match="no trust anchor"):
        _score(forged, tmp_path / "b", approved)
    # development mode reads it, but the self-signed approval counts for nothing: it is the sealing key
    with environment(MEDTL_TRUSTED_KEYS=""), pytest.raises(NotApprovedError, match="no valid clinician approval"):
        _score(forged, tmp_path / "c", approved, trust=resolve_trust(allow_untrusted=True))
    for out in ("a", "b", "c"):
        assert not (tmp_path / out / "scores.parquet").exists()
    with environment(MEDTL_TRUSTED_KEYS=""):
        status = open_verified(forged, allow_untrusted=True).status
    assert status.state == "undecided" and "decisions must come from a reviewer's own key" in status.ignored[0].reason


def test_the_genuine_artifact_scores_trusted_and_approved(approved, tmp_path):
    result = _score(approved / "artifact", tmp_path / "scores", approved, sr=True)
    rows = pd.read_parquet(tmp_path / "scores" / "scores.parquet")
    assert result.approved and result.trusted and rows.approved.all() and rows.trusted.all()
    sr = pydicom.dcmread(next((tmp_path / "scores" / "sr").glob("SR_*.dcm")))
    assert "UNTRUSTED" not in str(sr)


def test_development_mode_marks_every_output_untrusted(approved, tmp_path):
    env = dict(os.environ, MEDTL_TRUSTED_KEYS="", MEDTL_ALLOW_DEV_PSEUDONYM_KEY="1")
    command = [sys.executable, "-m", "medtl.cli", "score", str(approved / "artifact"), str(approved / "dev" / "dicom"),
               "--out", str(tmp_path / "dev"), "--sr", "--workers", "1", "--dev-pseudonym-key"]  # fmt: skip
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 6 and "--allow-untrusted" in refused.stderr
    done = subprocess.run([*command, "--allow-untrusted"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "UNTRUSTED" in done.stdout
    rows = pd.read_parquet(tmp_path / "dev" / "scores.parquet")
    assert len(rows) > 0 and not rows.trusted.any()
    sr = pydicom.dcmread(next((tmp_path / "dev" / "sr").glob("SR_*.dcm")))
    assert "UNTRUSTED" in str(sr)
