"""The central team's page: partners, their releases, status, the privacy summary, links.

Server-rendered HTML with every value escaped and no script, so it works behind any proxy and
under a strict Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from html import escape
from typing import Any

# Fits a 1,280 px window: the page never scrolls sideways (long ids and links wrap inside cells).
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1200px;padding:0 1rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1rem 0;max-width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}td code{overflow-wrap:anywhere}
th{background:#f3f3f3}.ok{color:#176317}.bad{color:#a31515}code{font-size:.85em}small{color:#666}
.bar{display:flex;width:12rem;height:.8rem;border:1px solid #bbb}.bar span{display:block;height:100%}
.full{background:#55a868}.coarser{background:#dd8452}.hidden{background:#9a9a9a}td.num{text-align:right;white-space:nowrap}
"""
STALE_DAYS = 8  # no schedule is known to the receiver: a partner silent this long is marked


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _levels(privacy: dict[str, Any], labels: Mapping[str, str] | None = None) -> str:
    if privacy.get("guarantee") == "full_row":  # rows keep their own detail, down to these levels
        names = privacy.get("finest_level_names") or {}
        return "<br>".join(f"{_e((labels or {}).get(c, c))}: up to {_e(v)}" for c, v in names.items()) or "-"
    names = privacy.get("level_names") or {}
    levels = privacy.get("levels") or {}
    return ", ".join(f"{_e(c)}: {_e(names.get(c, levels.get(c)))}" for c in levels) or "-"


def _pct(value: object) -> str:
    return f"{100 * float(value):.0f}%" if isinstance(value, (int, float)) else "-"


LOGIN_TEXT = (
    "Log in with your browser's sign-in box: any user name, and the central team's admin token as the password "
    "(the token printed by <code>htcds-connector central add-partner --admin</code>). Programs send "
    "<code>Authorization: Bearer &lt;token&gt;</code> instead. Partner tokens upload releases; they cannot open this page."
)


def render_login(hint: str = "") -> str:
    """The 401 page a browser shows when it has no (or a wrong) token: how to log in."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Log in - HTCDS central repository</title>"
        f"<style>{_STYLE}</style></head><body><h1>HTCDS central repository</h1>"
        f"<h2>Log in</h2><p>{LOGIN_TEXT}</p>"
        + (f"<p class=bad>{_e(hint)}.</p>" if hint else "")
        + "<p>Reload this page to be asked again. Lost the token? The central team creates a new one on the server with "
        "<code>htcds-connector central add-partner --data-dir DIR --admin</code>.</p></body></html>"
    )


def _age(then: str | None, now: datetime | None) -> tuple[str, float | None]:
    """'3 days ago' and the age in days, from an ISO time."""
    if not then or now is None:
        return "", None
    try:
        days = (now - datetime.fromisoformat(then)).total_seconds() / 86400
    except ValueError:
        return "", None
    if days < 1 / 24:
        return "less than an hour ago", days
    if days < 1:
        return f"{int(days * 24)} hour(s) ago", days
    return f"{int(days)} day(s) ago", days


def _bar(d: Mapping[str, Any]) -> str:
    widths = [(key, css, float(d.get(key, 0) or 0)) for key, css in (("full", "full"), ("coarser", "coarser"), ("suppressed", "hidden"))]
    return "<div class=bar>" + "".join(f"<span class={css} style='width:{100 * w:.1f}%'></span>" for _, css, w in widths if w > 0) + "</div>"


def _detail_words(d: Mapping[str, Any]) -> str:
    return f"{_pct(d.get('full', 0))} as recorded, {_pct(d.get('coarser', 0))} coarser, {_pct(d.get('suppressed', 0))} hidden"


def _finest_by_partner(column: str, releases: list[Mapping[str, Any]], privacy_of: Mapping[str, Mapping[str, Any]]) -> str:
    """When partners publish a column down to different levels: each partner's finest level in words."""
    from privacy.labels import level_words

    finest = {}
    for r in releases:
        privacy = privacy_of.get(r["release_id"]) or {}
        level = (privacy.get("finest_level_names") or {}).get(column)
        if level is not None:
            finest[r["partner"]] = level_words(str((privacy.get("hierarchies") or {}).get(column, "")), str(level))
    if len(set(finest.values())) < 2:
        return ""
    return ("finest level differs by partner, compare at the coarsest: "
            + "; ".join(f"{_e(partner)}: at best {_e(words)}" for partner, words in sorted(finest.items())))


