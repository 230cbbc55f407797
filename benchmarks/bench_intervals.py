"""Patient-bootstrap confidence intervals: medtl's metrics against the loop a user would write with scikit-learn.

`medtl evaluate` puts a 95% patient-bootstrap interval (2,000 resamples) on every AUROC and threshold metric, for
the whole test set, every subgroup and every cut of a graded task. medtl computes each resample from how often it
drew each patient (medtl/evaluation/metrics.py: counts for the proportions, a weighted Mann-Whitney count for
AUROC); the baseline draws the same patients with the same seed, gathers each resample's rows, calls sklearn's
`roc_auc_score` and computes each proportion (sensitivity, specificity, PPV, NPV, balanced accuracy), and the
paired AUROC difference of two models on the same resamples (`medtl compare`'s interval). The bounds
must agree to 1e-12 (the run stops otherwise); the time ratio is the median over interleaved rounds, with min and
max.

    python benchmarks/bench_intervals.py --rounds 3 --out benchmarks/results/intervals.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from reporting import machine, spread, write_report

from medtl.evaluation.metrics import auroc_ci, threshold_metrics
from medtl.evaluation.paired import paired_interval, summary_auroc_statistic

CASES = {"150_patients_1_scan": (150, 1), "300_patients_2_scans": (300, 2), "1000_patients_3_scans": (1000, 3)}
N_BOOT = 2000
METRICS = ("auroc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "auroc_difference")


def _cohort(patients: int, scans: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Patients, targets, and two models' scores (the second one a little better: `medtl compare`'s pair)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(rng.permutation(patients), scans)
    targets = np.repeat(rng.random(patients) < 0.3, scans)
    scores = np.round(np.clip(targets * 0.3 + rng.random(len(groups)), 0, 1), 2)  # rounded: tied scores
    challenger = np.round(np.clip(targets * 0.35 + rng.random(len(groups)), 0, 1), 2)
    return groups, targets, scores, challenger


def _baseline(
    groups: np.ndarray, targets: np.ndarray, scores: np.ndarray, challenger: np.ndarray, threshold: float
) -> dict[str, list]:
    """Resample patients, gather their rows, compute each metric: the textbook loop. With one scan per patient,
    medtl gives the four proportions Wilson intervals (no resampling), so only the rest are compared and timed."""
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    rng = np.random.default_rng(0)
    predicted = scores >= threshold
    one_scan_each = len(unique) == len(groups)
    values: dict[str, list] = {name: [] for name in METRICS}
    for _ in range(N_BOOT):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(unique), size=len(unique))])
        y, p = targets[rows], predicted[rows]
        for name, (hits, of) in ({} if one_scan_each else {
            "sensitivity": (p & y, y), "specificity": (~p & ~y, ~y), "ppv": (p & y, p), "npv": (~p & ~y, ~p),
        }).items():  # fmt: skip
            if of.sum():
                values[name].append(hits.sum() / of.sum())
        if 0 < y.sum() < len(y):
            values["auroc"].append(roc_auc_score(y, scores[rows]))
            values["auroc_difference"].append(roc_auc_score(y, challenger[rows]) - values["auroc"][-1])
            values["balanced_accuracy"].append(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)
    return {name: np.quantile(v, [0.025, 0.975]).tolist() for name, v in values.items() if v}


def _medtl(
    groups: np.ndarray, targets: np.ndarray, scores: np.ndarray, challenger: np.ndarray, threshold: float
) -> dict[str, list]:
    auroc = auroc_ci(targets, scores, groups, n_boot=N_BOOT)
    statistic = summary_auroc_statistic("binary", ["neg", "pos"], "pos", None, targets.astype(int))
    as_probabilities = [np.stack([1 - s, s], axis=1) for s in (scores, challenger)]
    paired = paired_interval(statistic, statistic, *as_probabilities, groups, n_boot=N_BOOT).difference
    by_name = {e.name: e for e in threshold_metrics(targets, scores, threshold, groups)}
    return {
        "auroc": [auroc.low, auroc.high],
        **{name: [by_name[name].ci_low, by_name[name].ci_high] for name in METRICS[1:-1]},
        "auroc_difference": [paired.low, paired.high],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/intervals.json"))
    args = parser.parse_args()
    results = {}
    for case, (patients, scans) in CASES.items():
        groups, targets, scores, challenger = _cohort(patients, scans)
        threshold = float(np.median(scores))
        seconds: dict[str, list[float]] = {"medtl": [], "baseline": []}
        bounds = {}
        for _ in range(args.rounds):  # interleaved: a noisy minute hits both arms alike
            for arm, run in (("medtl", _medtl), ("baseline", _baseline)):
                started = time.perf_counter()
                bounds[arm] = run(groups, targets, scores, challenger, threshold)
                seconds[arm].append(time.perf_counter() - started)
        compared = bounds["baseline"].keys()
        difference = max(
            abs(a - b)
            for name in compared
            for a, b in zip(bounds["medtl"][name], bounds["baseline"][name], strict=True)
        )
        if difference > 1e-12:
            raise SystemExit(f"{case}: medtl's bounds differ from the baseline's by {difference}")
        ratios = [b / m for m, b in zip(seconds["medtl"], seconds["baseline"], strict=True)]
        results[case] = {
            "patients": patients,
            "scans_per_patient": scans,
            "bounds": bounds["medtl"],
            "largest_bound_difference": difference,
            "seconds": {arm: spread(v) for arm, v in seconds.items()},
            "speedup": spread(ratios),
        }
        print(f"{case}: {statistics.median(ratios):.0f}x faster ({min(ratios):.0f}-{max(ratios):.0f}), bounds equal")
    report = {
        "benchmark": "intervals",
        "machine": machine(),
        "n_boot": N_BOOT,
        "metrics": list(METRICS),
        "rounds": args.rounds,
        "cases": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
