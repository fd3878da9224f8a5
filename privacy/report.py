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

from privacy.labels import hierarchy_levels, label, level_words, value_words

MAX_MARGINAL_PLOTS = 8
# Values that say nothing about a case: a column whose release shows only these carries no information.
EMPTY_VALUES = {"*", "(unknown)", "(other values)", ""}


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
    """Small multiples: share of each value, real data vs release, for `columns`. Horizontal bars
    so that long values (a combination of means of control) are read in full, wrapped."""
    import textwrap

    plt = _pyplot()
    n = max(len(columns), 1)
    cols = 2
    heights = [max(len(marginals[c]["values"]), 2) for c in columns] or [2]
    rows = (n + cols - 1) // cols
    per_row = [max(heights[i:i + cols]) for i in range(0, len(heights), cols)]
    fig, axes = plt.subplots(rows, cols, figsize=(11, sum(0.45 * h + 1.0 for h in per_row)), squeeze=False,
                             gridspec_kw={"height_ratios": per_row})
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, column in zip(axes.flat, columns):
        entry = marginals[column]
        flag = set(map(str, entry["values"])) <= {"0", "1", "(unknown)"}  # a yes/no column
        labels = ["\n".join(textwrap.wrap({"0": "no", "1": "yes"}.get(str(v), str(v)) if flag else value_words(str(v)), 34)[:3]) for v in entry["values"]]
        y = range(len(labels))
        if entry.get("real") is not None:  # absent from a published release (see publishable_metrics)
            ax.barh([i - 0.2 for i in y], entry["real"], height=0.4, label="real data", color="#4c72b0")
            ax.barh([i + 0.2 for i in y], entry["release"], height=0.4, label="release", color="#dd8452")
        else:
            ax.barh(list(y), entry["release"], height=0.6, label="release", color="#dd8452")
        ax.set_title("\n".join(textwrap.wrap(label(column), 48)), fontsize=9)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of records")
    axes.flat[0].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)


