"""The report's figures as PNG bytes: ROC, precision-recall, reliability, confusion, transfer curves, forest plot,
label efficiency.

Why these choices: the figures go into a document that a clinician signs and an auditor may re-render months later,
so the same input must give the same bytes (fixed size, DPI and style, matplotlib's bundled font, no backend or user
matplotlibrc involved) and the PNGs must carry no text chunks (no "Software", no timestamps: nothing that could ever
hold PHI). Figures are drawn on a bare Agg canvas, never through pyplot, so no global figure state is touched.
Every number drawn comes from the evaluation; the only arithmetic here is for display (1 - specificity as an x
position, the mean of fold curves as a guide line).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtl.contracts.evaluation import (
    Calibration,
    EndpointResult,
    Estimate,
    Evaluation,
    LabelEfficiency,
    OperatingPoint,
    SubgroupResult,
)
from medtl.reporting.model import EvaluationCurves, TransferCurve
from medtl.reporting.summary import ARM_LABELS, EVALUATION_LABELS, HEADLINE_LABELS, find_estimate, fmt

DPI = 110
# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and printable in grey.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
EVALUATION_COLOURS = {"test": PALETTE[0], "oof": PALETTE[1]}
_STYLE = {
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs on every machine
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "path.simplify": False,
}


def _png(draw: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    """Draw into a fresh figure with a fixed style and return PNG bytes without metadata chunks."""
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def figure_png(draw: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    """The same fixed style and metadata-free PNG for figures drawn outside the report (monitoring's time series)."""
    return _png(draw, size)


def _evaluation_label(evaluated_on: str) -> str:
    return EVALUATION_LABELS.get(evaluated_on, evaluated_on)


def _interval(estimate_value: float | None, low: float | None, high: float | None) -> str:
    return f"{fmt(estimate_value)} ({fmt(low)}–{fmt(high)})"


def _curve_source(
    curve: EvaluationCurves, by_name: dict[str, Evaluation]
) -> tuple[list[Estimate], OperatingPoint | None, float | None, str]:
    """The estimates, operating point, prevalence and legend words of what a curve shows: the binary task itself, or
    one endpoint (a class, a grade cut, a finding) of another task type."""
    ev = by_name.get(curve.evaluated_on)
    label = _evaluation_label(curve.evaluated_on)
    if ev is None:
        return [], None, None, label
    if curve.endpoint is None:
        return ev.estimates, ev.operating_point, ev.prevalence, label
    ep = next((e for e in ev.endpoints if e.endpoint == curve.endpoint), None)
    if ep is None:
        return [], None, None, f"{label}, {curve.endpoint}"
    return ep.estimates, ep.operating_point, ep.prevalence, f"{label}, {ep.display}"


def _line_style(curves: Sequence[EvaluationCurves], curve: EvaluationCurves) -> str:
    """Evaluations differ by colour; several endpoints of one evaluation differ by line style."""
    endpoints = list(dict.fromkeys(c.endpoint for c in curves))
    return ("-", "--", "-.", ":")[endpoints.index(curve.endpoint) % 4]


def roc_png(curves: Sequence[EvaluationCurves], evaluations: Sequence[Evaluation]) -> bytes:
    """ROC per evaluation (and endpoint), AUROC (95% CI) in the legend, the frozen operating point marked on each."""
    by_name = {e.evaluated_on: e for e in evaluations}

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        for curve in curves:
            estimates, point, _, label = _curve_source(curve, by_name)
            colour = EVALUATION_COLOURS.get(curve.evaluated_on, PALETTE[2])
            auc = find_estimate(estimates, "auroc")
            if auc is not None:
                label += f": AUROC {_interval(auc.value, auc.ci_low, auc.ci_high)}"
            style = _line_style(curves, curve)
            ax.plot(curve.roc.x, curve.roc.y, color=colour, linewidth=1.8, linestyle=style, label=label)
            sens = find_estimate(estimates, "sensitivity")
            spec = find_estimate(estimates, "specificity")
            if point and sens and spec and sens.value is not None and spec.value is not None:
                ax.plot(
                    [1 - spec.value],
                    [sens.value],
                    marker="o",
                    markersize=8,
                    markerfacecolor="white",
                    markeredgecolor=colour,
                    markeredgewidth=2,
                    linestyle="none",
                    label=f"operating point (threshold {fmt(point.threshold)})",
                )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 − specificity", ylabel="Sensitivity", title="ROC curve")
        ax.set_aspect("equal")
        ax.legend(loc="lower right")

    return _png(draw, (5.0, 5.0))


def pr_png(curves: Sequence[EvaluationCurves], evaluations: Sequence[Evaluation]) -> bytes:
    """Precision-recall per evaluation, with the prevalence line that a useless model would sit on."""
    by_name = {e.evaluated_on: e for e in evaluations}

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        for curve in curves:
            if curve.pr is None:
                continue
            colour = EVALUATION_COLOURS.get(curve.evaluated_on, PALETTE[2])
            _, _, prevalence, label = _curve_source(curve, by_name)
            style = _line_style(curves, curve)
            ax.plot(curve.pr.x, curve.pr.y, color=colour, linewidth=1.8, linestyle=style, label=label)
            if prevalence is not None:
                ax.axhline(prevalence, color=colour, linestyle=":", linewidth=1, label=f"prevalence {fmt(prevalence)}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)")
        ax.set_title("Precision-recall curve")
        ax.set_aspect("equal")
        ax.legend(loc="lower left")

    return _png(draw, (5.0, 5.0))


def reliability_png(calibration: Calibration, title: str) -> bytes:
    """Observed vs predicted per bin with the diagonal, and the number of scans in each bin underneath."""
    bins = [b for b in calibration.bins if b.mean_predicted is not None and b.observed is not None]

    def draw(figure: Figure) -> None:
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
        top.plot(
            [b.mean_predicted for b in bins],
            [b.observed for b in bins],
            marker="o",
            color=PALETTE[0],
            linewidth=1.5,
            label=f"model (ECE {fmt(calibration.ece)})",
        )
        top.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="Observed frequency", title=title)
        top.legend(loc="upper left")
        centres = [(b.lower + b.upper) / 2 for b in calibration.bins]
        widths = [(b.upper - b.lower) * 0.9 for b in calibration.bins]
        counts = [b.count for b in calibration.bins]
        bottom.bar(centres, counts, width=widths, color=PALETTE[5], edgecolor=PALETTE[0], linewidth=0.5)
        for x, count in zip(centres, counts, strict=True):
            bottom.annotate(str(count), (x, count), ha="center", va="bottom", fontsize=7)
        bottom.set(xlabel="Predicted probability", ylabel="Scans")
        bottom.set_ylim(0, max([*counts, 1]) * 1.35)

    return _png(draw, (5.0, 5.4))


