"""The report's clinical-utility sections: decision curves, predicted-probability distributions, seed spread.

Why a module of its own: these sections are read by a clinician who may never have seen a decision curve, so each
comes with its plain-language reading, and the sentences (like the figures) only restate numbers that evaluation
computed and metrics.json holds. Figures follow plots.py's rules (fixed style, no PNG text chunks, no pyplot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medtl.contracts.evaluation import DecisionCurve, Evaluation, SeedSpread
from medtl.reporting.model import ProbabilityHistogram
from medtl.reporting.plots import PALETTE, figure_png
from medtl.reporting.summary import EVALUATION_LABELS, fmt

DECISION_CURVE_READING = (
    "How to read a decision curve. The horizontal axis is the threshold probability: the risk of disease at which "
    "you would act (refer, biopsy, treat). Choosing 10% says that finding one case is worth nine unnecessary "
    "work-ups; choosing 50% says one for one. The vertical axis is net benefit: cases found per patient examined, "
    "minus unnecessary work-ups weighted by that exchange rate. 'Treat all' acts on everyone, 'treat none' on "
    "nobody (net benefit 0). Use the model only at thresholds where its curve lies above both; where it does not, "
    "acting on everyone or on nobody does at least as well."
)
DISTRIBUTION_READING = (
    "Each panel shows how many scans of each true class received each predicted probability. Well-separated "
    "humps mean the model tells the classes apart; overlap is where it errs; a hump near 0.5 means it is unsure."
)
SEED_READING = (
    "The same recipe trained again with other random seeds, on the same data and configuration: the spread shows how "
    "much of a difference between two models could be chance in training alone. Threshold-free measures only, out of "
    "fold."
)
SPREAD_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier score"}


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def curve_sentence(curve: DecisionCurve, label: str) -> str:
    """Where the model is worth using, and its net benefit at the operating point, in words."""
    what = f"{label}, {curve.display}"
    if curve.useful_thresholds:
        ranges = ", ".join(
            _percent(low) if low == high else f"{_percent(low)} to {_percent(high)}"
            for low, high in curve.useful_thresholds
        )
        text = (
            f"{what}: the model gives more net benefit than treating all or none at threshold probabilities {ranges}."
        )
    else:
        text = f"{what}: at no threshold probability does the model do better than treating all or none."
    if curve.operating_threshold is not None and curve.operating_net_benefit is not None:
        per_100 = curve.operating_net_benefit * 100
        text += (
            f" At the operating threshold ({fmt(curve.operating_threshold)}) the net benefit is "
            f"{fmt(curve.operating_net_benefit)}: as if {per_100:.1f} cases per 100 scans were found with no "
            "unnecessary work-up."
        )
    return text


def decision_curve_png(curve: DecisionCurve, title: str) -> bytes:
    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        x = np.asarray(curve.thresholds)
        ax.plot(x, curve.net_benefit, color=PALETTE[0], linewidth=1.8, label="model")
        ax.plot(x, curve.treat_all, color=PALETTE[1], linewidth=1.2, linestyle="--", label="treat all")
        ax.axhline(0.0, color="grey", linewidth=1.2, linestyle=":", label="treat none")
        for low, high in curve.useful_thresholds:
            ax.axvspan(low, high, color=PALETTE[2], alpha=0.08, linewidth=0)
        if curve.operating_threshold is not None and curve.operating_net_benefit is not None:
            ax.plot([curve.operating_threshold], [curve.operating_net_benefit], marker="o", color=PALETTE[0])
        top = max([curve.prevalence, *curve.net_benefit]) if curve.net_benefit else curve.prevalence
        ax.set(xlim=(0, 1), ylim=(-0.05, max(top, 0.05) * 1.1), xlabel="Threshold probability", ylabel="Net benefit")
        ax.set_title(title)
        ax.legend(loc="upper right")

    return figure_png(draw, (5.2, 3.6))


def distribution_png(histogram: ProbabilityHistogram, title: str) -> bytes:
    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        edges = np.asarray(histogram.edges)
        for index, group in enumerate(histogram.groups):
            colour = PALETTE[index % len(PALETTE)]
            ax.stairs(group.counts, edges, color=colour, linewidth=1.6, label=f"{group.label} (n={sum(group.counts)})")
            ax.stairs(group.counts, edges, color=colour, alpha=0.15, fill=True)
        ax.set(xlim=(0, 1), xlabel=f"Predicted probability, {histogram.display}", ylabel="Scans")
        ax.set_title(title)
        ax.legend(loc="best")

    return figure_png(draw, (5.2, 3.2))


def decision_section(evaluations: Sequence[Evaluation], data_uri: Any) -> list[dict[str, str]]:
    out = []
    for ev in evaluations:
        label = EVALUATION_LABELS[ev.evaluated_on]
        for curve in ev.decision_curves:
            title = f"Decision curve, {label.lower()}, {curve.display}"
            out.append({"sentence": curve_sentence(curve, label), "image": data_uri(decision_curve_png(curve, title)),
                        "alt": title})  # fmt: skip
    return out


def distribution_section(histograms: Sequence[ProbabilityHistogram], data_uri: Any) -> list[dict[str, str]]:
    order = {"test": 0, "oof": 1}
    out = []
    for histogram in sorted(histograms, key=lambda h: order[h.evaluated_on]):
        title = f"{EVALUATION_LABELS[histogram.evaluated_on]}, {histogram.display}"
        out.append({"image": data_uri(distribution_png(histogram, title)), "alt": f"Probability distribution, {title}"})
    return out


def seed_section(spread: SeedSpread | None) -> dict[str, Any] | None:
    if spread is None:
        return None
    names = [s.name for s in spread.summary]
    rows = []
    for run in spread.runs:
        by_name = {e.name: e for e in run.estimates}
        rows.append({"seed": str(run.seed), "version": run.model_version,
                     "values": [fmt(by_name[n].value) if n in by_name else "n/a" for n in names]})  # fmt: skip
    summary = [
        {"name": SPREAD_NAMES.get(s.name, s.name), "median": fmt(s.median),
         "range": f"{fmt(s.minimum)}–{fmt(s.maximum)}", "sd": fmt(s.sd), "n": str(s.n_runs)}
        for s in spread.summary
    ]  # fmt: skip
    split = (
        "Every run used the same patient folds, so the spread comes from initialisation, data order and augmentation."
        if spread.split_shared
        else "The seed also drew the patient folds, so the spread includes which patients were held out together."
    )
    return {"names": [SPREAD_NAMES.get(n, n) for n in names], "rows": rows, "summary": summary, "split": split,
            "reading": SEED_READING}  # fmt: skip
