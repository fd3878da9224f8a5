"""Row digests decide which published records were corrected: computed per distinct value now
(issue #16), they must stay byte-for-byte the digests stores already hold."""

from __future__ import annotations

import hashlib
import io

import pandas as pd

from connector.kanon_release import read_part, row_digests
from privacy.series import Part


def _digests_as_first_written(view: pd.DataFrame) -> list[str]:
    """The formula the stored digests were made with (whole-frame conversion, row by row)."""
    frame = view.astype(object).where(view.notna(), "\x00")
    joined = frame.astype(str).agg("\x1f".join, axis=1)
    return [hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] for text in joined]


def test_digests_equal_those_stores_already_hold() -> None:
    view = pd.DataFrame(
        {
            "age": pd.array([1, None, 3, 1, 20, 1], dtype="Int64"),
            "text": pd.array(["x", None, "", "y", "x", "z\x00"], dtype="string"),
            "share": pd.array([1.0, 2.5, None, 1e20, 3.0, 1.0], dtype="Float64"),
            "flag": pd.array([True, None, False, True, True, False], dtype="boolean"),
            "mixed": pd.Series(["p", None, 3, 4.0, float("nan"), True], dtype=object),
            "band": pd.Series(["1", "1", "2", None, "x", "2"], dtype="category"),
        },
        index=[5, 9, 2, 7, 1, 0],
    )
    assert row_digests(view) == _digests_as_first_written(view)
    assert len(set(row_digests(view))) == len(view)


def test_a_part_reads_back_as_strings_with_blanks_empty() -> None:
    data = b"a,b\n1,\nx,2\n1,y\n"
    part = Part(1, "1-abcdef01", (), data, 3, None)
    frame = read_part(part)
    expected = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["a"].iloc[0] is frame["a"].iloc[2]  # equal cells share one string
