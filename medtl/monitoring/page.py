"""monitor.html: one self-contained page (inline PNGs, no scripts, nothing fetched) with a time series of every
monitored quantity, the training reference drawn beside it, and the alert nights shaded.

Only aggregate numbers reach the page (counts, shares, medians, rates, test results): no scan, series or patient
id. Figures use the report's fixed style and carry no PNG metadata (medtl.reporting.plots.figure_png).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from medtl.contracts.ingest import GroupStats
from medtl.contracts.monitoring import Check, MonitorStatus, NightStatus
from medtl.monitoring.reference import Reference
from medtl.reporting.html import data_uri
from medtl.reporting.plots import PALETTE, figure_png

ALERT_COLOUR = "#D55E00"
_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; }
.status-ok { color: #009E73; font-weight: bold; } .status-alert { color: #D55E00; font-weight: bold; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
tr.alert td { background: #fde3d5; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


def render_page(status: MonitorStatus, reference: Reference) -> str:
    nights = status.nights
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Monitoring: {_e(status.model_id)} {_e(status.model_version)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Monitoring of scheduled scoring: {_e(status.model_id)} {_e(status.model_version)}</h1>",
        f"<p class='meta'>artifact {status.artifact_hash[:16]}… · generated {_e(status.generated_at)} · "
        f"{len(nights)} night(s) · training reference: {status.reference_scans} out-of-fold scans"
        + ("" if status.approved else " · <b>UNAPPROVED artifact: provisional thresholds</b>")
        + ("" if status.trusted else " · <b>UNTRUSTED artifact: development only</b>")
        + "</p>",
        f"<p>Latest night <b>{_e(status.latest_night or 'none')}</b>: "
        f"<span class='status-{_e(status.status)}'>{_e(status.status.upper())}</span></p>",
        _method(status),
    ]
    if nights:
        parts += [_figure(title, png) for title, png in figures(nights, reference)]
        parts.append(_alert_table(nights))
        parts.append(_checks_table(nights[-1]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _method(status: MonitorStatus) -> str:
    s = status.settings
    return (
        "<p>Each night (from "
        f"{s.night_starts_hour:02d}:00 UTC to the same hour the next day) is compared with the training reference the "
        f"artifact carries and with the {s.window} earlier nights that did not alert (once they hold "
        f"{s.min_window_scans} scans). Exact or conservative tests; the night's checks together are Holm-adjusted at "
        f"alpha {s.alpha:g}, and an alert also needs a minimum effect: a change of {s.min_share_change:.0%} in a share "
        f"or rate, a Kolmogorov-Smirnov distance of {s.min_ks:g}, or {s.min_band_excess:.0%} more scans beyond a "
        "training quantile than it allows. Shaded: nights that alerted.</p>"
    )


def figures(nights: Sequence[NightStatus], reference: Reference) -> list[tuple[str, bytes]]:
    labels = [n.night for n in nights]
    alerts = [i for i, n in enumerate(nights) if n.status == "alert"]
    summaries = [n.summary for n in nights]
    out = [("Scans per night", _series(labels, alerts, {"scans": [s.n_scans for s in summaries]}))]
    for name, attribute in (("Modality mix", "modalities"), ("Manufacturer mix", "manufacturers")):
        shares = _shares([getattr(s, attribute) for s in summaries])
        if shares:
            out.append((name + " (share of the night's scans)", _series(labels, alerts, shares, percent=True)))
    group = _dominant_group(reference)
    for name, attribute in (("Spacing (median, mm)", "spacing"), ("Shape (median, voxels)", "shape")):
        medians = [getattr(s, f"{attribute}_median") for s in summaries]
        ndim = max((len(m) for m in medians), default=0)
        if ndim:
            series = {f"axis {a}": [m[a] if len(m) > a else np.nan for m in medians] for a in range(ndim)}
            ref = {f"axis {a}": getattr(group, attribute)[a].median for a in range(ndim)} if group else {}
            out.append((name + "; dashed: training median", _series(labels, alerts, series, ref)))
    intensity = [s.intensity_mean_median for s in summaries]
    if any(v is not None for v in intensity):
        series = {"scan mean intensity": [np.nan if v is None else v for v in intensity]}
        ref = {"scan mean intensity": group.intensity.mean} if group else {}
        out.append(
            ("Intensity (median of the scans' mean); dashed: training mean", _series(labels, alerts, series, ref))
        )
    rates = {f: [s.flag_rates.get(f, 0.0) for s in summaries] for f in (summaries[0].flag_rates if summaries else {})}
    rates = {f: v for f, v in rates.items() if any(v)}
    rates["abstained"] = [s.abstention_rate for s in summaries]
    out.append(("Flag and abstention rates", _series(labels, alerts, rates, percent=True)))
    for index, end in enumerate(reference.endpoints):
        eps = [s.endpoints[index] if len(s.endpoints) > index else None for s in summaries]
        median = [np.nan if e is None or e.score_median is None else e.score_median for e in eps]
        low = [np.nan if e is None or e.score_p10 is None else e.score_p10 for e in eps]
        high = [np.nan if e is None or e.score_p90 is None else e.score_p90 for e in eps]
        ref_scores = reference.scores.get(end, np.array([]))
        ref = {"median": float(np.median(ref_scores))} if len(ref_scores) else {}
        out.append((f"Scores, {end}: median and 10th-90th percentile; dashed: out-of-fold median",
                    _series(labels, alerts, {"median": median}, ref, band=(low, high))))  # fmt: skip
        rate = [np.nan if e is None or e.positive_rate is None else e.positive_rate for e in eps]
        k, n = reference.positives.get(end, (0, 0))
        ref_rate = {"positive rate": k / n} if n else {}
        out.append((f"Positive rate, {end}; dashed: out-of-fold rate at the scoring threshold",
                    _series(labels, alerts, {"positive rate": rate}, ref_rate, percent=True)))  # fmt: skip
    return out


def _series(
    labels: Sequence[str],
    alerts: Sequence[int],
    series: dict[str, Sequence[float]],
    reference: dict[str, float] | None = None,
    *,
    percent: bool = False,
    band: tuple[Sequence[float], Sequence[float]] | None = None,
) -> bytes:
    x = np.arange(len(labels))

    def draw(figure: Figure) -> None:
        ax = figure.add_subplot()
        for index in alerts:
            ax.axvspan(index - 0.5, index + 0.5, color=ALERT_COLOUR, alpha=0.18, linewidth=0)
        for number, (name, values) in enumerate(series.items()):
            colour = PALETTE[number % len(PALETTE)]
            y = np.asarray(values, dtype=float) * (100 if percent else 1)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, color=colour, label=name)
            if band is not None and number == 0:
                lo, hi = (np.asarray(b, dtype=float) * (100 if percent else 1) for b in band)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
            if reference and name in reference:
                ax.axhline(reference[name] * (100 if percent else 1), color=colour, linestyle="--", linewidth=1)
        step = max(1, len(labels) // 12)
        ax.set_xticks(x[::step], [labels[i] for i in range(0, len(labels), step)], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        if percent:
            ax.set_ylabel("%")
        if len(series) > 1 or band is not None:
            ax.legend(loc="upper left", ncols=min(4, len(series)))

    return figure_png(draw, (9.0, 2.6))


def _shares(counts: Sequence[dict[str, int]], top: int = 6) -> dict[str, list[float]]:
    totals: dict[str, int] = {}
    for night in counts:
        for name, count in night.items():
            totals[name] = totals.get(name, 0) + count
    names = sorted(totals, key=lambda n: (-totals[n], n))[:top]
    return {name: [night.get(name, 0) / max(1, sum(night.values())) for night in counts] for name in names}


def _dominant_group(reference: Reference) -> GroupStats | None:
    groups = [g for g in reference.groups if g.image_kind == reference.image_kind]
    return max(groups, key=lambda g: g.n_scans) if groups else None


def _figure(title: str, png: bytes) -> str:
    return f"<h3>{_e(title)}</h3><img alt='{_e(title)}' src='{data_uri(png)}'>"


def _alert_table(nights: Sequence[NightStatus]) -> str:
    rows = [_row(n.night, c) for n in reversed(nights) for c in n.checks if c.alert]
    if not rows:
        return "<h2>Alerts</h2><p>No night alerted.</p>"
    return "<h2>Alerts</h2><table>" + _header(("night",)) + "".join(rows) + "</table>"


def _checks_table(night: NightStatus) -> str:
    rows = [_row(None, c) for c in sorted(night.checks, key=lambda c: c.p_adjusted)]
    skipped = "".join(f"<li>{_e(s)}</li>" for s in night.skipped)
    return (
        f"<h2>Every check of the latest night ({_e(night.night)}, {night.summary.n_scans} scans)</h2>"
        + (f"<p>Left out:</p><ul>{skipped}</ul>" if skipped else "")
        + "<table>"
        + _header(())
        + "".join(rows)
        + "</table>"
    )


def _header(first: tuple[str, ...]) -> str:
    names = (*first, "quantity", "against", "test", "night", "reference", "effect (min)", "p", "p adjusted")
    return "<tr>" + "".join(f"<th>{name}</th>" for name in names) + "</tr>"


def _row(night: str | None, c: Check) -> str:
    cells = ([night] if night is not None else []) + [
        c.quantity, c.reference, c.test, c.value, c.expected, f"{c.effect:.3g} ({c.min_effect:g})",
        f"{c.p_value:.2g}", f"{c.p_adjusted:.2g}",
    ]  # fmt: skip
    css = " class='alert'" if c.alert else ""
    return f"<tr{css}>" + "".join(f"<td>{_e(str(v))}</td>" for v in cells) + "</tr>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
