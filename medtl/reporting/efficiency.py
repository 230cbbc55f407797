"""Words and table rows for the report's "Label efficiency" section, from metrics.json's label_efficiency.

Why here: the sentence that answers "how many labels did pretraining save" is a rule (the smallest share of the labels
at which a pretrained arm's out-of-fold AUROC reaches the from-scratch arm's on every label, compared as point
estimates); it is written down once, where a test can pin it, and the template only lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtl.contracts.evaluation import LabelEfficiency, LabelsSaved
from medtl.reporting.summary import ARM_LABELS, Cell, cell, fmt

OUT_OF_FOLD_NOTE = (
    "The curve is out of fold: the models trained on fewer labels are not kept in the artifact, so they were not "
    "scored on a locked test set (a benchmark computes test AUROC per share separately). Every share used the same "
    "tuning and held-out patients; the counts are the training patients each fold's model was fitted on (median over "
    "folds), not counting the tuning patients."
)


@dataclass(frozen=True)
class EfficiencyRow:
    arm: str
    label: str
    share: str
    patients: str
    fold_patients: str
    auc: Cell


def _share(fraction: float) -> str:
    return f"{fraction:.0%}" if round(fraction * 100, 6) == round(fraction * 100) else f"{fraction:.1%}"


def _patients(value: float) -> str:
    return f"{value:g}"


def efficiency_rows(result: LabelEfficiency) -> list[EfficiencyRow]:
    return [
        EfficiencyRow(
            arm=point.arm,
            label=ARM_LABELS.get(point.arm, point.arm),
            share=_share(point.fraction),
            patients=_patients(point.n_labelled_patients),
            fold_patients=", ".join(str(n) for n in point.fold_patients),
            auc=cell(f"efficiency.{point.arm}.{point.fraction:g}", point.auc, "AUROC"),
        )
        for point in result.points
    ]


def saving_sentence(saved: LabelsSaved) -> str:
    """One sentence per pretrained arm: the share (and patients) at which it matched scratch with every label."""
    label = ARM_LABELS.get(saved.arm, saved.arm)
    bar = f"the from-scratch arm's AUROC with every label ({fmt(saved.reference_auc)})"
    total = _patients(saved.all_patients)
    if saved.reached_fraction is None:
        return f"{label}: did not reach {bar} at any share tried, up to all {total} training patients per fold."
    if saved.reached_fraction >= 1.0:
        return f"{label}: reached {bar} only with every label ({total} patients per fold): no labels saved."
    patients = _patients(saved.reached_patients) if saved.reached_patients is not None else "n/a"
    return (
        f"{label}: reached {bar} with {_share(saved.reached_fraction)} of the labels ({patients} instead of {total} "
        "training patients per fold, median)."
    )


def saving_sentences(result: LabelEfficiency) -> list[str]:
    return [saving_sentence(saved) for saved in result.saved]
