"""Column-at-a-time forms of two frame-wide steps of the k-anonymized release (issue #16: the
release's peak memory): they must give exactly what the frame-wide forms gave."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kanon_release import _compose_columns
from privacy.protect import smallest_group

CELLS = st.one_of(st.none(), st.just(""), st.just(np.nan), st.sampled_from(["a", "b", "*", "2021", " "]))


def _frame(draw_rows: list[list], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(draw_rows, columns=columns, dtype=object) if draw_rows else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


def _compose_frame_wide(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    out = pd.concat([f.reindex(columns=columns) for f in frames], ignore_index=True)
    out = out.astype(object).where(out.notna(), "")
    return out.where(out != "", None)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.lists(st.lists(CELLS, min_size=3, max_size=3), max_size=6), st.sampled_from([["x", "y", "z"], ["y", "x", "w"], ["z", "x", "y"]])), min_size=1, max_size=4))
def test_composing_parts_gives_what_the_frame_wide_form_gave(parts) -> None:
    frames = [_frame(rows, columns) for rows, columns in parts]
    columns = ["x", "y", "z", "releasePart"]
    got, expected = _compose_columns(frames, columns), _compose_frame_wide(frames, columns)
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    assert got.to_numpy().tolist() == expected.to_numpy().tolist()
    assert all(v is None or (isinstance(v, str) and v) for v in got.to_numpy().ravel())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), max_size=40))
def test_the_smallest_group_is_what_grouping_a_blank_filled_copy_gave(rows) -> None:
    published = _frame(rows, ["a", "b", "c"])
    expected = published.fillna("").groupby(["a", "b", "c"], sort=False).size()
    assert smallest_group(published) == (int(expected.min()) if len(expected) else 0)
