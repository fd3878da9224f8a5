"""Protect the release view as the job config's `release:` section says, before the gate sees it.

Why a separate step from `kanon`: the config speaks in column roles and names, the algorithm in
quasi-identifiers and hierarchies. This module decides which columns are quasi-identifiers (every
column whose role is `quasi_identifier`, whether or not the config lists it: forgetting one in the
config must not leak it), which hierarchy generalizes each, drops columns that may never leave the
partner, and hands the rest to `privacy.kanon.anonymize`. The result still has to pass
`privacy.gate.admit`, which checks the bytes again.

    protected = protect(view, config.job.release, schema.view_roles())
    release = admit(protected.table, protected.privacy, roles=schema.view_roles())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from connector.schema import FORBIDDEN_ROLES, ROLES
from privacy.hierarchies import hierarchy_for
from privacy.kanon import anonymize

if TYPE_CHECKING:
    from connector.config import ReleaseConfig


class ProtectionError(ValueError):
    """The view and the release config do not fit together; the message names the column or key."""


@dataclass(frozen=True)
class Protected:
    """A protected table and its privacy record (JSON-serialisable; becomes privacy.json)."""

    table: pd.DataFrame
    privacy: dict[str, Any]
    # the real view in the release's representation (binned for synthesis), for metrics only; None
    # for k-anonymity, whose representation `privacy.metrics.generalize_like` rebuilds from the levels
    basis: pd.DataFrame | None = None


def protect(
    view: pd.DataFrame,
    release: "ReleaseConfig",
    roles: Mapping[str, str],
    *,
    hierarchy_names: Mapping[str, str | None] | None = None,
    rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> Protected:
    """Apply the release method to the view. `hierarchy_names` maps a column to a packaged hierarchy
    (the release view's `hierarchy:`); `release.hierarchies` overrides it; unnamed columns use the
    defaults in `privacy.hierarchies.DEFAULT_COLUMN_HIERARCHIES`, else value -> `*`. `rules` (the
    release view's rules by column) let synthesis recompute derived columns instead of inventing them.
    """
    if release.method not in ("k_anonymity", "synthetic"):
        raise ProtectionError(f"release.method: unknown method {release.method!r}")

    unknown = [c for c in view.columns if roles.get(c) not in ROLES]
    if unknown:
        raise ProtectionError(f"columns without a known disclosure role: {', '.join(map(str, unknown))}; add them to the release view with a role")
    table = view
    if release.columns is not None:
        absent = [c for c in release.columns if c not in view.columns]
        if absent:
            raise ProtectionError(f"release.columns names columns the release view does not have: {', '.join(absent)}")
        table = view[list(release.columns)]
    dropped = [c for c in table.columns if roles[c] in FORBIDDEN_ROLES]
    table = table.drop(columns=dropped)

    listed = [q for q in release.quasi_identifiers if q in table.columns]
    absent_qis = [q for q in release.quasi_identifiers if q not in table.columns]
    added = [c for c in table.columns if roles[c] == "quasi_identifier" and c not in listed]
    qis = listed + added
    for name in release.hierarchies:
        if name not in qis:
            raise ProtectionError(f"release.hierarchies.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
    for name in release.levels:
        if name not in qis:
            raise ProtectionError(f"release.levels.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
    names = hierarchy_names or {}
    hierarchies = {q: hierarchy_for(q, release.hierarchies, names.get(q)) for q in qis}

    if release.method == "synthetic":
        from privacy.synth import synthesize

        for name in release.synthetic.levels:
            if name not in qis:
                raise ProtectionError(f"release.synthetic.levels.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
        synthetic = synthesize(table, release.synthetic, quasi_identifiers=qis, hierarchies=hierarchies, rules=rules)
        privacy = dict(synthetic.record)
        privacy["quasi_identifiers_added"] = added
        privacy["quasi_identifiers_absent"] = absent_qis
        privacy["columns_dropped"] = dropped
        return Protected(table=synthetic.table, privacy=privacy, basis=synthetic.basis)

    result = anonymize(
        table,
        qis,
        hierarchies,
        k=release.k,
        suppression_limit=release.suppression_limit,
        metric=release.metric,
        levels=release.levels,
        search=release.search,
        recoding=release.recoding,
        l_diversity=release.l_diversity,
    )
    privacy = dict(result.record)
    privacy["quasi_identifiers_added"] = added  # QI-role columns the config did not list: protected anyway
    privacy["quasi_identifiers_absent"] = absent_qis  # listed, but not in the released columns
    privacy["columns_dropped"] = dropped  # identifiers / free text: never published
    return Protected(table=result.table, privacy=privacy)


__all__ = ["Protected", "ProtectionError", "protect"]
