"""Planning per task type: the facts name the kind (and each finding's prevalence), the rules pick the loss weighting a
multi-label task needs, count the rarest class's patients for the folds, and say which loss the task trains with."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from medtl.cli import app
from medtl.contracts.planning import PlanFacts, PlanRecord
from medtl.datasets.synth import make_cohort
from medtl.ingest.declaration import declare_task
from medtl.ingest.pipeline import ingest_sources
from medtl.planning import PlanOptions, make_plan
from medtl.planning.rules import base_recipe
from medtl.planning.weights import WeightsPick
from medtl.training.config import TrainConfig
from support.trained import DEV_PSEUDONYMIZER, TINY_SPEC

SCRATCH = WeightsPick("resnet18", "none", "no weights here")


def _facts(**values) -> PlanFacts:
    base = dict(manifest_hash="a" * 64, image_kind="image2d", spatial_dims=2, native_shape=[28, 28], channels=1)
    return PlanFacts(**{**base, **values})


def test_multilabel_rules_weight_the_loss_per_finding_and_count_scans_not_findings():
    facts = _facts(
        classes=["a", "b"], scans_per_class={"a": 300, "b": 40}, n_patients=400, n_scans=400, task_kind="multilabel",
        minority_share=0.1, minority_patients=40, finding_prevalence={"a": 0.75, "b": 0.1},
    )  # fmt: skip
    recipe = base_recipe(facts, SCRATCH, seed=0)
    assert recipe.values["class_balance"] == "weighted_loss"
    assert "a 75%, b 10%" in recipe.reasons["class_balance"] and "sampler" in recipe.reasons["class_balance"]
    assert recipe.values["task.kind"] == "multilabel"
    assert "per-finding weighted binary cross-entropy" in recipe.reasons["task.kind"]
    # 400 scans, not 340 finding counts: 5 folds x 0.8 x 0.8 = 256 training images per fold
    assert recipe.reasons["batch_size"].startswith("~256 training images per fold")
    # balanced findings still get the per-finding weights (never 'none' or 'sampler')
    even = facts.model_copy(update={"minority_share": 0.5, "finding_prevalence": {"a": 0.5, "b": 0.5}})
    assert base_recipe(even, SCRATCH, seed=0).values["class_balance"] == "weighted_loss"


def test_folds_follow_the_patients_with_the_rarest_class():
    common = dict(classes=["0", "1", "2"], scans_per_class={"0": 60, "1": 30, "2": 12}, n_patients=50,
                  minority_share=12 / 102, task_kind="ordinal")  # fmt: skip
    # 12 scans of the rarest grade, but from only 6 patients: three folds, not five
    recipe = base_recipe(_facts(**common, minority_patients=6), SCRATCH, seed=0)
    assert recipe.values["cv.n_folds"] == 3 and "~6 minority-class patients" in recipe.reasons["cv.n_folds"]
    assert recipe.values["task.kind"] == "ordinal" and "CORN rank-consistent loss" in recipe.reasons["task.kind"]
    assert "3 grades in order (0, 1, 2)" in recipe.reasons["task.kind"]
    # without the patient count (an older plan), the share of patients stands in, as before
    assert base_recipe(_facts(**common), SCRATCH, seed=0).values["cv.n_folds"] == 2


@pytest.fixture(scope="module")
def task_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-tasks")
    made = {}
    for kind, extra in (("ordinal", {"grades": 3, "prevalence": 0.7}), ("multilabel", {"findings": 3})):
        cohort = make_cohort(root / kind, patients=16, seed=11, task=kind, **extra)
        declared = cohort.truth["task"]
        ingest_sources(
            [cohort.out / "dicom"], out=root / f"{kind}-data", labels=cohort.out / "labels.csv", spec=TINY_SPEC,
            pseudonymizer=DEV_PSEUDONYMIZER, workers=1,
            task=declare_task(declared["kind"], declared["classes"], decision_cut=declared.get("decision_cut")),
        )  # fmt: skip
        made[kind] = (root / f"{kind}-data", cohort)
    return made


@pytest.mark.slow
def test_plan_on_a_graded_dataset(task_datasets, tmp_path):
    dataset, cohort = task_datasets["ordinal"]
    out = tmp_path / "plan.yaml"
    result = CliRunner().invoke(app, ["plan", str(dataset), "--out", str(out), "--no-search", "--max-steps", "4"])
    assert result.exit_code == 0, result.output
    assert "task: ordinal" in result.output
    written = yaml.safe_load(out.read_text())
    config = TrainConfig.model_validate(written)
    record = PlanRecord.model_validate(written["plan"])
    assert config.task.kind == "ordinal" and record.facts.task_kind == "ordinal"
    assert record.facts.classes == ["0", "1", "2"]
    assert "CORN rank-consistent loss" in record.reasons["task.kind"]
    # the facts count the cohort's known grades (CT volumes: one per study)
    studies = {p["patient_id"]: (p["label"], len(p["studies"])) for p in cohort.truth["patients"]}
    per_grade = {str(g): sum(n for label, n in studies.values() if label == g) for g in range(3)}
    assert record.facts.scans_per_class == per_grade and record.facts.n_scans == sum(per_grade.values())
    rarest = min(per_grade, key=per_grade.get)
    assert record.facts.minority_patients == sum(1 for label, _ in studies.values() if str(label) == rarest)


@pytest.mark.slow
def test_plan_on_a_multi_finding_dataset(task_datasets):
    dataset, cohort = task_datasets["multilabel"]
    config = make_plan(dataset, PlanOptions(search=False, max_steps=4))
    facts = config.plan.facts
    assert config.task.kind == "multilabel" and facts.task_kind == "multilabel"
    assert config.class_balance == "weighted_loss"
    assert facts.classes == ["nodule", "cyst", "calcification"]
    scans = [(p["findings"], len(p["studies"])) for p in cohort.truth["patients"]]
    n = sum(count for _, count in scans)
    expected = {name: sum(c for found, c in scans if name in found) for name in facts.classes}
    assert facts.scans_per_class == expected and facts.n_scans == n
    assert facts.finding_prevalence == {name: round(count / n, 4) for name, count in expected.items()}
    rarest = min(min(count, n - count) for count in expected.values())
    assert facts.minority_share == pytest.approx(rarest / n)
    assert "per-finding weighted binary cross-entropy" in config.plan.reasons["task.kind"]
