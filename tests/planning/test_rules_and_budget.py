"""The planner's rules and budget cuts as plain functions: values that follow from sizes and proportions only."""

from __future__ import annotations

import pytest

from medtl.contracts import PreprocessingSpec
from medtl.contracts.planning import PlanFacts, Probe
from medtl.planning.budget import Shape, fit_to_budget, train_seconds
from medtl.planning.plan import Probes, _shape_of, _spec_for, choose_side
from medtl.planning.rules import (
    BATCH_RANGE,
    MIN_STEPS_PER_EPOCH,
    base_recipe,
    input_layout,
    input_sides,
    training_images_per_fold,
)
from medtl.planning.weights import WeightsPick
from medtl.training.config import TrainConfig

SCRATCH = WeightsPick("resnet18", "none", "no weights here")
IMAGENET = WeightsPick("resnet18", {"source": "torchvision", "name": "IMAGENET1K_V1"}, "present")


def facts(per_class: dict[str, int], shape=(28, 28), patients: int | None = None) -> PlanFacts:
    total = sum(per_class.values())
    return PlanFacts(
        manifest_hash="a" * 64,
        image_kind="image2d" if len(shape) == 2 else "volume",
        spatial_dims=len(shape),
        native_shape=list(shape),
        channels=1,
        classes=sorted(per_class),
        scans_per_class=per_class,
        n_patients=patients or total,
        minority_share=min(per_class.values()) / total,
    )


@pytest.mark.parametrize("n", [60, 600, 6_000, 60_000])
def test_batch_leaves_enough_steps_per_epoch_and_schedule_is_in_steps(n):
    f = facts({"a": n // 2, "b": n - n // 2})
    recipe = base_recipe(f, SCRATCH, seed=0)
    batch, steps = recipe.values["batch_size"], recipe.values["steps"]
    n_train = training_images_per_fold(f, recipe.values["cv.n_folds"])
    assert BATCH_RANGE[0] <= batch <= BATCH_RANGE[1] and batch & (batch - 1) == 0
    assert n_train // batch >= MIN_STEPS_PER_EPOCH or batch == BATCH_RANGE[0]
    assert steps * batch >= 20_000  # tiny sets still get enough optimiser steps
    # the learning rate follows the batch (square-root rule), whatever the batch is
    assert recipe.values["strategy"]["lr"] == pytest.approx(1e-3 * (batch / 64) ** 0.5, rel=0.05)


def test_every_choice_has_a_reason_and_imbalance_weights_the_loss():
    recipe = base_recipe(facts({"a": 90, "b": 410}), IMAGENET, seed=3)
    assert set(recipe.values) <= set(recipe.reasons)
    assert recipe.values["class_balance"] == "weighted_loss"
    assert recipe.values["arms"] == ["linear_probe", "scratch", "features"]
    assert recipe.values["strategy"]["name"] == "layerwise_lr_decay"
    balanced = base_recipe(facts({"a": 250, "b": 250}), SCRATCH, seed=3)
    assert balanced.values["class_balance"] == "none" and balanced.values["arms"] == []


def test_few_minority_patients_mean_fewer_folds_and_loss_based_stopping():
    recipe = base_recipe(facts({"a": 6, "b": 60}), SCRATCH, seed=0)
    assert recipe.values["cv.n_folds"] == 3
    assert recipe.values["early_stopping"]["metric"] == "loss"


def test_small_images_get_larger_inputs_large_ones_smaller_candidates_and_thin_volumes_go_2_5d():
    assert input_sides(facts({"a": 5, "b": 5}, shape=(28, 28))) == [28, 64, 112]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(64, 64))) == [64]  # a 2x2 last stage already
    # large inputs: a quarter to three quarters of the side, down to a 2x2 last stage (2D) or 1x1x1 (3D)
    assert input_sides(facts({"a": 5, "b": 5}, shape=(256, 256))) == [64, 96, 128, 192, 256]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(224, 224))) == [80, 112, 168, 224]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(64, 64, 64))) == [32, 48, 64]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(128, 128, 96))) == [32, 48, 64, 96, 128]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(28, 28, 28))) == [28]
    assert input_sides(facts({"a": 5, "b": 5}, shape=(128, 128, 8))) == [128]  # 2.5D: the slices stay as they are
    assert input_layout(facts({"a": 5, "b": 5}, shape=(128, 128, 8)))[0] == "2.5d"
    assert input_layout(facts({"a": 5, "b": 5}, shape=(64, 64, 64)))[0] == "3d"
    volume = base_recipe(facts({"a": 50, "b": 50}, shape=(28, 28, 28)), IMAGENET, seed=0)
    assert volume.values["model.adapt_3d"] == "acs"
    assert base_recipe(facts({"a": 50, "b": 50}, shape=(28, 28, 28)), SCRATCH, seed=0).values["model.adapt_3d"] == (
        "inflate"
    )


