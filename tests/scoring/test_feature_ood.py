"""The multi-layer nearest-neighbour feature rule: it ranks a shifted cluster above in-distribution scans, its threshold
flags the stated share of new in-distribution scans, and it survives the trip through the artifact's files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from medtl.contracts.base import validate_document
from medtl.contracts.handoff import OodReferenceSummary
from medtl.errors import DataContractError
from medtl.models.factory import create_model
from medtl.training.feature_ood import (
    KnnReference,
    artifact_knn_reference,
    conformal_threshold,
    fit_knn_reference,
    network_features,
    stage_modules,
)
from medtl.training.feature_reference import feature_rule, fit_reference
from medtl.training.package import ood_summary

STAGES = {"early": 24, "late": 48}


def _cluster(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Per stage: points around a fixed centre (non-negative like pooled ReLU features), optionally moved."""
    out = {}
    for index, (name, width) in enumerate(STAGES.items()):
        centre = np.random.default_rng(100 + index).uniform(0.5, 1.5, width)
        direction = np.random.default_rng(200 + index).normal(size=width)
        out[name] = centre + rng.normal(0, 0.15, (n, width)) + shift * direction / np.linalg.norm(direction)
    return out


def _binomial_tolerance(rate: float, n_test: int, n_calibration: int) -> float:
    """Three standard deviations of the observed rate: the test sample's and the calibration quantile's noise."""
    return 3 * np.sqrt(rate * (1 - rate) * (1 / n_test + 1 / n_calibration))


@pytest.mark.parametrize("held_out", [True, False], ids=["held-out calibration", "cross-fitted"])
def test_knn_threshold_flags_the_stated_share_and_a_shifted_cluster_scores_higher(held_out):
    rng = np.random.default_rng(0)
    rate = 0.05
    training = _cluster(rng, 600)
    calibration = _cluster(rng, 600) if held_out else None
    reference = fit_knn_reference(training, calibration, rate=rate, k=5, max_bank=400)
    inside = reference.scores(_cluster(rng, 3000))
    shifted = reference.scores(_cluster(rng, 300, shift=2.0))
    observed = float((inside > reference.threshold).mean())
    assert abs(observed - rate) < _binomial_tolerance(rate, 3000, 600)
    assert np.median(shifted) > np.quantile(inside, 0.99)
    assert (shifted > reference.threshold).mean() > 0.95
    assert reference.rate == rate and reference.n == (1200 if held_out else 600)
    assert all(len(bank) == 400 for bank in reference.banks.values())  # the bank is subsampled to its bound
    assert reference.calibration.startswith("held-out" if held_out else "cross-fitted")


def test_scales_put_stages_of_different_spread_on_one_footing():
    """A stage whose distances are ten times larger must not drown the others: each is divided by its median."""
    rng = np.random.default_rng(1)
    training, calibration = _cluster(rng, 300), _cluster(rng, 300)
    loud = {name: values * (10.0 if name == "late" else 1.0) for name, values in training.items()}
    reference = fit_knn_reference(loud, {n: v * (10.0 if n == "late" else 1.0) for n, v in calibration.items()})
    held = fit_knn_reference(training, calibration)
    assert np.median(reference.scores(_cluster(rng, 200))) == pytest.approx(1.0, abs=0.15)
    assert reference.threshold == pytest.approx(held.threshold, rel=0.05)  # cosine distance ignores the scale


def test_conformal_threshold_keeps_new_in_distribution_flags_at_or_below_the_stated_rate():
    rng = np.random.default_rng(3)
    rate, n, trials = 0.01, 200, 4000
    flagged = []
    for _ in range(trials):  # exchangeable calibration and new scores: P(new > threshold) <= rate
        sample = rng.normal(size=n + 1)
        flagged.append(sample[-1] > conformal_threshold(sample[:n], rate))
    plain = [s[-1] > np.quantile(s[:n], 1 - rate) for s in rng.normal(size=(trials, n + 1))]
    assert np.mean(flagged) <= rate + 3 * np.sqrt(rate * (1 - rate) / trials)
    assert np.mean(plain) > np.mean(flagged)  # the plain quantile lets about rate + 1/n through
    assert conformal_threshold(np.arange(10.0), rate) == 9.0  # too few scans for 1%: the largest score
    assert conformal_threshold(np.arange(1, 201, dtype=float), rate) == 199.0  # ceil(201 * 0.99) = 199th


