"""Words and formatted numbers for the report, derived from the evaluation's results without new statistics.

Why a module of its own: the HTML template should only lay things out, and the rules that turn numbers into words
(which evaluation is the headline, what "well calibrated" means, whether transfer helped) must be written down in
one place a reviewer can read and a test can pin.

Calibration verdict thresholds (documented here and in the report's methods section):

- well calibrated: ECE < 0.05, and |slope - 1| < 0.2 and |intercept| < 0.2 where slope/intercept are reported;
- poorly calibrated: ECE >= 0.10, or |slope - 1| >= 0.5, or |intercept| >= 0.5;
- otherwise: some miscalibration.

Direction words: slope < 0.8 "overconfident" (predicted risks too extreme), slope > 1.2 "underconfident" (too
cautious), intercept <= -0.2 "overestimates risk overall", intercept >= 0.2 "underestimates risk overall". Below
100 patients the verdict is marked as rough: binned ECE and a fitted slope are noisy in small samples. These are
conventions chosen for a readable one-line verdict (in the spirit of Van Calster et al., J Clin Epidemiol 2016), not
a statistical test; the numbers themselves are always printed beside the words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from medtl.contracts.evaluation import Calibration, Estimate, Evaluation, Metrics, TransferArm

MISSING = "n/a"

# Headline quantities and the estimate names the evaluation may give them (matched case-insensitively).
HEADLINE_ALIASES: dict[str, tuple[str, ...]] = {
    "sensitivity": ("sensitivity", "recall", "tpr", "true_positive_rate"),
    "specificity": ("specificity", "tnr", "true_negative_rate"),
    "auroc": ("auroc", "auc", "roc_auc"),
}
HEADLINE_LABELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "auroc": "AUROC"}
# How estimate names from metrics.json read in the detail table (unknown names are shown as they are).
DISPLAY_NAMES = {
    "auroc": "AUROC (area under the ROC curve)",
    "auc": "AUROC (area under the ROC curve)",
    "auprc": "AUPRC (area under the precision-recall curve)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV (positive predictive value)",
    "npv": "NPV (negative predictive value)",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "f1": "F1 score",
    "brier": "Brier score",
    "multiclass_brier": "Multi-class Brier score",
    "classwise_ece": "Class-wise ECE (expected calibration error, averaged over classes)",
    "quadratic_weighted_kappa": "Quadratic weighted kappa (agreement with the true grade)",
    "mean_absolute_grade_error": "Mean absolute grade error (grades)",
}
# The task-level AUROC of a non-binary task is the macro average of its one-vs-rest (or per-cut, per-finding) AUROCs.
MACRO_AUROC = "Macro-average AUROC"
EVALUATION_LABELS = {"test": "Locked test set", "oof": "Out-of-fold (cross-validation)"}
ARM_LABELS = {
    "main": "Transferred (configured recipe)",
    "linear_probe": "Linear probe",
    "scratch": "From scratch",
    "features": "Frozen features + logistic regression",
}

WELL_ECE, POOR_ECE = 0.05, 0.10
WELL_SLOPE, POOR_SLOPE = 0.2, 0.5  # distance of the slope from 1
WELL_INTERCEPT, POOR_INTERCEPT = 0.2, 0.5
ROUGH_BELOW_PATIENTS = 100


def short_label(name: str) -> str:
    """'PPV' for 'ppv', 'AUROC' for 'auroc': table headers where the long names would not fit."""
    return DISPLAY_NAMES.get(name.lower(), name).split(" (")[0]


def fmt(value: float | None, digits: int = 3) -> str:
    """Fixed decimals, so the page and the data-metric attributes print exactly what metrics.json holds."""
    return MISSING if value is None else f"{value:.{digits}f}"


def display_name(name: str, kind: str = "binary") -> str:
    """How an estimate name from metrics.json reads in a table; `auroc_<class>` is that class's one-vs-rest AUROC."""
    lowered = name.lower()
    if kind != "binary" and lowered in HEADLINE_ALIASES["auroc"]:
        return MACRO_AUROC
    if lowered.startswith("auroc_"):
        return f"AUROC, {name[len('auroc_') :]} vs rest"
    return DISPLAY_NAMES.get(lowered, name)


def find_estimate(estimates: Sequence[Estimate], quantity: str) -> Estimate | None:
    """The estimate for a headline quantity, whatever alias the evaluation used; None when it is not reported."""
    names = HEADLINE_ALIASES.get(quantity, (quantity.lower(),))
    for estimate in estimates:
        if estimate.name.lower() in names:
            return estimate
    return None


