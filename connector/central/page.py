"""The central team's page: partners, their releases, status, the privacy summary, links.

Server-rendered HTML with every value escaped and no script, so it works behind any proxy and
under a strict Content-Security-Policy.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.ok{color:#176317}.bad{color:#a31515}code{font-size:.9em}small{color:#666}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _levels(privacy: dict[str, Any]) -> str:
    if privacy.get("guarantee") == "full_row":  # rows keep their own detail, down to these levels
        names = privacy.get("finest_level_names") or {}
        return ", ".join(f"{_e(c)}: up to {_e(v)}" for c, v in names.items()) or "-"
    names = privacy.get("level_names") or {}
    levels = privacy.get("levels") or {}
    return ", ".join(f"{_e(c)}: {_e(names.get(c, levels.get(c)))}" for c in levels) or "-"


def _pct(value: object) -> str:
    return f"{100 * float(value):.0f}%" if isinstance(value, (int, float)) else "-"


def render_page(partners: list[dict[str, Any]], releases: list[dict[str, Any]], merged: Any, merge_error: Any) -> str:
    """The whole page as one HTML string."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>HTCDS central repository</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>HTCDS central repository</h1>",
        "<h2>Harmonized dataset</h2>",
    ]
    if merged is not None:
        m = merged.manifest
        parts.append(
            f"<p class=ok>{_e(m['rows'])} rows from {len(m['releases'])} partner release(s); gate passed with k={_e(m['privacy']['k'])}. "
            "<a href='/harmonized.csv'>harmonized.csv</a> · <a href='/harmonized.parquet'>harmonized.parquet</a> · "
            "<a href='/harmonized/manifest.json'>manifest.json</a></p>"
        )
        detail = m.get("detail") or {}
        if detail:
            parts.append(
                "<p>No column was coarsened for the merge: each row keeps the detail its partner's release could give it "
                "while every published row stays shared by at least k cases. How much detail the harmonized table keeps:</p>"
                "<table><tr><th>column</th><th>full detail</th><th>coarser</th><th>suppressed (*)</th></tr>"
                + "".join(
                    f"<tr><td><code>{_e(c)}</code></td><td>{_pct(d.get('full', 0))}</td><td>{_pct(d.get('coarser', 0))}</td><td>{_pct(d.get('suppressed', 0))}</td></tr>"
                    for c, d in detail.items()
                )
                + "</table>"
            )
        for item in m.get("excluded", []):
            parts.append(f"<p class=bad>excluded {_e(item['partner'])} {_e(item['release_id'])}: {_e(item['reason'])}</p>")
    else:
        detail = merge_error if isinstance(merge_error, dict) else {"error": merge_error}
        parts.append(f"<p class=bad>{_e(detail.get('error'))}</p>")
        if detail.get("reasons"):
            parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in detail["reasons"]) + "</ul>")

    parts.append("<h2>Partners</h2><table><tr><th>partner</th><th>name</th><th>releases</th><th>latest</th><th>received</th></tr>")
    for p in partners:
        latest = f"<a href='/releases/{_e(p['latest_release'])}'>{_e(p['latest_release'])}</a>" if p["latest_release"] else "<span class=bad>none yet</span>"
        parts.append(f"<tr><td>{_e(p['id'])}</td><td>{_e(p['name'])}</td><td>{_e(p['releases'])}</td><td>{latest}</td><td>{_e(p['latest_received_at'])}</td></tr>")
    parts.append("</table>")

    parts.append(
        "<h2>Releases</h2><table><tr><th>partner</th><th>version</th><th>release</th><th>received</th><th>status</th>"
        "<th>rows</th><th>method</th><th>k</th><th>levels</th><th>suppressed</th><th>files</th></tr>"
    )
    for r in releases:
        privacy = r.get("privacy") or {}
        rid = _e(r["release_id"])
        links = " ".join(f"<a href='/releases/{rid}/files/{name}'>{name}</a>" for name in ("report.html", "privacy.json", "datapackage.json", "codebook.md", "data.csv"))
        warnings = (r.get("report") or {}).get("warnings") or []
        status = f"<span class=ok>{_e(r['status'])}</span>" + (f"<br><small>{'<br>'.join(_e(w) for w in warnings)}</small>" if warnings else "")
        parts.append(
            f"<tr><td>{_e(r['partner'])}</td><td>{_e(r['version'])}</td><td><a href='/releases/{rid}'><code>{rid}</code></a></td>"
            f"<td>{_e(r['received_at'])}</td><td>{status}</td><td>{_e(r['rows'])}</td><td>{_e(r['method'])}</td><td>{_e(r['k'])}</td>"
            f"<td>{_levels(privacy)}</td><td>{_e(privacy.get('records_suppressed', '-'))}</td><td>{links}</td></tr>"
        )
    parts.append("</table><p><small><a href='/docs'>API</a> · <a href='/openapi.json'>OpenAPI</a></small></p></body></html>")
    return "".join(parts)


__all__ = ["render_page"]
