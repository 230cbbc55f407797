"""The same guarantees on CUDA: fused optimizers leave frozen stages bit-exact, inflation still matches in 3D."""

from __future__ import annotations

import pytest
import torch

from medtl.models import create_model, param_groups, resolve_schedule, set_bn_modes

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("fused", [True, False])
def test_frozen_stages_stay_bit_exact_with_cuda_adamw(fused: bool) -> None:
    built = create_model("resnet18", weights="none", in_channels=1, num_classes=2)
    built.model.cuda()
    plan = resolve_schedule({"name": "partial", "last_k": 1}, 1, built.stage_names)[0]
    optimizer = torch.optim.AdamW(param_groups(built, plan), lr=1e-2, fused=fused, foreach=None if fused else True)
    before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    built.model.train()
    set_bn_modes(built, plan)
    logits = built.model(torch.randn(4, 1, 32, 32, device="cuda"))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1], device="cuda")).backward()
    optimizer.step()
    changed = {n for n, p in built.model.named_parameters() if not torch.equal(p, before[n])}
    expected = {
        p for name, ps in zip(built.stage_names, built.stages, strict=True) if name in plan.trainable for p in ps
    }
    assert changed == expected


def test_inflated_network_matches_the_2d_network_on_cuda() -> None:
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        flat = create_model("resnet18", weights="none", in_channels=1, num_classes=3)
        deep = create_model("resnet18", weights="none", in_channels=1, num_classes=3, spatial_dims=3)
        state = {}
        for key, value in flat.model.state_dict().items():
            target = deep.model.state_dict()[key]
            state[key] = (
                value.unsqueeze(2).repeat(1, 1, target.shape[2], 1, 1) / target.shape[2] if target.ndim == 5 else value
            )
        deep.model.load_state_dict(state)
        flat.model.cuda().eval()
        deep.model.cuda().eval()
        image = torch.randn(2, 1, 32, 32, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(
                deep.model(image.unsqueeze(2).repeat(1, 1, 8, 1, 1)), flat.model(image), rtol=1e-4, atol=1e-5
            )
    finally:
        torch.backends.cudnn.allow_tf32 = previous
