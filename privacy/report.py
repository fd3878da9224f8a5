"""report.html: what a release protected, how, and what it cost, for a programme officer.

Why a separate, self-contained page: the central team and the partner's managers decide whether a
release is fit to use without reading JSON. So the page says in plain words first what was protected
and how, then what was lost, then the numbers, with the plots inline (matplotlib, Agg backend,
base64 PNG) so the file can be mailed or archived alone.

It is rendered from the privacy record only (`privacy.json`, metrics included), so it shows nothing
that privacy.json does not, and it is deterministic: the same record gives the same bytes (no
timestamps; PNG metadata fixed), which lets it sit among the bundle's content-addressed files.

    html = render_report(release.privacy, partner="ngo-athens")
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from typing import Any

MAX_MARGINAL_PLOTS = 8


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None}, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "htcds", "font.size": 9})
    return plt


def plot_marginals(marginals: Mapping[str, Any], columns: list[str]) -> str:
    """Small multiples: share of each value, real data vs release, for `columns`."""
    plt = _pyplot()
    n = max(len(columns), 1)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, column in zip(axes.flat, columns):
        entry = marginals[column]
        labels = [str(v)[:18] for v in entry["values"]]
        x = range(len(labels))
        if entry.get("real") is not None:  # absent from a published synthetic release (see publishable_metrics)
            ax.bar([i - 0.2 for i in x], entry["real"], width=0.4, label="real data", color="#4c72b0")
        ax.bar([i + 0.2 for i in x], entry["release"], width=0.4, label="release", color="#dd8452")
        ax.set_title(column)
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_ylabel("share of records")
    axes.flat[0].legend(loc="upper right")
    fig.tight_layout()
    return _figure_png(fig)


def plot_combination_error(by_length: list[Mapping[str, Any]]) -> str:
    """Mean relative error and share of real combinations kept, by combination length."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    lengths = [str(row["length"]) for row in by_length]
    x = range(len(lengths))
    ax.bar([i - 0.2 for i in x], [row["mean_relative_error"] for row in by_length], width=0.4, label="mean relative error", color="#c44e52")
    ax.bar([i + 0.2 for i in x], [row["preserved_share"] for row in by_length], width=0.4, label="share of real combinations kept", color="#55a868")
    ax.set_xticks(list(x))
    ax.set_xticklabels(lengths)
    ax.set_xlabel("number of columns combined")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _figure_png(fig)


