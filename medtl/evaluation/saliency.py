"""Saliency thumbnails for the report's failure cases: where did the network look? Illustrative, not validated.

Grad-CAM (MONAI) on the last convolution of the network's deepest feature stage; occlusion sensitivity (MONAI) when
Grad-CAM cannot be attached. The thumbnail is pixels only: the preprocessed image (what the network saw, already
de-identified: no burned-in text survives the crop/resize, and no header text is drawn) with the map blended in,
written as a PNG without text chunks. For a volume, the axial slice where the map is strongest is shown.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from medtl.models.factory import model_structure

THUMBNAIL_SIZE = 160


def last_conv_name(network: nn.Module, spec: dict) -> str | None:
    """The deepest convolution before the head (MONAI Grad-CAM needs a module name)."""
    built = model_structure(spec)
    body = [
        name
        for stage, params in zip(built.stage_names, built.stages, strict=True)
        if stage != "head"
        for name in params
    ]
    modules = dict(network.named_modules())
    for parameter in reversed(body):
        module_name = parameter.rsplit(".", 1)[0]
        if isinstance(modules.get(module_name), nn.Conv2d | nn.Conv3d):
            return module_name
    return None


def saliency_map(
    networks: list[nn.Module], spec: dict, tensor: torch.Tensor, class_index: int
) -> tuple[np.ndarray, str]:
    """Map in [0, 1] with the input's spatial shape, averaged over an ensemble's members."""
    from monai.visualize import GradCAM, OcclusionSensitivity

    batch = tensor.unsqueeze(0)
    maps, method = [], "Grad-CAM (MONAI)"
    for network in networks:
        network.eval()
        batch = batch.to(next(network.parameters()).device)  # the model may sit on a GPU, the image on the CPU
        layer = last_conv_name(network, spec)
        try:
            if layer is None:
                raise ValueError("no convolution to attach Grad-CAM to")
            cam = GradCAM(nn_module=network, target_layers=layer)
            result = cam(x=batch.clone().requires_grad_(True), class_idx=class_index)
        except Exception:  # an architecture Grad-CAM cannot attach to: occlusion works on any network
            method = "occlusion sensitivity (MONAI)"
            occlusion = OcclusionSensitivity(nn_module=network, mask_size=max(2, min(batch.shape[2:]) // 4))
            with torch.no_grad():
                sensitivity, _ = occlusion(batch)
            result = -sensitivity[:, class_index : class_index + 1]
        maps.append(result.detach().float().cpu().numpy()[0, 0])
    combined = np.mean(maps, axis=0)
    low, high = float(combined.min()), float(combined.max())
    return ((combined - low) / (high - low) if high > low else np.zeros_like(combined)), method


def thumbnail_png(image: np.ndarray, heat: np.ndarray) -> bytes:
    """Grey image with the map blended in, as PNG bytes without any text chunk."""
    from matplotlib import colormaps
    from PIL import Image

    if image.ndim == 3:  # volume (x, y, z): the axial slice with the most saliency, shown as a viewer would
        z = int(np.argmax(heat.reshape(-1, heat.shape[2]).sum(axis=0)))
        image, heat = np.rot90(image[:, :, z]), np.rot90(heat[:, :, z])
    grey = np.clip(image, 0.0, 1.0)
    colour = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    blended = 0.6 * np.repeat(grey[..., None], 3, axis=2) + 0.4 * colour
    picture = Image.fromarray((blended * 255).round().astype(np.uint8), mode="RGB")
    scale = max(1, THUMBNAIL_SIZE // max(picture.size))
    picture = picture.resize((picture.size[0] * scale, picture.size[1] * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
