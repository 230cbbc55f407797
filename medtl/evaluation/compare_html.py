"""comparison.html: one short page a reviewer reads before signing a promotion (the numbers are comparison.json's)."""

from __future__ import annotations

from html import escape

from medtl.contracts.comparison import Comparison, PairedDifference

_VERDICT_TEXT = {
    "superior": "superior: the whole 95% CI of the difference is above 0",
    "non_inferior": "non-inferior: the whole 95% CI of the difference is above minus the margin",
    "inconclusive": "inconclusive: the 95% CI of the difference reaches below minus the margin; not shown non-inferior",
    "inferior": "inferior: the whole 95% CI of the difference is below minus the margin",
}


def _value(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _ci(low: float | None, high: float | None, signed: bool = False) -> str:
    return f"{_value(low, signed)} to {_value(high, signed)}"


def _row(d: PairedDifference) -> str:
    cells = [
        f"{escape(d.name)}<br><small>{escape(d.scope)}</small>",
        f"{_value(d.champion.value)} ({_ci(d.champion.ci_low, d.champion.ci_high)})",
        f"{_value(d.challenger.value)} ({_ci(d.challenger.ci_low, d.challenger.ci_high)})",
        f"<b>{_value(d.difference.value, True)}</b> ({_ci(d.difference.ci_low, d.difference.ci_high, True)})",
        escape((d.verdict or "reported only").replace("_", "-")),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def render_comparison(c: Comparison) -> str:
    a, b = c.champion, c.challenger
    untrusted = not (a.trusted and b.trusted)
    delong = (
        f"<p>DeLong's paired test (cross-check; treats scans as independent): difference "
        f"{_value(c.delong.difference, True)} (95% CI {_ci(c.delong.ci_low, c.delong.ci_high, True)}), "
        f"p {_p(c.delong.p_value)}.</p>"
        if c.delong is not None
        else ""
    )
    agreement = ""
    if c.agreement is not None:
        g = c.agreement
        agreement = (
            f"<p>Decisions ({escape(g.endpoint)}): both right on {g.both_correct} scans, both wrong on {g.both_wrong}; "
            f"only the champion right on {g.champion_only_correct}, only the challenger on "
            f"{g.challenger_only_correct} (exact McNemar p {_p(g.mcnemar_p)}).</p>"
        )
    thresholds = "".join(
        f"<li>{role}: {escape(x.model_id)} {escape(x.model_version)} ({escape(x.approval)}), artifact "
        f"<code>{x.artifact_manifest_hash[:16]}…</code>, thresholds "
        f"{escape(', '.join(f'{k} {v:.3f}' for k, v in x.thresholds.items()) or 'none (argmax)')}"
        f"{'' if x.thresholds_approved else ' (provisional: not approved)'}</li>"
        for role, x in (("Champion", a), ("Challenger", b))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Champion/challenger comparison</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}
.verdict{{font-size:1.2em;padding:.5em;border:2px solid {"#2a7" if c.proposed else "#c33"}}}</style></head><body>
<h1>Champion/challenger comparison</h1>
{"<p><b>UNTRUSTED</b>: an artifact was read without a trust anchor (development mode).</p>" if untrusted else ""}
<p class="verdict">Challenger: <b>{escape(_VERDICT_TEXT[c.verdict])}</b> (margin {c.margin:g} AUROC, declared before the
run). {"Proposed for sign-off." if c.proposed else "Not proposed: the model in service stays."}</p>
<ul>{thresholds}</ul>
<p>Locked test set <code>{c.test_manifest_hash[:16]}…</code>: {c.n_patients} patients, {c.n_scans} scans, scored by both
models; neither trained on any of them. Task: {escape(c.task.kind)}.</p>
<table><tr><th>statistic</th><th>champion (95% CI)</th><th>challenger (95% CI)</th>
<th>challenger − champion (95% CI)</th><th>verdict</th></tr>
{_row(c.auroc)}
{"".join(_row(d) for d in c.decisions)}
</table>
<p>Intervals: {escape(c.method)} ({c.n_boot} resamples of patients, seed {c.seed}); each model decides at its own
operating point.</p>
{delong}{agreement}
<ul>{"".join(f"<li>{escape(r)}</li>" for r in c.reasons)}</ul>
<p><small>medtl {escape(c.medtl_version)}, {escape(c.compared_at)}</small></p>
</body></html>
"""
