"""AUROC confidence intervals resample patients: correlated scans of one patient do not narrow the interval."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtl.evaluation.metrics import auroc_ci


def test_value_is_sklearns_auroc_and_the_interval_contains_it():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 200)
    scores = targets * 0.6 + rng.random(200)
    result = auroc_ci(targets, scores, n_boot=500)
    assert result.value == pytest.approx(roc_auc_score(targets, scores))
    assert result.low < result.value < result.high
    assert "images" in result.method


def test_patient_bootstrap_is_wider_than_image_bootstrap_when_scans_repeat():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(40), 5)  # five near-identical scans per patient
    patient_target = rng.integers(0, 2, 40)
    patient_score = patient_target * 0.5 + rng.random(40)
    targets = patient_target[patients]
    scores = patient_score[patients] + rng.normal(0, 0.01, len(patients))
    by_image = auroc_ci(targets, scores, n_boot=800, seed=2)
    by_patient = auroc_ci(targets, scores, patients, n_boot=800, seed=2)
    assert by_patient.value == by_image.value
    assert (by_patient.high - by_patient.low) > 1.6 * (by_image.high - by_image.low)
    assert "patients" in by_patient.method


def test_one_class_gives_no_auroc_instead_of_a_number():
    assert auroc_ci(np.zeros(10), np.random.default_rng(0).random(10)).value is None