def test_a_3d_pretrained_network_keeps_its_own_layout_and_2d_weights_are_adapted():
    """A backbone pretrained on volumes (`medtl pretrain`, or an earlier 3D model) has 3D kernels: only its own
    layout loads them. ImageNet's or a 2D model's kernels are adapted (ACS), whatever the volumes."""
    from medtl.planning.weights import _layout_3d

    site = {"source": "artifact", "path": "pretrained"}
    volumes = facts({"a": 50, "b": 50}, shape=(28, 28, 28))
    inflated = WeightsPick("resnet18", site, "site-pretrained", _layout_3d({"spatial_dims": 3, "adapt_3d": "inflate"}))
    recipe = base_recipe(volumes, inflated, seed=0)
    assert recipe.values["model.adapt_3d"] == "inflate" and "3D (inflate)" in recipe.reasons["model.adapt_3d"]
    two_d = WeightsPick("resnet18", site, "a 2D model", _layout_3d({"spatial_dims": 2, "adapt_3d": "inflate"}))
    assert base_recipe(volumes, two_d, seed=0).values["model.adapt_3d"] == "acs"
    assert base_recipe(volumes, IMAGENET, seed=0).values["model.adapt_3d"] == "acs"
    assert _layout_3d({"spatial_dims": 3, "adapt_3d": "acs"}) == "acs" and _layout_3d({"spatial_dims": 3}) == "inflate"


def test_budget_cuts_the_comparison_arm_first_then_steps_then_folds():
    f = facts({"a": 200, "b": 200})
    probe = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=0.1, seconds_per_image_predict=0.001)
    full = Shape(steps=1000, batch_size=16, n_folds=5, arms=["linear_probe", "scratch"])
    cost = train_seconds(f, full, probe)
    assert fit_to_budget(f, full, probe, cost * 1.01) == (full, [])
    without_scratch = Shape(1000, 16, 5, ["linear_probe"])
    shape, cuts = fit_to_budget(f, full, probe, train_seconds(f, without_scratch, probe) + 1)
    assert shape == without_scratch and len(cuts) == 1 and cuts[0].startswith("arms")
    shape, cuts = fit_to_budget(f, full, probe, train_seconds(f, without_scratch, probe) * 0.6)
    assert shape.n_folds == 5 and 250 <= shape.steps < 1000 and cuts[-1].startswith("steps")
    assert train_seconds(f, shape, probe) <= train_seconds(f, without_scratch, probe) * 0.6
    shape, cuts = fit_to_budget(f, full, probe, 60.0)  # far too little: the floor, three folds, the main arm only
    assert shape.n_folds == 3 and shape.steps == 250 and shape.arms == []
    assert [cut.split(":")[0] for cut in cuts] == ["arms", "cv.n_folds", "arms", "steps"]
    # where the floor fits with the linear probe, the probe stays; where only the main arm's floor fits, it goes,
    # and the main arm gets back the steps the probe would have taken
    floor_with_probe = train_seconds(f, Shape(250, 16, 3, ["linear_probe"]), probe)
    shape, _ = fit_to_budget(f, full, probe, floor_with_probe + 1)
    assert shape.arms == ["linear_probe"] and shape.n_folds == 3 and shape.steps in (250, 251)
    shape, cuts = fit_to_budget(f, full, probe, floor_with_probe * 0.8)
    assert shape.arms == [] and shape.steps > 250 and "linear-probe" in cuts[-2]
    assert train_seconds(f, shape, probe) <= floor_with_probe * 0.8


