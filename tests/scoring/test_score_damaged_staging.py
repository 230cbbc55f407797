"""Scoring reads tensors from its own staging folder, kept between nights: a damaged one is made again from the
scan's cached array; a scan whose array is damaged too is returned abstained and flagged, and the night goes on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtl.datasets.synth import make_cohort
from medtl.ingest.pipeline import MANIFEST
from medtl.scoring.score import DAMAGED_INPUT, STAGING, score
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_damaged_staging_tensors_are_remade_and_a_damaged_scan_abstains(tmp_path):
    with signing_key(tmp_path / "key.pem"):
        dataset = ingested_cohort(tmp_path, "dev", patients=8, seed=41, difficulty=0.0)
        train(dataset, tiny_config(epochs=1, early_stopping={"patience": 1, "min_epochs": 1}), tmp_path / "artifact")
        make_cohort(tmp_path / "night", patients=3, seed=42)
        out = tmp_path / "scores"
        options = dict(out=out, pseudonymizer=PSEUDO, allow_unapproved=True, workers=1)
        first = score(tmp_path / "artifact", [tmp_path / "night" / "dicom"], **options)
        before = pd.read_parquet(out / "scores.parquet").set_index("scan_id")
        staging = out / STAGING
        manifest = pd.read_parquet(staging / MANIFEST)
        tensors = {path.stem: path for path in (staging / "cache" / "preprocessed").rglob("*.npy")}  # the spec's
        tensor_only, both = [row for row in manifest.itertuples() if row.pixel_hash in tensors][:2]
        for row in (tensor_only, both):
            tensors[row.pixel_hash].write_bytes(tensors[row.pixel_hash].read_bytes()[:-64])  # truncated
        array = staging / both.cache_path
        np.save(array, np.load(array) + 1)  # readable, but not what ingest hashed
        (out / "scores.parquet").unlink()  # score the same scans again
        second = score(tmp_path / "artifact", [tmp_path / "night" / "dicom"], **options)
    after = pd.read_parquet(out / "scores.parquet").set_index("scan_id")
    assert first.scored == len(before) and second.scored == len(after) == len(before)
    assert after.loc[both.scan_id, "abstained"] and DAMAGED_INPUT in list(after.loc[both.scan_id, "flags"])
    others = [scan_id for scan_id in before.index[~before["abstained"]] if scan_id != both.scan_id]
    assert tensor_only.scan_id in others and not after.loc[others, "abstained"].any()
    np.testing.assert_allclose(after.loc[others, "probability"], before.loc[others, "probability"], rtol=1e-6)
