"""`medtl plan`: dataset fingerprint + labels + hardware + budget -> a complete train config with its reasons.

Steps: gather the task's development facts; check which pretrained weights are present and verified; apply the
rules (rules.py); measure what a step costs on this machine for each candidate input size (probe.py); pick the
largest input the budget affords; optionally compare a few candidates by inner cross-validation (search.py);
cut what the budget cannot afford, in the order that hurts least (budget.py). The result validates as a TrainConfig,
so `medtl train` refuses a broken plan before any work, like any config.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from medtl.contracts import Fingerprint, PreprocessingSpec, read_json
from medtl.contracts.planning import Candidate, Estimate, Hardware, PlanFacts, PlanRecord, Probe
from medtl.errors import ConfigError, describe_validation_error
from medtl.ingest.pipeline import FINGERPRINT
from medtl.planning.budget import FEWEST_FOLDS, Shape, fit_to_budget, train_seconds
from medtl.planning.facts import Gathered, gather
from medtl.planning.hardware import detect
from medtl.planning.probe import probe
from medtl.planning.rules import MIN_SIDE_2D, Recipe, base_recipe, input_sides
from medtl.planning.search import INNER_FOLDS, Trial, compare
from medtl.planning.weights import pick_weights
from medtl.timing import time_and_budget
from medtl.training.config import TrainConfig, load_config
from medtl.training.data import TaskData, dataset_spec, load_task

log = logging.getLogger(__name__)
PLANNER_VERSION = 1
PLAN_SHARE = 0.9  # of the budget, for planning and training; the rest covers sealing and slack
SEARCH_SHARE = 0.25  # of the budget, at most, for the empirical stage
SEARCH_STEP_SHARE = 1 / 4  # candidates train a quarter of the schedule: enough to rank, not to finish
LR_VARIANT = 1 / 3


@dataclass(frozen=True)
class Variant:
    """One search candidate before it is built: the change as written in the plan, the config update, its input side."""

    name: str
    changes: dict[str, str]
    update: dict[str, Any]
    side: int


@dataclass(frozen=True)
class PlanOptions:
    budget_minutes: float | None = None
    device: str = "auto"
    search: bool | None = None  # None: only when a budget is given and the search fits its share
    seed: int = 0
    weights_artifact: Path | None = None
    max_candidates: int = 3
    max_steps: int | None = None  # an upper bound on the schedule, for a quick look (recorded as a cut)
    label_fractions: list[float] | None = None  # label-efficiency runs to plan for (train config label_fractions)


def _spec_for(native: PreprocessingSpec, side: int, voxel_spacing: Sequence[float] | None = None) -> PreprocessingSpec:
    """The ingest's spec with `side` as its longest axis. Upsampled (small 2D images): a square of that side.
    Downsampled: every axis in proportion over the same field of view; a volume is resampled to a coarser spacing
    (its spec's, else `voxel_spacing`, the scans' median, which the native spec kept by cropping unresampled)."""
    longest = max(native.target_shape)
    if side == longest:
        return native
    if side > longest:
        return native.model_copy(update={"target_shape": [side] * native.spatial_dims})
    shape = [max(1, round(n * side / longest)) for n in native.target_shape]
    update: dict[str, Any] = {"target_shape": shape}
    if native.spatial_dims == 3:
        spacing = native.target_spacing or voxel_spacing
        if spacing is None:
            raise ConfigError("a smaller 3D input needs the scans' voxel spacing; none was given (a planner defect)")
        update["target_spacing"] = [
            round(float(step) * n / m, 4) for step, n, m in zip(spacing, native.target_shape, shape, strict=True)
        ]
    return native.model_copy(update=update)


def _shape_of(recipe: Recipe) -> Shape:
    v = recipe.values
    return Shape(
        steps=v["steps"],
        batch_size=v["batch_size"],
        n_folds=v["cv.n_folds"],
        arms=list(v["arms"]),
        label_fractions=list(v.get("label_fractions") or []),
        prediction_views=2 if v.get("test_time_flips") else 1,  # the rules keep the default left-right flip only
    )


def _cells(side: int) -> int:
    return math.ceil(side / 32)


class Probes(Mapping[int, Probe]):
    """The timing probe of each candidate input side, measured when first asked for.

    Why lazily: a probe of a large upsampled input takes seconds on a CPU, and a plan without a budget needs only
    the side it picks, while a budget stops at the first side whose training alone it cannot afford (a larger input
    never trains faster). Planning time counts against the budget."""

    def __init__(self, sides: Sequence[int], measure: Callable[[int], Probe]) -> None:
        self._sides, self._measure = sorted(sides), measure
        self._measured: dict[int, Probe] = {}

    def __getitem__(self, side: int) -> Probe:
        if side not in self._sides:
            raise KeyError(side)
        if side not in self._measured:
            self._measured[side] = self._measure(side)
        return self._measured[side]

    def __iter__(self) -> Iterator[int]:
        return iter(self._sides)

    def __len__(self) -> int:
        return len(self._sides)


def choose_side(
    facts: PlanFacts, recipe: Recipe, probes: Mapping[int, Probe], available_s: float | None,
    search_seconds: Callable[[int], float],
) -> tuple[int, str, int | None]:  # fmt: skip
    """The input side, why, and a smaller fold count when that is what makes an upsampled side affordable.

    `available_s`: seconds for the search and the training; `search_seconds(side)`: what the empirical stage would
    take from them with that side (0 where it would be skipped). The largest side whose full schedule fits wins:
    a schedule cut short costs more than a coarser input (the same rule upsamples small images only as far as the
    budget affords, and downsamples large ones only as far as it must). When none but the native one does, the
    first upsampled side may still be bought with the budget's fold cut (5 -> 3 folds, full schedule): a last stage
    of 2x2 cells instead of 1x1 changes what the network can represent, two more fold models only average more of
    the same. When not even the smallest side fits, the smallest is taken and the budget cuts its schedule. Sides
    are costed smallest first, up to the first whose training alone exceeds `available_s` (`probes` may measure
    each side only when it is asked for)."""
    sides = sorted(probes)
    native = max(facts.native_shape)
    if len(sides) == 1:
        return native, f"the ingest's preprocessing ({facts.native_shape})", None
    upsampled = [s for s in sides if s > native]
    if available_s is None:
        if not upsampled:
            return native, f"the ingest's preprocessing ({facts.native_shape}; no budget given)", None
        side = next(s for s in sides if s >= MIN_SIDE_2D)
        why = (
            f"{native} px images upsampled to {side}: the network's last stage then sees {_cells(side)}x"
            f"{_cells(side)} cells instead of 1x1 (no budget given, so the smallest such size)"
        )
        return side, why, None
    shape = _shape_of(recipe)

    def cost(side: int, n_folds: int) -> float:
        return train_seconds(facts, replace(shape, n_folds=n_folds), probes[side]) + search_seconds(side)

    costed = []
    for candidate in sides:
        costed.append(candidate)
        if train_seconds(facts, shape, probes[candidate]) > available_s:
            break  # neither this side nor a larger one fits, with or without the empirical stage
    costs = ", ".join(f"{s} px ~{cost(s, shape.n_folds) / 60:.0f} min" for s in costed)
    if len(costed) < len(sides):
        costs += f"; {', '.join(f'{s} px' for s in sides[len(costed) :])} not measured: larger, so dearer"
    affordable = [s for s in costed if cost(s, shape.n_folds) <= available_s]
    if affordable and max(affordable) < native:
        side = max(affordable)
        why = f"{_downsampled(facts, side)}, the largest input whose full schedule fits the budget ({costs})"
        return side, why, None
    if not affordable and sides[0] < native:
        why = f"{_downsampled(facts, sides[0])}, the smallest candidate: no input fits the full schedule ({costs})"
        return sides[0], why, None
    side = max(affordable) if affordable else native
    if side != native:
        why = (
            f"{native} px images upsampled to {side}, the largest input whose full schedule (with its comparison "
            f"arms and the empirical stage) fits the budget ({costs}); the last stage sees {_cells(side)}x"
            f"{_cells(side)} cells"
        )
        return side, why, None
    if not upsampled:
        return native, f"the ingest's preprocessing ({facts.native_shape}): its full schedule fits ({costs})", None
    if shape.n_folds <= FEWEST_FOLDS:
        return native, f"the native {native} px: no larger input fits the budget with the full schedule ({costs})", None
    fewer = f"{upsampled[0]} px with {FEWEST_FOLDS} folds ~{cost(upsampled[0], FEWEST_FOLDS) / 60:.0f} min"
    if cost(upsampled[0], FEWEST_FOLDS) <= available_s:
        why = (
            f"{native} px images upsampled to {upsampled[0]} with {FEWEST_FOLDS} folds instead of {shape.n_folds}: "
            f"with {shape.n_folds} folds no larger input fits ({costs}; {fewer}), and a last stage of "
            f"{_cells(upsampled[0])}x{_cells(upsampled[0])} cells instead of 1x1 is worth more than two more fold "
            f"models"
        )
        return upsampled[0], why, FEWEST_FOLDS
    why = f"the native {native} px: no larger input fits the budget with the full schedule ({costs}; {fewer})"
    return native, why, None


def _downsampled(facts: PlanFacts, side: int) -> str:
    kind, unit = ("volumes", "voxel") if facts.spatial_dims == 3 else ("images", "pixel")
    native = max(facts.native_shape)
    return (
        f"{kind} of {facts.native_shape} downsampled to a longest side of {side} (the same field of view at "
        f"{native / side:.3g}x the {unit} size; {(native / side) ** facts.spatial_dims:.3g}x fewer {unit}s per step)"
    )


def _variants(recipe: Recipe, side: int, native: PreprocessingSpec, limit: int) -> list[Variant]:
    """The rules' recipe first, then single-change variants: the native input size (where upsampled), a third of
    the lr."""
    strategy = recipe.config()["strategy"]
    low_lr = float(f"{strategy['lr'] * LR_VARIANT:.2g}")
    native_side = max(native.target_shape)
    variants = [Variant("rules", {}, {}, side)]
    if side > native_side:  # upsampled: is it worth its cost? (a downsampled side is one the native did not fit)
        native_shape = str([native_side] * native.spatial_dims)
        variants.append(Variant("native size", {"preprocessing.target_shape": native_shape}, {}, native_side))
    lr_change = {"strategy": {**strategy, "lr": low_lr}}
    variants.append(Variant(f"lr x{LR_VARIANT:.2g}", {"strategy.lr": f"{low_lr:g}"}, lr_change, side))
    return variants[:limit]


def _search_seconds(facts: PlanFacts, recipe: Recipe, side: int, native: PreprocessingSpec, probes: Mapping[int, Probe],
                    limit: int) -> float:  # fmt: skip
    """The empirical stage's estimated cost with `side`: each candidate trains the inner folds of a two-fold split
    for a share of the schedule."""
    inner = replace(_shape_of(recipe), steps=_search_steps(recipe), n_folds=INNER_FOLDS, arms=[], label_fractions=[])
    return sum(train_seconds(facts, inner, probes[v.side]) for v in _variants(recipe, side, native, limit))


def _search_fits(cost_s: float, budget_s: float | None) -> bool:
    """The empirical stage runs only when its estimate fits its share of the budget (any cost without a budget)."""
    return budget_s is None or cost_s <= SEARCH_SHARE * budget_s


def _search_steps(recipe: Recipe) -> int:
    return max(1, int(recipe.values["steps"] * SEARCH_STEP_SHARE))


def _trials(gathered: Gathered, recipe: Recipe, side: int, native: PreprocessingSpec, limit: int) -> list[Trial]:
    base = recipe.config()
    short = {
        "steps": _search_steps(recipe),
        "arms": [],
        "label_fractions": None,
        "early_stopping": {**base["early_stopping"], "min_epochs": 1},
    }
    tasks: dict[int, TaskData] = {}
    trials = []
    for variant in _variants(recipe, side, native, limit):
        spec = _spec_for(native, variant.side, gathered.voxel_spacing)
        if variant.side not in tasks:
            same = spec is native
            task = gathered.task if same else load_task(gathered.task.dataset, gathered.task_config, spec)
            tasks[variant.side] = task
        values = {**base, **variant.update, **short, "preprocessing": spec.model_dump(mode="json")}
        config = _validate(values, where="a search candidate")
        trials.append(Trial(variant.name, variant.changes, config, tasks[variant.side]))
    return trials


def _validate(values: dict[str, Any], *, where: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:  # a rule produced an invalid value: a planner defect, reported plainly
        problems = describe_validation_error(error)
        raise ConfigError(f"the planner produced an invalid config ({where}): {problems}") from None


def _search(
    gathered: Gathered, recipe: Recipe, side: int, native: PreprocessingSpec, probes: Mapping[int, Probe],
    options: PlanOptions, budget_s: float | None, device: torch.device,
) -> tuple[list[Candidate], Trial | None, str | None]:  # fmt: skip
    """Run the empirical stage when it fits its share of the budget: (table, winning trial, or a note why not)."""
    cost = _search_seconds(gathered.facts, recipe, side, native, probes, options.max_candidates)
    n_candidates = len(_variants(recipe, side, native, options.max_candidates))
    if not _search_fits(cost, budget_s):
        return (
            [],
            None,
            (
                f"the empirical stage was skipped: ~{cost / 60:.0f} min for {n_candidates} candidates is more than "
                f"{SEARCH_SHARE:.0%} of the budget"
            ),
        )
    trials = _trials(gathered, recipe, side, native, options.max_candidates)
    deadline = time.monotonic() + SEARCH_SHARE * budget_s if budget_s is not None else None
    candidates = compare(trials, device=device, deadline=deadline)
    winner = next(c for c in candidates if c.chosen)
    skipped = [t.name for t in trials if t.name not in {c.name for c in candidates}]
    note = f"not tried, for lack of time: {skipped}" if skipped else None
    return candidates, next(t for t in trials if t.name == winner.name), note


def make_plan(dataset: Path, options: PlanOptions | None = None) -> TrainConfig:
    """Plan a training run for `dataset`; nothing is trained except the (optional) short search candidates."""
    options = options or PlanOptions()
    started = time.monotonic()
    hardware: Hardware = detect(options.device)
    device = torch.device(hardware.device)
    native = dataset_spec(dataset)
    gathered = gather(Path(dataset), native)
    facts = gathered.facts
    pick, checks = pick_weights(facts.spatial_dims, options.weights_artifact)
    recipe = base_recipe(facts, pick, seed=options.seed, max_steps=options.max_steps)
    for key, reason in gathered.reasons.items():
        recipe.set(key, list(gathered.task_config.exclude_flags), reason)
    if options.label_fractions:
        shares = load_config(None, {"label_fractions": options.label_fractions}).label_fractions
        recipe.set("label_fractions", shares, "asked for: every arm is also trained on these shares of each fold's "
                   "training patients (the label-efficiency curve); counted in the estimate")  # fmt: skip
    budget_s = options.budget_minutes * 60 if options.budget_minutes else None
    sides = input_sides(facts)
    probed = load_config(None, recipe.config())  # the recipe as it stands: model, strategy, batch, augmentation
    spacing = gathered.voxel_spacing

    def measure(side: int) -> Probe:
        shape = list(_spec_for(native, side, spacing).target_shape)
        return probe(probed, shape=shape, channels=facts.channels, n_classes=len(facts.classes),
                     kind=facts.task_kind, device=device)  # fmt: skip

    measure(sides[0])  # thrown away: the process's first steps pay one-time costs (thread pools, lazy imports, kernels)
    probes = Probes(sides, measure)
    search = options.search if options.search is not None else budget_s is not None

    def search_seconds(side: int) -> float:  # what the empirical stage takes from the budget with this side
        if not search or budget_s is None:
            return 0.0
        cost = _search_seconds(facts, recipe, side, native, probes, options.max_candidates)
        return cost if _search_fits(cost, budget_s) else 0.0  # over its share it is skipped

    available_s = budget_s * PLAN_SHARE - (time.monotonic() - started) if budget_s else None
    side, why_side, fewer_folds = choose_side(facts, recipe, probes, available_s, search_seconds)
    if fewer_folds is not None:
        recipe.set("cv.n_folds", fewer_folds, recipe.reasons["cv.n_folds"] + f"; {fewer_folds} to afford the input "
                   f"size (see preprocessing)")  # fmt: skip
    notes: list[str] = []
    candidates: list[Candidate] = []
    if search:
        candidates, winner, note = _search(gathered, recipe, side, native, probes, options, budget_s, device)
        notes += [note] if note else []
        if winner is not None and winner.name != "rules":
            side = max(winner.task.spec.target_shape)
            why_side += f"; the inner cross-validation then chose {winner.name!r}"
            strategy = winner.config.strategy.model_dump(mode="json", exclude_none=True)
            recipe.set("strategy", strategy, recipe.reasons["strategy"] + f"; inner cross-validation: {winner.name!r}")
    if side != max(native.target_shape):
        recipe.set("preprocessing", _spec_for(native, side, spacing).model_dump(mode="json"), why_side)
    else:
        recipe.reasons["preprocessing"] = why_side
    remaining = budget_s * PLAN_SHARE - (time.monotonic() - started) if budget_s else None
    shape = _shape_of(recipe)
    if remaining is not None:
        shape, cuts = fit_to_budget(facts, shape, probes[side], max(remaining, 1.0))
        for cut in cuts:
            key, what = cut.split(": ", 1)
            recipe.reasons[key] = recipe.reasons.get(key, "") + f"; budget cut ({what})"
        recipe.values.update({"steps": shape.steps, "cv.n_folds": shape.n_folds, "arms": shape.arms})
        if "label_fractions" in recipe.values and not shape.label_fractions:
            recipe.values["label_fractions"] = None
    # recorded to a tenth of a second, rounded up (an upper bound stays one), and judged as recorded: a reader who
    # compares the plan's estimate with its budget must reach the plan's own verdict
    estimate = math.ceil(train_seconds(facts, shape, probes[side]) * 10) / 10
    if remaining is not None and estimate > remaining:
        notes.append(f"the estimate (~{estimate / 60:.0f} min) exceeds the budget even after the cuts")
    record = PlanRecord(
        planner_version=PLANNER_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        budget_minutes=options.budget_minutes,
        planning_seconds=round(time.monotonic() - started, 1),
        facts=facts,
        hardware=hardware,
        weights=checks,
        probe=probes[side],
        estimate=Estimate(
            train_seconds=estimate,
            budget_seconds=remaining if remaining and remaining > 0 else None,
            fits_budget=None if remaining is None else estimate <= remaining,
        ),
        reasons=dict(sorted(recipe.reasons.items())),
        candidates=candidates,
        notes=notes,
    )
    config = _validate({**recipe.config(), "plan": record.model_dump(mode="json")}, where="the plan")
    log.info("plan made in %.0f s; estimated training ~%.0f min", time.monotonic() - started, estimate / 60)
    return config


def write_plan(config: TrainConfig, path: Path) -> None:
    """plan.yaml: a train config (readable by `medtl train --config`), the plan's record last."""
    data = config.model_dump(mode="json", exclude_none=True)
    plan = data.pop("plan", None)
    if config.steps is not None:
        data.pop("epochs")  # not used when the schedule is in steps; left out so nobody edits it in vain
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if plan is not None:
        text += "\n# how each value above was chosen (kept in the artifact's config.yaml)\n"
        text += yaml.safe_dump({"plan": plan}, sort_keys=False, allow_unicode=True, width=110)
    Path(path).write_text(text, encoding="utf-8")


