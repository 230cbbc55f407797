"""Drift checks on simulated nights: false alarms stay within alpha over many nights, real shifts alert.

Everything runs on frames (tests/support/drift.py): no model, no files, a few seconds in all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from medtl.monitoring import stats
from medtl.monitoring.monitor import assess, default_settings
from medtl.monitoring.nights import Night
from support import drift

SETTINGS = default_settings()


def _history(seed: int, nights: int = 30, size: int = 50) -> tuple[drift.Reference, list[Night], list[str]]:
    rng = np.random.default_rng(seed)
    ref = drift.reference(rng)
    labels = drift.labels(nights + 1)
    return ref, [drift.night(rng, label, size) for label in labels[:-1]], labels


def _alerts(status) -> set[tuple[str, str]]:
    return {(c.quantity, c.reference) for c in status.checks if c.alert}


def test_false_alarm_rate_over_200_simulated_nights_stays_within_alpha():
    rng = np.random.default_rng(2026)
    ref = drift.reference(rng)
    nights = [drift.night(rng, label, int(rng.integers(5, 81))) for label in drift.labels(200)]
    assessed = assess(nights, ref, SETTINGS)
    alarms = sum(night.status == "alert" for night in assessed)
    # at most alpha per night: more than the 99.9th percentile of Binomial(200, alpha) would be a real excess
    assert alarms <= scipy_stats.binom.ppf(0.999, 200, SETTINGS.alpha)
    # and the checks really ran: both references, every kind of test, once the window had filled
    later = assessed[-1].checks
    assert {c.reference for c in later} == {"training", "window"}
    assert {c.test for c in later} == {"category_shares", "ks", "quantile_band", "rate_above", "two_rates"}
    assert len(later) > 25 and not assessed[-1].skipped


def test_small_nights_do_not_alarm_by_chance():
    rng = np.random.default_rng(7)
    ref = drift.reference(rng)
    assessed = assess([drift.night(rng, label, 3) for label in drift.labels(150)], ref, SETTINGS)
    assert sum(night.status == "alert" for night in assessed) <= scipy_stats.binom.ppf(0.999, 150, SETTINGS.alpha)
    assert all(night.checks for night in assessed)


def test_a_resampled_batch_from_the_same_distribution_does_not_alert():
    ref, nights, labels = _history(11)
    pool_scores = pd.concat([n.scores for n in nights], ignore_index=True)
    pool_inputs = pd.concat([n.inputs for n in nights], ignore_index=True)
    rows = np.random.default_rng(12).choice(len(pool_scores), size=120, replace=True)
    scores = pool_scores.iloc[rows].reset_index(drop=True).assign(scored_at=f"{labels[-1]}T23:00:00+00:00")
    resampled = Night(labels[-1], scores, pool_inputs.iloc[rows].reset_index(drop=True))
    latest = assess([*nights, resampled], ref, SETTINGS)[-1]
    assert latest.status == "ok" and not _alerts(latest)
    assert any(c.reference == "window" for c in latest.checks)


def test_shifted_intensities_alert_against_the_window():
    ref, nights, labels = _history(21)
    shifted = drift.night(np.random.default_rng(22), labels[-1], 50, drift.Shift(intensity=40.0))
    latest = assess([*nights, shifted], ref, SETTINGS)[-1]
    assert latest.status == "alert"
    assert ("intensity_p01", "window") in _alerts(latest)


def test_another_manufacturer_alerts_against_training_and_window():
    ref, nights, labels = _history(31)
    vendor = drift.night(np.random.default_rng(32), labels[-1], 40, drift.Shift(manufacturer="canon"))
    latest = assess([*nights, vendor], ref, SETTINGS)[-1]
    assert {("manufacturer", "training"), ("manufacturer", "window")} <= _alerts(latest)
    check = next(c for c in latest.checks if c.quantity == "manufacturer" and c.reference == "training")
    assert check.effect == pytest.approx(1.0) and "canon 100%" in check.value


def test_a_changed_positive_rate_alerts():
    ref, nights, labels = _history(41)
    sicker = drift.night(np.random.default_rng(42), labels[-1], 120, drift.Shift(prevalence=0.75))
    latest = assess([*nights, sicker], ref, SETTINGS)[-1]
    assert ("positive_rate:1", "training") in _alerts(latest)
    rate = next(c for c in latest.checks if c.quantity == "positive_rate:1" and c.reference == "training")
    assert rate.effect > 0.25 and rate.p_adjusted < SETTINGS.alpha


def test_another_slice_thickness_alerts_against_the_training_quantiles():
    ref, nights, labels = _history(51, nights=2, size=10)  # too few earlier scans for a window: training decides
    thin = drift.night(np.random.default_rng(52), labels[-1], 30, drift.Shift(slice_thickness=0.6))
    latest = assess([*nights, thin], ref, SETTINGS)[-1]
    assert ("spacing[2]", "training") in _alerts(latest)
    assert not any(c.reference == "window" for c in latest.checks) and latest.skipped


def test_a_huge_night_does_not_alert_on_a_trivial_shift():
    ref, nights, labels = _history(61)
    huge = drift.night(np.random.default_rng(62), labels[-1], 5000, drift.Shift(intensity=4.0))
    latest = assess([*nights, huge], ref, SETTINGS)[-1]
    p01 = next(c for c in latest.checks if c.quantity == "intensity_p01" and c.reference == "window")
    assert p01.p_adjusted < SETTINGS.alpha and p01.effect < SETTINGS.min_ks and not p01.alert
    assert latest.status == "ok"


def test_an_alerted_night_stays_out_of_later_windows():
    ref, nights, labels = _history(71, nights=20)
    rng = np.random.default_rng(72)
    extra = drift.labels(3, start=labels[-1])
    shifted = drift.night(rng, extra[0], 50, drift.Shift(intensity=60.0))
    after = drift.night(rng, extra[1], 50)
    assessed = assess([*nights, shifted, after], ref, SETTINGS)
    assert assessed[-2].status == "alert" and assessed[-1].status == "ok"
    window = next(c for c in assessed[-1].checks if c.quantity == "intensity_p01" and c.reference == "window")
    assert window.n_reference == sum(len(n.scores) for n in nights[-SETTINGS.window :])


def test_holm_and_the_quantile_band_follow_their_definitions():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    tied = stats.quantile_band([2.5] * 40, [1.0] * 40, [2.5] * 40, [5.0] * 40)  # every value on the median
    assert tied.p_value == 1.0 and tied.effect <= 0
    above = stats.quantile_band([9.0] * 10, [1.0] * 10, [2.5] * 10, [5.0] * 10)
    assert above.effect == pytest.approx(0.95) and above.p_value < 1e-6
