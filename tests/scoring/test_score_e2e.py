"""`medtl score` end to end: approval gate, same preprocessing as training, flags, idempotence, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from medtl.artifacts import open_verified
from medtl.datasets.synth import make_cohort
from medtl.errors import NotApprovedError
from medtl.evaluation.approve import approve
from medtl.evaluation.evaluate import evaluate
from medtl.scoring.score import score
from medtl.training.config import TaskConfig
from medtl.training.data import TensorSet, load_task
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    with signing_key(root / "key.pem"):
        dataset = ingested_cohort(root, "dev", patients=16, seed=31, difficulty=0.0)
        config = tiny_config(epochs=2, early_stopping={"patience": 2, "min_epochs": 1}, final_model="refit")
        train(dataset, config, root / "artifact")
        make_cohort(root / "new", patients=6, seed=32, with_problems=True)
        yield root


def test_an_unapproved_artifact_refuses_unless_allowed_and_then_marks_its_output(setup):
    root = setup
    with pytest.raises(NotApprovedError):
        score(root / "artifact", [root / "new" / "dicom"], out=root / "refused", pseudonymizer=PSEUDO, workers=1)
    assert not (root / "refused" / "scores.parquet").exists()
    result = score(root / "artifact", [root / "new" / "dicom"], out=root / "provisional", pseudonymizer=PSEUDO,
                   allow_unapproved=True, workers=1)  # fmt: skip
    rows = pd.read_parquet(root / "provisional" / "scores.parquet")
    assert result.scored == len(rows) > 0 and not rows.approved.any()


def test_scoring_uses_the_training_preprocessing_and_the_approved_threshold(setup):
    root = setup
    evaluate(root / "artifact", out=root / "report", n_boot=50, pdf=False, failure_cases=0)
    approve(root / "artifact", reviewer="Dr C. Reviewer", role="radiologist", decision="approve",
            report=root / "report", threshold=0.5)  # fmt: skip
    out = root / "scores"
    score(root / "artifact", [root / "dev" / "dicom"], out=out, pseudonymizer=PSEUDO, workers=1, sr=True)
    rows = pd.read_parquet(out / "scores.parquet")
    assert rows.approved.all() and (rows.threshold == 0.5).all()
    scored = rows.dropna(subset=["probability"]).set_index("scan_id")
    assert set(scored.decision) <= {"0", "1"}
    assert ((scored.probability >= 0.5) == (scored.decision == "1")).all()
    # the same scans through the training path give the same probabilities: same ingest, same spec, same weights
    artifact = open_verified(root / "artifact")
    from medtl.models.loaded import load_model

    model = load_model(artifact, device=torch.device("cpu"))
    task = load_task(
        root / "dev-data", TaskConfig.model_validate(artifact.read_yaml("config.yaml")["task"]), model.spec
    )
    data = TensorSet(task, np.arange(len(task.scans)))
    expected = model.predict(torch.stack([data[i][0] for i in range(len(data))]))[:, 1]
    for scan_id, probability in zip(task.scans.scan_id, expected, strict=True):
        assert scored.loc[scan_id, "probability"] == pytest.approx(float(probability), abs=1e-5)
    assert len(list((out / "sr").glob("SR_*.dcm"))) == len(rows)
    assert open_verified(root / "artifact").events[-1].kind == "scored"
    terms = json.loads((root / "dev-data" / "private" / "phi_terms.json").read_text())
    text = (out / "scores.parquet").read_bytes().decode("latin-1")
    assert not [t for t in terms["patient_ids"] + terms["patient_names"] if t in text]


def test_a_rerun_keeps_the_srs_whose_content_is_unchanged_and_builds_the_missing_ones(setup):
    root = setup
    out = root / "sr-rerun"

    def run():
        return score(root / "artifact", [root / "dev" / "dicom"], out=out, pseudonymizer=PSEUDO, workers=1, sr=True,
                     allow_unapproved=True)  # fmt: skip

    old = 1_000_000_000 * 10**9  # ns: 2001; a file rebuilt after this mark is newer (inode numbers get reused)

    def mark_every_sr() -> set[str]:
        for path in (out / "sr").glob("SR_*.dcm"):
            os.utime(path, ns=(old, old))
        return {path.name for path in (out / "sr").glob("SR_*.dcm")}

    def rebuilt() -> set[str]:
        return {path.name for path in (out / "sr").glob("SR_*.dcm") if path.stat().st_mtime_ns != old}

    first = run()
    built = mark_every_sr()
    assert len(built) == len(first.reports) == len(pd.read_parquet(out / "scores.parquet")) > 0
    second = run()
    assert sorted(path.name for path in second.reports) == sorted(built)  # all reported (PACS sends them all back)
    assert rebuilt() == set()
    removed = sorted(built)[0]
    uid = pydicom.dcmread(out / "sr" / removed).SOPInstanceUID
    (out / "sr" / removed).unlink()
    third = run()
    assert rebuilt() == {removed} and len(third.reports) == len(built)
    assert pydicom.dcmread(out / "sr" / removed).SOPInstanceUID == uid  # the same deterministic UID
    # an index that is not what medtl wrote (here: entries pointing out of the folder) keeps nothing
    index = json.loads((out / "sr_index.json").read_text())
    (out / "sr_index.json").write_text(
        json.dumps({key: {**entry, "file": f"../{entry['file']}"} for key, entry in index.items()})
    )
    assert mark_every_sr() == built
    run()
    assert rebuilt() == built


def test_rerun_adds_nothing_and_abstain_policy_withholds_flagged_decisions(setup):
    root = setup
    first = score(root / "artifact", [root / "new" / "dicom"], out=root / "again", pseudonymizer=PSEUDO, workers=1,
                  policy="abstain")  # fmt: skip
    second = score(root / "artifact", [root / "new" / "dicom"], out=root / "again", pseudonymizer=PSEUDO, workers=1)
    rows = pd.read_parquet(root / "again" / "scores.parquet")
    assert second.scored == 0 and second.skipped_existing == first.scored == len(rows)
    assert rows.scan_id.is_unique
    dx = rows[rows["flags"].apply(lambda f: "kind_mismatch" in list(f))]
    assert len(dx) > 0 and dx.abstained.all() and dx.decision.isna().all() and dx.probability.isna().all()
    out_of_distribution = ("feature_outlier", "spacing_out_of_range")
    flagged = rows[rows["flags"].apply(lambda f: any(x in list(f) for x in out_of_distribution))]
    assert flagged.decision.isna().all()


def test_a_killed_run_resumes_with_exactly_one_row_per_scan(setup):
    root = setup
    out = root / "killed"
    code = (
        "import sys; from pathlib import Path\n"
        "from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer\n"
        "from medtl.scoring.score import score\n"
        f"score(Path({str(root / 'artifact')!r}), [Path({str(root / 'dev' / 'dicom')!r})], out=Path({str(out)!r}),"
        " pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id='development'), workers=1, chunk_size=2)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    deadline = time.time() + 300
    parts = out / "parts"
    while not list(parts.glob("part-*.parquet")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # after its first chunk was saved, in the middle of the next
    process.wait()
    partial = sum(len(pd.read_parquet(path)) for path in parts.glob("part-*.parquet"))
    assert partial > 0 and not (out / "scores.parquet").exists()
    result = score(root / "artifact", [root / "dev" / "dicom"], out=out, pseudonymizer=PSEUDO, workers=1, chunk_size=2)
    rows = pd.read_parquet(out / "scores.parquet")
    assert rows.scan_id.is_unique and result.skipped_existing == partial
    assert len(rows) == partial + result.scored
    assert len(rows) == len(pd.read_parquet(root / "scores" / "scores.parquet"))
