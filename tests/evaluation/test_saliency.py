"""Saliency maps for the report's failure cases: the input's shape, in [0, 1], on whatever device the model is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl.evaluation.saliency import saliency_map
from medtl.models.factory import create_model


def _network(device: str):
    torch.manual_seed(0)
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2, spatial_dims=2)
    return built.model.to(device).eval(), built.spec


def _check(heat, method, shape):
    assert heat.shape == shape
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert method == "Grad-CAM (MONAI)"


def test_a_map_has_the_input_shape_and_spans_zero_to_one():
    network, spec = _network("cpu")
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    heat, method = saliency_map([network], spec, image, 1)
    _check(heat, method, (32, 32))
    assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_model_on_the_gpu_is_given_the_image_there():
    """Evaluation reads test images on the CPU while the loaded model sits on the GPU. (An untrained network's map
    may be flat there: measured on an H200, Grad-CAM's positive part was empty.)"""
    network, spec = _network("cuda")
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    heat, method = saliency_map([network], spec, image, 1)
    _check(heat, method, (32, 32))
