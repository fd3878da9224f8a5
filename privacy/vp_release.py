"""The victim-perpetrator table of a k-anonymized release, counted per victim.

Why per victim: a victim with three perpetrators is three rows of CTDC's victim-perpetrator table,
and the rows of one victim can be joined with their row of the victim table on the columns both
carry. So the unit the guarantee counts is the victim: everything published about a victim -- their
victim row and the set of their perpetrator rows -- must be shared by at least k victims.

How: a victim's perpetrators (their generalized columns: roles, gender, age band, region of
citizenship -- never the country --, relationship, money paid) are one more fact of the victim,
`_perpetrators`, the sorted list of its perpetrator rows, specialized last by
`privacy.kanon_full` like every other fact: shown whole where at least k victims of the victim's
group share it, else hidden. The victim-perpetrator rows are then written from the PUBLISHED victim
row (its shared columns as published, its regions derived from its published labels) and the
perpetrators it shows; a victim whose perpetrators are hidden has no row in that table. Victims of
one group have equal published rows and equal perpetrator lists, so every published combination,
in either table and across the two, is shared by at least k victims.

The `_perpetrators` column is never published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Sequence

import pandas as pd

from connector.schema import Schema
from privacy.hierarchies import TOP, Hierarchy, is_label, lift, load_builtin
from privacy.kanon_full import cell_strings
from privacy.series import PART_COLUMN
from privacy.view_vp import CASE_COLUMN

PROFILE = "_perpetrators"
PERPETRATORS = "perpetrators"  # how release.importance names the perpetrators fact
OWNER = "_victim"  # in-process only: the position of the row's victim in its part
VP_FILE = "victim_perpetrator.csv"
NO_PERPETRATOR = "[]"


def perpetrator_columns(schema: Schema) -> list[str]:
    """Columns of the victim-perpetrator view read from the perpetrator's own entry (`per_*`)."""
    out = []
    for name, column in schema.vp_view.items():
        if name in schema.view:
            continue
        rule = column.rule if isinstance(column.rule, dict) else {}
        fields = [v for k, v in rule.items() if isinstance(v, str) and k not in ("values",)]
        if any(str(f).startswith("per_") for f in fields):
            out.append(name)
    return out


def region_sources(schema: Schema) -> dict[str, str]:
    """Victim columns of the view that are a region of a victim-view column: vp column -> victim column
    (the victim-view column that reads the same field)."""
    out = {}
    for name, column in schema.vp_view.items():
        rule = column.rule if isinstance(column.rule, dict) else {}
        field = rule.get("region_of")
        if name in schema.view or not field or str(field).startswith("per_"):
            continue
        for victim_name, victim in schema.view.items():
            vrule = victim.rule if isinstance(victim.rule, dict) else {}
            if field in (vrule.get("copy"), vrule.get("first_of")) and victim.hierarchy == "country":
                out[name] = victim_name
    return out


def profiles(vp_view: pd.DataFrame, columns: Sequence[str], cases: pd.Index) -> pd.Series:
    """Each case's perpetrators as one value: the sorted list of their published-column tuples (as
    JSON, so equal lists are equal strings); "[]" for a case without perpetrators."""
    out = pd.Series(NO_PERPETRATOR, index=cases, dtype=object)
    if len(vp_view):
        cells = pd.DataFrame({c: cell_strings(vp_view[c]) for c in columns}).fillna("")
        cells[CASE_COLUMN] = vp_view[CASE_COLUMN].to_numpy()
        for case, group in cells.groupby(CASE_COLUMN, sort=False):
            rows = sorted(group[list(columns)].itertuples(index=False, name=None))
            out.at[case] = json.dumps([list(r) for r in rows], separators=(",", ":"))
    return out


# The coarser levels of a victim's perpetrators: their roles and relationships to the victim, then
# their roles alone (the other columns hidden), so many victims can show the risk pattern before
# its details.
COARSE_LEVELS = (("perpetratorRole", "perpetratorRelationship"), ("perpetratorRole",))


class _Coarser(Mapping[str, tuple[str, ...]]):
    """`Hierarchy.paths` for the perpetrators fact, computed per value: the full list -> each
    coarser level of COARSE_LEVELS (lists of rows with the other cells `*`) -> `*`."""

    def __init__(self, columns: Sequence[str]):
        self.keeps = [[c in kept for c in columns] for kept in COARSE_LEVELS]

    def __getitem__(self, value: str) -> tuple[str, ...]:
        rows = json.loads(value)
        out = []
        for keep in self.keeps:
            coarse = sorted([cell if kept else TOP for cell, kept in zip(row, keep)] for row in rows)
            out.append(json.dumps(coarse, separators=(",", ":")))
        return tuple(out)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(())

    def __len__(self) -> int:
        return 0


