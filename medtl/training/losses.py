"""The training loss for each task type, with its imbalance weighting.

- binary / multiclass: cross-entropy, class-weighted by inverse frequency when `class_balance: weighted_loss`;
- ordinal: the CORN loss (Shi, Cao & Raschka 2023), a rank-consistent formulation on K-1 conditional binary tasks,
  with each scan weighted by its grade's inverse frequency when weighting is on (coral-pytorch, the authors'
  package, has no weights; a test checks this one equals it at unit weights);
- multilabel: one binary cross-entropy per finding; with weighting, each finding's positives are weighted by its
  negative/positive ratio in the training patients (capped), so a rare finding is not learnt as "always absent".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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
    weight = class_weights(targets, n_classes).to(device) if weighted else None
    if kind == "ordinal":
        return lambda logits, batch_targets: corn_loss(logits, batch_targets, weight)
    return nn.CrossEntropyLoss(weight=weight)


def corn_loss(logits: torch.Tensor, grades: torch.Tensor, grade_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Logit k answers "grade > k?" for the scans whose grade is at least k (conditional on passing cut k-1); the
    loss is the binary cross-entropy of every such answer, averaged over all answers (weighted by the scan's grade
    weight when given)."""
    weights = torch.ones_like(grades, dtype=logits.dtype) if grade_weights is None else grade_weights[grades]
    total = logits.new_zeros(())
    count = logits.new_zeros(())
    for cut in range(logits.shape[1]):
        eligible = grades >= cut
        if eligible.any():
            answers = (grades[eligible] > cut).to(logits.dtype)
            total = total + nn.functional.binary_cross_entropy_with_logits(
                logits[eligible, cut], answers, weight=weights[eligible], reduction="sum"
            )
            count = count + weights[eligible].sum()
    return total / count.clamp_min(1e-12)


def tuning_loss(kind: TaskKind, probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """Negative log-likelihood of the tuning patients under the predicted probabilities (unweighted)."""
    clamped = probabilities.clamp(1e-7, 1 - 1e-7)
    if kind == "multilabel":
        return float(nn.functional.binary_cross_entropy(clamped, targets.float()))
    return float(nn.functional.nll_loss(torch.log(clamped), targets))