def test_a_large_set_whose_schedule_is_under_ten_passes_can_still_be_cut_to_a_quarter():
    """The rules cap a large set's schedule at 1,000,000 samples, near or under ten passes over it: the ten-pass
    floor (meant for small sets) must not forbid most of the cut, or no budget is ever met."""
    large = facts({str(k): 20_000 for k in range(8)})
    recipe = base_recipe(large, SCRATCH, seed=0)
    wanted, batch = recipe.values["steps"], recipe.values["batch_size"]
    assert (wanted - 1) * batch < 1_000_000 and 10 * training_images_per_fold(large, 3) // batch > 3 * wanted // 4
    probe = Probe(input_shape=[28, 28], batch_size=batch, seconds_per_step=0.25, seconds_per_image_predict=1e-4)
    shape, cuts = fit_to_budget(large, Shape(wanted, batch, 5, []), probe, 60.0)
    assert shape.steps == int(wanted * 0.25) and shape.n_folds == 3 and cuts[-1].startswith("steps")
    # a small set keeps its ten passes where they are more than a quarter of its schedule
    small = facts({"a": 200, "b": 200})
    per_epoch = training_images_per_fold(small, 3) // 16
    shape, _ = fit_to_budget(small, Shape(200, 16, 3, []), probe, 1.0)
    assert shape.steps == 10 * per_epoch > 200 // 4


def test_label_efficiency_runs_are_counted_and_cut_first():
    """A schedule in steps keeps its steps on a share of the patients: each share below 1 costs a whole run more."""
    f = facts({"a": 200, "b": 200})
    steps_only = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=0.1, seconds_per_image_predict=1e-12)
    plain = Shape(steps=1000, batch_size=16, n_folds=5, arms=["scratch"])
    curve = Shape(steps=1000, batch_size=16, n_folds=5, arms=["scratch"], label_fractions=[0.25, 0.5, 1.0])
    assert train_seconds(f, plain, steps_only) == pytest.approx(5 * 2 * 1000 * 0.1)
    assert train_seconds(f, curve, steps_only) == pytest.approx(5 * 2 * 3 * 1000 * 0.1)  # folds x arms x shares
    assert train_seconds(f, Shape(1000, 16, 5, ["scratch"], [1.0]), steps_only) == train_seconds(f, plain, steps_only)
    probe = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=0.1, seconds_per_image_predict=0.001)
    # more epochs over fewer patients: more tuning predictions, so a share run costs at least the full run
    assert train_seconds(f, curve, probe) >= 3 * train_seconds(f, plain, probe)
    shape, cuts = fit_to_budget(f, curve, probe, train_seconds(f, plain, probe) + 1)
    assert shape == Shape(1000, 16, 5, ["scratch"], []) and [c.split(":")[0] for c in cuts] == ["label_fractions"]


def test_predictions_average_over_the_trained_flip_and_the_budget_counts_both_passes():
    recipe = base_recipe(facts({"a": 200, "b": 200}), SCRATCH, seed=0)
    assert recipe.values["test_time_flips"] is True and "mirror" in recipe.reasons["test_time_flips"]
    config = TrainConfig.model_validate(recipe.config())
    assert config.prediction_flip_axes(2) == (1,) and config.prediction_flip_axes(3) == (0,)  # left-right in each
    f = facts({"a": 200, "b": 200})
    predict_only = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=1e-12, seconds_per_image_predict=0.01)
    once, mirrored = Shape(100, 16, 5, []), Shape(100, 16, 5, [], prediction_views=2)
    assert train_seconds(f, mirrored, predict_only) == pytest.approx(2 * train_seconds(f, once, predict_only))


def no_search(side: int) -> float:
    """An empirical stage that takes nothing from the budget (skipped)."""
    return 0.0