def plot_detail(detail: list[tuple[str, Mapping[str, Any]]]) -> str:
    """The information-loss figure of a full-row release: per column, the shares of rows as
    recorded, coarser, and hidden, as one stacked bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(detail) + 1.1))
    names = [label(c) for c, _ in detail]
    left = [0.0] * len(detail)
    for key, words, color in (("full", "as recorded (finest level published)", "#55a868"), ("coarser", "coarser", "#dd8452"), ("suppressed", "hidden (*)", "#9a9a9a")):
        shares = [float(d.get(key, 0) or 0) for _, d in detail]
        ax.barh(range(len(detail)), shares, left=left, color=color, label=words, height=0.7)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_yticks(range(len(detail)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of published rows")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
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
    labels = sorted(histogram, key=lambda b: (int(b.split("-")[0].rstrip("+")) if b.split("-")[0].rstrip("+").isdigit() else 0, b))
    ax.bar(range(len(labels)), [histogram[label] for label in labels], color="#8172b2")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("records sharing one combination of quasi-identifiers" + (f" (floor: {threshold})" if threshold else ""))
    ax.set_ylabel("groups")
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _figure_png(fig)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float) -> str:
    return f"{100 * float(value):.1f}%"


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def carries_information(entry: Mapping[str, Any]) -> bool:
    """False for a column whose release shows one value only, or only hidden/unknown/pooled ones:
    a chart of it would show nothing."""
    values = [str(v) for v, share in zip(entry.get("values") or [], entry.get("release") or []) if share]
    return len(values) > 1 and any(v not in EMPTY_VALUES for v in values)


def synthetic_utility_problems(privacy: Mapping[str, Any]) -> list[str]:
    """Why a synthetic release is of poor use, in words, decided from what privacy.json publishes
    (never from the real cases): identifying traits hidden entirely, many synthetic records removed to
    reach the resolution, or many columns that carry no information."""
    problems: list[str] = []
    hidden = sorted(c for c, b in (privacy.get("binning") or {}).items() if isinstance(b, Mapping) and b.get("level_name") == "*")
    if hidden:
        problems.append(f"{', '.join(label(c) for c in hidden)} had to be hidden entirely (every value is *)")
    synthesized = privacy.get("records_synthesized") or 0
    removed = privacy.get("records_removed_below_resolution") or 0
    if synthesized and removed / synthesized >= 0.2:
        problems.append(f"{_pct(removed / synthesized)} of the synthetic records were removed because their combinations were too rare")
    marginals = (privacy.get("metrics") or {}).get("marginals") or {}
    constant = set(privacy.get("constant_columns") or [])
    columns = [c for c in marginals if c not in constant]
    empty = [c for c in columns if not carries_information(marginals[c])]
    if columns and len(empty) * 3 >= len(columns):
        problems.append(f"{len(empty)} of {len(columns)} columns carry no information (one value only, or only unknown, pooled or hidden values)")
    return problems


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
        problems = synthetic_utility_problems(privacy)
        verdict = (
            "This release is of <b>poor use</b> for analysis: " + "; ".join(_e(p) for p in problems) + ". Even totals and broad "
            "patterns may be wrong; with more cases, fewer columns or a larger epsilon a release keeps more."
            if problems else "Totals and broad patterns are reliable; exact small counts are not."
        )
        lost = (
            "<p>Because every count was made noisy, small groups (a rare nationality, an unusual combination of traits) are "
            "shown less accurately than large ones, some rare combinations disappear and a few combinations appear that never "
            f"occurred in the real cases (fabricated). {verdict} No count should be quoted as a fact about real people.</p>"
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
        lost = _full_row_lost(privacy)
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


def _vp_section(privacy: Mapping[str, Any]) -> str:
    """The victim-perpetrator table's own section: what it holds, how it is counted (per victim),
    its columns with their detail, and its privacy numbers; from privacy.json's `victim_perpetrator`
    entry, which is computed from the table's published rows and the settings only. Empty when the
    release has no such table."""
    vp = privacy.get("victim_perpetrator")
    if not isinstance(vp, Mapping):
        return ""
    rows = vp.get("records_out")
    holds = (
        f"<p><b>What it holds.</b> <code>{_e(vp.get('file'))}</code> has one row per perpetrator of a victim ({_e(rows)} rows): the "
        "victim's columns (those it shares with the victim table, and the regions of the victim's citizenship and of the country of "
        "exploitation) next to the perpetrator's: roles in the trafficking process, gender, age band, region of citizenship (never "
        "the country), relationship to the victim, and whether money was paid or received for the victim. A victim with three "
        "perpetrators has three rows. There is no victim number: a row is linked to its victim by the columns the two tables "
        "share.</p>"
    )
    columns: list[tuple[str, str, str]] = []  # (column, of whom, detail in words)
    if privacy.get("method") == "synthetic":
        eps, m = vp.get("epsilon"), vp.get("max_perpetrators_per_victim")
        per_row = vp.get("epsilon_per_row")
        counted = (
            f"<p><b>How it is counted: per victim.</b> Like the victim table, every row is artificial. It was made by the same "
            f"program from noisy counts of the victim and perpetrator traits of the real victims' perpetrators, with its own share "
            f"of the release's privacy loss: <b>epsilon = {_e(eps)}</b> of the release's {_e(privacy.get('epsilon'))}. As one victim "
            f"has several rows, the privacy loss is counted per victim, not per row: at most {_e(m)} perpetrators of each victim "
            f"were read and each row was given epsilon {_e(_short(per_row))}, so that all of one victim's rows together change what "
            f"can be learned by at most {_e(eps)}. A row was kept only when its victim columns are those of some victim of the "
            f"synthetic victim table, so the two tables can be joined on them; every combination of up to "
            f"{_e(vp.get('reporting_length'))} values, and of the identifying traits, appears at least {_e(vp.get('resolution'))} "
            f"times. No row describes a real perpetrator.</p>"
        )
        binning = vp.get("binning") or {}
        link = list(vp.get("link_columns") or [])
        for column in [*link, *(vp.get("perpetrator_columns") or [])]:
            spec = binning.get(column)
            if isinstance(spec, Mapping):
                words = _cap(level_words(str(spec.get("hierarchy", "")), str(spec.get("level_name"))))
            elif column in (vp.get("constant_columns") or []):
                words = "the same in every row"
            elif column in (vp.get("derived_columns") or []):
                words = "derived from the row's other columns"
            else:
                words = "as drawn (not grouped)"
            columns.append((column, "victim" if column in link else "perpetrator", words))
        numbers = [
            ("rows", rows),
            ("epsilon of this table (counted per victim)", eps),
            ("delta of this table", f"{float(vp.get('delta', 0)):.3g}"),
            ("perpetrators read per victim, at most", m),
            ("epsilon per row", _short(per_row)),
            ("combination length preserved", vp.get("reporting_length")),
            ("smallest allowed group (resolution)", vp.get("resolution")),
        ]
    else:
        k = privacy.get("k")
        counted = (
            f"<p><b>How it is counted: per victim.</b> The rows are real perpetrators of real victims, with their details made less "
            f"precise. The guarantee counts victims, not rows: everything published about a victim, in either table and joined "
            f"across the two on the columns they share, is shared by at least <b>k = {_e(k)}</b> victims. Perpetrators' citizenship "
            f"is shown as a region, never a country, and their age as a band; where their details would single a victim out, only "
            f"their roles (and relationship to the victim) are shown, or none of them (<code>*</code>). A victim whose perpetrators "
            f"could not be shown at all has no row here.</p>"
        )
        detail = vp.get("detail") or {}
        for column in [c for c in vp.get("columns") or [] if c in detail]:  # privacy.json's keys are sorted: the list keeps the order
            d = detail[column]
            if not isinstance(d, Mapping):
                continue
            parts = [f"as recorded in {_pct(d.get('full', 0))}"]
            if d.get("coarser"):
                parts.append(f"coarser in {_pct(d['coarser'])}")
            if d.get("suppressed"):
                parts.append(f"hidden (*) in {_pct(d['suppressed'])}")
            columns.append((column, str(d.get("of", "victim")), _cap(", ".join(parts)) + " of its rows"))
        numbers = [
            ("rows", rows),
            ("k (counted per victim, across both tables)", k),
            ("smallest group of identical rows", vp.get("smallest_group", "-")),
        ]
    body = "".join(f"<tr><td>{_e(label(c))} <small><code>{_e(c)}</code></small></td><td>{_e(of)}</td><td>{_e(words)}</td></tr>" for c, of, words in columns)
    table = f"<h3>Its columns and their detail</h3><table><tr><th>column</th><th>of the</th><th>detail</th></tr>{body}</table>" if columns else ""
    return (f'<section id="victim-perpetrator"><h2>The victim-perpetrator table</h2>{holds}{counted}{table}'
            f"<h3>Its privacy numbers</h3>{_table(numbers)}</section>")


def _short(value: Any) -> str:
    return f"{float(value):.4g}" if isinstance(value, (int, float)) else "-"


def _detail_rows(privacy: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """`detail` in the order of importance (privacy.json is written with sorted keys)."""
    detail = privacy.get("detail") or {}
    importance = [c for c in privacy.get("importance") or [] if c in detail]
    order = importance + sorted(c for c in detail if c not in importance)
    return [(c, detail[c]) for c in order if isinstance(detail[c], Mapping)]


def _full_row_lost(privacy: Mapping[str, Any]) -> str:
    """Each column coarsened or hidden, named, with how often; then the table."""
    rows = _detail_rows(privacy)
    facts = privacy.get("facts") or {}
    named = []
    for column, d in rows:
        coarser, hidden = float(d.get("coarser", 0) or 0), float(d.get("suppressed", 0) or 0)
        if coarser or hidden:
            how = [f"hidden (*) in {_pct(hidden)} of rows" if hidden else "", f"coarser than recorded in {_pct(coarser)}" if coarser else ""]
            members = [c for c in facts.get(column) or [] if c != column]
            also = f" (with its {len(members)} yes/no columns)" if len(members) > 1 else ""
            named.append(f"<li><b>{_e(label(column))}</b>{_e(also)}: {_e(', '.join(h for h in how if h))}</li>")
    kept = [label(c) for c, d in rows if not float(d.get("coarser", 0) or 0) and not float(d.get("suppressed", 0) or 0)]
    text = "<p>Nothing was invented and no case was changed: each value is either as recorded, a coarser group of it, or hidden (<code>*</code>).</p>"
    if named:
        text += "<p>Columns made coarser or hidden to reach k:</p><ul>" + "".join(named) + "</ul>"
    if kept:
        text += f"<p>Kept as recorded (at the finest level published) in every row: {_e(', '.join(kept))}.</p>"
    text += (
        "<p>Cases recorded since the last part, and corrections, wait until enough of them can be published "
        "together; the partner's own tools show how many are waiting.</p>"
    )
    return text


def _detail_table(privacy: Mapping[str, Any]) -> str:
    return (
        "<table><tr><th>column</th><th>as recorded (finest level published)</th><th>coarser</th><th>hidden (*)</th></tr>"
        + "".join(
            f"<tr><td>{_e(label(c))} <small><code>{_e(c)}</code></small></td><td>{_pct(d.get('full', 0))}</td><td>{_pct(d.get('coarser', 0))}</td><td>{_pct(d.get('suppressed', 0))}</td></tr>"
            for c, d in _detail_rows(privacy)
        )
        + "</table>"
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _levels_html(privacy: Mapping[str, Any]) -> str:
    """Each identifying trait's level of detail in words, with the coarser levels it may show."""
    method = privacy.get("method")
    items: list[tuple[str, str]] = []
    if method == "synthetic":
        for column, b in sorted((privacy.get("binning") or {}).items()):
            if isinstance(b, Mapping):
                items.append((column, _cap(level_words(str(b.get('hierarchy', '')), str(b.get('level_name'))))))
    elif privacy.get("guarantee") == "full_row":
        hierarchies = privacy.get("hierarchies") or {}
        for column, finest in sorted((privacy.get("finest_levels") or {}).items()):
            name = str(hierarchies.get(column, ""))
            levels = hierarchy_levels(name)
            finest_name = (privacy.get("finest_level_names") or {}).get(column) or (levels[finest] if finest < len(levels) else "?")
            coarser = [level_words(name, n) for n in levels[int(finest) + 1:]] if levels else [level_words(name, "*")]
            items.append((column, f"at best {level_words(name, str(finest_name))}; where needed, coarser: " + "; or ".join(coarser)))
    else:
        for column, level_name in sorted((privacy.get("level_names") or {}).items()):
            items.append((column, _cap(level_words(str((privacy.get('hierarchies') or {}).get(column, column)), str(level_name)))))
    if not items:
        return ""
    body = "".join(f"<tr><th>{_e(label(c))} <small><code>{_e(c)}</code></small></th><td>{_e(words)}</td></tr>" for c, words in items)
    return f"<h3>Level of detail of identifying traits</h3><table>{body}</table>"