def test_rate_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="false-flag rate"):
        fit_knn_reference(_cluster(np.random.default_rng(0), 20), rate=0.0)


def test_the_reference_survives_the_artifact_files_and_old_summaries_still_read():
    rng = np.random.default_rng(2)
    features = {**_cluster(rng, 120), "penultimate": rng.normal(size=(120, 16))}
    rows = np.arange(120)
    knn = artifact_knn_reference(
        features, {"early": "layer1", "late": "layer2"}, bank_rows=rows[:80], calibration_rows=rows[80:]
    )
    mahalanobis = fit_reference(features["penultimate"])
    summary = ood_summary(mahalanobis, knn)
    document = validate_document(OodReferenceSummary, summary.model_dump(mode="json"), where="ood/features.json")
    tensors = safetensors_load(safetensors_save({**mahalanobis.tensors(), **knn.tensors()}))
    restored = KnnReference.from_parts(tensors, document.knn.model_dump())
    probe = _cluster(rng, 50, shift=1.0)
    np.testing.assert_allclose(restored.scores(probe), knn.scores(probe), rtol=1e-5)
    assert document.flag == "knn_multilayer" and restored.threshold == knn.threshold
    assert document.knn.calibration_n == 40 and document.knn.stages["early"].module == "layer1"
    # an artifact sealed before the rule: its summary has only the Mahalanobis keys and still reads, as before
    old = validate_document(OodReferenceSummary, mahalanobis.summary(), where="ood/features.json")
    assert old.flag == "mahalanobis" and old.knn is None
    assert old.false_flag_rate == pytest.approx(0.01) and document.false_flag_rate == knn.rate
    with pytest.raises(DataContractError):
        validate_document(OodReferenceSummary, {**mahalanobis.summary(), "flag": "knn_multilayer"}, where="x")


def test_stage_features_come_from_each_backbone_stage_in_one_pass():
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    modules = stage_modules(built.model, built.stages, built.stage_names)
    assert modules == {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
    head = built.model.get_submodule("fc")
    features = network_features(built.model, head, modules, [torch.rand(3, 1, 28, 28), torch.rand(2, 1, 28, 28)])
    assert {name: values.shape for name, values in features.items()} == {
        "layer1": (5, 64), "layer2": (5, 128), "layer3": (5, 256), "layer4": (5, 512), "penultimate": (5, 512),
    }  # fmt: skip
    # ResNet's penultimate features are the pooled last stage
    np.testing.assert_allclose(features["layer4"], features["penultimate"], rtol=1e-5, atol=1e-6)


def test_scoring_loads_the_rule_by_the_models_own_stages_and_refuses_a_bank_that_does_not_fit():
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    head = built.model.get_submodule("fc")
    modules = stage_modules(built.model, built.stages, built.stage_names)
    features = network_features(built.model, head, modules, [torch.rand(12, 1, 28, 28)])
    knn = artifact_knn_reference(features, modules, bank_rows=np.arange(8), calibration_rows=np.arange(8, 12))
    summary = ood_summary(fit_reference(features["penultimate"]), knn)
    tensors = knn.tensors()
    loaded = feature_rule("model", built, tensors, summary)
    assert loaded is not None and loaded.modules == modules
    np.testing.assert_allclose(loaded.scores(features), knn.scores(features), rtol=1e-6)
    assert feature_rule("model", built, {}, ood_summary(fit_reference(features["penultimate"]), None)) is None
    with pytest.raises(DataContractError, match="misshapen"):
        feature_rule("model", built, {**tensors, "knn.layer2": tensors["knn.layer2"][:3]}, summary)
