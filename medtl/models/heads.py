"""From a network's logits to the probabilities a task reports, for every task type (see contracts/task.py).

Shared by training (out-of-fold predictions), evaluation and scoring so that every stage reads the same outputs the
same way: an ensemble averages these probabilities, never the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from medtl.contracts.task import TaskKind
from medtl.errors import ConfigError
from medtl.models.records import BuiltModel


def ordinal_class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """CORN (Shi, Cao & Raschka 2023): logit k models P(grade > k | grade > k-1). Their running product is
    P(grade > k), non-increasing in k by construction (rank-consistent); neighbouring differences are the class
    probabilities, which are therefore never negative and sum to one."""
    above = torch.cumprod(torch.sigmoid(logits), dim=1)
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    cumulative = torch.cat([ones, above, zeros], dim=1)
    return (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(0)


def probabilities(logits: torch.Tensor, kind: TaskKind) -> torch.Tensor:
    """(N, K) class probabilities (rows sum to one) or, for multi-label, K independent finding probabilities."""
    logits = logits.float()
    if kind == "multilabel":
        return torch.sigmoid(logits)
    if kind == "ordinal":
        return ordinal_class_probabilities(logits)
    return torch.softmax(logits, dim=1)


def headless(built: BuiltModel) -> nn.Module:
    """The built network with its classification layer replaced by identity, so that it returns pooled features:
    frozen features for a regression, and the backbone self-supervised pretraining trains and saves headless."""
    layers = sorted({name.rsplit(".", 1)[0] for name in built.head_params if "." in name}, key=len)
    if not layers:
        raise ConfigError(
            f"the {built.backbone} network has no classification layer to remove: its pooled features cannot be read",
            where="backbone",
            fix="use a backbone with a classification layer (`medtl weights list` names the registry's), or drop the "
            "`features` arm",
        )
    parent_name, _, attribute = layers[0].rpartition(".")
    parent = built.model.get_submodule(parent_name) if parent_name else built.model
    setattr(parent, attribute, nn.Identity())
    return built.model
