"""The training loss for each task type, with its imbalance weighting.

- binary / multiclass: cross-entropy, class-weighted by inverse frequency when `class_balance: weighted_loss`;
- ordinal: the CORN loss (coral-pytorch), a rank-consistent formulation on K-1 conditional binary tasks;
- multilabel: one binary cross-entropy per finding; with weighting, each finding's positives are weighted by its
  negative/positive ratio in the training patients (capped), so a rare finding is not learnt as "always absent".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from coral_pytorch.losses import corn_loss
from torch import nn

from medtl.contracts.task import TaskKind

MAX_FINDING_WEIGHT = 50.0  # a finding seen in 1 of 1,000 training scans would otherwise weigh 1,000


def class_weights(targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised to a mean of one over the classes."""
    counts = torch.bincount(targets, minlength=n_classes).float().clamp(min=1)
    return counts.sum() / (n_classes * counts)


def finding_weights(findings: torch.Tensor) -> torch.Tensor:
    """Per finding: negatives / positives in the training set, between 1/MAX and MAX."""
    positives = findings.sum(dim=0)
    negatives = findings.shape[0] - positives
    return (negatives / positives.clamp(min=1)).clamp(1 / MAX_FINDING_WEIGHT, MAX_FINDING_WEIGHT)


def make_loss(
    kind: TaskKind, targets: torch.Tensor, n_classes: int, *, weighted: bool, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(logits, targets) for this task; `targets` are the whole training side's (for the weights)."""
    if kind == "multilabel":
        weight = finding_weights(targets).to(device) if weighted else None
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    if kind == "ordinal":
        return lambda logits, batch_targets: corn_loss(logits, batch_targets, num_classes=n_classes)
    weight = class_weights(targets, n_classes).to(device) if weighted else None
    return nn.CrossEntropyLoss(weight=weight)


def tuning_loss(kind: TaskKind, probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """Negative log-likelihood of the tuning patients under the predicted probabilities (unweighted)."""
    clamped = probabilities.clamp(1e-7, 1 - 1e-7)
    if kind == "multilabel":
        return float(nn.functional.binary_cross_entropy(clamped, targets.float()))
    return float(nn.functional.nll_loss(torch.log(clamped), targets))
