"""`concurrent_folds: auto`: one fold at a time on a CPU; on a GPU as many side by side as its memory and the
machine's cores allow, up to four. No GPU is needed: the free memory a GPU would report is given."""

from __future__ import annotations

import pytest
import torch

from medtl.training import concurrent
from medtl.training.concurrent import AUTO_WIDTH, fold_width

GIB = 1 << 30
RESNET18 = 11_200_000  # parameters
CUDA = torch.device("cuda")


@pytest.fixture
def free_memory(monkeypatch):
    """Sets the free memory the (absent) GPU reports."""

    def set_free(free: int) -> None:
        monkeypatch.setattr(concurrent.torch.cuda, "mem_get_info", lambda device=None: (free, 141 * GIB))

    return set_free


def _small_2d(**changes) -> dict:
    """A ResNet-18 on ~4,700 28 px images kept on the device, batches of 16, on a 16-core machine."""
    return {"parameters": RESNET18, "data_bytes": 4 * 28 * 28 * 4700, "batch_voxels": 16 * 28 * 28, "cores": 16,
            **changes}  # fmt: skip


def test_a_number_is_kept_on_any_device(free_memory):
    free_memory(1)  # not consulted
    assert fold_width(3, CUDA, **_small_2d()) == 3
    assert fold_width(2, torch.device("cpu"), **_small_2d()) == 2


def test_auto_is_one_fold_at_a_time_on_a_cpu():
    assert fold_width("auto", torch.device("cpu"), **_small_2d()) == 1


def test_auto_on_a_large_gpu_trains_a_small_model_s_folds_four_at_a_time(free_memory):
    free_memory(130 * GIB)
    assert fold_width("auto", CUDA, **_small_2d()) == AUTO_WIDTH == 4


def test_auto_takes_no_more_than_half_the_free_memory(free_memory):
    per_fold = concurrent.CONTEXT_BYTES + 4 * 28 * 28 * 4700 + RESNET18 * 24 + 16 * 28 * 28 * 2048
    free_memory(int(4.5 * per_fold))  # half of it holds two folds, not three
    assert fold_width("auto", CUDA, **_small_2d()) == 2
    free_memory(int(1.5 * per_fold))  # not even one by the estimate: still one, as a run without `auto` would
    assert fold_width("auto", CUDA, **_small_2d()) == 1


def test_auto_counts_a_large_3d_batch_s_activations(free_memory):
    free_memory(80 * GIB)  # 3D ResNet-18 (33M parameters), 64^3 voxels, batches of 32: ~17 GiB of activations a fold
    big = _small_2d(parameters=33_200_000, data_bytes=4 * 64**3 * 1500, batch_voxels=32 * 64**3)
    assert fold_width("auto", CUDA, **big) == 2


def test_auto_leaves_each_fold_two_cores(free_memory):
    free_memory(130 * GIB)
    assert fold_width("auto", CUDA, **_small_2d(cores=6)) == 3
    assert fold_width("auto", CUDA, **_small_2d(cores=2)) == 1