def lazy(probes: dict[int, Probe], asked: list[int]) -> Probes:
    """`probes` measured when asked for, each side asked recorded in `asked` (emptied first)."""
    asked.clear()
    return Probes(list(probes), lambda side: asked.append(side) or probes[side])


def test_a_small_image_is_upsampled_with_fewer_folds_when_only_that_fits_the_budget():
    """Largest side whose full schedule fits; else the first upsampled side with three folds; else the native one.
    The empirical stage's cost for a side counts against the same seconds."""
    f = facts({"a": 150, "b": 450})
    recipe = base_recipe(f, SCRATCH, seed=0)
    assert recipe.values["cv.n_folds"] == 5
    seconds = {28: 0.01, 64: 0.05, 112: 0.2}
    probes = {s: Probe(input_shape=[s, s], batch_size=16, seconds_per_step=t, seconds_per_image_predict=t / 50)
              for s, t in seconds.items()}  # fmt: skip
    shape = Shape(recipe.values["steps"], recipe.values["batch_size"], 5, [], prediction_views=2)
    five = {s: train_seconds(f, shape, probes[s]) for s in seconds}
    three = {s: train_seconds(f, Shape(shape.steps, shape.batch_size, 3, [], prediction_views=2), probes[s])
             for s in seconds}  # fmt: skip
    assert three[64] < five[64] and five[28] < three[64]

    assert choose_side(f, recipe, probes, five[64] * 1.01, no_search)[::2] == (64, None)
    assert choose_side(f, recipe, probes, five[112] * 1.01, no_search)[::2] == (112, None)
    side, why, folds = choose_side(f, recipe, probes, three[64] * 1.01, no_search)
    assert (side, folds) == (64, 3) and "3 folds instead of 5" in why and "2x2 cells" in why
    side, why, folds = choose_side(f, recipe, probes, three[64] * 0.99, no_search)
    assert (side, folds) == (28, None) and "64 px with 3 folds" in why  # the option it could not afford, with its cost
    # the same seconds with an empirical stage that would take a tenth of them: the native side
    assert choose_side(f, recipe, probes, three[64] * 1.01, lambda side: three[64] * 0.1)[::2] == (28, None)
    # no budget: the smallest side whose last stage has 2x2 cells, all folds
    assert choose_side(f, recipe, probes, None, no_search)[::2] == (64, None)

    # measured when asked for: no budget needs no probe here (the plan measures its chosen side afterwards), and a
    # budget stops at the first side whose training alone it cannot afford
    asked: list[int] = []
    assert choose_side(f, recipe, lazy(probes, asked), None, no_search)[::2] == (64, None) and asked == []
    side, why, _ = choose_side(f, recipe, lazy(probes, asked), five[28] * 1.01, no_search)
    assert side == 28 and asked == [28, 64] and "112 px not measured" in why
    side, why, _ = choose_side(f, recipe, lazy(probes, asked), five[112] * 1.01, no_search)
    assert side == 112 and asked == [28, 64, 112] and "not measured" not in why


def test_a_volume_the_budget_cannot_afford_is_downsampled_as_little_as_the_budget_allows():
    """Largest side whose full schedule fits; when none does, the smallest (the budget then cuts its schedule); no
    budget: the native side. Probed smallest first, up to the first side the budget cannot afford."""
    f = facts({"a": 300, "b": 900}, shape=(64, 64, 64))
    recipe = base_recipe(f, SCRATCH, seed=0)
    seconds = {s: 0.5 * (s / 32) ** 3 for s in (32, 48, 64)}  # a step costs its voxels
    probes = {s: Probe(input_shape=[s] * 3, batch_size=16, seconds_per_step=t, seconds_per_image_predict=t / 50)
              for s, t in seconds.items()}  # fmt: skip
    full = {s: train_seconds(f, _shape_of(recipe), probes[s]) for s in seconds}
    assert full[32] < full[48] < full[64]

    asked: list[int] = []
    assert choose_side(f, recipe, lazy(probes, asked), full[64] * 1.01, no_search)[::2] == (64, None)
    assert asked == [32, 48, 64]
    side, why, folds = choose_side(f, recipe, lazy(probes, asked), full[48] * 1.01, no_search)
    assert (side, folds) == (48, None) and asked == [32, 48, 64]
    assert "downsampled to a longest side of 48" in why and "2.37x fewer voxels" in why
    side, why, _ = choose_side(f, recipe, lazy(probes, asked), full[32] * 0.5, no_search)
    assert side == 32 and asked == [32] and "smallest candidate" in why and "48 px, 64 px not measured" in why
    side, why, _ = choose_side(f, recipe, lazy(probes, asked), None, no_search)
    assert side == 64 and asked == [] and "no budget" in why


