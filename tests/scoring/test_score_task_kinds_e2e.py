"""`score` end to end on tiny ordinal and multi-label artifacts: every class (or finding) probability in
scores.parquet, decisions only where the policy has thresholds (none before an evaluation, provisional after one,
approved after sign-off, with the reviewer's threshold on the decision cut), and one SR finding per cut or label."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pytest

from medtl.artifacts import append_event
from medtl.datasets.synth import make_cohort
from medtl.evaluation.approve import approve
from medtl.hashing import sha256_file
from medtl.scoring.score import score
from support.trained import DEV_PSEUDONYMIZER as PSEUDO
from support.trained import TINY_SPEC, signing_key, tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _relabel(labels: Path, kind: str) -> None:
    """The synthetic cohort's binary finding as grades 0-3 (ordinal) or as findings mass / calc (multi-label)."""
    rows = list(csv.DictReader(labels.open(newline="")))
    rng = random.Random(0)
    for row in rows:
        y = int(row["label"])
        if kind == "ordinal":
            row["label"] = str(min(3, y * 2 + rng.randint(0, 1)))
        else:
            row["label"] = (
                "|".join(n for n, present in (("mass", y), ("calc", rng.random() < 0.4)) if present) or "none"
            )
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medtl.ingest.pipeline import ingest_sources
    from medtl.training.train import train

    root = tmp_path_factory.mktemp("kinds")
    with signing_key(root / "key.pem") as key:
        for kind in ("ordinal", "multilabel"):
            make_cohort(root / kind, patients=30, seed=3)
            _relabel(root / kind / "labels.csv", kind)
            ingest_sources([root / kind / "dicom"], out=root / f"{kind}-data", labels=root / kind / "labels.csv",
                           spec=TINY_SPEC, pseudonymizer=PSEUDO, workers=1)  # fmt: skip
            config = tiny_config(task={"kind": "ordinal"}) if kind == "ordinal" else tiny_config()
            train(root / f"{kind}-data", config, root / f"{kind}-artifact")
        make_cohort(root / "new", patients=3, seed=4)
        yield root, key


def _score(root: Path, kind: str, out: str) -> pd.DataFrame:
    """The scanned rows the model could take (the cohort's problem files are flagged, not scored)."""
    score(root / f"{kind}-artifact", [root / "new" / "dicom"], out=root / out, pseudonymizer=PSEUDO,
          allow_unapproved=True, workers=1, sr=True)  # fmt: skip
    rows = pd.read_parquet(root / out / "scores.parquet")
    unscored = rows[rows.probabilities.apply(len) == 0]
    assert unscored.abstained.all() and unscored.decision.isna().all()
    assert all(set(d) == {None} for d in unscored.decisions)  # no probabilities, no decisions
    scored = rows[rows.probabilities.apply(len) > 0]
    assert len(scored) > 0 and set(rows.task_kind) == {kind}
    return scored.reset_index(drop=True)


def _evaluated(root: Path, kind: str, key: Path, points: dict[str, float], decision: float | None) -> Path:
    """What `medtl evaluate` records for these task types (written by hand here): a report's hash, the decision
    endpoint's operating point and every endpoint's."""
    report = root / f"{kind}-report"
    report.mkdir(exist_ok=True)
    (report / "report.html").write_text(f"<html>{kind} {points}</html>")

    def point(threshold: float) -> dict:
        return {"rule": "youden", "threshold": threshold, "chosen_on": "oof", "pooling": "pooled"}

    append_event(
        root / f"{kind}-artifact", "evaluated", actor="medtl evaluate", signing_key=key,
        payload={"files": {"report.html": sha256_file(report / "report.html")},
                 "operating_point": None if decision is None else point(decision),
                 "operating_points": {name: point(value) for name, value in points.items()}, "evaluated_on": ["oof"]},
    )  # fmt: skip
    return report


def _sr_findings(folder: Path) -> list[list[str]]:
    from highdicom.sr.utils import find_content_items

    from medtl.scoring.dicom_sr import FINDING

    found = []
    for path in sorted(folder.glob("SR_*.dcm")):
        groups = hd.sr.srread(path).content.get_image_measurement_groups()
        found.append([find_content_items(g[0], name=FINDING)[0].TextValue for g in groups])
    return found


def test_ordinal_scores_every_grade_and_decides_every_cut_once_thresholds_exist(trained):
    root, key = trained
    scored = _score(root, "ordinal", "ordinal-unevaluated")
    for row in scored.itertuples():
        assert list(row.classes) == ["0", "1", "2", "3"] and list(row.endpoints) == ["ge_1", "ge_2", "ge_3"]
        p = np.asarray(row.probabilities)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert list(row.endpoint_probabilities) == pytest.approx([p[1:].sum(), p[2:].sum(), p[3:].sum()], abs=1e-6)
        assert row.probability == pytest.approx(p[2:].sum(), abs=1e-6)  # the decision cut is grade >= 2
        assert row.decision is None and list(row.decisions) == [None, None, None] and not row.approved
    assert _sr_findings(root / "ordinal-unevaluated" / "sr")[0] == ["grade >= 1", "grade >= 2", "grade >= 3"]

    cuts = {"ge_1": 0.7, "ge_2": float(np.median(scored.probability)), "ge_3": 0.2}
    report = _evaluated(root, "ordinal", key, cuts, cuts["ge_2"])
    provisional = _score(root, "ordinal", "ordinal-provisional")
    expect_cut = provisional.probability >= cuts["ge_2"]
    assert not provisional.approved.any() and (provisional.threshold == cuts["ge_2"]).all()
    assert list(provisional.decision) == ["grade >= 2" if y else "grade < 2" for y in expect_cut]
    for row in provisional.itertuples():
        assert list(row.decisions) == [p >= t for p, t in zip(row.endpoint_probabilities, cuts.values(), strict=True)]

    approve(root / "ordinal-artifact", reviewer="Dr C. Reviewer", role="radiologist", decision="approve",
            report=report, threshold=0.0)  # fmt: skip
    approved = _score(root, "ordinal", "ordinal-approved")
    assert approved.approved.all() and (approved.threshold == 0.0).all()
    assert set(approved.decision) == {"grade >= 2"}  # the reviewer moved the decision cut's threshold only
    assert all(list(t) == [0.7, 0.0, 0.2] for t in approved.thresholds)


def test_multilabel_scores_every_finding_and_decides_the_set(trained):
    root, key = trained
    scored = _score(root, "multilabel", "multilabel-unevaluated")
    findings = list(scored.iloc[0].classes)
    assert sorted(findings) == ["calc", "mass"]
    for row in scored.itertuples():
        assert list(row.endpoints) == findings
        assert list(row.endpoint_probabilities) == pytest.approx(list(row.probabilities))
        assert row.probability is None and row.decision is None and set(row.decisions) == {None}
    assert _sr_findings(root / "multilabel-unevaluated" / "sr")[0] == [f"finding {name}" for name in findings]

    thresholds = {name: float(np.median([r[i] for r in scored.probabilities])) for i, name in enumerate(findings)}
    _evaluated(root, "multilabel", key, thresholds, None)
    provisional = _score(root, "multilabel", "multilabel-provisional")
    for row in provisional.itertuples():
        present = [name for name, p in zip(findings, row.probabilities, strict=True) if p >= thresholds[name]]
        assert row.decision == ("|".join(present) or "none")
        assert list(row.decisions) == [name in present for name in findings]
