"""`medtl compare CHAMPION CHALLENGER --test DATASET --out DIR`: is a retrained model at least as good as the one in
service, on the same locked test patients?

Why paired, on one test set, with a margin declared first: two AUROCs measured on different patients, or compared
by eye, cannot tell a real loss from noise, and a margin chosen after seeing the numbers can be bent to any verdict.
Both models score exactly the same scans (through evaluation's one test-scoring path), each decides at its own
approved operating point, and the verdict is read from the CI of the paired difference (medtl/evaluation/paired.py)
against the margin recorded in comparison.json. A test patient either model trained on (or whose backbone was
pretrained on) makes the comparison meaningless: it is refused before anything is predicted.

The comparison is recorded as a pipeline-signed `compared` event in the challenger's audit log with the SHA-256 of
comparison.json, so a promotion can check that the file it is shown is the one this command wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medtl import __version__
from medtl.artifacts import VerifiedArtifact, open_verified
from medtl.artifacts.contents import ArtifactContents
from medtl.artifacts.trust import TrustSettings
from medtl.contracts import write_json
from medtl.contracts.artifact import TaskSpec
from medtl.contracts.comparison import (
    ComparedArtifact,
    Comparison,
    DecisionAgreement,
    DeLongTest,
    PairedDifference,
)
from medtl.contracts.task import decision_endpoint, endpoints
from medtl.errors import ConfigError
from medtl.evaluation.compare_html import render_comparison
from medtl.evaluation.endpoints import task_arrays
from medtl.evaluation.evaluate import _pinned_task, _score_test, check_new_report, evaluation_key
from medtl.evaluation.paired import (
    decision_statistics,
    delong_paired,
    is_proposed,
    mcnemar_p,
    paired_interval,
    summary_auroc_statistic,
    verdict,
)
from medtl.evaluation.unseen import check_unseen
from medtl.hashing import sha256_file
from medtl.models.loaded import load_model
from medtl.outputs import staged_folder
from medtl.training.config import TaskConfig

COMPARISON_FILE = "comparison.json"
COMPARISON_PAGE = "comparison.html"
MAX_MARGIN = 0.2  # a "non-inferiority" margin wider than this accepts a clearly worse model


@dataclass
class ComparisonResult:
    out: Path
    comparison: Comparison
    sha256: str

    def describe(self) -> str:
        c, a = self.comparison, self.comparison.auroc
        d = a.difference
        return (
            f"wrote {COMPARISON_FILE}, {COMPARISON_PAGE} to {self.out}\n"
            f"  AUROC challenger - champion {d.value:+.3f} (95% CI {_num(d.ci_low)} to {_num(d.ci_high)}), "
            f"margin {c.margin:g}: {c.verdict.replace('_', '-')}; "
            f"{'proposed for sign-off' if c.proposed else 'not proposed'}"
        )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def compare(
    champion: Path,
    challenger: Path,
    *,
    test: Path,
    out: Path,
    margin: float = 0.02,
    decision_margin: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    trust: TrustSettings | None = None,
) -> ComparisonResult:
    """Everything that can refuse runs before any prediction: the margins, the output folder, both artifacts'
    verification, their task, the pipeline key and the leakage check."""
    for name, value in (("--margin", margin), ("--decision-margin", decision_margin)):
        if value is not None and not 0.0 <= value <= MAX_MARGIN:
            raise ConfigError(
                f"{name} {value:g} is outside 0..{MAX_MARGIN:g}",
                fix=f"declare the largest loss you accept before the run, e.g. {name} 0.02",
            )
    out = Path(out)
    check_new_report(out)
    verified = {
        role: open_verified(Path(path), trust=trust)
        for role, path in (("champion", champion), ("challenger", challenger))
    }
    contents = {role: ArtifactContents(v, action="compared") for role, v in verified.items()}
    task = _shared_task(contents["champion"].task, contents["challenger"].task)
    key = evaluation_key(verified["challenger"])
    check_unseen(contents, Path(test))

    frames, test_hash = {}, None
    for role, v in verified.items():
        model = load_model(v)
        config = TaskConfig.model_validate(v.read_yaml("config.yaml")["task"])
        frames[role], _, test_hash = _score_test(model, _pinned_task(config, task.kind, task.classes), Path(test))
    champion_frame, challenger_frame = _paired_frames(frames["champion"], frames["challenger"])
    assert test_hash is not None  # both artifacts scored the test set above
    comparison = measure(
        champion_frame, challenger_frame, task=task,
        champion=_describe(verified["champion"], task), challenger=_describe(verified["challenger"], task),
        test_manifest_hash=test_hash, margin=margin, decision_margin=decision_margin, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    with staged_folder(out, what="the comparison folder") as staged:
        write_json(comparison, staged / COMPARISON_FILE)
        (staged / COMPARISON_PAGE).write_text(render_comparison(comparison), encoding="utf-8")
        digest = sha256_file(staged / COMPARISON_FILE)
    verified["challenger"].append_event(
        "compared",
        actor="medtl compare",
        payload={
            "comparison_sha256": digest,
            "champion_manifest_hash": comparison.champion.artifact_manifest_hash,
            "test_manifest_hash": test_hash,
            "margin": margin,
            "verdict": comparison.verdict,
        },
        signing_key=key,
    )
    return ComparisonResult(out, comparison, digest)


def _shared_task(champion: TaskSpec, challenger: TaskSpec) -> TaskSpec:
    if champion.model_dump(exclude={"decision_cut_declared"}) != challenger.model_dump(
        exclude={"decision_cut_declared"}
    ):
        raise ConfigError(
            f"the two artifacts answer different questions (champion: {champion.kind}, {len(champion.classes)} "
            f"classes; challenger: {challenger.kind}, {len(challenger.classes)} classes, or another class order, "
            "positive class or decision cut)",
            fix="compare artifacts trained for the same task: the same task kind, classes in the same order, the same "
            "positive class and decision cut",
        )
    return champion


def _paired_frames(champion: pd.DataFrame, challenger: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames in the same scan order; refused unless both models scored exactly the same scans."""
    if set(champion["scan_id"]) != set(challenger["scan_id"]):
        only = len(set(champion["scan_id"]) ^ set(challenger["scan_id"]))
        raise ConfigError(
            f"the two artifacts selected different test scans ({only} scanned by one only): their task filters "
            "(modalities, QC flags) differ, so the comparison would not be paired",
            fix="compare artifacts trained with the same task filters, or use a test set both select whole",
        )
    return (
        champion.sort_values("scan_id").reset_index(drop=True),
        challenger.sort_values("scan_id").reset_index(drop=True),
    )


