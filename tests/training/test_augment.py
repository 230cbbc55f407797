"""GPU batch augmentation: values, per-sample randomness, identities, seeds and config validation (tiny tensors)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from medtl.errors import ConfigError
from medtl.training.augment import AugmentConfig, BatchAugmenter, resolve_flip_axes

OFF: dict[str, Any] = {"p_flip": 0.0, "p_affine": 0.0, "p_gamma": 0.0, "p_noise": 0.0, "p_contrast": 0.0}


def augmenter(spatial_dims: int = 2, **overrides: Any) -> BatchAugmenter:
    """Everything off except what the test switches on."""
    return BatchAugmenter(AugmentConfig(**{**OFF, **overrides}), spatial_dims=spatial_dims)


def ramp(batch: int, *spatial: int) -> torch.Tensor:
    """A batch of identical, asymmetric images in [0, 1] (so that every flip and shift is visible)."""
    numel = 1
    for size in spatial:
        numel *= size
    image = torch.linspace(0.05, 0.95, numel).reshape(1, 1, *spatial) ** 2
    return image.repeat(batch, 1, *([1] * len(spatial))).contiguous()


def run(aug: BatchAugmenter, batch: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return aug(batch)


# -- contract of forward ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(12, 10), (6, 8, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_shape_dtype_and_device_are_kept(spatial: tuple[int, ...], dtype: torch.dtype) -> None:
    aug = BatchAugmenter(AugmentConfig(p_affine=1.0, p_gamma=1.0, p_noise=1.0), spatial_dims=len(spatial))
    batch = ramp(3, *spatial).to(dtype)
    out = run(aug, batch)
    assert out.shape == batch.shape
    assert out.dtype == dtype
    assert out.device == batch.device
    assert not torch.equal(out, batch)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_eval_mode_and_disabled_config_return_the_input_unchanged() -> None:
    batch = ramp(4, 9, 9)
    aug = BatchAugmenter(AugmentConfig(p_flip=1.0, p_affine=1.0, p_noise=1.0), spatial_dims=2)
    aug.eval()
    assert run(aug, batch) is batch
    aug.train()
    assert not torch.equal(run(aug, batch), batch)
    disabled = BatchAugmenter(AugmentConfig(enabled=False, p_flip=1.0, p_noise=1.0), spatial_dims=2)
    assert run(disabled, batch) is batch


def test_all_probabilities_zero_is_the_identity() -> None:
    batch = ramp(4, 9, 11)
    assert torch.equal(run(augmenter(2), batch), batch)
    volume = ramp(2, 5, 6, 7)
    assert torch.equal(run(augmenter(3), volume), volume)


def test_a_seed_makes_the_output_repeatable_and_another_seed_changes_it() -> None:
    aug = BatchAugmenter(AugmentConfig(), spatial_dims=2)
    batch = ramp(6, 16, 16)
    first, again, other = run(aug, batch, seed=7), run(aug, batch, seed=7), run(aug, batch, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_parameters_are_drawn_per_sample() -> None:
    batch = ramp(4, 16, 16)  # four identical images
    for aug in (augmenter(2, p_affine=1.0), augmenter(2, p_gamma=1.0), augmenter(2, p_noise=1.0)):
        out = run(aug, batch)
        for i in range(4):
            for j in range(i + 1, 4):
                assert not torch.allclose(out[i], out[j]), (aug, i, j)


def test_flip_probability_is_per_sample() -> None:
    batch = ramp(64, 4, 5)
    out = run(augmenter(2, p_flip=0.5), batch, seed=3)
    flipped = torch.tensor([torch.equal(o, torch.flip(b, [-1])) for o, b in zip(out, batch, strict=True)])
    kept = torch.tensor([torch.equal(o, b) for o, b in zip(out, batch, strict=True)])
    assert bool((flipped ^ kept).all())
    assert 16 <= int(flipped.sum()) <= 48


# -- geometry -----------------------------------------------------------------------------------------------------


def test_2d_flip_with_p1_is_a_left_right_flip_by_default() -> None:
    batch = torch.rand(3, 2, 5, 7)
    assert torch.equal(run(augmenter(2, p_flip=1.0), batch), torch.flip(batch, [-1]))
    assert torch.equal(run(augmenter(2, p_flip=1.0, flip_axes=[0]), batch), torch.flip(batch, [-2]))


def test_3d_flips_only_the_configured_axes() -> None:
    volume = torch.rand(2, 1, 4, 5, 6)
    out = run(augmenter(3, p_flip=1.0, flip_axes=[0, 2]), volume)
    assert torch.equal(out, torch.flip(volume, [2, 4]))
    assert torch.equal(run(augmenter(3, p_flip=1.0), volume), torch.flip(volume, [2]))  # default: left-right only


def test_default_flip_axes() -> None:
    assert resolve_flip_axes(AugmentConfig(), 2) == (1,)
    assert resolve_flip_axes(AugmentConfig(), 3) == (0,)
    assert resolve_flip_axes(AugmentConfig(flip_axes=[2, 0]), 3) == (0, 2)


def test_zoom_out_fills_the_border_with_zeros_and_keeps_the_centre() -> None:
    ones = torch.ones(2, 1, 16, 16)
    out = run(augmenter(2, p_affine=1.0, rotate_degrees=0.0, translate=0.0, scale=(0.5, 0.5)), ones)
    assert torch.equal(out[:, :, 0, :], torch.zeros_like(out[:, :, 0, :]))
    assert torch.allclose(out[:, :, 6:10, 6:10], torch.ones(2, 1, 4, 4))
    assert float(out.max()) <= 1.0

    volume = torch.ones(1, 1, 12, 12, 12)
    out3 = run(augmenter(3, p_affine=1.0, rotate_degrees=0.0, translate=0.0, scale=(0.5, 0.5)), volume)
    assert float(out3[0, 0, 0].abs().max()) == 0.0
    assert torch.allclose(out3[0, 0, 5:7, 5:7, 5:7], torch.ones(2, 2, 2))


def test_rotation_moves_pixels_but_keeps_a_centred_blob() -> None:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / 50)[None, None].repeat(4, 1, 1, 1)
    square = torch.zeros(4, 1, 32, 32)
    square[:, :, 4:12, 4:12] = 1.0
    aug = augmenter(2, p_affine=1.0, rotate_degrees=45.0, translate=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(run(aug, blob), blob, atol=0.02, rtol=0)  # rotation about the centre
    assert float((run(aug, square) - square).abs().max()) > 0.5


def test_3d_default_config_augments_a_volume_batch() -> None:
    volume = ramp(3, 8, 10, 6)
    out = run(BatchAugmenter(AugmentConfig(p_affine=1.0), spatial_dims=3), volume)
    assert out.shape == volume.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, volume)


def test_elastic_3d_is_per_sample_and_seeded() -> None:
    pytest.importorskip("monai")
    aug = augmenter(3, elastic=True, p_elastic=1.0, elastic_sigma=(2.0, 3.0), elastic_magnitude=(20.0, 40.0))
    volume = ramp(2, 8, 8, 8)
    first, again = run(aug, volume, seed=1), run(aug, volume, seed=1)
    assert type(first) is torch.Tensor and first.shape == volume.shape
    assert torch.equal(first, again)
    assert not torch.allclose(first, volume)
    assert not torch.allclose(first[0], first[1])


# -- intensity ----------------------------------------------------------------------------------------------------


def test_gamma_above_one_darkens_mid_grey_and_below_one_brightens() -> None:
    grey = torch.full((2, 1, 6, 6), 0.5)
    darker = run(augmenter(2, p_gamma=1.0, gamma=(1.5, 1.5)), grey)
    torch.testing.assert_close(darker, torch.full_like(grey, 0.5**1.5))
    brighter = run(augmenter(3, p_gamma=1.0, gamma=(0.5, 0.5)), grey[..., None])
    torch.testing.assert_close(brighter, torch.full_like(grey[..., None], 0.5**0.5))


def test_contrast_scales_the_spread_around_each_samples_mean() -> None:
    batch = torch.stack([0.3 + 0.2 * torch.rand(1, 8, 8), 0.6 + 0.2 * torch.rand(1, 8, 8)])
    out = run(augmenter(2, p_contrast=1.0, contrast=(1.5, 1.5)), batch)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), batch.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), 1.5 * batch.std(dim=(1, 2, 3)))
    flat = run(augmenter(2, p_contrast=1.0, contrast=(0.0, 0.0)), batch)
    torch.testing.assert_close(flat, batch.mean(dim=(1, 2, 3), keepdim=True).expand_as(batch))


def test_noise_raises_the_spread_and_stays_in_range() -> None:
    grey = torch.full((8, 1, 16, 16), 0.5)
    out = run(augmenter(2, p_noise=1.0, noise_std=0.1), grey)
    stds = out.std(dim=(1, 2, 3))
    assert bool((stds > 0).all()) and float(stds.max()) <= 0.11
    assert len(set(stds.tolist())) == 8  # a noise level per sample
    torch.testing.assert_close(out.mean(), torch.tensor(0.5), atol=0.01, rtol=0)

    edges = torch.cat([torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)])
    loud = run(augmenter(2, p_noise=1.0, p_gamma=1.0, p_contrast=1.0, noise_std=0.5, contrast=(2.0, 3.0)), edges)
    assert float(loud.min()) == 0.0 and float(loud.max()) == 1.0


# -- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"p_flip": 1.5},
        {"p_noise": -0.1},
        {"scale": (1.2, 0.8)},
        {"gamma": (1.25, 0.8)},
        {"gamma": (0.0, 1.0)},
        {"contrast": (1.1, 0.9)},
        {"noise_std": 0.0},
        {"rotate_degrees": -5.0},
        {"translate": float("nan")},
        {"flip_axes": [-1]},
        {"flip_axes": [1, 1]},
        {"unknown_key": 1},
    ],
)
def test_invalid_config_raises_validation_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(**bad)


def test_config_from_yaml_like_mapping() -> None:
    config = AugmentConfig.model_validate({"scale": [0.8, 1.2], "flip_axes": [0, 1]})
    assert config.scale == (0.8, 1.2)
    aug = BatchAugmenter({"p_flip": 1.0, "flip_axes": [1], **{k: v for k, v in OFF.items() if k != "p_flip"}}, 2)
    batch = torch.rand(2, 1, 4, 4)
    assert torch.equal(aug(batch), torch.flip(batch, [-1]))


def test_misuse_gives_clear_errors() -> None:
    with pytest.raises(ConfigError, match="flip axes"):
        BatchAugmenter(AugmentConfig(flip_axes=[2]), spatial_dims=2)
    with pytest.raises(ConfigError, match="3D volumes only"):
        BatchAugmenter(AugmentConfig(elastic=True), spatial_dims=2)
    with pytest.raises(ConfigError, match="spatial_dims"):
        BatchAugmenter(AugmentConfig(), spatial_dims=1)
    aug = BatchAugmenter(AugmentConfig(), spatial_dims=3)
    with pytest.raises(ConfigError, match="3D augmentation"):
        aug(torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        aug(torch.zeros(2, 1, 4, 4, 4, dtype=torch.uint8))


def test_moving_the_module_keeps_parameter_draws_on_the_cpu_generator() -> None:
    """`.to(device)` (what the training loop does) must not move kornia's generators: one seed, one geometry."""
    aug = BatchAugmenter(AugmentConfig(p_affine=1.0), spatial_dims=2).to(torch.float64)
    batch = ramp(3, 10, 10)
    torch.testing.assert_close(run(aug, batch, seed=5), run(BatchAugmenter(aug.config, 2), batch, seed=5))


