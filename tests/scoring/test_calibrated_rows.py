"""A temperature from the approved evaluation changes the reported probability, never the decision."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medtl.evaluation.calibration import apply_temperature
from medtl.scoring.policy import Policy
from medtl.scoring.score import _row

RECORD = {"scan_id": "s", "series_id": "se", "study_id": "st", "patient_id": "p", "source_hash": "h"}


def _scorer(threshold: float | None, temperature: float | None) -> SimpleNamespace:
    artifact = SimpleNamespace(metadata={"model_id": "m", "model_version": "1"}, manifest_hash="x", trusted=True)
    thresholds = {} if threshold is None else {"disease": threshold}
    policy = Policy("binary", ["normal", "disease"], "disease", thresholds=thresholds, temperature=temperature)
    return SimpleNamespace(policy=policy, artifact=artifact, approved=True)


@pytest.mark.parametrize("raw", [0.05, 0.3, 0.61, 0.62, 0.97])
def test_scaled_probability_is_reported_and_the_decision_matches_the_unscaled_operating_point(raw):
    plain = _row(_scorer(0.615, None), RECORD, np.array([1 - raw, raw]), [], "flag", "now")
    scaled = _row(_scorer(0.615, 2.0), RECORD, np.array([1 - raw, raw]), [], "flag", "now")
    assert plain["probability"] == pytest.approx(raw)
    assert scaled["probability"] == pytest.approx(float(apply_temperature(np.array([raw]), 2.0)[0]))
    assert scaled["probability"] != pytest.approx(raw)  # T = 2 pulls every probability towards 0.5
    assert scaled["decision"] == plain["decision"] == ("disease" if raw >= 0.615 else "normal")
    # the reported threshold is on the same (scaled) scale as the reported probability
    assert (scaled["probability"] >= scaled["threshold"]) == (scaled["decision"] == "disease")


def test_without_an_operating_point_there_is_a_probability_but_no_decision():
    row = _row(_scorer(None, 1.5), RECORD, np.array([0.2, 0.8]), [], "flag", "now")
    assert row["decision"] is None and row["threshold"] is None
    assert 0.5 < row["probability"] < 0.8