def confusion_png(classes: Sequence[str], confusion: Sequence[Sequence[int]], title: str) -> bytes:
    """Heat map with the count in every cell; rows are the true class, columns the model's decision."""
    matrix = np.asarray(confusion, dtype=float)

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        ax.grid(False)
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1.0))
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if count > threshold else "black"
            ax.text(col, row, f"{int(count)}", ha="center", va="center", color=colour, fontsize=12)
        ticks = range(len(classes))
        ax.set_xticks(ticks, [str(c) for c in classes])
        ax.set_yticks(ticks, [str(c) for c in classes])
        ax.set(xlabel="Model decision", ylabel="True class", title=title)
        figure.colorbar(image, ax=ax, shrink=0.8, label="Scans")

    side = 3.2 + 0.5 * len(classes)
    return _png(draw, (side + 0.8, side))


def transfer_png(curves: Sequence[TransferCurve]) -> bytes:
    """Tuning AUROC against epochs and against seconds: each fold faint, the fold mean of each arm bold."""
    arms = list(dict.fromkeys(c.arm for c in curves))

    def draw(figure: Figure) -> None:
        by_epoch, by_time = figure.subplots(1, 2, sharey=True)
        for index, arm in enumerate(arms):
            colour = PALETTE[index % len(PALETTE)]
            mine = [c for c in curves if c.arm == arm]
            for curve in mine:
                auc = [np.nan if v is None else v for v in curve.tune_auc]
                by_epoch.plot(curve.epochs, auc, color=colour, alpha=0.25, linewidth=1)
                by_time.plot(curve.seconds, auc, color=colour, alpha=0.25, linewidth=1)
            epochs, mean_auc, mean_seconds = _fold_mean(mine)
            label = ARM_LABELS.get(arm, arm)
            by_epoch.plot(epochs, mean_auc, color=colour, linewidth=2.2, label=label)
            by_time.plot(mean_seconds, mean_auc, color=colour, linewidth=2.2, label=label)
        by_epoch.set(xlabel="Epoch", ylabel="Tuning AUROC", title="Per epoch")
        by_time.set(xlabel="Training time (s)", title="Per second of training")
        by_epoch.legend(loc="lower right")

    return _png(draw, (9.0, 3.8))


