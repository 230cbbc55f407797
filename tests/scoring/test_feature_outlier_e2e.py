"""Training stores the multi-layer feature rule, scoring reloads it and flags a scan unlike any training scan while
passing most training-like ones (a small artifact, trained for two epochs). The artifact averages its predictions over
left-right mirror images, so scoring runs several forward passes per batch while the feature rule reads only the
first (the unflipped input its reference was fitted on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from medtl.artifacts import open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.models.heads import probabilities
from medtl.models.loaded import load_model
from medtl.scoring.score import prepare, score
from medtl.training.train import train
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import ingested_cohort, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature-ood")
    with signing_key(root / "key.pem"):
        dataset = ingested_cohort(root, "dev", patients=16, seed=41, difficulty=0.0)
        config = tiny_config(
            epochs=2,
            early_stopping={"patience": 2, "min_epochs": 1},
            final_model="ensemble",
            ood_false_flag_rate=0.05,
            test_time_flips=True,
        )
        train(dataset, config, root / "artifact")
        yield root


def _blocky_copy(series: list[Path], out: Path) -> None:
    """The same series geometry and header, new UIDs, and pixels no body has: large blocks of air and metal."""
    series_uid = generate_uid()
    for index, path in enumerate(series):
        ds = pydicom.dcmread(path)
        rows, columns = ds.pixel_array.shape
        blocks = np.arange(rows)[:, None] // max(1, rows // 4) + np.arange(columns)[None, :] // max(1, columns // 4)
        pixels = np.where((blocks + index // 2) % 2 == 0, 0, 4000).astype(ds.pixel_array.dtype)
        ds.PixelData = pixels.tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / f"{index:03d}.dcm", enforce_file_format=True)


def test_the_artifact_stores_the_rule_and_scoring_reloads_it(trained):
    verified = open_verified(trained / "artifact")  # the fixture's key stays the trust anchor while its tests run
    summary = ArtifactContents(verified).ood_summary
    assert summary.flag == "knn_multilayer" and summary.knn is not None
    assert set(summary.knn.stages) == {"layer1", "layer2", "layer3", "layer4"}
    assert summary.knn.calibration.startswith("held-out")  # a fold ensemble: fold 0's held-out patients
    assert summary.knn.false_flag_rate == 0.05 and summary.knn.bank + summary.knn.calibration_n == summary.knn.n
    assert summary.knn.n == summary.n  # every cross-validated training scan, bank or calibration


def test_scoring_flags_a_scan_unlike_training_and_few_training_like_ones(trained):
    root = trained
    folders = sorted({p.parent for p in (root / "dev" / "dicom").rglob("*.dcm")})
    first = max(folders, key=lambda folder: len(list(folder.glob("*.dcm"))))  # a volume, not a 2D localiser
    odd = root / "odd"
    odd.mkdir()
    _blocky_copy(sorted(first.glob("*.dcm")), odd)
    scorer = prepare(root / "artifact", allow_unapproved=True)
    assert scorer.knn is not None and scorer.knn.modules == {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    score(root / "artifact", [odd], out=root / "odd-scores", pseudonymizer=PSEUDO, allow_unapproved=True, workers=1)
    score(root / "artifact", [root / "dev" / "dicom"], out=root / "dev-scores", pseudonymizer=PSEUDO,
          allow_unapproved=True, workers=1)  # fmt: skip
    flagged = pd.read_parquet(root / "odd-scores" / "scores.parquet")
    assert len(flagged) == 1 and "feature_outlier" in list(flagged["flags"].iloc[0])
    own = pd.read_parquet(root / "dev-scores" / "scores.parquet").dropna(subset=["probability"])
    share = np.mean(["feature_outlier" in flags for flags in own["flags"]])
    assert len(own) >= 12 and share <= 0.25  # training scans themselves: mostly inside


def test_the_artifact_predicts_the_mean_of_each_scan_and_its_left_right_mirror(trained):
    model = load_model(trained / "artifact")
    assert model.flip_axes == (0,) and len(model.networks) == 2  # RAS axis 0 of the volume; two fold models
    inputs = torch.rand((3, 1, *model.spec.target_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        views = [
            probabilities(network(view), "binary")
            for network in model.networks
            for view in (inputs, torch.flip(inputs, [2]))
        ]
    expected = torch.stack(views).mean(0).numpy()
    np.testing.assert_allclose(model.predict(inputs), expected, atol=1e-6)
    unflipped = torch.stack(views[::2]).mean(0).numpy()
    assert np.abs(expected - unflipped).max() > 1e-5  # the mirror changes the answer, so it was averaged in