def read_plan(path: Path) -> TrainConfig:
    return load_config(Path(path))


def saved_plan_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".plan.yaml")


def plan_for_run(dataset: Path, out: Path, options: PlanOptions) -> TrainConfig:
    """The plan of a `medtl train` without --config, kept beside the artifact until it is sealed.

    Why: an interrupted run resumes its finished folds only under the same recipe, and a new plan could differ (a
    budget's cuts depend on measured times). So a re-run for the same data and options takes the saved plan; the
    caller removes it once the artifact is sealed (the artifact keeps the plan in its config.yaml)."""
    saved = saved_plan_path(out)
    manifest_hash = read_json(Fingerprint, Path(dataset) / FINGERPRINT).manifest_hash
    if saved.exists():
        config = read_plan(saved)
        if (
            config.plan
            and config.plan.facts.manifest_hash == manifest_hash
            and config.plan.budget_minutes == (options.budget_minutes)
        ):
            log.info("resuming with the plan the interrupted run made (%s)", saved.name)
            return config
    config = make_plan(dataset, options)
    write_plan(config, saved)
    return config


def summary(config: TrainConfig) -> str:
    """A few lines for the terminal: the main choices and the estimate."""
    plan = config.plan
    lines = [f"task: {plan.reasons.get('task.kind', config.task.kind)}"] if plan and config.task.kind else []
    lines += [
        f"model: {config.model.backbone} ({_weights(config)}), input {_input(config, plan)}",
        f"batch {config.batch_size}, {config.steps} steps, lr {config.strategy.lr:g} ({config.strategy.name}), "
        f"{config.cv.n_folds} folds, arms {config.arms or 'none'}, final {config.final_model}",
    ]
    if plan is not None:
        e = plan.estimate
        train, budget = time_and_budget(e.train_seconds, e.budget_seconds)
        of_budget = f" of a {budget} budget" if budget else ""
        lines.append(f"estimated training: at most ~{train}{of_budget} on {plan.hardware.name}")
        for candidate in plan.candidates:
            mean = "n/a" if candidate.mean_auc is None else f"{candidate.mean_auc:.3f}"
            lines.append(
                f"  candidate {candidate.name!r}: inner AUROC {mean}{'  <- chosen' if candidate.chosen else ''}"
            )
        lines.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(lines)


def _weights(config: TrainConfig) -> str:
    source = config.model.weights.source
    return "from scratch: no pretrained weights" if source == "none" else f"{source} weights"


def _input(config: TrainConfig, plan: PlanRecord | None) -> str:
    if config.preprocessing is not None:
        return "x".join(map(str, config.preprocessing.target_shape))
    return "x".join(map(str, plan.facts.native_shape)) if plan else "the dataset's"
