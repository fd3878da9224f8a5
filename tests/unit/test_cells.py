"""`privacy.cells.column_texts`: a column's cells as text per distinct value, exactly what the
per-cell rules of the k-anonymity encoder (`cell_strings`) and the gate (`_strings`) give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.cells import column_texts
from privacy.gate import _strings
from privacy.kanon_full import cell_strings


def _cell_rule(series: pd.Series) -> list:
    """The encoder's rule cell by cell (as before the column fast path)."""
    out = []
    for value, gone in zip(series.astype(object).to_numpy(), series.isna().to_numpy()):
        out.append(None if gone else str(int(value)) if isinstance(value, (float, np.floating)) and float(value).is_integer() else str(value))
    return out


def _gate_rule(series: pd.Series) -> list:
    return ["" if gone else str(value) for value, gone in zip(series.astype(object).to_numpy(), series.isna().to_numpy())]


COLUMNS = [
    pd.Series(["UA", None, "MD", np.nan, "UA", ""], dtype=object),
    pd.Series(["UA", pd.NA, "é,\"x\"", "UA"], dtype="string"),
    pd.Series([2021, pd.NA, -3, 2021, 0], dtype="Int64"),
    pd.Series([True, pd.NA, False, True], dtype="boolean"),
    pd.Series(np.array([5, 7, 5], dtype=np.int64)),
    pd.Series([1.0, 2.5, np.nan, -0.0], dtype="Float64"),
    pd.Series([1.0, 2.5, np.nan, -0.0]),
    pd.Series([True, 1, "1", 1.0, None], dtype=object),  # mixed: True and 1 hash alike, so no shortcut
    pd.Series([], dtype=object),
    pd.Series([None, None], dtype=object),
]


@pytest.mark.parametrize("series", COLUMNS, ids=lambda s: str(s.dtype))
def test_every_column_reads_as_its_cell_rule_says(series: pd.Series) -> None:
    assert list(cell_strings(series)) == _cell_rule(series)
    assert list(_strings(series)) == _gate_rule(series)


def test_only_strings_integers_and_booleans_take_the_shortcut() -> None:
    taken = [column_texts(s, None) is not None for s in COLUMNS]
    assert taken == [True, True, True, True, True, False, False, False, True, True]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=4), st.integers(-5, 5), st.booleans(), st.floats(allow_nan=True, allow_infinity=False)), max_size=30),
       st.sampled_from([object, "string", "Int64", "boolean", "Float64"]))
def test_any_column_reads_as_its_cell_rule_says(values: list, dtype) -> None:
    try:
        series = pd.Series(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        return  # values this dtype cannot hold
    assert list(cell_strings(series)) == _cell_rule(series)
    assert list(_strings(series)) == _gate_rule(series)
