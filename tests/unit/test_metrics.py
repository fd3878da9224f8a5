"""privacy.metrics on hand-made tables whose answers are computed by hand in the comments."""

import pandas as pd
import pytest

from privacy.hierarchies import load_builtin
from privacy.metrics import compare, generalize_like

REAL = pd.DataFrame({"A": ["a", "a", "b", "b"], "B": ["x", "y", "x", "x"]})
RELEASE = pd.DataFrame({"A": ["a", "a", "b", "c"], "B": ["x", "y", "x", None]})


@pytest.fixture(scope="module")
def metrics():
    return compare(REAL, RELEASE, reporting_length=2, quasi_identifiers=["A"], threshold=2)


def test_single_attribute_counts_match_the_hand_computation(metrics):
    one = metrics["combinations"]["by_length"][0]
    # real: A:a 2, A:b 2, B:x 3, B:y 1; release: A:a 2, A:b 1, A:c 1, B:x 2, B:y 1 (empty is no attribute)
    assert (one["real_combinations"], one["release_combinations"]) == (4, 5)
    assert one["preserved_share"] == 1.0
    assert one["fabricated"] == 1  # A:c
    assert one["mean_relative_error"] == pytest.approx((0 + 0.5 + 1 / 3 + 0) / 4, abs=1e-4)


def test_pair_counts_skip_empty_cells_like_sds(metrics):
    two = metrics["combinations"]["by_length"][1]
    # real: (a,x) 1, (a,y) 1, (b,x) 2; release: (a,x) 1, (a,y) 1, (b,x) 1; (c, empty) is not a combination
    assert (two["real_combinations"], two["release_combinations"], two["fabricated"]) == (3, 3, 0)
    assert two["mean_relative_error"] == pytest.approx(0.5 / 3, abs=1e-4)


def test_total_variation_distance_of_marginals_and_pairs(metrics):
    distances = metrics["distances"]
    # A: real a .5 b .5 vs a .5 b .25 c .25 -> .25; B: x .75 y .25 vs x .5 y .25 unknown .25 -> .25
    assert distances["marginals"] == {"A": 0.25, "B": 0.25}
    # pairs: real (a,x) .25 (a,y) .25 (b,x) .5 vs release (b,x) .25 and (c,unknown) .25 -> .25
    assert distances["pair_mean"] == pytest.approx(0.25)
    assert distances["pairs_measured"] == distances["pairs_total"] == 1


def test_equivalence_classes_of_the_release(metrics):
    risk = metrics["risk"]
    # release classes on A: a 2, b 1, c 1
    assert (risk["classes"], risk["smallest_class"], risk["classes_below_threshold"]) == (3, 1, 2)
    assert risk["unique_match_share"] == 0.0  # no real record is unique on A


def test_unique_matches_against_chance():
    real = pd.DataFrame({"B": ["x", "y", "x", "x"]})
    release = pd.DataFrame({"B": ["y", "x", "x", "x"]})
    risk = compare(real, release, reporting_length=1, quasi_identifiers=["B"], threshold=1)["risk"]
    # y is unique in the real data; 1 of 4 released rows is y; an independent draw gives y with p = 1/4
    assert risk["real_unique_records"] == 1
    assert risk["unique_match_share"] == 0.25
    assert risk["unique_match_chance"] == 0.25


def test_identical_tables_have_no_error_or_distance():
    table = pd.DataFrame({"A": list("aabbc"), "B": list("xyxyx"), "C": ["1", "0", "1", None, "0"]})
    metrics = compare(table, table.copy(), reporting_length=3)
    assert all(row["mean_relative_error"] == 0 and row["fabricated"] == 0 and row["preserved_share"] == 1 for row in metrics["combinations"]["by_length"])
    assert metrics["distances"]["marginal_max"] == 0 and metrics["distances"]["pair_max"] == 0


def test_many_columns_are_sampled_and_say_so():
    table = pd.DataFrame({f"c{i}": ["a", "b"] * 5 for i in range(12)})
    metrics = compare(table, table, reporting_length=3, max_subsets=50, max_pairs=20)
    three = metrics["combinations"]["by_length"][2]
    assert metrics["combinations"]["sampled"] and three["column_sets"] == 50 and three["column_sets_total"] == 220
    assert metrics["distances"]["pairs_measured"] == 20 and metrics["distances"]["pairs_total"] == 66


def test_marginals_for_the_report_pool_values_rarer_than_the_threshold():
    real = pd.DataFrame({"A": ["a"] * 8 + ["b"] * 2})
    marginals = compare(real, real, reporting_length=1, threshold=3)["marginals"]["A"]
    assert marginals["values"] == ["a", "(other values)"]
    assert marginals["real"] == [0.8, 0.2]


def test_generalize_like_applies_the_chosen_levels():
    view = pd.DataFrame({"ageBroad": pd.array([19, 40, None], dtype="Int64"), "other": ["x", "y", "z"]})
    out = generalize_like(view, {"levels": {"ageBroad": 1}}, {"ageBroad": load_builtin("age")})
    assert list(out["ageBroad"].astype(object).where(out["ageBroad"].notna(), None)) == ["18--20", "39--43", None]
    assert list(out["other"]) == ["x", "y", "z"]