# -- CUDA ---------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spatial", [(32, 32), (16, 16, 16)])
def test_cuda_output_stays_on_the_gpu_and_matches_the_cpu_path(spatial: tuple[int, ...]) -> None:
    dims = len(spatial)
    batch = ramp(16, *spatial)
    geometric = augmenter(dims, p_flip=0.5, p_affine=1.0).to("cuda")
    cpu_out = run(geometric, batch, seed=11)
    gpu_out = run(geometric, batch.cuda(), seed=11)
    assert gpu_out.device.type == "cuda" and gpu_out.dtype == batch.dtype
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-4, rtol=0)  # same seed, same geometry

    no_noise = augmenter(dims, p_flip=0.5, p_affine=1.0, p_gamma=1.0, p_contrast=1.0).to("cuda")
    torch.testing.assert_close(
        run(no_noise, batch.cuda(), seed=12).cpu(), run(no_noise, batch, seed=12), atol=1e-4, rtol=0
    )

    full = BatchAugmenter(AugmentConfig(p_affine=1.0, p_gamma=1.0, p_noise=1.0, p_contrast=1.0), dims).to("cuda")
    cpu_full = run(full, batch, seed=13)
    gpu_full = run(full, batch.cuda(), seed=13)
    assert gpu_full.device.type == "cuda"
    assert float(gpu_full.min()) >= 0.0 and float(gpu_full.max()) <= 1.0
    # the noise field comes from each device's own generator: per-sample statistics agree, values do not
    per_sample = tuple(range(1, batch.ndim))
    torch.testing.assert_close(gpu_full.mean(dim=per_sample).cpu(), cpu_full.mean(dim=per_sample), atol=6e-3, rtol=0)
    torch.testing.assert_close(gpu_full.std(dim=per_sample).cpu(), cpu_full.std(dim=per_sample), atol=6e-3, rtol=0)
    assert not torch.equal(gpu_full.cpu(), cpu_full)
