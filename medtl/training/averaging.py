"""An exponential moving average of a network's weights (torch's AveragedModel), for tuning and final predictions.

Why: on a small cohort the weights after any one optimiser step carry that step's batch noise, and the epoch that
the tuning patients pick is partly picked for that noise. The average over the last few dozen steps is a smoother
point of the same trajectory: the network that is tuned, predicted out of fold and saved. Training itself is
unchanged (the optimiser never sees the average).

The decay ramps up over the first steps, min(decay, (1 + n) / (10 + n)) after n updates, so the random
initialisation is forgotten at once instead of weighing on the average for a whole horizon. Every buffer is averaged
too (batch-norm statistics follow the averaged weights); integer buffers (batch counts) are copied.

Off unless a config sets `ema_decay`: the plan does not, since an average over the last 5% of the schedule did not
raise BreastMNIST's test AUROC over three seeds (benchmarks/bench_weight_average.py, README).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

RAMP = 10  # updates over which the decay rises to its value: (1 + n) / (RAMP + n)


def ramped_decay(decay: float, n_updates: int) -> float:
    return min(decay, (1 + n_updates) / (RAMP + n_updates))


def averaged_copy(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` whose weights follow its moving average after each `update_parameters(model)`."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n_updates: Tensor) -> None:
        if not averaged[0].is_floating_point():  # torch groups tensors by dtype: a group is all integers or none
            for mean, now in zip(averaged, current, strict=True):
                mean.copy_(now)
            return
        weight = 1.0 - ramped_decay(decay, int(n_updates))
        for mean, now in zip(averaged, current, strict=True):
            mean.lerp_(now, weight)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
