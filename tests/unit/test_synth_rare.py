"""The synthetic path's last post-processing step: no short combination of published values below
the resolution. Counted here independently (Counter over tuples) of the numpy counting in
`privacy.synth.drop_rare_combinations`."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from privacy.synth import drop_rare_combinations


def _smallest(frame: pd.DataFrame, subsets: list[list[str]]) -> int:
    rows = frame.to_dict("records")
    return min((min(Counter(tuple(r[c] for c in s) for r in rows).values()) for s in subsets), default=10**9)


def _random_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    skew = lambda k: rng.dirichlet(np.full(k, 0.4))  # noqa: E731  (skewed: rare values exist)
    return pd.DataFrame({
        "year": rng.choice(["2019", "2020", "2021", "2022"], n, p=skew(4)),
        "gender": rng.choice(["Female", "Male", ""], n, p=skew(3)),
        "age": rng.choice([f"{a}--{a + 2}" for a in range(0, 60, 3)], n, p=skew(20)),
        "country": rng.choice(["UKR", "VNM", "PHL", "NGA", "MDA", "THA", "IDN"], n, p=skew(7)),
        "flag1": rng.choice(["0", "1"], n, p=skew(2)),
        "flag2": rng.choice(["0", "1", ""], n, p=skew(3)),
    })


@pytest.mark.parametrize("seed", range(6))
def test_every_short_combination_and_the_quasi_identifier_set_reach_the_floor(seed):
    frame = _random_frame(seed, 1500)
    qis = ["year", "gender", "age", "country"]
    kept, removed = drop_rare_combinations(frame, length=3, floor=10, also=[qis])
    assert removed == len(frame) - len(kept) and removed > 0
    varying = [c for c in frame.columns if frame[c].nunique() > 1]
    subsets = [list(s) for size in (1, 2, 3) for s in itertools.combinations(varying, size)] + [qis]
    assert _smallest(kept, subsets) >= 10
    # nothing more is removed than the rounds need: the kept rows are the input's, in order, and a
    # second pass finds nothing
    assert set(map(tuple, kept.to_numpy())) <= set(map(tuple, frame.to_numpy()))
    again, removed_again = drop_rare_combinations(kept, length=3, floor=10, also=[qis])
    assert removed_again == 0 and again.equals(kept)


def test_a_single_rare_pair_is_removed_and_nothing_else():
    frame = pd.DataFrame({"a": ["x"] * 20 + ["y"] * 20, "b": ["p"] * 20 + ["q"] * 19 + ["p"]})
    kept, removed = drop_rare_combinations(frame, length=2, floor=5)
    assert removed == 1 and len(kept) == 39
    assert not ((kept["a"] == "y") & (kept["b"] == "p")).any()


def test_a_rare_combination_of_a_longer_set_is_removed_though_its_pairs_are_common():
    # every pair of (a, b, c) occurs >= 10 times, but the triple (1, 1, 1) once
    rows = [(a, b, c) for a in "01" for b in "01" for c in "01" for _ in range(10) if (a, b, c) != ("1", "1", "1")] + [("1", "1", "1")]
    frame = pd.DataFrame(rows, columns=["a", "b", "c"])
    kept, removed = drop_rare_combinations(frame, length=2, floor=10, also=[["a", "b", "c"]])
    assert removed == 1 and _smallest(kept, [["a", "b", "c"]]) >= 10


def test_wide_sets_do_not_overflow_the_combined_key():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({f"c{i}": rng.integers(0, 5000, 3000).astype(str) for i in range(6)})
    frame = pd.concat([frame] * 12, ignore_index=True)  # every full row 12 times
    kept, removed = drop_rare_combinations(frame, length=1, floor=10, also=[list(frame.columns)])
    assert removed == 0 and len(kept) == len(frame)
    frame.loc[len(frame)] = ["x"] * 6  # one new row: rare in every column
    kept, removed = drop_rare_combinations(frame, length=1, floor=10, also=[list(frame.columns)])
    assert removed == 1


def test_a_combined_key_past_64_bits_still_tells_rows_apart():
    # four columns of 2**16 values each: a mixed-radix key multiplies the first column by 2**64,
    # which int64 arithmetic would wrap to nothing, making ("b", row 0) look like ("a", row 0)
    rng = np.random.default_rng(3)
    wide = pd.DataFrame({f"c{i}": rng.permutation(2**16) for i in range(1, 5)})
    frame = pd.concat([wide, wide], ignore_index=True)  # every row twice
    frame.insert(0, "c0", "a")
    frame.loc[len(frame)] = ["b", *wide.iloc[0]]
    kept, removed = drop_rare_combinations(frame, length=0, floor=2, also=[list(frame.columns)])
    assert removed == 1 and not (kept["c0"] == "b").any()