def _describe(verified: VerifiedArtifact, task: TaskSpec) -> ComparedArtifact:
    decision = decision_endpoint(task.kind, task.classes, task.positive_class, task.decision_cut)
    status = verified.status
    return ComparedArtifact(
        artifact_manifest_hash=verified.manifest_hash,
        model_id=verified.metadata["model_id"],
        model_version=verified.metadata["model_version"],
        trusted=verified.trusted,
        approval=status.state,
        thresholds=status.thresholds(decision.id if decision is not None else None),
        thresholds_approved=status.approved,
    )


def _truth(frame: pd.DataFrame, task: TaskSpec) -> np.ndarray:
    if task.kind == "binary":  # the class index of each scan in the model's class order
        positive = endpoints("binary", task.classes, task.positive_class)[0].index
        return np.where(frame["y"].to_numpy() == 1, positive, 1 - positive)
    return task_arrays(frame, task.kind, task.classes)[1]


def measure(
    champion_frame: pd.DataFrame,
    challenger_frame: pd.DataFrame,
    *,
    task: TaskSpec,
    champion: ComparedArtifact,
    challenger: ComparedArtifact,
    test_manifest_hash: str,
    margin: float,
    decision_margin: float | None,
    n_boot: int,
    seed: int = 0,
) -> Comparison:
    """The comparison of two prediction frames of the same scans (columns of evaluation's test frame: scan_id,
    patient_id, p_<class>, and target / y_<finding> / y)."""
    kind, classes, positive, cut = task.kind, task.classes, task.positive_class, task.decision_cut
    truth = _truth(champion_frame, task)
    patients = champion_frame["patient_id"].astype(str).to_numpy()
    probabilities = {
        "champion": champion_frame[[f"p_{c}" for c in classes]].to_numpy(dtype=float),
        "challenger": challenger_frame[[f"p_{c}" for c in classes]].to_numpy(dtype=float),
    }
    decision = decision_endpoint(kind, classes, positive, cut)
    scope = (
        f"positive class {decision.display}" if kind == "binary" and decision is not None
        else decision.display if decision is not None
        else "macro over classes (one vs rest)" if kind == "multiclass" else "mean over findings"
    )  # fmt: skip
    auroc_stat = summary_auroc_statistic(kind, classes, positive, cut, truth)
    auroc_pair = paired_interval(
        auroc_stat,
        auroc_stat,
        probabilities["champion"],
        probabilities["challenger"],
        patients,
        n_boot=n_boot,
        seed=seed,
    )
    auroc = _difference("auroc", scope, auroc_pair, margin)
    for role, described in (("champion", champion), ("challenger", challenger)):
        missing = [
            e.id
            for e in endpoints(kind, classes, positive)
            if kind != "multiclass" and e.id not in described.thresholds
        ]
        if missing and (decision is None or decision.id in missing):
            raise ConfigError(
                f"the {role} has no operating point for {', '.join(missing[:3])}: its decisions cannot be compared",
                fix=f"run `medtl evaluate` on the {role} first (its operating points are frozen there)",
            )
    decisions = []
    named_a = decision_statistics(kind, classes, positive, cut, truth, champion.thresholds)
    named_b = decision_statistics(kind, classes, positive, cut, truth, challenger.thresholds)
    decision_scope = scope if kind != "multiclass" else "the most probable class"
    for name in named_a:
        interval = paired_interval(
            named_a[name], named_b[name], probabilities["champion"], probabilities["challenger"], patients,
            n_boot=n_boot, seed=seed,
        )  # fmt: skip
        decisions.append(_difference(name, decision_scope, interval, decision_margin))
    results = [auroc.verdict] + ([d.verdict for d in decisions] if decision_margin is not None else [])
    overall = next((v for v in ("inferior", "inconclusive") if v in results), None) or (
        "superior" if auroc.verdict == "superior" else "non_inferior"
    )
    delong, agreement = None, None
    if decision is not None:
        targets = decision.truth(truth)
        scores = {r: np.clip(decision.probability(p), 0.0, 1.0) for r, p in probabilities.items()}
        found = delong_paired(targets, scores["champion"], scores["challenger"])
        if found is not None:
            delong = DeLongTest(
                champion_auroc=found.auc_a, challenger_auroc=found.auc_b, difference=found.difference, se=found.se,
                ci_low=found.low, ci_high=found.high, p_value=found.p_value,
            )  # fmt: skip
        right = {
            "champion": (scores["champion"] >= champion.thresholds[decision.id]) == targets.astype(bool),
            "challenger": (scores["challenger"] >= challenger.thresholds[decision.id]) == targets.astype(bool),
        }
        a_only, b_only = (
            int((right["champion"] & ~right["challenger"]).sum()),
            int((~right["champion"] & right["challenger"]).sum()),
        )
        agreement = DecisionAgreement(
            endpoint=decision.id, both_correct=int((right["champion"] & right["challenger"]).sum()),
            champion_only_correct=a_only, challenger_only_correct=b_only,
            both_wrong=int((~right["champion"] & ~right["challenger"]).sum()), mcnemar_p=mcnemar_p(a_only, b_only),
        )  # fmt: skip
    return Comparison(
        champion=champion, challenger=challenger, task=task, test_manifest_hash=test_manifest_hash,
        n_patients=len(set(patients)), n_scans=len(patients), margin=margin, decision_margin=decision_margin,
        n_boot=n_boot, seed=seed, auroc=auroc, decisions=decisions, delong=delong, agreement=agreement,
        verdict=overall, proposed=is_proposed(overall),  # type: ignore[arg-type]
        reasons=_reasons(auroc, decisions, margin, decision_margin),
        compared_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), medtl_version=__version__,
    )  # fmt: skip


def _difference(name: str, scope: str, interval, margin: float | None) -> PairedDifference:
    d = interval.difference
    return PairedDifference(
        name=name, scope=scope,
        champion=interval.champion.estimate(name), challenger=interval.challenger.estimate(name),
        difference=d.estimate(f"{name} difference"),
        verdict=verdict(d.low, d.high, margin) if margin is not None else None,
    )  # fmt: skip


def _reasons(
    auroc: PairedDifference, decisions: list[PairedDifference], margin: float, decision_margin: float | None
) -> list[str]:
    def line(d: PairedDifference, m: float) -> str:
        low, high = d.difference.ci_low, d.difference.ci_high
        ci = "undefined" if low is None or high is None else f"{low:+.3f} to {high:+.3f}"
        value = "undefined" if d.difference.value is None else f"{d.difference.value:+.3f}"
        return f"{d.name} ({d.scope}): difference {value}, 95% CI {ci}, margin -{m:g}: " + (
            d.verdict or "not judged"
        ).replace("_", "-")

    lines = [line(auroc, margin)]
    if decision_margin is not None:
        lines += [line(d, decision_margin) for d in decisions]
    else:
        lines.append("decision statistics are reported, not judged (no --decision-margin was declared)")
    return lines
