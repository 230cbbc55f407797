"""As a user runs it: `medtl plan` writes plan.yaml, `medtl train` without --config plans, trains within the budget it
was given and keeps the plan, the run's wall time and its budget in the sealed artifact; the report shows them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from medtl.artifacts import open_verified
from medtl.cli import app
from medtl.contracts.planning import PlanRecord
from medtl.errors import ArtifactIntegrityError
from medtl.evaluation.evaluate import evaluate
from medtl.planning import PlanOptions, make_plan
from medtl.planning import budget as budget_module
from medtl.planning.plan import saved_plan_path
from support.trained import signing_key

pytestmark = [pytest.mark.slow, pytest.mark.integration]
runner = CliRunner()


def test_plan_then_train_without_a_config(dataset_2d, tmp_path, monkeypatch):
    plan_file = tmp_path / "plan.yaml"
    planned = runner.invoke(app, ["plan", str(dataset_2d), "--out", str(plan_file), "--no-search"])
    assert planned.exit_code == 0, planned.output
    written = yaml.safe_load(plan_file.read_text())
    record = PlanRecord.model_validate(written["plan"])
    assert written["steps"] == max(1, -(-20_000 // written["batch_size"]))  # the sample floor, for 35 images/fold
    assert record.reasons["batch_size"].startswith("~35 training images per fold")
    assert "(from scratch: no pretrained weights)" in planned.output  # nothing is installed here

    budget = 0.4
    # The rules' floor keeps a quarter of this tiny set's 1,250 steps per fold, far more than 24 s buy on two cores;
    # a lower floor lets the budget, not the floor, decide the cut, and keeps this test short. The floor's own rule
    # is tested in test_rules_and_budget.py.
    monkeypatch.setattr(budget_module, "MIN_STEP_SHARE", 0.05)
    with signing_key(tmp_path / "signing.pem"):
        trained = runner.invoke(
            app, ["train", str(dataset_2d), "--out", str(tmp_path / "art"), "--budget", str(budget)]
        )
        assert trained.exit_code == 0, trained.output
        assert "no --config: planning the recipe" in trained.output
        assert f"of a {budget * 60:.0f} s budget" in trained.output
        assert not saved_plan_path(tmp_path / "art").exists()  # kept for a resume only until the seal
        artifact = open_verified(tmp_path / "art")
        config = artifact.read_yaml("config.yaml")
        run = artifact.read_json("metrics/run.json")
        plan = PlanRecord.model_validate(config["plan"])
        assert plan.budget_minutes == budget and config["steps"] == run["steps"]
        assert config["steps"] < written["steps"]  # the budget cut the schedule, and the reason says so
        assert "budget cut" in plan.reasons["steps"]
        assert run["budget_seconds"] == budget * 60
        assert run["met_budget"] == (run["wall_seconds"] <= run["budget_seconds"])
        assert run["wall_seconds"] >= plan.planning_seconds > 0
        evaluate(tmp_path / "art", out=tmp_path / "report", test=dataset_2d, pdf=False)

        # the artifact as a weight source: verified before the plan is written, its network kept, arms compared
        transfer = make_plan(dataset_2d, PlanOptions(search=False, weights_artifact=tmp_path / "art"))
        assert transfer.model.weights.source == "artifact" and transfer.model.backbone == "resnet18"
        assert (
            transfer.arms == ["linear_probe", "scratch", "features"] and transfer.strategy.name == "layerwise_lr_decay"
        )
        assert [(w.source, w.state) for w in transfer.plan.weights] == [("artifact", "verified")]
        shutil.copytree(tmp_path / "art", tmp_path / "tampered")
        with (tmp_path / "tampered" / "metrics" / "run.json").open("a") as handle:
            handle.write(" ")
        with pytest.raises(ArtifactIntegrityError):
            make_plan(dataset_2d, PlanOptions(search=False, weights_artifact=tmp_path / "tampered"))
    html = (tmp_path / "report" / "report.html").read_text()
    section = re.sub(r"<[^>]+>", " ", html[html.index('id="recipe"') :])
    assert "budget cut" in section and f"against a budget of {budget * 60:.0f} s" in section


def _medtl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed entry point's behaviour: medtl errors become short messages and exit codes."""
    return subprocess.run([sys.executable, "-m", "medtl.cli", *args], capture_output=True, text=True, env=env)


def test_budget_and_config_together_are_refused(dataset_2d, tmp_path):
    (tmp_path / "train.yaml").write_text("epochs: 1\n")
    result = _medtl("train", str(dataset_2d), "--out", str(tmp_path / "a"), "--config", str(tmp_path / "train.yaml"),
                    "--budget", "5")  # fmt: skip
    assert result.returncode == 2 and "use one of them" in result.stdout + result.stderr


def test_a_missing_key_is_refused_before_planning(dataset_2d, tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "MEDTL_SIGNING_KEY"}
    result = _medtl("train", str(dataset_2d), "--out", str(tmp_path / "a"), env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "no signing key" in output
    assert "planning the recipe" not in output and not (tmp_path / "a").exists()
