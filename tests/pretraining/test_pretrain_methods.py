"""The self-supervised objectives and the loop on in-memory tensors: masks, learning, resume, the time budget."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medtl.errors import ConfigError
from medtl.models.factory import create_model
from medtl.pretraining import loop as pretrain_loop
from medtl.pretraining.config import PretrainConfig
from medtl.pretraining.loop import CHECKPOINT, run_loop
from medtl.pretraining.methods import make_method, mask_patch_sizes, nt_xent, random_mask


def images(n: int = 16, dims: int = 2, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Blobs at random places: something a network can learn to describe."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij"))
    centres = torch.rand(n, dims, generator=generator) * (size - 8) + 4
    shape = (n, dims) + (1,) * dims
    distance = ((grid.unsqueeze(0) - centres.view(shape)) ** 2).sum(1).sqrt()
    return (distance < 5).float().unsqueeze(1) * 0.8 + 0.1 * torch.rand(n, 1, *[size] * dims, generator=generator)


def method_for(name: str, sample: torch.Tensor, **config):
    torch.manual_seed(0)
    dims = sample.dim() - 2
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=1, spatial_dims=dims)
    return make_method(name, built, sample, PretrainConfig(method=name, **config))


@pytest.mark.parametrize(("shape", "patch"), [((28, 28), 4), ((16, 16, 8), 3)])
def test_masks_hide_an_exact_share_of_whole_patches(shape, patch):
    torch.manual_seed(1)
    sizes = (patch,) * len(shape)
    mask = random_mask(5, shape, sizes, 0.6, torch.device("cpu"))
    assert mask.shape == (5, 1, *shape)
    grid = [math.ceil(s / patch) for s in shape]
    hidden_patches = round(0.6 * math.prod(grid))
    for sample in mask[:, 0]:
        # every patch is all hidden or all visible: its first voxel says which
        corners = sample[tuple(slice(0, None, patch) for _ in shape)]
        assert int(corners.sum()) == hidden_patches
        expanded = corners
        for axis in range(len(shape)):
            expanded = expanded.repeat_interleave(patch, dim=axis)
        assert torch.equal(expanded[tuple(slice(0, s) for s in shape)], sample)


def test_mask_patch_follows_the_stride_within_an_eighth_and_a_quarter_of_the_side():
    assert mask_patch_sizes((224, 224), (7, 7)) == (32, 32)  # SimMIM: the network's stride
    assert mask_patch_sizes((28, 28), (1, 1)) == (7, 7)  # stride 28 covers the image: a quarter of it
    assert mask_patch_sizes((512, 512), (64, 64)) == (64, 64)  # stride 8 hides too little: an eighth


@pytest.mark.parametrize("name", ["simclr", "masked"])
def test_each_objective_learns_on_a_few_steps(name):
    """The loss on the same draws of views / masks (one seed) falls after a few optimiser steps."""
    data = images(16)
    method = method_for(name, data, batch_size=16)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    method.train()

    def fixed_draw_loss() -> float:
        torch.manual_seed(99)
        with torch.no_grad():
            return float(method(data))

    before = fixed_draw_loss()
    torch.manual_seed(3)
    for _ in range(15):
        loss = method(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = fixed_draw_loss()
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_nt_xent_has_monai_contrastive_loss_value_and_gradients(temperature):
    from monai.losses import ContrastiveLoss

    generator = torch.Generator().manual_seed(0)
    first = torch.randn(16, 8, generator=generator, dtype=torch.float64)
    second = first + 0.5 * torch.randn(16, 8, generator=generator, dtype=torch.float64)  # partners are closer
    ours_in = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    monai_in = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    ours = nt_xent(*ours_in, temperature)
    reference = ContrastiveLoss(temperature=temperature)(*monai_in)
    ours.backward()
    reference.backward()
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    for mine, theirs in zip(ours_in, monai_in, strict=True):
        assert torch.allclose(mine.grad, theirs.grad, rtol=1e-5, atol=1e-9)
    # and it measures what it should: shuffled partners cost more than true ones
    assert nt_xent(first, second[torch.randperm(16, generator=generator)], temperature) > ours


def test_masked_loss_counts_only_hidden_voxels():
    """With a decoder that outputs zeros, the loss is the mean |image| over the hidden voxels, nothing else."""
    data = images(4)
    method = method_for("masked", data)
    method.eval()  # no augmentation: the target is the input itself
    torch.nn.init.zeros_(method.decoder.weight)
    torch.nn.init.zeros_(method.decoder.bias)
    torch.manual_seed(5)
    mask = random_mask(4, method.shape, method.patch, method.ratio, torch.device("cpu"))
    torch.manual_seed(5)
    with torch.no_grad():
        loss = method(data)
    expected = (data * mask).abs().sum() / mask.sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) != pytest.approx(float(data.abs().mean()), rel=1e-3)


def test_masked_refuses_a_2_5d_model():
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=1, spatial_dims=3, adapt_3d="2.5d")
    with pytest.raises(ConfigError, match=r"2\.5D"):
        make_method("masked", built, images(2, dims=3, size=16), PretrainConfig(method="masked"))


def run(method, data, workdir: Path, **config):
    return run_loop(method, data, PretrainConfig(**{"batch_size": 8, "checkpoint_every_s": 0, **config}),
                    device=torch.device("cpu"), workdir=workdir)  # fmt: skip


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = images(16)
    torch.manual_seed(0)
    whole = method_for("simclr", data)
    (tmp_path / "a").mkdir()
    torch.manual_seed(0)
    run(whole, data, tmp_path / "a", epochs=3)

    torch.manual_seed(0)
    broken = method_for("simclr", data)
    calls = {"n": 0}
    forward = broken.forward

    def failing(batch):
        calls["n"] += 1
        if calls["n"] == 5:  # two steps per epoch: fails inside epoch 3, after epoch 2's checkpoint
            raise Interrupt
        return forward(batch)

    broken.forward = failing
    (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        run(broken, data, tmp_path / "b", epochs=3)
    assert (tmp_path / "b" / CHECKPOINT).exists()
    torch.manual_seed(123)  # a fresh process: other global random state, restored from the checkpoint
    resumed = method_for("simclr", data)
    state = run(resumed, data, tmp_path / "b", epochs=3)
    assert state.epochs_done == 3 and [e.epoch for e in state.curve] == [1, 2, 3]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_time_budget_fits_the_schedule_after_the_first_epoch(tmp_path):
    data = images(16)
    state = run(method_for("simclr", data), data, tmp_path, epochs=40, time_budget_minutes=1e-4)
    assert state.stopped_by == "time_budget"
    assert state.epochs_done == state.epochs_scheduled == 1


def test_a_slow_first_epoch_does_not_shorten_the_schedule_for_good(tmp_path, monkeypatch):
    """Epoch 1 takes 10 s (warm-up costs), later ones 1 s, the budget is 20 s: 2 epochs fit by the first epoch's
    clock, 11 by the second's."""
    readings, now = [], 0.0
    for seconds in [10.0] + [1.0] * 50:  # the loop reads the clock at each epoch's start and end
        readings += [now, now + seconds]
        now += seconds
    clock = iter(readings)

    fake_time = SimpleNamespace(perf_counter=lambda: next(clock), monotonic=time.monotonic)
    monkeypatch.setattr(pretrain_loop, "time", fake_time)
    data = images(16)
    state = run(method_for("simclr", data), data, tmp_path, epochs=40, time_budget_minutes=20 / 60)
    assert state.epochs_done == state.epochs_scheduled == 11
    assert state.stopped_by == "time_budget"
