"""The planner's rules: dataset facts -> a training recipe, each choice with the reason a reviewer reads.

Every rule is a general statement about sizes and proportions (patients, images per fold, class shares, pixels);
none names a dataset. The device never enters a rule: batch size and the schedule in optimiser steps come from the
data alone, so a CPU and a GPU run of one plan train the same recipe (the budget may shorten it, and says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medtl.contracts.planning import PlanFacts
from medtl.planning.weights import WeightsPick

N_FOLDS = 5
TUNE_FRACTION = 0.2
NETWORK_STRIDE = 32  # total downsampling of the ResNet family: the last stage sees side / 32 cells
MIN_SIDE_2D = 2 * NETWORK_STRIDE  # a 2x2 last stage, not 1x1, for small images
DOWNSAMPLE_SHARES = (1 / 4, 3 / 8, 1 / 2, 3 / 4)  # smaller inputs a budget may take for large images and volumes
SIDE_MULTIPLE = 8  # downsampled sides are multiples of this
MIN_STEPS_PER_EPOCH = 16
BATCH_RANGE = (16, 128)
VOXELS_PER_BATCH = 8 * 1024**2  # 3D batches are capped by memory: batch x voxels at most this
BASE_LR, BASE_BATCH = 1e-3, 64  # AdamW; scaled with the square root of the batch (adaptive optimisers)
PASSES = 60  # passes over a fold's training images, for a cosine schedule that decays to zero
SAMPLES_RANGE = (20_000, 1_000_000)  # tiny sets still get enough steps; large sets do not run for days
SMALL_SET = 1_000  # below this many training images per fold, stronger augmentation
IMBALANCED = 0.35  # minority share below which the loss is class-weighted
MIN_TUNE_MINORITY_FOR_AUC = 10  # fewer minority images in a tuning split: its AUC is too noisy to stop on
THIN_DEPTH, THIN_RATIO = 16, 4  # volumes thinner than this, with in-plane sides this much larger: 2.5D
LARGE_COHORT = 20_000  # patients above which a deeper network pays for itself


@dataclass
class Recipe:
    """A train config in the making: values by key path, and the reason for each."""

    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: Any, reason: str) -> None:
        self.values[key] = value
        self.reasons[key] = reason

    def config(self) -> dict[str, Any]:
        """Nested mapping for TrainConfig ("a.b" -> {"a": {"b": ...}})."""
        nested: dict[str, Any] = {}
        for key, value in self.values.items():
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return nested


LOSSES = {
    "binary": "cross-entropy over the two classes",
    "multiclass": "softmax cross-entropy over the classes",
    "ordinal": "CORN rank-consistent loss (one conditional 'above this grade' output per cut, so predicted grades "
    "keep their order)",
    "multilabel": "per-finding weighted binary cross-entropy (one sigmoid per finding; a scan may have several)",
}


def training_images_per_fold(facts: PlanFacts, n_folds: int) -> int:
    development = facts.n_scans if facts.n_scans is not None else sum(facts.scans_per_class.values())
    return max(1, int(development * (1 - 1 / n_folds) * (1 - TUNE_FRACTION)))


def _power_of_two_at_most(value: float) -> int:
    return 2 ** max(0, math.floor(math.log2(max(1.0, value))))


def batch_size(facts: PlanFacts, n_folds: int) -> tuple[int, str]:
    n_train = training_images_per_fold(facts, n_folds)
    size = min(max(_power_of_two_at_most(n_train / MIN_STEPS_PER_EPOCH), BATCH_RANGE[0]), BATCH_RANGE[1])
    reason = (
        f"~{n_train} training images per fold: the largest power of two in {list(BATCH_RANGE)} that leaves at least "
        f"{MIN_STEPS_PER_EPOCH} optimiser steps per epoch"
    )
    if facts.spatial_dims == 3:
        voxels = math.prod(facts.native_shape)
        cap = max(2, _power_of_two_at_most(VOXELS_PER_BATCH / voxels))
        if cap < size:
            size = cap
            reason += f"; capped at {cap} so a batch holds at most {VOXELS_PER_BATCH // 1024**2}M voxels"
    return size, reason + " (the same on every device)"


def schedule_steps(facts: PlanFacts, n_folds: int, batch: int) -> tuple[int, str]:
    n_train = training_images_per_fold(facts, n_folds)
    samples = min(max(PASSES * n_train, SAMPLES_RANGE[0]), SAMPLES_RANGE[1])
    steps = math.ceil(samples / batch)
    return steps, (
        f"{PASSES} passes over ~{n_train} images per fold, kept within {SAMPLES_RANGE[0]:,}-{SAMPLES_RANGE[1]:,} "
        f"samples: {steps} optimiser steps of {batch} (counted in steps so hardware cannot change it)"
    )


def learning_rate(batch: int) -> float:
    return BASE_LR * math.sqrt(batch / BASE_BATCH)


def input_layout(facts: PlanFacts) -> tuple[str, str]:
    """'2d', '2.5d' or '3d', and why."""
    if facts.spatial_dims == 2:
        return "2d", "the images are 2D"
    depth, inplane = min(facts.native_shape), max(facts.native_shape)
    if depth < THIN_DEPTH and inplane >= THIN_RATIO * depth:
        return "2.5d", (
            f"volumes of {facts.native_shape} are thin ({depth} slices, in-plane {inplane}): a 2D network over "
            "neighbouring-slice stacks uses the in-plane detail without a 3D network's depth downsampling"
        )
    return "3d", f"volumes of {facts.native_shape}: a 3D network sees the whole shape"


def input_sides(facts: PlanFacts) -> list[int]:
    """Candidate input sides (the longest axis), smallest first: the native side; for small 2D images, upsampled
    ones that give the network's last stage at least 2x2 (then 4x4) cells; for large 2D images and 3D volumes,
    downsampled ones (a quarter to three quarters of the side, never below a 2x2 last stage in 2D or a 1x1x1 one in
    3D), which a budget that cannot afford the native input's full schedule picks from (plan.choose_side). Thin
    volumes trained as 2.5D keep their side: their depth is already a handful of slices."""
    side = max(facts.native_shape)
    if facts.spatial_dims == 2 and side < MIN_SIDE_2D:
        return sorted({side, MIN_SIDE_2D, min(4 * side, 2 * MIN_SIDE_2D)})
    if facts.spatial_dims == 3 and input_layout(facts)[0] != "3d":
        return [side]
    floor = MIN_SIDE_2D if facts.spatial_dims == 2 else NETWORK_STRIDE
    smaller = {SIDE_MULTIPLE * round(side * share / SIDE_MULTIPLE) for share in DOWNSAMPLE_SHARES}
    return sorted({side, *(s for s in smaller if floor <= s < side)})


def base_recipe(facts: PlanFacts, weights: WeightsPick, *, seed: int, max_steps: int | None = None) -> Recipe:
    """Every rule except the input size and the budget cuts, which need measured costs (plan.py)."""
    recipe = Recipe()
    multilabel = facts.task_kind == "multilabel"
    if multilabel or not facts.scans_per_class:  # a finding's count is not the rarer side's: use the share
        minority = round(facts.minority_share * (facts.n_scans or 0))
    else:
        minority = min(facts.scans_per_class.values())
    rare = "rarest-finding" if multilabel else "minority-class"
    minority_patients_share = (
        facts.minority_patients if facts.minority_patients is not None else facts.minority_share * facts.n_patients
    )
    n_folds = N_FOLDS if minority_patients_share >= 2 * N_FOLDS else max(2, int(minority_patients_share // 2))
    recipe.set(
        "cv.n_folds",
        n_folds,
        f"{n_folds} patient-grouped folds"
        + ("" if n_folds == N_FOLDS else f": only ~{minority_patients_share:.0f} {rare} patients"),
    )
    recipe.set("task.kind", *task_kind(facts))
    recipe.set("cv.tune_fraction", TUNE_FRACTION, "a fifth of each fold's training patients picks the best epoch")

    layout, why = input_layout(facts)
    backbone = weights.backbone
    if weights.source == "artifact":
        why_net = "the named artifact's own network"
    elif backbone == "resnet18" and facts.n_patients >= LARGE_COHORT and weights.source == "none":
        backbone = "resnet50"
        why_net = f"{facts.n_patients} patients: enough to train a deeper residual network from scratch"
    else:
        why_net = (
            f"{facts.n_patients} development patients: an 18-layer residual network (deeper ones overfit cohorts "
            "this size and MedMNIST-scale studies find them no better)"
        )
    recipe.set("model.backbone", backbone, why_net)
    recipe.set("model.weights", weights.weights, weights.reason)
    if facts.spatial_dims == 3 and backbone == "resnet18" and weights.layout_3d is not None:
        recipe.set(
            "model.adapt_3d",
            weights.layout_3d,
            f"the pretrained network is 3D ({weights.layout_3d}): its kernels load into that layout only",
        )
    elif facts.spatial_dims == 3 and backbone == "resnet18":
        adapt = "2.5d" if layout == "2.5d" else ("acs" if weights.source != "none" else "inflate")
        recipe.set(
            "model.adapt_3d",
            adapt,
            why
            + {
                "2.5d": "",
                "acs": "; ACS convolutions keep the 2D kernels exactly and give each third of the channels one "
                "anatomical view (the strongest published adaptation of 2D weights to 3D)",
                "inflate": "; without 2D weights to keep, a plain 3D ResNet (inflated layout) from scratch",
            }[adapt],
        )
    pretrained = weights.source != "none"
    batch, why_batch = batch_size(facts, n_folds)
    recipe.set("batch_size", batch, why_batch)
    lr = float(f"{learning_rate(batch):.2g}")
    if pretrained:
        recipe.set(
            "strategy",
            {"name": "layerwise_lr_decay", "lr": lr, "decay": 0.5},
            f"fine-tune everything with smaller steps for earlier (more general) layers; head lr {lr:g} = "
            f"{BASE_LR:g} x sqrt(batch / {BASE_BATCH})",
        )
        recipe.set("arms", ["linear_probe", "scratch", "features"], "the comparison arms that show whether "
                   "transfer helped; features (frozen features + logistic regression) costs seconds")  # fmt: skip
    else:
        recipe.set("strategy", {"name": "full", "lr": lr}, f"from scratch: every layer at lr {lr:g} = "
                   f"{BASE_LR:g} x sqrt(batch / {BASE_BATCH})")  # fmt: skip
        recipe.set("arms", [], "no pretrained weights, so no transfer comparison arms")
    steps, why_steps = schedule_steps(facts, n_folds, batch)
    if max_steps is not None and steps > max_steps:
        steps, why_steps = max_steps, why_steps + f"; capped at {max_steps} by the user (max_steps)"
    recipe.set("steps", steps, why_steps)
    n_train = training_images_per_fold(facts, n_folds)
    epochs = max(1, math.ceil(steps / max(1, n_train // batch)))
    recipe.set("schedule", {"kind": "cosine", "warmup_epochs": 1.0}, "one epoch of warm-up, then cosine decay to 0")
    tune_minority = minority * TUNE_FRACTION * (1 - 1 / n_folds)
    metric = "auc" if tune_minority >= MIN_TUNE_MINORITY_FOR_AUC else "loss"
    recipe.set(
        "early_stopping",
        {"metric": metric, "patience": max(10, epochs // 3), "min_epochs": max(1, epochs // 2)},
        f"~{epochs} epochs planned: stop after a third of them without improvement, never before half; "
        + (
            "tuning AUC picks the epoch"
            if metric == "auc"
            else f"only ~{tune_minority:.0f} minority images per tuning split: the steadier tuning loss picks it"
        ),
    )
    if multilabel:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in (facts.finding_prevalence or {}).items())
        recipe.set(
            "class_balance",
            "weighted_loss",
            f"multi-label: each finding's positives are weighted by its prevalence ({shares}); a sampler cannot "
            "balance findings that share scans",
        )
    elif facts.minority_share < IMBALANCED:
        recipe.set(
            "class_balance",
            "weighted_loss",
            f"minority class {facts.minority_share:.0%} of the scans: the loss weighs classes equally",
        )
    else:
        recipe.set("class_balance", "none", f"classes are balanced enough (minority {facts.minority_share:.0%})")
    recipe.set("augmentation", *augmentation(n_train))
    recipe.set(
        "test_time_flips",
        True,
        "the network trains on left-right mirrored copies, so every prediction averages the image and its mirror: "
        "less variance for a second forward pass, the same in tuning, out-of-fold, test and scoring predictions",
    )
    recipe.set(
        "final_model",
        "ensemble",
        "the fold models averaged: no extra training, and steadier than any one of them on a small cohort",
    )
    recipe.set("seed", seed, "one seed for splits, initialisation, loaders and augmentation")
    recipe.set("device", "auto", "the plan is device-independent; the run uses CUDA when present")
    recipe.set(
        "concurrent_folds",
        "auto",
        "speed only: on a GPU up to four folds side by side, as its memory and the cores allow (a small model leaves "
        "one GPU mostly idle), one at a time on a CPU; the same folds and seeds either way",
    )
    return recipe


def task_kind(facts: PlanFacts) -> tuple[str, str]:
    """The task type the dataset declares (or training infers), and the loss that goes with it."""
    kind = facts.task_kind
    what = {
        "binary": "two classes",
        "multiclass": f"{len(facts.classes)} unordered classes",
        "ordinal": f"{len(facts.classes)} grades in order ({', '.join(facts.classes)})",
        "multilabel": f"{len(facts.classes)} findings, each present or absent ({', '.join(facts.classes)})",
    }[kind]
    return kind, f"{kind}: {what}; loss: {LOSSES[kind]}"


STRONG_AUGMENTATION: dict[str, Any] = {"rotate_degrees": 15.0, "scale": [0.85, 1.15], "translate": 0.1, "p_affine": 0.7}


def augmentation(n_train: int) -> tuple[dict[str, Any], str]:
    if n_train >= SMALL_SET:
        return {"enabled": True}, (
            f"~{n_train} training images per fold: the default flips, small affine and intensity changes"
        )
    return {"enabled": True, **STRONG_AUGMENTATION}, (
        f"only ~{n_train} training images per fold: stronger affine augmentation (rotation 15 degrees, zoom 0.85-1.15, "
        "shift 10%, on 70% of samples) against overfitting"
    )
