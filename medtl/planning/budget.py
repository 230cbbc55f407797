"""What a recipe costs on this machine, and the cuts that make it fit a time budget, in the order they hurt least.

The estimate is an upper bound: every fold and arm runs its whole schedule (early stopping only shortens it), plus
the predictions of the tuning patients (after every epoch, or every few on tiny sets: training.loop.tuning_interval)
and of the held-out patients once (each over every mirror view when predictions average over flips), each costing
its images and a fixed cost per batch.
Label-efficiency runs (train config label_fractions) add every arm on every fold once per share below 1; a schedule
in steps keeps its step count on a share of the patients, so such a run costs its whole schedule (and, having more
epochs, at least as many tuning predictions), not the share of it. Cuts, in order: the
label-efficiency runs and then the from-scratch comparison arm (both answer a question, neither makes the model),
then steps down to a floor (a quarter of the rules' steps, and ten passes over the data where those are fewer than
the 20,000 samples the rules give the smallest sets: on a large set the rules' schedule is itself capped below ten
passes, and a floor of ten would forbid any cut), then folds 5 -> 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from medtl.contracts.planning import PlanFacts, Probe
from medtl.planning.rules import SAMPLES_RANGE, TUNE_FRACTION, training_images_per_fold
from medtl.training.config import TrainConfig
from medtl.training.loop import tuning_interval

# A linear probe runs the loop's whole step: frozen stages are parameter groups at lr 0, not requires_grad=False
# (models/strategies.py says why), so the body's backward pass still runs; its folds took 0.74-1.4x the main arm's
# (benchmarks/results/quality_breastmnist_from_*_cpu.json). The features arm is one forward pass per scan and a
# few regressions.
ARM_COST = {"main": 1.0, "scratch": 1.0, "linear_probe": 1.0, "features": 0.05}
MIN_STEP_SHARE = 0.25  # never cut the schedule below a quarter of the rules' steps ...
MIN_EPOCHS = 10  # ... nor below ten passes over the data, where those are fewer samples than ...
MIN_EPOCHS_SAMPLES = SAMPLES_RANGE[0]  # ... the fewest the rules ever plan (a large set learns in fewer passes)
FEWEST_FOLDS = 3
MIN_STEPS_BETWEEN_TUNING = TrainConfig.model_fields["min_steps_between_tuning"].default  # the plans keep it


@dataclass
class Shape:
    """The budget-relevant part of a recipe."""

    steps: int
    batch_size: int
    n_folds: int
    arms: list[str]
    label_fractions: list[float] = field(default_factory=list)  # shares of the labels; 1.0 is the full run itself
    prediction_views: int = 1  # forward passes per predicted image (2 with test-time left-right flips)


def fold_seconds(facts: PlanFacts, shape: Shape, probe: Probe, share: float = 1.0) -> float:
    """One arm on one fold; `share`: trained on that share of the fold's training patients (tuning, held-out same)."""
    development = sum(facts.scans_per_class.values())
    n_train = max(1, int(training_images_per_fold(facts, shape.n_folds) * share))
    n_tune = development * (1 - 1 / shape.n_folds) * TUNE_FRACTION
    n_heldout = development / shape.n_folds
    per_epoch = max(1, n_train // shape.batch_size)
    epochs = math.ceil(shape.steps / per_epoch)
    predictions = math.ceil(epochs / tuning_interval(per_epoch, MIN_STEPS_BETWEEN_TUNING))
    images = predictions * n_tune + n_heldout
    batches = predictions * math.ceil(n_tune / shape.batch_size) + math.ceil(n_heldout / shape.batch_size)
    one_view = images * probe.seconds_per_image_predict + batches * probe.seconds_per_predict_batch
    return shape.steps * probe.seconds_per_step + shape.prediction_views * one_view


def train_seconds(facts: PlanFacts, shape: Shape, probe: Probe) -> float:
    arms = ARM_COST["main"] + sum(ARM_COST.get(arm, 1.0) for arm in shape.arms)
    shares = [1.0, *(share for share in shape.label_fractions if share < 1.0)]
    return shape.n_folds * arms * sum(fold_seconds(facts, shape, probe, share) for share in shares)


def fit_to_budget(facts: PlanFacts, shape: Shape, probe: Probe, budget_s: float) -> tuple[Shape, list[str]]:
    """The recipe's shape after the fewest cuts that bring its estimate within `budget_s`, and what was cut."""
    cuts: list[str] = []
    wanted = shape.steps

    def fits(candidate: Shape) -> bool:
        return train_seconds(facts, candidate, probe) <= budget_s

    if fits(shape):
        return shape, cuts
    if any(share < 1.0 for share in shape.label_fractions):
        shape = replace(shape, label_fractions=[])
        cuts.append("label_fractions: the label-efficiency runs dropped")
        if fits(shape):
            return shape, cuts
    if "scratch" in shape.arms:
        shape = replace(shape, arms=[arm for arm in shape.arms if arm != "scratch"])
        cuts.append("arms: the from-scratch comparison arm dropped")
        if fits(shape):
            return shape, cuts

    def steps_for(candidate: Shape) -> int:
        n_train = training_images_per_fold(facts, candidate.n_folds)
        passes = min(MIN_EPOCHS * max(1, n_train // candidate.batch_size), MIN_EPOCHS_SAMPLES // candidate.batch_size)
        floor = min(wanted, max(int(wanted * MIN_STEP_SHARE), passes))
        return max(floor, min(wanted, _affordable_steps(facts, candidate, probe, budget_s)))

    shape = replace(shape, steps=steps_for(shape))
    if not fits(shape) and shape.n_folds > FEWEST_FOLDS:
        cuts.append(f"cv.n_folds: {shape.n_folds} -> {FEWEST_FOLDS}")
        shape = replace(shape, n_folds=FEWEST_FOLDS)
        shape = replace(shape, steps=steps_for(shape))
    if not fits(shape) and "linear_probe" in shape.arms:  # the last cut: the main arm alone may fit, and is the model
        shape = replace(shape, arms=[arm for arm in shape.arms if arm != "linear_probe"])
        shape = replace(shape, steps=steps_for(shape))
        cuts.append("arms: the linear-probe comparison arm dropped (the shortest schedule did not fit with it)")
    if shape.steps < wanted:
        cuts.append(f"steps: {wanted} -> {shape.steps}")
    return shape, cuts


def _affordable_steps(facts: PlanFacts, shape: Shape, probe: Probe, budget_s: float) -> int:
    """Largest step count whose estimate fits (the cost is affine in steps)."""
    one = train_seconds(facts, replace(shape, steps=1), probe)
    two = train_seconds(facts, replace(shape, steps=1 + 1000), probe)
    per_step = (two - one) / 1000
    fixed = one - per_step
    return max(1, int((budget_s - fixed) / per_step)) if per_step > 0 else shape.steps
