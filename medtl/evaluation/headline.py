"""The one line per evaluation that `medtl evaluate` prints: the figure each task type is judged by first.

binary: AUROC; multiclass: macro AUROC and accuracy; ordinal: macro AUROC, quadratic weighted kappa and the decision
cut's sensitivity / specificity (the decision a reviewer approves); multilabel: macro AUROC and each finding's AUROC.
"""

from __future__ import annotations

from medtl.contracts.evaluation import Estimate, Evaluation


def headline(evaluation: Evaluation) -> str | None:
    """None when the evaluation has no AUROC to lead with (e.g. one class only in a test set)."""
    named = {e.name: e for e in evaluation.estimates}
    auroc = named.get("auroc")
    if auroc is None or auroc.value is None:
        return None
    label = "AUROC" if evaluation.task_kind == "binary" else "macro AUROC"
    parts = [f"{evaluation.evaluated_on:<4} {label} {_with_ci(auroc)} on {evaluation.n_patients} patients"]
    return ", ".join(parts + _details(evaluation, named))


def _with_ci(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    if estimate.ci_low is None or estimate.ci_high is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} ({estimate.ci_low:.3f}-{estimate.ci_high:.3f})"


def _details(evaluation: Evaluation, named: dict[str, Estimate]) -> list[str]:
    """What follows the AUROC on a task type's summary line."""
    if evaluation.task_kind == "multiclass":
        return [f"accuracy {_with_ci(named['accuracy'])}"] if "accuracy" in named else []
    if evaluation.task_kind == "ordinal":
        parts = [f"QWK {_with_ci(named['quadratic_weighted_kappa'])}"] if "quadratic_weighted_kappa" in named else []
        for endpoint in evaluation.endpoints:
            if endpoint.is_decision:
                at = {e.name: e for e in endpoint.estimates}
                parts += [
                    f"{endpoint.display}: {name} {_with_ci(at[name])}"
                    for name in ("sensitivity", "specificity")
                    if name in at
                ]
        return parts
    if evaluation.task_kind == "multilabel":
        return [
            f"{endpoint.display} AUROC {_with_ci(next(e for e in endpoint.estimates if e.name == 'auroc'))}"
            for endpoint in evaluation.endpoints
        ]
    return []