def test_a_smaller_input_keeps_the_field_of_view():
    """Downsampled volumes are resampled to a proportionally coarser spacing (the spec's, else the scans' median)
    and every axis keeps its proportion; upsampled 2D images become squares of the side."""
    volume = PreprocessingSpec(spatial_dims=3, target_spacing=[1.0, 1.0, 1.0], target_shape=[64, 64, 64])
    smaller = _spec_for(volume, 32)
    assert smaller.target_shape == [32, 32, 32] and smaller.target_spacing == [2.0, 2.0, 2.0]
    cropped = PreprocessingSpec(spatial_dims=3, target_spacing=None, target_shape=[128, 128, 64])
    smaller = _spec_for(cropped, 96, voxel_spacing=[0.8, 0.8, 2.5])
    assert smaller.target_shape == [96, 96, 48]
    assert smaller.target_spacing == pytest.approx([0.8 * 4 / 3, 0.8 * 4 / 3, 2.5 * 4 / 3], abs=1e-4)
    assert [n * s for n, s in zip(smaller.target_shape, smaller.target_spacing, strict=True)] == pytest.approx(
        [128 * 0.8, 128 * 0.8, 64 * 2.5], rel=1e-4
    )
    image = PreprocessingSpec(spatial_dims=2, target_spacing=None, target_shape=[256, 256])
    assert _spec_for(image, 128).target_shape == [128, 128] and _spec_for(image, 128).target_spacing is None
    assert _spec_for(PreprocessingSpec(spatial_dims=2, target_shape=[28, 28]), 64).target_shape == [64, 64]
    assert _spec_for(volume, 64) is volume


def test_a_prediction_pays_its_batchs_fixed_cost_however_few_images_it_holds():
    """On a tiny set the tuning and held-out patients fit in one batch: their predictions cost a batch each (what
    a prediction of 5 images mostly is on a CPU), not 5 images' share of a full batch."""
    small, double = facts({"a": 10, "b": 10}), facts({"a": 20, "b": 20})
    shape = Shape(64, 16, 5, [], prediction_views=2)
    per_batch = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=1e-12, seconds_per_image_predict=1e-12,
                      seconds_per_predict_batch=0.01)  # fmt: skip
    per_image = per_batch.model_copy(update={"seconds_per_image_predict": 0.01, "seconds_per_predict_batch": 0.0})
    assert train_seconds(small, shape, per_batch) == pytest.approx(train_seconds(double, shape, per_batch))
    assert train_seconds(double, shape, per_image) == pytest.approx(2 * train_seconds(small, shape, per_image), 0.1)
    assert train_seconds(small, shape, per_batch) >= 5 * 2 * 0.01 * 5  # >= 5 folds x 2 views x 5 predictions


def test_a_linear_probe_arm_is_budgeted_as_a_whole_arm_since_its_frozen_body_still_runs_backward():
    f = facts({"a": 200, "b": 200})
    probe = Probe(input_shape=[28, 28], batch_size=16, seconds_per_step=0.1, seconds_per_image_predict=0.001)
    main_only = train_seconds(f, Shape(500, 16, 5, []), probe)
    assert train_seconds(f, Shape(500, 16, 5, ["linear_probe"]), probe) == pytest.approx(2 * main_only)
    assert train_seconds(f, Shape(500, 16, 5, ["features"]), probe) < 1.1 * main_only
