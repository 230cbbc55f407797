"""The statistical tests behind every check, each with an exact or conservative p-value.

Why these tests: nights can be small (a handful of scans), so every p-value must hold at any size, or small nights
would alarm by chance. Rates and category shares use exact tests (Fisher, binomial); distributions use the
two-sample Kolmogorov-Smirnov test (exact for small samples, conservative with ties); where the training reference
is known only by quantiles (the fingerprint's p05 / median / p95) the shares beyond them are tested against what
the quantiles promise. A test that combines several sub-tests pays for them (Bonferroni), and one night's checks
together are adjusted by Holm, so that a night of undrifted data alarms with probability at most alpha.

Why scipy and no drift library: the tests needed are a handful of scipy calls, and the references are unusual (the
artifact's quantiles, a feature-outlier rule's tolerated rate); evidently, nannyml and alibi-detect would each add a
large dependency tree to an air-gapped install for the same KS and chi-square tests, without exact small-sample
p-values or one family-wise correction across the mixed tests of a night.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# The shares a quantile promises at most: P(X < p05) <= 0.05, P(X > median) <= 0.5, ... (ties only lower them).
BAND = (("below p05", 0.05), ("above p95", 0.05), ("below median", 0.5), ("above median", 0.5))


@dataclass(frozen=True)
class Outcome:
    """What one test found: its statistic, p-value and effect size, with a few words for a person."""

    statistic: float
    p_value: float
    effect: float
    value: str
    expected: str


def shares_text(counts: Mapping[str, int], *, top: int = 4) -> str:
    total = sum(counts.values())
    if not total:
        return "none"
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return ", ".join(f"{name} {count / total:.0%}" for name, count in ordered)


def category_shares(night: Mapping[str, int], reference: Mapping[str, int]) -> Outcome:
    """Each category's share in the night against the reference's (Fisher's exact test per category, Bonferroni
    over the categories); the effect is the total variation distance between the two mixes."""
    n, m = sum(night.values()), sum(reference.values())
    names = sorted(set(night) | set(reference))
    p_values, differences = [], []
    for name in names:
        a, b = int(night.get(name, 0)), int(reference.get(name, 0))
        p_values.append(float(stats.fisher_exact([[a, n - a], [b, m - b]]).pvalue))
        differences.append(a / n - b / m)
    p = min(1.0, min(p_values) * len(names)) if names else 1.0
    effect = 0.5 * float(np.abs(differences).sum()) if names else 0.0
    largest = float(max(np.abs(differences))) if names else 0.0
    return Outcome(largest, p, effect, shares_text(night), shares_text(reference))


def two_sample_ks(night: Sequence[float], reference: Sequence[float]) -> Outcome:
    x, y = np.asarray(night, dtype=float), np.asarray(reference, dtype=float)
    result = stats.ks_2samp(x, y)
    return Outcome(float(result.statistic), float(result.pvalue), float(result.statistic), _quartiles(x), _quartiles(y))


def quantile_band(
    values: Sequence[float], p05: Sequence[float], median: Sequence[float], p95: Sequence[float]
) -> Outcome:
    """Shares of the night's values beyond the reference's quantiles (each value with its own reference, as scans of
    several modalities have their own), one-sided binomial tests against the shares the quantiles allow."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    counts = (
        int((x < np.asarray(p05)).sum()),
        int((x > np.asarray(p95)).sum()),
        int((x < np.asarray(median)).sum()),
        int((x > np.asarray(median)).sum()),
    )
    shares = [share for _, share in BAND]
    pairs = zip(counts, shares, strict=True)
    p_values = [float(stats.binomtest(k, n, s, alternative="greater").pvalue) for k, s in pairs]
    excess = [k / n - s for k, s in zip(counts, shares, strict=True)]
    worst = int(np.argmax(excess))
    value = f"{counts[worst] / n:.0%} {BAND[worst][0]}; median {np.median(x):.4g}"
    expected = f"at most {BAND[worst][1]:.0%} {BAND[worst][0]}; median {float(np.median(median)):.4g}"
    return Outcome(float(excess[worst]), min(1.0, 4 * min(p_values)), float(excess[worst]), value, expected)


def rate_above(k: int, n: int, tolerated: float) -> Outcome:
    """Is the rate above what the reference tolerates (one-sided exact binomial test)?"""
    p = float(stats.binomtest(k, n, tolerated, alternative="greater").pvalue)
    return Outcome(k / n, p, k / n - tolerated, f"{k}/{n} ({k / n:.1%})", f"at most {tolerated:.1%}")


def two_rates(k: int, n: int, k_ref: int, n_ref: int) -> Outcome:
    """Two rates, two-sided (Fisher's exact test); the effect is the absolute difference."""
    p = float(stats.fisher_exact([[k, n - k], [k_ref, n_ref - k_ref]]).pvalue)
    difference = k / n - k_ref / n_ref
    return Outcome(difference, p, abs(difference), f"{k}/{n} ({k / n:.1%})", f"{k_ref}/{n_ref} ({k_ref / n_ref:.1%})")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: reject where adjusted < alpha keeps the family-wise error at alpha."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted.tolist()


def _quartiles(x: np.ndarray) -> str:
    if not len(x):
        return "none"
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return f"median {q2:.4g} (IQR {q1:.4g}-{q3:.4g}, n {len(x)})"