def label_efficiency_png(result: LabelEfficiency) -> bytes:
    """Out-of-fold AUROC against labelled patients (log scale), one line per arm with its 95% CI band; the dotted
    line is the from-scratch arm's AUROC with every label, the bar the pretrained arms are read against."""
    arms = list(dict.fromkeys(p.arm for p in result.points))

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        for index, arm in enumerate(arms):
            colour = PALETTE[index % len(PALETTE)]
            mine = sorted((p for p in result.points if p.arm == arm), key=lambda p: p.fraction)
            x = [p.n_labelled_patients for p in mine]
            y = [np.nan if p.auc.value is None else p.auc.value for p in mine]
            low = [np.nan if p.auc.ci_low is None else p.auc.ci_low for p in mine]
            high = [np.nan if p.auc.ci_high is None else p.auc.ci_high for p in mine]
            ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
            ax.plot(x, y, color=colour, marker="o", linewidth=1.8, label=ARM_LABELS.get(arm, arm))
        if result.saved:
            reference = result.saved[0].reference_auc
            ax.axhline(
                reference,
                color="grey",
                linestyle=":",
                linewidth=1,
                label=f"from scratch, every label ({fmt(reference)})",
            )
        ax.set_xscale("log")
        ticks = sorted({p.n_labelled_patients for p in result.points})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="Labelled training patients per fold (median, log scale)", ylabel="Out-of-fold AUROC")
        ax.set_title("Label efficiency")
        ax.legend(loc="lower right")

    return _png(draw, (6.0, 4.0))


def _fold_mean(curves: Sequence[TransferCurve]) -> tuple[list[int], list[float], list[float]]:
    """A guide line: per epoch, the mean over the folds that have a value there (display only, not a result)."""
    epochs = sorted({e for c in curves for e in c.epochs})
    mean_auc, mean_seconds = [], []
    for epoch in epochs:
        auc = [c.tune_auc[i] for c in curves for i, e in enumerate(c.epochs) if e == epoch]
        secs = [c.seconds[i] for c in curves for i, e in enumerate(c.epochs) if e == epoch and i < len(c.seconds)]
        known = [v for v in auc if v is not None]
        mean_auc.append(float(np.mean(known)) if known else np.nan)
        mean_seconds.append(float(np.mean(secs)) if secs else np.nan)
    return epochs, mean_auc, mean_seconds


def forest_png(
    subgroups: Sequence[SubgroupResult], quantities: Sequence[str], overall: Evaluation | EndpointResult, title: str
) -> bytes:
    """One row per subgroup and one panel per quantity: estimate and 95% CI, small cells hollow and labelled."""
    rows = list(subgroups)
    labels = [f"{s.attribute} = {s.value}  (n={s.n_patients}, pos={s.n_positive})" for s in rows]

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, len(quantities), sharey=True, squeeze=False)[0]
        for ax, quantity in zip(axes, quantities, strict=True):
            reference = find_estimate(overall.estimates, quantity)
            if reference is not None and reference.value is not None:
                ax.axvline(reference.value, color="grey", linestyle=":", linewidth=1)
            for y, subgroup in enumerate(rows):
                estimate = find_estimate(subgroup.estimates, quantity)
                if estimate is None or estimate.value is None:
                    ax.text(0.5, y, "n/a", ha="center", va="center", fontsize=7, color="grey")
                    continue
                colour = PALETTE[1] if subgroup.small_cell else PALETTE[0]
                if estimate.ci_low is not None and estimate.ci_high is not None:
                    ax.plot([estimate.ci_low, estimate.ci_high], [y, y], color=colour, linewidth=1.5)
                face = "white" if subgroup.small_cell else colour
                ax.plot([estimate.value], [y], marker="s", markersize=6, color=colour, markerfacecolor=face)
            ax.set_xlim(-0.02, 1.02)
            ax.set_xlabel(HEADLINE_LABELS.get(quantity, quantity))
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(
            range(len(rows)),
            [f"{label}{'  [small cell]' if s.small_cell else ''}" for label, s in zip(labels, rows, strict=True)],
        )
        axes[0].invert_yaxis()
        figure.suptitle(title, fontsize=10)

    return _png(draw, (3.0 + 2.4 * len(quantities), 1.2 + 0.38 * max(len(rows), 1)))