def render_report(privacy: Mapping[str, Any], *, partner: str = "") -> bytes:
    """The report page as UTF-8 bytes, from a privacy record holding `metrics` (privacy.metrics.compare)."""
    metrics = privacy.get("metrics") or {}
    method = privacy.get("method", "unknown")
    how, lost = _story(privacy)
    combos = (metrics.get("combinations") or {}).get("by_length") or []
    distances = metrics.get("distances") or {}
    risk = metrics.get("risk") or {}
    marginals = metrics.get("marginals") or {}

    # (id, caption, explanation, png): the caption and what to read in the figure stand above it
    figures: list[tuple[str, str, str, str]] = []
    with_real = any(entry.get("real") is not None for entry in marginals.values())
    if privacy.get("guarantee") == "full_row" and privacy.get("detail"):
        figures.append(("information-loss", "What was lost, column by column (share of published rows)",
                        "Each bar is one column of the release, most important first. Green: rows showing the value as recorded "
                        "(at the finest level published); orange: rows showing a coarser group of it (a wider age band, a region); "
                        "grey: rows where it is hidden (*). The more green, the less was lost.",
                        plot_detail(_detail_rows(privacy))))
    if marginals:
        informative = [c for c in marginals if carries_information(marginals[c]) or (marginals[c].get("real") is not None and with_real)]
        qis = [c for c in (privacy.get("importance") or risk.get("quasi_identifiers", [])) if c in informative]
        worst = sorted((c for c in informative if c not in qis), key=lambda c: (-(distances.get("marginals") or {}).get(c, 0.0), c))
        shown = (qis + worst)[:MAX_MARGINAL_PLOTS]
        silent = sorted(label(c) for c in marginals if c not in informative)
        if with_real and privacy.get("guarantee") == "full_row":
            title = "Real data before generalization and the release, side by side (share of records per value)"
            explain = ("Blue: the real cases at the finest level this release may show; orange: the release. Where orange is "
                       "shorter than blue the value was made coarser or hidden (*) in some rows: that is the information lost.")
        elif with_real:
            title = "Real data and release side by side (share of records per value)"
            explain = "Blue: the real cases; orange: the release. The closer the bars, the better the release keeps that column."
        else:
            title = "The release (share of records per value)"
            explain = "Each bar is the share of released records with that value; (unknown) is a blank, (other values) pools rare values."
        if silent:
            explain += f" Not shown, as they carry no information in this release: {', '.join(silent)}."
        if shown:
            figures.append(("marginals", title, explain, plot_marginals(marginals, shown)))
    if combos:
        figures.append(("combination-error", "How well counts of trait combinations are kept",
                        "For combinations of 1, 2, 3 ... columns: red, the average relative error of their counts; green, the share "
                        "of real combinations that still appear. Low red and high green are good.", plot_combination_error(combos)))
    histogram = risk.get("class_size_histogram") or {}
    if histogram:
        figures.append(("class-sizes", "Group sizes on identifying traits",
                         "How many groups of records share one combination of identifying traits, by the size of the group. "
                         "No group is smaller than the floor: a larger group hides each person better.",
                         plot_class_sizes(histogram, risk.get("threshold"))))

    numbers: list[tuple[str, Any]] = [("method", method)]
    if privacy.get("records_in") is not None:
        numbers.append(("records in the real data", privacy.get("records_in")))
    numbers.append(("records released", privacy.get("records_out")))
    if method == "synthetic":
        budget = privacy.get("budget") or {}
        numbers += [
            ("epsilon (privacy loss of this release)", privacy.get("epsilon")),
            *([("epsilon of each table: victims / victim-perpetrator", f"{privacy['epsilon_parts'].get('victims')} / {privacy['epsilon_parts'].get('victim_perpetrator')}")]
              if isinstance(privacy.get("epsilon_parts"), Mapping) else []),
            ("delta (chance the epsilon bound fails)", f"{float(privacy.get('delta', 0)):.3g}"),
            ("combination length preserved", privacy.get("reporting_length")),
            ("smallest allowed group (resolution)", privacy.get("resolution")),
            ("privacy budget: total / spent before / left after", f"{budget.get('total')} / {budget.get('spent_before')} / {budget.get('left_after')}"),
            ("synthetic records removed to reach the resolution", privacy.get("records_removed_below_resolution")),
        ]
    elif privacy.get("guarantee") == "full_row":
        both = privacy.get("year_and_country_full")
        numbers += [
            ("k (every published row occurs at least this many times)", privacy.get("k")),
            ("rows with year of registration and country of exploitation both in full", _pct(both) if isinstance(both, (int, float)) else "-"),
            ("smallest group of identical rows", privacy.get("smallest_group")),
            ("parts of the series (rows per part)", ", ".join(f"{label}: {n}" for label, n in (privacy.get("parts") or {}).items())),
        ]
    else:
        loss = privacy.get("information_loss") or {}
        numbers += [
            ("k (smallest group)", privacy.get("k")),
            ("records left out", privacy.get("records_suppressed")),
            ("information loss (0 = none, 1 = all)", f"{float(loss.get('loss', 0)):.3f}"),
        ]
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
    else:
        combos_html = ""
    if with_real or combos:
        note = (
            "The comparison figures come from the real data and are rounded (shares to 1%, values with fewer records than "
            "the smallest allowed group pooled). This is a local preview: a published release carries none of them."
        )
    else:
        note = (
            "Every figure here is computed from the release itself. Comparisons with the real cases are not published, as they "
            "would describe the cases that were withheld (and a synthetic release's epsilon does not cover them): the partner "
            "sees them in its local preview report."
        )
    figure_html = "".join(
        f'<figure id="{_e(fid)}"><figcaption>{_e(caption)}</figcaption><p class="explain">{_e(explain)}</p>'
        f'<img alt="{_e(caption)}" src="data:image/png;base64,{png}"></figure>'
        for fid, caption, explain, png in figures if fid != "information-loss"
    )
    loss_figure = "".join(
        f'<figure id="{_e(fid)}"><figcaption>{_e(caption)}</figcaption><p class="explain">{_e(explain)}</p>'
        f'<img alt="{_e(caption)}" src="data:image/png;base64,{png}"></figure>'
        for fid, caption, explain, png in figures if fid == "information-loss"
    )
    detail_table = _detail_table(privacy) if privacy.get("guarantee") == "full_row" and privacy.get("detail") else ""
    first = ""
    if method == "synthetic":
        problems = synthetic_utility_problems(privacy)
        first = (
            f'<p class="warn"><b>Poor utility.</b> This synthetic release is of poor use for analysis: {_e("; ".join(problems))}. '
            "Read its figures as rough indications at best.</p>" if problems else
            '<p class="summary">A synthetic release: totals and broad patterns are reliable; exact small counts are not.</p>'
        )
    title = f"Privacy and utility report{(' - ' + partner) if partner else ''}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
figure{{margin:1.5em 0}}figcaption{{font-weight:bold;margin-bottom:.3em}}img{{max-width:100%}}.note,.explain{{color:#555;font-size:.9em}}
.warn{{border-left:4px solid #a31515;padding:.4em .8em;background:#fdf1f1}}small code{{color:#666}}</style></head>
<body>
<h1>{_e(title)}</h1>
{first}
<h2>What was protected, and how</h2>
{how}
<h2>What was lost</h2>
{lost}
{detail_table}
{loss_figure}
<h2>The numbers</h2>
{_table(numbers)}
{_levels_html(privacy)}
{combos_html}
{figure_html}
{_vp_section(privacy)}
<p class="note">{_e(note)}</p>
</body></html>
"""
    return page.encode("utf-8")


__all__ = ["render_report"]
