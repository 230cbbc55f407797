"""Per-endpoint thresholds under the approval: the approved evaluation's operating points, the reviewer's threshold for
the decision endpoint only, provisional points while unapproved, and `--threshold` refused where it has no meaning."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medtl.artifacts import append_event, open_verified
from medtl.errors import ConfigError
from medtl.evaluation.approve import approve
from medtl.hashing import sha256_file

CUTS = {"ge_1": 0.3, "ge_2": 0.6, "ge_3": 0.8}


def _point(threshold: float) -> dict[str, Any]:
    return {"rule": "youden", "threshold": threshold, "chosen_on": "oof", "pooling": "pooled"}


def evaluated(artifact: Path, report: Path, key: Any, *, point: float | None, points: dict[str, float] | None) -> None:
    """The `evaluated` payload as decided for task types: `operating_point` (the decision endpoint's) and
    `operating_points` {endpoint id: point}."""
    payload: dict[str, Any] = {
        "files": {"report.html": sha256_file(report / "report.html")},
        "operating_point": None if point is None else _point(point),
        "evaluated_on": ["oof"],
    }
    if points is not None:
        payload["operating_points"] = {name: _point(value) for name, value in points.items()}
    append_event(artifact, "evaluated", actor="medtl evaluate", signing_key=key, payload=payload)


def decide(artifact: Path, report: Path, key: Path, **extra: Any) -> Any:
    return approve(artifact, reviewer="Dr. A", role="radiologist", decision="approve", report=report, key=key, **extra)


def test_an_ordinal_approval_keeps_every_cut_and_the_reviewer_moves_the_decision_cut_only(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"], point=CUTS["ge_2"], points=CUTS)
    decide(artifact, report, reviewer, threshold=0.5)
    status = open_verified(artifact).status
    assert status.approved and status.threshold == 0.5 and status.statement.threshold_changed
    assert status.thresholds("ge_2") == {"ge_1": 0.3, "ge_2": 0.5, "ge_3": 0.8}
    assert status.thresholds(None) == CUTS  # without a decision endpoint nothing is replaced
    assert "threshold 0.5 (3 endpoint operating points)" in status.describe()


def test_without_an_override_the_approved_points_are_the_evaluations(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"], point=CUTS["ge_2"], points=CUTS)
    decide(artifact, report, reviewer)
    status = open_verified(artifact).status
    assert status.thresholds("ge_2") == CUTS and not status.statement.threshold_changed


def test_the_approved_evaluation_wins_over_a_later_unapproved_one(
    artifact: Path, report: Path, reviewer: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    evaluated(artifact, report, keys["private"], point=0.6, points=CUTS)
    decide(artifact, report, reviewer)
    later = tmp_path / "later"
    later.mkdir()
    (later / "report.html").write_text("<html>another evaluation</html>")
    evaluated(artifact, later, keys["private"], point=0.1, points=dict.fromkeys(CUTS, 0.1))
    assert open_verified(artifact).status.thresholds("ge_2") == CUTS


def test_unapproved_the_latest_counted_evaluation_is_provisional_and_none_gives_nothing(
    artifact: Path, report: Path, keys: dict[str, Any]
) -> None:
    assert open_verified(artifact).status.thresholds("finding") == {}
    evaluated(artifact, report, keys["private"], point=None, points={"mass": 0.4, "calc": 0.2})
    evaluated(artifact, report, keys["private"], point=None, points={"mass": 0.45, "calc": 0.25})
    append_event(  # an evaluation nobody trusted signed does not count, not even provisionally
        artifact, "evaluated", actor="medtl evaluate", signing_key=keys["other_private"],
        payload={"files": {"report.html": "0" * 64}, "operating_points": {"mass": _point(0.99)},
                 "evaluated_on": ["oof"]},
    )  # fmt: skip
    status = open_verified(artifact).status
    assert not status.approved and status.thresholds(None) == {"mass": 0.45, "calc": 0.25}


def test_an_evaluation_from_before_task_types_gives_the_decision_endpoint_its_point(
    artifact: Path, report: Path, keys: dict[str, Any]
) -> None:
    evaluated(artifact, report, keys["private"], point=0.4, points=None)
    status = open_verified(artifact).status
    assert status.thresholds("finding") == {"finding": 0.4} and status.thresholds(None) == {}


def test_a_point_without_a_usable_threshold_is_refused_with_where_it_is(
    artifact: Path, report: Path, keys: dict[str, Any]
) -> None:
    append_event(
        artifact, "evaluated", actor="medtl evaluate", signing_key=keys["private"],
        payload={"files": {"report.html": "0" * 64}, "operating_points": {"mass": _point(1.5)},
                 "evaluated_on": ["oof"]},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"operating_points\.mass has no threshold between 0 and 1"):
        open_verified(artifact).status.thresholds(None)


def _with_task(task: dict[str, Any]) -> Callable[[Any], None]:
    def change(builder: Any) -> None:
        metadata = json.loads((builder.folder / "metadata.json").read_text())
        kept = {k: v for k, v in metadata.items() if k not in ("contract", "contract_version")}
        builder.add_metadata({**kept, "task": task})

    return change


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        ({"kind": "multilabel", "classes": ["mass", "calc"]}, "each finding has its own operating point"),
        ({"kind": "multiclass", "classes": ["a", "b", "c"]}, "the most probable class is the decision"),
    ],
)
def test_threshold_is_refused_by_task_type_where_there_is_no_single_one(
    build: Callable[..., Any], keys: dict[str, Any], report: Path, reviewer: Path, tmp_path: Path, task, reason
) -> None:
    folder = build(tmp_path / "artifact", signing_key=keys["private"], extra=_with_task(task)).folder
    points = {"mass": 0.4, "calc": 0.2} if task["kind"] == "multilabel" else None
    evaluated(folder, report, keys["private"], point=None, points=points)
    with pytest.raises(ConfigError) as caught:
        decide(folder, report, reviewer, threshold=0.3)
    assert f"--threshold does not apply to a {task['kind']} task: {reason}" in str(caught.value)
    assert open_verified(folder).events[-1].kind == "evaluated"  # nothing was recorded
    decide(folder, report, reviewer)  # without --threshold the evaluation's points are approved as they are
    status = open_verified(folder).status
    assert status.approved and status.statement.threshold is None and status.thresholds(None) == (points or {})
