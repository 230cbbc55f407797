"""The report's "how the training recipe was chosen": the plan's reasons and candidates, and the run's cost.

Read from the sealed artifact only (config.yaml's `plan:` through its contract model, metrics/run.json), so the
report shows what was trained, not what a plan file on disk says now.
"""

from __future__ import annotations

import json
from typing import Any

from medtl.artifacts.reader import VerifiedArtifact
from medtl.contracts.planning import PlanRecord
from medtl.reporting.model import Recipe, RecipeCandidate, RecipeChoice
from medtl.timing import time_and_budget

RUN_FILE = "metrics/run.json"
MAX_VALUE_CHARS = 60


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: Any) -> str:
    if isinstance(value, dict) and "target_shape" in value:  # a preprocessing spec: its input size says it
        value = value["target_shape"]
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _run_line(run: dict[str, Any]) -> str:
    wall, budget = time_and_budget(run["wall_seconds"], run.get("budget_seconds"))
    line = f"Training took {wall} on {run['device']}"
    if budget:
        verdict = "met" if run["met_budget"] else "exceeded"
        line += f", against a budget of {budget} ({verdict})"
    return line + "."


def recipe_section(verified: VerifiedArtifact, config: dict[str, Any]) -> Recipe:
    run = verified.read_json(RUN_FILE) if RUN_FILE in verified.files else None
    run_line = _run_line(run) if run else None
    if not config.get("plan"):
        return Recipe(planned=False, run=run_line)
    plan = PlanRecord.model_validate(config["plan"])
    return Recipe(
        planned=True,
        choices=[
            RecipeChoice(key=key, value=_text(_lookup(config, key)), reason=why) for key, why in plan.reasons.items()
        ],
        candidates=[
            RecipeCandidate(
                name=c.name,
                changes=", ".join(f"{k} = {v}" for k, v in c.changes.items()) or "the rules' recipe",
                inner_aucs=c.inner_aucs,
                mean_auc=c.mean_auc,
                chosen=c.chosen,
            )
            for c in plan.candidates
        ],
        notes=plan.notes,
        run=run_line,
    )