def _harmonized(m: Mapping[str, Any], labels: Mapping[str, str], privacy_of: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the harmonized table does, in words, and per column how much detail it keeps."""
    name = lambda c: labels.get(c, c)  # noqa: E731
    releases = m.get("releases") or []
    parts = [
        f"<p class=ok>{_e(m['rows'])} rows from {len(releases)} partner release(s); the whole table passed the gate with "
        f"k={_e(m['privacy']['k'])}. <a href='/harmonized.csv'>harmonized.csv</a> · <a href='/harmonized.parquet'>harmonized.parquet</a> · "
        "<a href='/harmonized/manifest.json'>manifest.json</a></p>",
        "<p><b>What this table is.</b> The latest release of every partner, one under the other, with a <code>partner</code> "
        "column. <b>No column was coarsened for the merge</b>: each row keeps exactly the detail its partner published (one "
        "partner's exact country next to another's region), so no partner loses detail because another publishes less. "
        "Every whole row, the partner included, still occurs at least k times. When comparing partners, compare like with "
        "like: a column's coarser or hidden rows are listed below per partner.</p>",
    ]
    excluded = m.get("excluded") or []
    if excluded:
        parts.append("<p><b>Left out of the table</b> (their rows are not in it):</p><ul>" + "".join(
            f"<li>{_e(item['partner'])}, release <code>{_e(item['release_id'])}</code>: {_e(item['reason'])}</li>" for item in excluded) + "</ul>")
    else:
        parts.append("<p>No partner's latest release was left out.</p>")
    detail = m.get("detail") or {}
    if detail:
        rows = []
        for column, d in detail.items():
            if not isinstance(d, Mapping):
                continue
            per_partner = []
            for r in releases:
                own = (r.get("detail") or {}).get(column)
                if isinstance(own, Mapping) and (own.get("coarser") or own.get("suppressed")):
                    per_partner.append(f"{_e(r['partner'])}: {_e(_detail_words(own))}")
            levels = _finest_by_partner(column, releases, privacy_of)
            rows.append(
                f"<tr><td>{_e(name(column))} <small><code>{_e(column)}</code></small></td><td>{_bar(d)}</td>"
                f"<td>{_e(_detail_words(d))}</td><td>{'<br>'.join(per_partner) or 'every partner: as recorded'}{'<br><small>' + levels + '</small>' if levels else ''}</td></tr>"
            )
        parts.append(
            "<h3>How much detail each column keeps</h3><p>Shares of the table's rows showing the value as recorded (green, "
            "at the finest level its partner publishes), a coarser group of it (orange: a wider band, a region) or hidden "
            "(grey, <code>*</code>).</p><table><tr><th>column</th><th>detail kept</th><th>all partners</th>"
            "<th>partners with coarser or hidden rows, and finest levels</th></tr>" + "".join(rows) + "</table>"
        )
    return parts


def render_page(partners: list[dict[str, Any]], releases: list[dict[str, Any]], merged: Any, merge_error: Any,
                labels: Mapping[str, str] | None = None, now: datetime | None = None) -> str:
    """The whole page as one HTML string. `labels` names the columns (codebook); `now` dates the
    partners' freshness."""
    labels = labels or {}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>HTCDS central repository</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>HTCDS central repository</h1>",
        "<h2>Harmonized dataset</h2>",
    ]
    if merged is not None:
        parts += _harmonized(merged.manifest, labels, {r["release_id"]: r.get("privacy") or {} for r in releases})
    else:
        detail = merge_error if isinstance(merge_error, dict) else {"error": merge_error}
        parts.append(f"<p class=bad>{_e(detail.get('error'))}</p>")
        if detail.get("reasons"):
            parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in detail["reasons"]) + "</ul>")

    parts.append(
        "<h2>Partners</h2><p>Freshness: the receiver does not know the partners' schedules, so it shows how long ago each "
        f"partner's last release arrived (marked after {STALE_DAYS} days) and how many uploads it refused (nothing of a "
        "refused upload is kept; the partner's connector logged the reason).</p>"
        "<table><tr><th>partner</th><th>name</th><th>releases</th><th>latest</th><th>last upload</th><th>refused uploads</th></tr>"
    )
    for p in partners:
        latest = f"<a href='/releases/{_e(p['latest_release'])}'><code>{_e(p['latest_release'])}</code></a>" if p["latest_release"] else "<span class=bad>none yet</span>"
        ago, days = _age(p.get("latest_received_at"), now)
        stale = days is not None and days > STALE_DAYS
        when = (f"<span class={'bad' if stale else 'ok'}>{_e(ago)}</span><br><small>{_e(p['latest_received_at'])}</small>" if ago
                else _e(p.get("latest_received_at") or "never"))
        refused = p.get("refused_uploads") or 0
        refused_html = (f"<span class=bad>{_e(refused)}</span><br><small>last {_e(_age(p.get('last_refused_at'), now)[0] or p.get('last_refused_at'))}</small>"
                        if refused else "0")
        parts.append(f"<tr><td>{_e(p['id'])}</td><td>{_e(p['name'])}</td><td class=num>{_e(p['releases'])}</td><td>{latest}</td><td>{when}</td><td>{refused_html}</td></tr>")
    parts.append("</table>")

    parts.append(
        "<h2>Releases</h2><table><tr><th>partner</th><th>version</th><th>release</th><th>received</th><th>status</th>"
        "<th>rows</th><th>method</th><th>k</th><th>levels</th><th>suppressed</th><th>files</th></tr>"
    )
    for r in releases:
        privacy = r.get("privacy") or {}
        rid = _e(r["release_id"])
        links = "<br>".join(f"<a href='/releases/{rid}/files/{name}'>{name}</a>" for name in ("report.html", "privacy.json", "datapackage.json", "codebook.md", "data.csv"))
        warnings = (r.get("report") or {}).get("warnings") or []
        status = f"<span class=ok>{_e(r['status'])}</span>" + (f"<br><small>{'<br>'.join(_e(w) for w in warnings)}</small>" if warnings else "")
        parts.append(
            f"<tr><td>{_e(r['partner'])}</td><td>{_e(r['version'])}</td><td><a href='/releases/{rid}'><code>{rid}</code></a></td>"
            f"<td>{_e(r['received_at'])}</td><td>{status}</td><td>{_e(r['rows'])}</td><td>{_e(r['method'])}</td><td>{_e(r['k'])}</td>"
            f"<td>{_levels(privacy, labels)}</td><td>{_e(privacy.get('records_suppressed', '-'))}</td><td>{links}</td></tr>"
        )
    parts.append("</table><p><small><a href='/docs'>API</a> · <a href='/openapi.json'>OpenAPI</a></small></p></body></html>")
    return "".join(parts)


__all__ = ["LOGIN_TEXT", "render_login", "render_page"]