def profile_hierarchy(schema: Schema) -> Hierarchy:
    """The perpetrators fact's levels: as recorded, roles and relationships, roles, `*`."""
    return Hierarchy(name="perpetrators", level_names=("perpetrators", "roles and relationships", "roles", TOP), source="connector",
                     paths=_Coarser(perpetrator_columns(schema)))


def _region(label: Any) -> Any:
    if label is None or label == "" or label == TOP:
        return label
    country = load_builtin("country")
    for level in range(country.height):
        if is_label(country, str(label), level):
            return lift(country, str(label), level, 2)
    return TOP


def vp_rows(published: pd.DataFrame, shown: pd.Series, schema: Schema, label: str) -> pd.DataFrame:
    """The victim-perpetrator rows of one part: for each published victim whose perpetrators are
    shown (`shown`: the published `_perpetrators` cells, aligned with `published`), one row per
    perpetrator, its victim columns taken from the PUBLISHED victim row."""
    columns = list(schema.vp_view)
    perpetrator = perpetrator_columns(schema)
    regions = region_sources(schema)
    records: list[dict[str, Any]] = []
    for i, value in enumerate(shown.to_numpy()):
        if value is None or value == TOP or value == NO_PERPETRATOR:
            continue
        victim = published.iloc[i]
        base = {c: (victim[c] if c in published.columns else None) for c in columns if c not in perpetrator and c not in regions}
        base.update({c: _region(victim[source]) if source in published.columns else None for c, source in regions.items()})
        for entry in json.loads(value):
            row = dict(base, **{OWNER: i})
            row.update({c: (v if v != "" else None) for c, v in zip(perpetrator, entry)})  # "*": hidden at the coarser level
            records.append(row)
    frame = pd.DataFrame(records, columns=[*columns, OWNER]) if records else pd.DataFrame({c: pd.Series([], dtype=object) for c in [*columns, OWNER]})
    frame.insert(len(columns), PART_COLUMN, label)
    return frame.astype(object).where(frame.notna(), None)


def describe_vp(vp: pd.DataFrame, finest: Mapping[str, tuple[Hierarchy, int]] | None = None, schema: Schema | None = None) -> dict[str, Any]:
    """The victim-perpetrator part of privacy.json: computed from its published rows only (never
    from the victims or perpetrators left out). `finest` (victim column -> (hierarchy, finest level
    published)) lets `detail` tell a coarser label from one as recorded; `schema` says which
    columns are the perpetrator's."""
    perpetrator = set(perpetrator_columns(schema)) if schema is not None else set()
    detail: dict[str, dict[str, Any]] = {}
    n = len(vp)
    for column in vp.columns:
        if column == PART_COLUMN:
            continue
        cells = vp[column].astype(object).where(vp[column].notna(), "").astype(str)
        hidden = int((cells == TOP).sum())
        coarser = 0
        if finest and column in finest:
            hierarchy, level = finest[column]
            shown = {v for v in cells.unique() if v not in ("", TOP)}
            coarser = int(cells.isin({v for v in shown if not is_label(hierarchy, v, level)}).sum())
        detail[column] = {
            "of": "perpetrator" if column in perpetrator else "victim",
            "full": round((n - hidden - coarser) / n, 4) if n else 0.0,
            "coarser": round(coarser / n, 4) if n else 0.0,
            "suppressed": round(hidden / n, 4) if n else 0.0,
        }
    sizes = vp.fillna("").groupby(list(vp.columns), sort=False).size() if n else pd.Series(dtype=int)
    return {
        "file": VP_FILE,
        "records_out": int(n),
        "smallest_group": int(sizes.min()) if len(sizes) else 0,
        "columns": list(detail),
        "detail": detail,
        "guarantee_text": "counted per victim: everything published about a victim, in either table and across the two, "
                          "is shared by at least k victims; perpetrators' citizenship as a region, their age as a band",
    }


__all__ = ["NO_PERPETRATOR", "OWNER", "PERPETRATORS", "PROFILE", "VP_FILE", "describe_vp", "perpetrator_columns", "profile_hierarchy", "profiles", "region_sources", "vp_rows"]
