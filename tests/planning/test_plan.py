"""`medtl plan` on ingested datasets: the plan is a valid train config, its reasons are complete, hardware changes
nothing but the estimate, and a dataset of masks is planned rather than refused."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from medtl.contracts.planning import Hardware, Probe
from medtl.errors import ConfigError
from medtl.planning import PlanOptions, make_plan, read_plan, write_plan
from medtl.planning import plan as plan_module
from medtl.training.config import TaskConfig
from medtl.training.data import load_task
from support.medmnist_like import make_dataset

CHOICES = ("batch_size", "steps", "strategy", "model.backbone", "model.weights", "class_balance", "augmentation",
           "cv.n_folds", "early_stopping", "final_model", "preprocessing", "task.exclude_flags")  # fmt: skip


def test_plan_is_a_complete_config_with_a_reason_for_every_choice(dataset_2d, tmp_path):
    config = make_plan(dataset_2d, PlanOptions(search=False))
    plan = config.plan
    assert plan is not None and set(CHOICES) <= set(plan.reasons)
    assert config.model.weights.source == "none"  # nothing is downloaded here: the plan says why
    assert "medtl weights list" in plan.reasons["model.weights"]
    assert [w.state for w in plan.weights] == ["missing"]
    assert config.concurrent_folds == "auto" and "GPU" in plan.reasons["concurrent_folds"]  # resolved by the run
    write_plan(config, tmp_path / "plan.yaml")
    assert read_plan(tmp_path / "plan.yaml").concurrent_folds == "auto"
    assert config.steps is not None and config.steps * config.batch_size >= 20_000
    # 28 px images: the network's last stage would see 1x1 cells, so the input is upsampled (no budget: to 64)
    assert config.preprocessing is not None and config.preprocessing.target_shape == [64, 64]
    assert plan.facts.scans_per_class == {"0": 37, "1": 19}  # train + val only; the 16 test images are not counted
    path = tmp_path / "plan.yaml"
    write_plan(config, path)
    assert "epochs" not in yaml.safe_load(path.read_text())  # the schedule is in steps; no dead key to edit
    assert read_plan(path).model_dump() == config.model_dump()


@pytest.fixture
def measured_once(monkeypatch):
    """One timing probe per input shape serves every plan of a test, so machine noise between two probes cannot
    decide it (a loaded machine measured 4x slower steps one plan later)."""
    real_probe = plan_module.probe
    measured: dict[tuple[int, ...], Probe] = {}

    def once(*args, **kwargs) -> Probe:
        key = tuple(kwargs["shape"])
        if key not in measured:
            measured[key] = real_probe(*args, **kwargs)
        return measured[key]

    monkeypatch.setattr(plan_module, "probe", once)
    return once


def test_hardware_changes_the_estimate_not_the_recipe(dataset_2d, monkeypatch, measured_once):
    slow = make_plan(dataset_2d, PlanOptions(search=False))
    monkeypatch.setattr(plan_module, "detect", lambda choice: Hardware(device="cpu", name="a faster box", cpus=64))

    def fast_probe(*args, **kwargs) -> Probe:
        one = measured_once(*args, **kwargs)
        return one.model_copy(
            update={
                "seconds_per_step": one.seconds_per_step / 50,
                "seconds_per_image_predict": one.seconds_per_image_predict / 50,
                "seconds_per_predict_batch": one.seconds_per_predict_batch / 50,
            }
        )

    monkeypatch.setattr(plan_module, "probe", fast_probe)
    fast = make_plan(dataset_2d, PlanOptions(search=False))
    recipe = {"plan"}
    assert slow.model_dump(exclude=recipe) == fast.model_dump(exclude=recipe)
    assert fast.plan.estimate.train_seconds == pytest.approx(slow.plan.estimate.train_seconds / 50, rel=0.05)


def test_a_budget_is_met_by_cutting_and_the_cuts_are_written_down(dataset_2d, measured_once):
    unlimited = make_plan(dataset_2d, PlanOptions(search=False))
    budget = unlimited.plan.estimate.train_seconds / 60 / 4  # a quarter of what the full recipe would take
    tight = make_plan(dataset_2d, PlanOptions(search=False, budget_minutes=budget))
    assert tight.steps < unlimited.steps or tight.cv.n_folds < unlimited.cv.n_folds
    assert "budget cut" in tight.plan.reasons["steps"] + tight.plan.reasons["cv.n_folds"]
    assert tight.plan.budget_minutes == budget
    assert tight.plan.estimate.fits_budget == (tight.plan.estimate.train_seconds <= tight.plan.estimate.budget_seconds)


def test_the_empirical_stage_compares_candidates_on_development_patients(dataset_2d):
    config = make_plan(dataset_2d, PlanOptions(search=True, max_steps=24))
    candidates = config.plan.candidates
    assert [c.name for c in candidates][:2] == ["rules", "native size"] and len(candidates) == 3
    assert sum(c.chosen for c in candidates) == 1
    for candidate in candidates:
        assert len(candidate.inner_aucs) == 2 and all(0.0 <= a <= 1.0 for a in candidate.inner_aucs if a is not None)
    chosen = next(c for c in candidates if c.chosen)
    best = max(c.mean_auc for c in candidates if c.mean_auc is not None)
    assert chosen.mean_auc is not None and chosen.mean_auc >= best - 0.005  # the rules win only near-ties
    if chosen.name == "native size":
        assert config.preprocessing is None  # the ingest's own 28 px tensors


def test_a_dataset_of_masks_is_planned_not_refused(dataset_3d_masks):
    with pytest.raises(ConfigError, match="possible_label_map"):  # the default task filters remove every scan
        load_task(dataset_3d_masks, TaskConfig())
    config = make_plan(dataset_3d_masks, PlanOptions(search=False))
    assert config.task.exclude_flags == ["constant_image"]
    assert "100%" in config.plan.reasons["task.exclude_flags"]
    assert config.model.adapt_3d == "inflate" and config.preprocessing is None  # no 2D weights; 3D stays native
    assert config.plan.facts.spatial_dims == 3 and config.batch_size >= 2


def test_volumes_a_budget_cannot_afford_are_planned_smaller_over_the_same_field_of_view(tmp_path):
    """64^3 masks with a budget too small for any input: the smallest candidate (32^3, spacing doubled), and the
    tensors training makes for it show each mask over the same field of view (a centre crop would not)."""
    dataset = make_dataset(tmp_path, "adrenalmnist3d_64", sizes={"train": 12, "val": 3, "test": 3})
    config = make_plan(dataset, PlanOptions(search=False, budget_minutes=0.05))
    spec = config.preprocessing
    assert spec is not None and spec.target_shape == [32, 32, 32] and spec.target_spacing == [2.0, 2.0, 2.0]
    assert "downsampled to a longest side of 32" in config.plan.reasons["preprocessing"]
    assert config.plan.probe.input_shape == [32, 32, 32]
    native, smaller = load_task(dataset, config.task), load_task(dataset, config.task, spec)
    tensors = {}
    for name, task in (("native", native), ("smaller", smaller)):
        tensors[name] = {row.scan_id: np.load(dataset / row.tensor_path) for row in task.scans.itertuples()}
    assert {t.shape for t in tensors["smaller"].values()} == {(1, 32, 32, 32)}
    for scan_id, full in tensors["native"].items():
        # a blob's share of the volume is kept (a 32^3 centre crop of a 64^3 volume would multiply it by ~8)
        assert tensors["smaller"][scan_id].mean() == pytest.approx(full.mean(), rel=0.25, abs=0.005)


def test_an_interrupted_planned_run_resumes_with_its_own_plan(dataset_2d, tmp_path, monkeypatch):
    out = tmp_path / "artifact"
    first = plan_module.plan_for_run(dataset_2d, out, PlanOptions(search=False))
    assert plan_module.saved_plan_path(out).exists()

    def must_not_plan(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr(plan_module, "make_plan", must_not_plan)
    again = plan_module.plan_for_run(dataset_2d, out, PlanOptions(search=False))
    assert again.model_dump() == first.model_dump()  # same recipe, so the finished folds are reused
    with pytest.raises(AssertionError, match="planned again"):  # other options: a new plan, never the old one
        plan_module.plan_for_run(dataset_2d, out, PlanOptions(search=False, budget_minutes=5))


def test_label_efficiency_runs_are_planned_and_counted(dataset_2d, monkeypatch):
    fixed = Probe(input_shape=[64, 64], batch_size=16, seconds_per_step=0.05, seconds_per_image_predict=0.001)
    monkeypatch.setattr(plan_module, "probe", lambda *args, **kwargs: fixed)
    plain = make_plan(dataset_2d, PlanOptions(search=False))
    curve = make_plan(dataset_2d, PlanOptions(search=False, label_fractions=[0.5]))
    assert plain.label_fractions is None and curve.label_fractions == [0.5, 1.0]
    assert "label-efficiency" in curve.plan.reasons["label_fractions"]
    assert curve.plan.estimate.train_seconds >= 2 * plain.plan.estimate.train_seconds  # a share costs a whole run
    assert curve.model_dump(exclude={"plan", "label_fractions"}) == plain.model_dump(
        exclude={"plan", "label_fractions"}
    )
