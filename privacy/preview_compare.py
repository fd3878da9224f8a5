"""The local preview's comparison of the real cases with a k-anonymized (full-row) release, per
column, before generalization: so the partner sees what the release loses.

Why only in `preview`: it describes the real cases, also those a release withholds or hides, so it
never enters privacy.json or a published report.html (privacy.metrics.publishable_metrics). The real
values are shown at the finest level the release may publish (ages in the release's finest bands,
countries as countries): the difference from the release is then exactly what was made coarser or
hidden (*). Shares are rounded to 1%, and values beyond the most common ones are pooled.

    marginals = before_generalization(view, table, privacy)   # privacy.report renders them
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

MAX_VALUES = 7
UNKNOWN, OTHER, HIDDEN, COARSER = "(unknown)", "(other values)", "*", "(a coarser group)"


def _strings(series: pd.Series) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in series]


def _finest(values: list[str], hierarchy: str | None, level: int) -> list[str]:
    """Real values at the release's finest level (unchanged when the hierarchy does not know one)."""
    if not hierarchy or not level:
        return values
    from privacy.hierarchies import HierarchyError, load_builtin

    try:
        tree = load_builtin(hierarchy)
    except HierarchyError:
        return values
    out = []
    for value in values:
        try:
            out.append(tree.path(value)[level] if value else value)
        except (HierarchyError, IndexError, ValueError):
            out.append(value)
    return out


def _shares(values: list[str]) -> Counter[str]:
    return Counter(UNKNOWN if v == "" else v for v in values)


def before_generalization(view: pd.DataFrame, table: pd.DataFrame, privacy: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column of the release's facts (most important first): values, real shares, release shares."""
    hierarchies = privacy.get("hierarchies") or {}
    finest = privacy.get("finest_levels") or {}
    facts = privacy.get("facts") or {}
    order = [f for f in privacy.get("importance") or facts if f in facts]
    out: dict[str, dict[str, Any]] = {}
    for fact in order:
        column = fact if fact in table.columns and fact in view.columns else (facts[fact] or [fact])[0]
        if column not in table.columns or column not in view.columns:
            continue
        real = _shares(_finest(_strings(view[column]), hierarchies.get(column), int(finest.get(column, 0) or 0)))
        released = _shares(_strings(table[column]))
        n_real, n_release = max(sum(real.values()), 1), max(sum(released.values()), 1)
        common = [v for v, _ in real.most_common() if v not in (UNKNOWN, HIDDEN)][:MAX_VALUES]
        values = common + [OTHER, COARSER, UNKNOWN, HIDDEN]

        def share(counts: Counter[str], total: int, value: str) -> float:
            if value == OTHER:  # real values beyond the most common ones
                return round(sum(c for v, c in counts.items() if v in real and v not in common and v not in (UNKNOWN, HIDDEN)) / total, 2)
            if value == COARSER:  # release values that are no real value at this level: a band or region above it
                return round(sum(c for v, c in counts.items() if v not in real and v not in (UNKNOWN, HIDDEN)) / total, 2)
            return round(counts.get(value, 0) / total, 2)

        rows = [(v, share(real, n_real, v), share(released, n_release, v)) for v in values]
        rows = [r for r in rows if r[1] or r[2]]
        out[fact] = {"values": [r[0] for r in rows], "real": [r[1] for r in rows], "release": [r[2] for r in rows]}
    return out


__all__ = ["before_generalization"]