def plot_class_sizes(histogram: Mapping[str, int], threshold: int | None) -> str:
    """How many groups of records share each quasi-identifier combination, by group size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = list(histogram)
    ax.bar(range(len(labels)), [histogram[label] for label in labels], color="#8172b2")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("records sharing one combination of quasi-identifiers" + (f" (floor: {threshold})" if threshold else ""))
    ax.set_ylabel("groups")
    fig.tight_layout()
    return _figure_png(fig)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float) -> str:
    return f"{100 * float(value):.1f}%"


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _story(privacy: Mapping[str, Any]) -> tuple[str, str]:
    """(how it was protected, what was lost) in plain words."""
    method = privacy.get("method")
    metrics = privacy.get("metrics") or {}
    risk = metrics.get("risk") or {}
    dropped = privacy.get("columns_dropped") or []
    n_in, n_out = privacy.get("records_in"), privacy.get("records_out")
    dropped_text = (
        f" Names, contact details, identity numbers and free-text notes never leave the partner ({len(dropped)} such columns were left out)."
        if dropped
        else " The release has no names, contact details, identity numbers or free-text notes."
    )
    if method == "synthetic":
        eps, floor = privacy.get("epsilon"), privacy.get("resolution")
        how = (
            f"<p>This release contains <b>no real case</b>. A computer program (pac-synth, from Microsoft's Synthetic Data "
            f"Showcase) counted how often traits occur together in the {_e(n_in) + ' ' if n_in is not None else ''}real cases, added random noise to every count, "
            f"and then made up {_e(n_out)} artificial cases that follow those noisy counts. The noise is set by a privacy loss of "
            f"<b>epsilon = {_e(eps)}</b> (differential privacy): whether or not any one person's case was in the data changes what "
            f"can be learned from this release by at most that small, provable amount. Smaller epsilon means more noise and more privacy.</p>"
            f"<p>Traits that could help recognise someone (year of registration, gender, age, citizenship, country of exploitation) "
            f"were also grouped so that every combination of them appears at least <b>{_e(floor)}</b> times.{dropped_text}</p>"
        )
        lost = (
            "<p>Because every count was made noisy, small groups (a rare nationality, an unusual combination of traits) are "
            "shown less accurately than large ones, some rare combinations disappear and a few combinations appear that never "
            "occurred in the real cases (fabricated). Totals and broad patterns are reliable; exact small counts are not, and "
            "should not be quoted as facts about real people.</p>"
        )
    elif privacy.get("guarantee") == "full_row":
        k = privacy.get("k")
        detail = privacy.get("detail") or {}
        parts = privacy.get("parts") or {}
        how = (
            f"<p><b>Who this protects against.</b> We assume the person looking for a victim in this release knows "
            f"everything the release could show about them: their trafficker knows when and where they were exploited, how they "
            f"were recruited and controlled, their age, gender and nationality. We also assume they hold every earlier release "
            f"and the central team's combined table, and can compare them. They want to learn whether the person is in the data "
            f"and anything not already known about them.</p>"
            f"<p><b>What is guaranteed.</b> Every row of this release, read across <i>all</i> its columns, is exactly the same as "
            f"at least <b>k = {_e(k)}</b> rows (k-anonymity over every published column). Someone who knows a victim's whole "
            f"story therefore finds either no matching row or at least {_e(k)}, and cannot tell which of them, if any, is the "
            f"victim. To reach this, details were made less precise (an age band instead of a finer one, a region instead of "
            f"a country) or hidden (shown as <code>*</code>) row by row, keeping first the details that matter most to the "
            f"central team: year of registration, country of exploitation and age band.{dropped_text}</p>"
            f"<p><b>Releases over time.</b> The release is made of {len(parts)} frozen part(s); new cases are published only in "
            f"new parts of at least k cases, each protected on its own, and a part with a corrected or deleted case is "
            f"withdrawn whole. Comparing this release with an earlier one shows whole parts added or removed, never one case.</p>"
        )
        order = [c for c in privacy.get("importance") or [] if c in detail] + sorted(c for c in detail if c not in (privacy.get("importance") or []))
        kept = [(c, detail[c]) for c in order if isinstance(detail[c], Mapping)]  # privacy.json is written with sorted keys
        lost = (
            "<p>Nothing was invented and no case was changed: each value is either as recorded, a coarser group of it, or "
            "hidden (<code>*</code>). How much of each kind of detail this release keeps (shares of its rows):</p>"
            "<table><tr><th>column</th><th>as recorded (finest level published)</th><th>coarser</th><th>hidden (*)</th></tr>"
            + "".join(
                f"<tr><td>{_e(c)}</td><td>{_pct(d.get('full', 0))}</td><td>{_pct(d.get('coarser', 0))}</td><td>{_pct(d.get('suppressed', 0))}</td></tr>"
                for c, d in kept
            )
            + "</table><p>Cases recorded since the last part, and corrections, wait until enough of them can be published "
            "together; the partner's own tools show how many are waiting.</p>"
        )
        vp = privacy.get("victim_perpetrator")
        if isinstance(vp, Mapping):
            how += (
                f"<p><b>The victim-perpetrator table</b> (<code>{_e(vp.get('file'))}</code>, {_e(vp.get('records_out'))} rows: one per "
                f"perpetrator of a victim whose perpetrators could be shown) is counted per victim, not per row: everything "
                f"published about a victim, in either table and joined across the two, is shared by at least k = {_e(k)} victims. "
                f"Perpetrators' citizenship is shown as a region, never a country, and their age as a band; where their details "
                f"would single a victim out, only their roles (and relationship to the victim) are shown, or none of them.</p>"
            )
        return how, lost
    else:
        k = privacy.get("k")
        how = (
            f"<p>This release contains the real cases with the traits that could help recognise someone made less precise "
            f"(for example exact ages replaced by age bands, countries by regions) until every combination of those traits is "
            f"shared by at least <b>k = {_e(k)}</b> cases (k-anonymity). Cases that could not be hidden in such a group were left "
            f"out.{dropped_text}</p>"
        )
        removed = privacy.get("records_suppressed", 0)
        lost = (
            f"<p>{_e(removed)} of {_e(n_in)} cases were left out because they were too unusual to hide, and the grouped traits "
            f"are coarser than recorded (levels below). Everything else is exactly as recorded.</p>"
        )
    if risk:
        how += f"<p>Check: the smallest group of records sharing all identifying traits has <b>{_e(risk.get('smallest_class'))}</b> records."
        if "unique_match_share" in risk:  # a comparison with the real cases: only in the local preview
            how += (
                f" {_pct(risk.get('unique_match_share', 0))} of released records look like a real case that is unique on those traits, "
                f"against {_pct(risk.get('unique_match_chance', 0))} for records drawn at random trait by trait."
            )
        how += "</p>"
    return how, lost


def render_report(privacy: Mapping[str, Any], *, partner: str = "") -> bytes:
    """The report page as UTF-8 bytes, from a privacy record holding `metrics` (privacy.metrics.compare)."""
    metrics = privacy.get("metrics") or {}
    method = privacy.get("method", "unknown")
    how, lost = _story(privacy)
    combos = (metrics.get("combinations") or {}).get("by_length") or []
    distances = metrics.get("distances") or {}
    risk = metrics.get("risk") or {}
    marginals = metrics.get("marginals") or {}

    figures: list[tuple[str, str, str]] = []
    if marginals:
        qis = [c for c in risk.get("quasi_identifiers", []) if c in marginals]
        worst = sorted((c for c in marginals if c not in qis), key=lambda c: (-(distances.get("marginals") or {}).get(c, 0.0), c))
        shown = (qis + worst)[:MAX_MARGINAL_PLOTS]
        with_real = any(entry.get("real") is not None for entry in marginals.values())
        title = "Real data and release side by side (share of records per value)" if with_real else "The release (share of records per value)"
        figures.append(("marginals", title, plot_marginals(marginals, shown)))
    if combos:
        figures.append(("combination-error", "How well counts of trait combinations are kept", plot_combination_error(combos)))
    histogram = risk.get("class_size_histogram") or {}
    if histogram:
        figures.append(("class-sizes", "Group sizes on identifying traits", plot_class_sizes(histogram, risk.get("threshold"))))

    numbers: list[tuple[str, Any]] = [("method", method)]
    if privacy.get("records_in") is not None:
        numbers.append(("records in the real data", privacy.get("records_in")))
    numbers.append(("records released", privacy.get("records_out")))
    if method == "synthetic":
        budget = privacy.get("budget") or {}
        numbers += [
            ("epsilon (privacy loss of this release)", privacy.get("epsilon")),
            ("delta (chance the epsilon bound fails)", f"{float(privacy.get('delta', 0)):.3g}"),
            ("combination length preserved", privacy.get("reporting_length")),
            ("smallest allowed group (resolution)", privacy.get("resolution")),
            ("privacy budget: total / spent before / left after", f"{budget.get('total')} / {budget.get('spent_before')} / {budget.get('left_after')}"),
            ("synthetic records removed to reach the resolution", privacy.get("records_removed_below_resolution")),
        ]
        levels = {c: b.get("level_name") for c, b in (privacy.get("binning") or {}).items()}
    elif privacy.get("guarantee") == "full_row":
        both = privacy.get("year_and_country_full")
        numbers += [
            ("k (every published row occurs at least this many times)", privacy.get("k")),
            ("rows with year of registration and country of exploitation both in full", _pct(both) if isinstance(both, (int, float)) else "-"),
            ("smallest group of identical rows", privacy.get("smallest_group")),
            ("parts of the series (rows per part)", ", ".join(f"{label}: {n}" for label, n in (privacy.get("parts") or {}).items())),
        ]
        levels = {c: f"up to {v}" for c, v in (privacy.get("finest_level_names") or {}).items()}
    else:
        loss = privacy.get("information_loss") or {}
        numbers += [
            ("k (smallest group)", privacy.get("k")),
            ("records left out", privacy.get("records_suppressed")),
            ("information loss (0 = none, 1 = all)", f"{float(loss.get('loss', 0)):.3f}"),
        ]
        levels = dict(privacy.get("level_names") or {})
    if distances:  # comparisons with the real cases: only in the local preview
        numbers += [
            ("distribution difference per column, mean / worst (total variation distance, 0 = identical)", f"{distances.get('marginal_mean')} / {distances.get('marginal_max')}"),
            (f"distribution difference per pair of columns, mean / worst ({distances.get('pairs_measured')} of {distances.get('pairs_total')} pairs)", f"{distances.get('pair_mean')} / {distances.get('pair_max')}"),
        ]
    combo_rows = "".join(
        f"<tr><td>{_e(r['length'])}</td><td>{_e(r['real_combinations'] if r.get('real_combinations') is not None else '(not published)')}</td><td>{_pct(r['preserved_share'])}</td>"
        f"<td>{_e(r['fabricated'])}</td><td>{_e(r['mean_relative_error'])}</td></tr>"
        for r in combos
    )
    sampled = " (a sample of column sets was measured)" if (metrics.get("combinations") or {}).get("sampled") else ""
    if combos:
        combos_html = (
            f"<h3>Counts of trait combinations{_e(sampled)}</h3>"
            "<table><tr><th>traits combined</th><th>combinations in real data</th><th>kept in release</th><th>fabricated</th>"
            f"<th>mean relative error</th></tr>{combo_rows}</table>"
        )
        note = (
            "The comparison figures come from the real data and are rounded (shares to 1%, values with fewer records than "
            "the smallest allowed group pooled). This is a local preview: a published release carries none of them."
        )
    else:
        combos_html = ""
        note = (
            "Every figure here is computed from the release itself. Comparisons with the real cases are not published, as they "
            "would describe the cases that were withheld (and a synthetic release's epsilon does not cover them): the partner "
            "sees them in its local preview report."
        )
    figure_html = "".join(
        f'<figure id="{_e(fid)}"><img alt="{_e(title)}" src="data:image/png;base64,{png}"><figcaption>{_e(title)}</figcaption></figure>'
        for fid, title, png in figures
    )
    title = f"Privacy and utility report{(' - ' + partner) if partner else ''}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
figure{{margin:1.5em 0}}img{{max-width:100%}}.note{{color:#555;font-size:.9em}}</style></head>
<body>
<h1>{_e(title)}</h1>
<h2>What was protected, and how</h2>
{how}
<h2>What was lost</h2>
{lost}
<h2>The numbers</h2>
{_table(numbers)}
<h3>Level of detail of identifying traits</h3>
{_table(sorted(levels.items()))}
{combos_html}
{figure_html}
<p class="note">{_e(note)}</p>
</body></html>
"""
    return page.encode("utf-8")


__all__ = ["render_report"]
