"""One night's checks: against the training reference and against the trailing window, adjusted together.

Why both references: the training reference says whether the night still looks like what was validated (a new
scanner vendor, a protocol with another slice thickness, a case mix with many more positives); the window says
whether tonight differs from the recent weeks (an abrupt change the training comparison, with its wider tolerance,
may not yet show). Every check of a night enters one Holm adjustment at `alpha`, so an undrifted night alarms with
probability at most alpha however many checks there are; an alert also needs a minimum effect, so a very large
night does not alarm on a shift too small to matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtl.contracts.monitoring import Check, CheckReference, CheckTest, MonitorSettingsRecord
from medtl.monitoring import quantities as q
from medtl.monitoring import stats
from medtl.monitoring.nights import Night
from medtl.monitoring.reference import Reference


@dataclass(frozen=True)
class _Pending:
    quantity: str
    reference: CheckReference
    test: CheckTest
    outcome: stats.Outcome
    n: int
    n_reference: int


def night_checks(
    night: Night, window: Night | None, reference: Reference, settings: MonitorSettingsRecord
) -> tuple[list[Check], list[str]]:
    """Every check of NIGHT (window None: too few earlier scans), Holm-adjusted; plus what was left out and why."""
    skipped: list[str] = []
    pending = _against_training(night, reference, skipped)
    if window is None:
        skipped.append(f"window: fewer than {settings.min_window_scans} scans in the earlier nights")
    else:
        pending += _against_window(night, window, reference)
    adjusted = stats.holm([p.outcome.p_value for p in pending])
    checks = []
    for item, p_adjusted in zip(pending, adjusted, strict=True):
        minimum = _min_effect(item.test, settings)
        checks.append(
            Check(
                quantity=item.quantity,
                reference=item.reference,
                test=item.test,
                statistic=_finite(item.outcome.statistic),
                p_value=item.outcome.p_value,
                p_adjusted=p_adjusted,
                effect=_finite(item.outcome.effect),
                min_effect=minimum,
                n=item.n,
                n_reference=item.n_reference,
                value=item.outcome.value,
                expected=item.outcome.expected,
                alert=p_adjusted < settings.alpha and item.outcome.effect >= minimum,
            )
        )
    return checks, skipped


def _min_effect(test: CheckTest, settings: MonitorSettingsRecord) -> float:
    if test == "ks":
        return settings.min_ks
    if test == "quantile_band":
        return settings.min_band_excess
    return settings.min_share_change


def _against_training(night: Night, ref: Reference, skipped: list[str]) -> list[_Pending]:
    out: list[_Pending] = []
    inputs, scores = night.inputs, night.scores
    if len(inputs):
        modalities = q.categories(inputs, "modality")
        out.append(_item("modality", "training", "category_shares", stats.category_shares(modalities, ref.modalities),
                         len(inputs), sum(ref.modalities.values())))  # fmt: skip
        if ref.manufacturers:
            makers = q.categories(inputs, "manufacturer")
            out.append(_item("manufacturer", "training", "category_shares",
                             stats.category_shares(makers, ref.manufacturers), len(inputs),
                             sum(ref.manufacturers.values())))  # fmt: skip
        else:
            skipped.append("manufacturer vs training: the training predictions name no manufacturer")
        out += _bands(inputs, ref)
    else:
        skipped.append("inputs: scoring recorded no input statistics for this night's scans")
    n = len(scores)
    for flag in q.OOD_FLAGS:
        tolerated = ref.flag_tolerance.get(flag)
        if tolerated is not None and n:
            out.append(_item(f"flag:{flag}", "training", "rate_above",
                             stats.rate_above(q.flag_count(scores, flag), n, tolerated), n, ref.n))  # fmt: skip
    for index, end in enumerate(ref.endpoints):
        values, reference_values = q.endpoint_scores(scores, index), ref.scores.get(end, np.array([]))
        if len(values) and len(reference_values):
            out.append(_item(f"score:{end}", "training", "ks", stats.two_sample_ks(values, reference_values),
                             len(values), len(reference_values)))  # fmt: skip
        k, decided = q.endpoint_decisions(scores, index)
        if decided and end in ref.positives:
            k_ref, n_ref = ref.positives[end]
            out.append(_item(f"positive_rate:{end}", "training", "two_rates", stats.two_rates(k, decided, k_ref, n_ref),
                             decided, n_ref))  # fmt: skip
    return out


def _bands(inputs: pd.DataFrame, ref: Reference) -> list[_Pending]:
    """Spacing and shape per axis against the fingerprint's p05 / median / p95 of each scan's own group; scans of
    another kind than the model's (2D images for a 3D model) are kind_mismatch flags, not spacing samples."""
    out = []
    mine = inputs[inputs["image_kind"] == ref.image_kind]
    for column in ("spacing", "shape"):
        rows = []
        for modality, values in zip(mine["modality"], mine[column], strict=True):
            group = ref.group_for(ref.image_kind, str(modality))
            stats_of = getattr(group, column) if group is not None else None
            if stats_of is not None and len(stats_of) == len(values):
                rows.append((values, stats_of))
        if not rows:
            continue
        for axis in range(len(rows[0][0])):
            values = [float(v[axis]) for v, _ in rows]
            p05 = [s[axis].p05 for _, s in rows]
            median = [s[axis].median for _, s in rows]
            p95 = [s[axis].p95 for _, s in rows]
            band = stats.quantile_band(values, p05, median, p95)
            n_ref = sum(g.n_scans for g in ref.groups)
            out.append(_item(f"{column}[{axis}]", "training", "quantile_band", band, len(values), n_ref))
    return out