def evaluation(metrics: Metrics, evaluated_on: str) -> Evaluation | None:
    return next((e for e in metrics.evaluations if e.evaluated_on == evaluated_on), None)


def headline_evaluation(metrics: Metrics) -> Evaluation:
    """The locked test set when it was evaluated (it was scored once, after everything was frozen), else OOF."""
    return evaluation(metrics, "test") or metrics.evaluations[0]


@dataclass(frozen=True)
class Cell:
    """One estimate ready to print; `key` is the data-metric prefix, e.g. "test.sensitivity"."""

    key: str
    label: str
    value: str
    ci_low: str
    ci_high: str
    method: str
    n: str
    reported: bool
    interval: bool = True  # False: a count-based or fixed value (a threshold, a recall from the confusion matrix)
    detail: str = ""  # printed after the value when there is no interval, e.g. "8 of 10"


def cell(prefix: str, estimate: Estimate | None, label: str) -> Cell:
    if estimate is None:
        return Cell(f"{prefix}.{label.lower()}", label, MISSING, MISSING, MISSING, "", "", False)
    return Cell(
        key=f"{prefix}.{estimate.name}",
        label=label,
        value=fmt(estimate.value),
        ci_low=fmt(estimate.ci_low),
        ci_high=fmt(estimate.ci_high),
        method=estimate.ci_method or "no interval reported",
        n="" if estimate.n is None else str(estimate.n),
        reported=True,
    )


def headline_cells(ev: Evaluation) -> list[Cell]:
    return [
        cell(ev.evaluated_on, find_estimate(ev.estimates, quantity), HEADLINE_LABELS[quantity])
        for quantity in HEADLINE_ALIASES
    ]


def plain_cell(key: str, label: str, value: float | None, detail: str = "", digits: int = 3) -> Cell:
    """A value printed without an interval: a frozen threshold, or a proportion read off the confusion matrix."""
    text = fmt(value, digits)
    return Cell(key, label, text, MISSING, MISSING, "", "", value is not None, interval=False, detail=detail)


def all_cells(ev: Evaluation) -> list[Cell]:
    return [cell(ev.evaluated_on, e, display_name(e.name, ev.task_kind)) for e in ev.estimates]


@dataclass(frozen=True)
class Verdict:
    level: str  # "well calibrated", "some miscalibration", "poorly calibrated", "not assessed"
    detail: str  # the numbers the words rest on, and their direction

    @property
    def sentence(self) -> str:
        return f"{self.level[:1].upper()}{self.level[1:]}" + (f" ({self.detail})" if self.detail else "")


def _level(ece: float | None, slope: float | None, intercept: float | None) -> str:
    slope_off = None if slope is None else abs(slope - 1)
    intercept_off = None if intercept is None else abs(intercept)
    if (
        (ece is not None and ece >= POOR_ECE)
        or (slope_off is not None and slope_off >= POOR_SLOPE)
        or (intercept_off is not None and intercept_off >= POOR_INTERCEPT)
    ):
        return "poorly calibrated"
    if (
        ece is not None
        and ece < WELL_ECE
        and (slope_off is None or slope_off < WELL_SLOPE)
        and (intercept_off is None or intercept_off < WELL_INTERCEPT)
    ):
        return "well calibrated"
    return "some miscalibration" if ece is not None else "not assessed"


def _directions(slope: float | None, intercept: float | None) -> list[str]:
    words = []
    if slope is not None and slope < 1 - WELL_SLOPE:
        words.append("overconfident: predicted risks too extreme")
    if slope is not None and slope > 1 + WELL_SLOPE:
        words.append("underconfident: predicted risks too cautious")
    if intercept is not None and intercept <= -WELL_INTERCEPT:
        words.append("overestimates risk overall")
    if intercept is not None and intercept >= WELL_INTERCEPT:
        words.append("underestimates risk overall")
    return words


def judge(values: Mapping[str, float | None]) -> Verdict:
    """Words for one set of calibration numbers (keys ece, slope, intercept as in metrics.json)."""
    ece, slope, intercept = values.get("ece"), values.get("slope"), values.get("intercept")
    level = _level(ece, slope, intercept)
    numbers = [
        f"{name} {fmt(v, 2 if name != 'ECE' else 3)}"
        for name, v in (("slope", slope), ("intercept", intercept), ("ECE", ece))
        if v is not None
    ]
    return Verdict(level, "; ".join([", ".join(numbers), *_directions(slope, intercept)]).strip("; "))


