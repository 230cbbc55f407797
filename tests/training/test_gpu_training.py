"""The training loop on CUDA: mixed precision, device-side augmentation, and the same learning as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl.models.factory import create_model
from medtl.models.strategies import StrategyConfig, resolve_schedule
from medtl.training.config import TrainConfig
from medtl.training.data import TensorSet
from medtl.training.loop import fit, predict

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _cuda_config(**overrides) -> TrainConfig:
    base = {
        "model": {"backbone": "resnet18", "weights": "none"},
        "strategy": {"name": "full", "lr": 1e-3},
        "arms": [],
        "batch_size": 8,
        "early_stopping": {"patience": 10, "min_epochs": 1},
        "device": "cuda",
    }
    return TrainConfig.model_validate({**base, **overrides})


def test_fit_on_cuda_with_amp_and_batched_augmentation_learns(tiny_task):
    config = _cuda_config(epochs=8, amp="auto")
    torch.manual_seed(0)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    plans = resolve_schedule(StrategyConfig(name="full", lr=1e-3), config.epochs, built.stage_names)
    rows = np.arange(len(tiny_task.scans))
    train, tune = TensorSet(tiny_task, rows[:16]), TensorSet(tiny_task, rows[16:])
    device = torch.device("cuda")
    result = fit(built, plans, train, tune, config, device=device, positive=1, seed=0)
    assert next(built.model.parameters()).is_cuda
    assert all(v.device.type == "cpu" for v in result.state.values())  # the best copy lives on the CPU
    assert result.best_tune_auc is not None and result.best_tune_auc >= 0.9
    probabilities = predict(built.model, tune, device=device, batch_size=8)
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(1), 1, atol=1e-3)


def test_small_sets_stay_on_the_gpu_during_a_fit(tiny_task):
    config = _cuda_config(steps=12)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    plans = resolve_schedule(StrategyConfig(name="full", lr=1e-3), 6, built.stage_names)
    rows = np.arange(len(tiny_task.scans))
    train, tune = TensorSet(tiny_task, rows[:16]), TensorSet(tiny_task, rows[16:])
    result = fit(built, plans, train, tune, config, device=torch.device("cuda"), positive=1, seed=0)
    assert train.resident and tune.resident
    assert len(result.curve) == 6  # 12 steps of 8 from 16 images: 2 per epoch, on any device


def test_auto_trains_a_small_model_s_folds_side_by_side_on_a_gpu_with_room_for_them():
    from medtl.training.concurrent import fold_width

    if torch.cuda.mem_get_info()[0] < 16 << 30:
        pytest.skip("four folds of the estimate (~1.4 GB each) need 16 GiB free: half of it for them")
    small = {"parameters": 11_200_000, "data_bytes": 4 * 28 * 28 * 1000, "batch_voxels": 16 * 28 * 28, "cores": 8}
    assert fold_width("auto", torch.device("cuda"), **small) == 4
    assert fold_width("auto", torch.device("cuda"), **{**small, "cores": 4}) == 2