def _against_window(night: Night, window: Night, ref: Reference) -> list[_Pending]:
    out: list[_Pending] = []
    a, b = night.inputs, window.inputs
    if len(a) and len(b):
        for column in ("modality", "manufacturer"):
            shares = stats.category_shares(q.categories(a, column), q.categories(b, column))
            out.append(_item(column, "window", "category_shares", shares, len(a), len(b)))
        ndim = q.dimensions(a, ref.image_kind)
        if ndim is not None and ndim == q.dimensions(b, ref.image_kind):
            for column in ("spacing", "shape"):
                for axis in range(ndim):
                    out += _ks(f"{column}[{axis}]", q.axis_values(a, column, axis, ndim),
                               q.axis_values(b, column, axis, ndim))  # fmt: skip
        for column in q.INTENSITY:
            out += _ks(column, a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float))
    s, w = night.scores, window.scores
    if len(s) and len(w):
        for flag in q.MONITORED_FLAGS:
            rates = stats.two_rates(q.flag_count(s, flag), len(s), q.flag_count(w, flag), len(w))
            out.append(_item(f"flag:{flag}", "window", "two_rates", rates, len(s), len(w)))
        out.append(_item("abstention", "window", "two_rates",
                         stats.two_rates(q.abstained(s), len(s), q.abstained(w), len(w)), len(s), len(w)))  # fmt: skip
    for index, end in enumerate(ref.endpoints):
        out += _ks(f"score:{end}", q.endpoint_scores(s, index), q.endpoint_scores(w, index))
        k, n = q.endpoint_decisions(s, index)
        k_ref, n_ref = q.endpoint_decisions(w, index)
        if n and n_ref:
            out.append(
                _item(f"positive_rate:{end}", "window", "two_rates", stats.two_rates(k, n, k_ref, n_ref), n, n_ref)
            )
    return out


def _ks(quantity: str, night: np.ndarray, window: np.ndarray) -> list[_Pending]:
    if not len(night) or not len(window):
        return []
    return [_item(quantity, "window", "ks", stats.two_sample_ks(night, window), len(night), len(window))]


def _item(
    quantity: str, reference: CheckReference, test: CheckTest, outcome: stats.Outcome, n: int, n_ref: int
) -> _Pending:
    return _Pending(quantity, reference, test, outcome, int(n), int(n_ref))


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0
