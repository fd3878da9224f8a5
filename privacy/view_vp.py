"""The victim-perpetrator view: one row per (case, perpetrator), CTDC's second dataset.

A case with three perpetrators gives three rows, each with the victim's columns (the same as in the
victim view: `same_as_victim_view` in `release_view_vp.yaml`) and that perpetrator's columns, derived
by the rules of `privacy.view` from the case's fields plus the perpetrator's `ext_Perpetrators`
entry (its keys, `per_Gender` and the rest, read as fields of the row). A case without perpetrators
gives no row.

    view = derive_vp_view(cases, load_schema(), datasource="ngo-a")
    view.groupby("_case").size()          # perpetrators per victim

`_case` (CASE_COLUMN) is the index label of the case's row in `cases`: the privacy step counts
victims, not rows, by it (a victim with three perpetrators is one person) and joins with the victim
view on it. It is never published: it is not a view column, the gate knows nothing of it, and the
release step must drop it after counting. The other columns follow `privacy.view`'s conventions
(nullable dtypes, flags Int64 1/0/<NA>, strings "string"); the frame has a fresh RangeIndex.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from connector.schema import Schema
from privacy.view import _Deriver, view_columns

CASE_COLUMN = "_case"
PERPETRATORS_FIELD = "ext_Perpetrators"


def _entries(value: Any) -> list[dict[str, Any]]:
    """The perpetrator entries of one case: a list of dicts (None, NaN or anything else: none)."""
    if isinstance(value, np.ndarray):
        value = list(value)
    if not isinstance(value, (list, tuple)):
        return []
    return [entry for entry in value if isinstance(entry, dict)]


def perpetrator_rows(cases: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The cases repeated once per perpetrator, each row with its entry's keys as columns and `_case`.

    An entry key overrides a case field of the same name on its row (the perpetrator's own value).
    """
    keys = list(schema.fields[PERPETRATORS_FIELD].items)
    labels: list[Any] = []
    positions: list[int] = []
    items: list[dict[str, Any]] = []
    column = cases[PERPETRATORS_FIELD] if PERPETRATORS_FIELD in cases.columns else pd.Series([None] * len(cases), index=cases.index, dtype=object)
    for position, (label, value) in enumerate(column.items()):
        for entry in _entries(value):
            labels.append(label)
            positions.append(position)
            items.append(entry)
    rows = cases.iloc[positions].reset_index(drop=True)
    for key in keys:
        rows[key] = pd.Series([_plain(item.get(key)) for item in items], index=rows.index, dtype=object)
    rows[CASE_COLUMN] = pd.Series(labels, index=rows.index, dtype=cases.index.dtype if len(labels) else object)
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def derive_vp_view(cases: pd.DataFrame, schema: Schema, *, datasource: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The victim-perpetrator view of `cases`: `_case` first, then `columns` (default: every column of
    release_view_vp.yaml, in its order). Raises ValueError for an unknown column or a view that does
    not pass `check_view`, so a bad release_view_vp.yaml fails before any data is derived."""
    wanted = view_columns(schema, schema.vp_view, columns, file="release_view_vp.yaml", what="victim-perpetrator view")
    rows = perpetrator_rows(cases, schema)
    deriver = _Deriver(rows, schema, datasource, view=schema.vp_view)
    return pd.DataFrame({CASE_COLUMN: rows[CASE_COLUMN], **{name: deriver.column(name) for name in wanted}}, index=rows.index)