def calibration_verdict(metrics: Metrics) -> tuple[str, Evaluation | None]:
    """One line for page one, from the headline evaluation (falling back to OOF when the test set has none)."""
    head = headline_evaluation(metrics)
    source = head if head.calibration is not None else next((e for e in metrics.evaluations if e.calibration), None)
    if source is None or source.calibration is None:
        return "Calibration was not assessed.", None
    cal: Calibration = source.calibration
    where = f"{EVALUATION_LABELS[source.evaluated_on].lower()}, {source.n_patients} patients"
    line = f"{judge(cal.model_dump()).sentence} — {where}."
    if cal.after_scaling:
        line += f" After temperature scaling (T = {fmt(cal.temperature, 2)}): {judge(cal.after_scaling).sentence}."
    if source.n_patients < ROUGH_BELOW_PATIENTS:
        line += f" Fewer than {ROUGH_BELOW_PATIENTS} patients: treat this verdict as rough."
    return line, source


@dataclass(frozen=True)
class ArmRow:
    arm: str
    label: str
    strategy: str
    pretrained: str
    auc: Cell
    epochs: str
    seconds: str
    folds: str
    reading: str
    fold_seconds: str = MISSING


def _fold_seconds(arm: TransferArm) -> str:
    """The fold's fitting time; for the features arm also the one extraction that every fold shares."""
    if arm.seconds_per_fold is None:
        return MISSING
    text = fmt(arm.seconds_per_fold, 2 if arm.seconds_per_fold < 1 else 1)
    if arm.feature_seconds is not None:
        text += f" (+ {fmt(arm.feature_seconds, 1)} once, extracting features)"
    return text


def _compare(arm: TransferArm, scratch: TransferArm | None) -> str:
    """Descriptive comparison of interval bounds: overlap is reported as such, never as 'no difference'."""
    if scratch is None or arm is scratch:
        return "reference arm" if arm is scratch else "no from-scratch arm to compare with"
    a, s = arm.auc, scratch.auc
    if None in (a.ci_low, a.ci_high, s.ci_low, s.ci_high):
        return "cannot compare: an interval is missing"
    if a.ci_low > s.ci_high:  # type: ignore[operator]
        return "higher AUROC than from scratch (95% intervals do not overlap)"
    if a.ci_high < s.ci_low:  # type: ignore[operator]
        return "lower AUROC than from scratch (95% intervals do not overlap)"
    return "not clearly different from scratch (95% intervals overlap)"


def transfer_rows(metrics: Metrics, folds_per_arm: Mapping[str, int]) -> list[ArmRow]:
    scratch = next((arm for arm in metrics.transfer if arm.arm == "scratch"), None)
    rows = []
    for arm in metrics.transfer:
        total = folds_per_arm.get(arm.arm)
        if arm is scratch:
            rows.append(
                ArmRow(
                    arm.arm,
                    ARM_LABELS["scratch"],
                    arm.strategy,
                    arm.pretrained,
                    cell("transfer.scratch", arm.auc, "AUROC"),
                    "—",
                    "—",
                    "—",
                    "reference arm",
                    _fold_seconds(arm),
                )
            )
            continue
        if arm.arm == "features":  # no epochs: the regression is solved, not trained by steps
            rows.append(
                ArmRow(
                    arm.arm,
                    ARM_LABELS["features"],
                    arm.strategy,
                    arm.pretrained,
                    cell("transfer.features", arm.auc, "AUROC"),
                    "— (no epochs)",
                    "—",
                    "—",
                    _compare(arm, scratch),
                    _fold_seconds(arm),
                )
            )
            continue
        rows.append(
            ArmRow(
                arm=arm.arm,
                label=ARM_LABELS.get(arm.arm, arm.arm),
                strategy=arm.strategy,
                pretrained=arm.pretrained,
                auc=cell(f"transfer.{arm.arm}", arm.auc, "AUROC"),
                epochs="never reached" if arm.epochs_to_scratch_best is None else fmt(arm.epochs_to_scratch_best, 1),
                seconds="never reached" if arm.seconds_to_scratch_best is None else fmt(arm.seconds_to_scratch_best, 1),
                folds=f"{arm.folds_reaching_scratch_best}" + (f" of {total}" if total else ""),
                reading=_compare(arm, scratch),
                fold_seconds=_fold_seconds(arm),
            )
        )
    return rows
