"""k-anonymity: the search's result is k-anonymous, within budget, optimal, and its record is complete."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pycanon.anonymity
import pytest

from privacy.hierarchies import HierarchyError, flat_hierarchy, hierarchy_from_spec, load_builtin
from privacy.kanon import KAnonymityError, anonymize

QIS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation"]
COUNTRIES = ["GR", "IT", "UA", "RO", "NG", "PH", "VN", "MX", "US", "GB", "DE", "TH", "KH", "MM", "IN", "BD", "MD", "BG", "AL", "XK"]


def hierarchies() -> dict:
    return {
        "yearOfRegistration": load_builtin("year"),
        "gender": load_builtin("gender"),
        "ageBroad": load_builtin("age"),
        "citizenship": load_builtin("country"),
        "CountryOfExploitation": load_builtin("country"),
    }


def view(n: int, seed: int = 0) -> pd.DataFrame:
    """A release-view-like table: skewed countries, ages around 25, some NA everywhere."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, len(COUNTRIES) + 1)
    p /= p.sum()
    age = np.clip(rng.normal(26, 10, n), 0, 90).astype(int)
    frame = pd.DataFrame(
        {
            "Datasource": "Case Management",
            "yearOfRegistration": pd.array(rng.integers(2010, 2024, n), dtype="Int64"),
            "gender": pd.array(rng.choice(["Female", "Male", "Transgender", "Other"], n, p=[0.6, 0.36, 0.02, 0.02]), dtype="string"),
            "ageBroad": pd.array(age, dtype="Int64"),
            "citizenship": pd.array(rng.choice(COUNTRIES, n, p=p), dtype="string"),
            "CountryOfExploitation": pd.array(rng.choice(COUNTRIES, n, p=p), dtype="string"),
            "isForcedLabour": pd.array(rng.integers(0, 2, n), dtype="Int64"),
            "typeOfExploit": pd.array(rng.choice(["sexual", "labour", "other", "begging"], n), dtype="string"),
        }
    )
    for column in ["gender", "ageBroad", "citizenship", "isForcedLabour"]:
        frame.loc[rng.random(n) < 0.05, column] = pd.NA
    return frame


def class_sizes(table: pd.DataFrame, qis: list[str]) -> pd.Series:
    return table[qis].astype("string").fillna("<NA>").groupby(qis).size()


def test_result_is_k_anonymous_within_budget():
    data = view(5000)
    result = anonymize(data, QIS, hierarchies(), k=10, suppression_limit=0.05)
    rec = result.record
    assert class_sizes(result.table, QIS).min() >= 10
    assert pycanon.anonymity.k_anonymity(result.table[QIS].astype("string").fillna("<NA>"), QIS) >= 10
    assert rec["records_suppressed"] <= 0.05 * 5000
    assert rec["records_out"] == len(result.table) == 5000 - rec["records_suppressed"]
    assert rec["smallest_class"] >= 10


def test_record_is_json_and_complete():
    data = view(3000)
    rec = anonymize(data, QIS, hierarchies(), k=5).record
    again = json.loads(json.dumps(rec))
    assert again == rec
    for key in ["method", "k", "quasi_identifiers", "levels", "level_names", "records_in", "records_out", "records_suppressed",
                "cells_blanked", "information_loss", "class_sizes", "smallest_class", "lattice_nodes_evaluated"]:
        assert key in rec
    assert rec["method"] == "k_anonymity"
    assert set(rec["information_loss"]) == {"loss", "discernibility", "entropy"}
    assert sum(int(size) * count for size, count in rec["class_sizes"].items()) == rec["records_out"]
    assert rec["level_names"]["ageBroad"] == load_builtin("age").level_names[rec["levels"]["ageBroad"]]
    assert 0 < rec["lattice_nodes_evaluated"] <= 4 * 2 * 5 * 4 * 4


def test_generalized_values_are_strings_of_the_chosen_level():
    data = view(3000)
    result = anonymize(data, QIS, hierarchies(), k=5, levels={"ageBroad": 2, "yearOfRegistration": 1})
    ages = set(result.table["ageBroad"].dropna())
    assert ages <= {"0--8", "9--17", "18--20", "21--23", "24--26", "27--29", "30--38", "39--47", "48+"}
    assert result.record["level_names"]["ageBroad"] == "CTDC bands"
    assert all("-" in y or len(y) == 4 for y in result.table["yearOfRegistration"].dropna())
    assert result.table["ageBroad"].dtype == "string"


def test_na_stays_na_below_top():
    data = view(2000)
    result = anonymize(data, QIS, hierarchies(), k=3, levels={"ageBroad": 2})
    assert result.table["ageBroad"].isna().sum() > 0
    top = anonymize(data, QIS, hierarchies(), k=3, levels={"ageBroad": 4})
    assert set(top.table["ageBroad"]) == {"*"}


def test_level0_keeps_original_representation():
    data = pd.DataFrame({"ageBroad": pd.array([25] * 4 + [30] * 4, dtype="Int64"), "gender": ["Female"] * 8})
    result = anonymize(data, ["ageBroad", "gender"], {"ageBroad": load_builtin("age"), "gender": load_builtin("gender")}, k=4)
    assert result.record["levels"] == {"ageBroad": 0, "gender": 0}
    assert sorted(result.table["ageBroad"]) == ["25"] * 4 + ["30"] * 4


def test_picks_least_generalization_known_example():
    # ages 21,22,23 (x2 each) fail k=3 as they are; one level up they share the band 21--23
    ages = [21, 21, 22, 22, 23, 23, 40, 40, 40, 41, 41, 41]
    data = pd.DataFrame({"ageBroad": pd.array(ages, dtype="Int64")})
    result = anonymize(data, ["ageBroad"], {"ageBroad": load_builtin("age")}, k=3, suppression_limit=0.0)
    assert result.record["levels"] == {"ageBroad": 1}
    assert sorted(set(result.table["ageBroad"])) == ["21--23", "39--43"]
    assert result.record["class_sizes"] == {"6": 2}


def test_suppression_prefers_removing_a_few_records_over_generalizing():
    data = pd.DataFrame({"gender": ["Female"] * 50 + ["Male"] * 49 + ["Other"]})
    result = anonymize(data, ["gender"], {"gender": load_builtin("gender")}, k=10, suppression_limit=0.05)
    assert result.record["levels"] == {"gender": 0}
    assert result.record["records_suppressed"] == 1
    assert "Other" not in set(result.table["gender"])
    strict = anonymize(data, ["gender"], {"gender": load_builtin("gender")}, k=10, suppression_limit=0.0)
    assert strict.record["levels"] == {"gender": 1}
    assert strict.record["records_suppressed"] == 0


@pytest.mark.parametrize("metric", ["loss", "discernibility", "entropy"])
def test_each_metric_returns_the_minimum_over_all_passing_nodes(metric):
    data = view(800, seed=3)
    qis = ["gender", "ageBroad", "citizenship"]
    h = {q: hierarchies()[q] for q in qis}
    best = anonymize(data, qis, h, k=5, metric=metric)
    values = []
    for g in range(2):
        for a in range(5):
            for c in range(4):
                try:
                    r = anonymize(data, qis, h, k=5, metric=metric, search="fixed", levels={"gender": g, "ageBroad": a, "citizenship": c})
                except KAnonymityError:
                    continue
                values.append(r.record["information_loss"][metric])
    assert best.record["information_loss"][metric] == pytest.approx(min(values), rel=1e-9, abs=1e-12)


def test_fixed_search_uses_given_levels_and_level0_for_the_rest():
    data = view(4000)
    result = anonymize(data, QIS, hierarchies(), k=2, search="fixed", levels={"ageBroad": 3, "citizenship": 3, "CountryOfExploitation": 3},
                       suppression_limit=1.0)
    assert result.record["levels"] == {"yearOfRegistration": 0, "gender": 0, "ageBroad": 3, "citizenship": 3, "CountryOfExploitation": 3}
    assert result.record["lattice_nodes_evaluated"] == 1
    assert class_sizes(result.table, QIS).min() >= 2


def test_fixed_levels_failing_the_budget_raise_a_clear_error():
    data = view(2000)
    with pytest.raises(KAnonymityError, match="fixed levels .* suppression limit allows 100"):
        anonymize(data, QIS, hierarchies(), k=10, search="fixed")


def test_levels_fix_a_column_while_the_rest_are_searched():
    data = view(3000)
    result = anonymize(data, QIS, hierarchies(), k=5, levels={"ageBroad": 1})
    assert result.record["levels"]["ageBroad"] == 1
    assert class_sizes(result.table, QIS).min() >= 5


def test_local_recoding_blanks_cells_instead_of_removing_records():
    data = view(3000)
    global_ = anonymize(data, QIS, hierarchies(), k=5)
    local = anonymize(data, QIS, hierarchies(), k=5, recoding="local")
    assert global_.record["records_suppressed"] > 0
    assert local.record["levels"] == global_.record["levels"]
    assert local.record["cells_blanked"] > 0
    assert local.record["records_suppressed"] < global_.record["records_suppressed"]
    assert local.record["records_out"] == len(local.table)
    assert class_sizes(local.table, QIS).min() >= 5
    star = (local.table[QIS] == "*").fillna(False).to_numpy().sum()
    at_top = sum(len(local.table) for q in QIS if local.record["levels"][q] == hierarchies()[q].height)
    assert star - at_top == local.record["cells_blanked"]


def test_local_recoding_with_no_way_to_reach_k_removes_rather_than_leaks():
    data = pd.DataFrame({"gender": ["Female"] * 3 + ["Male"]})
    result = anonymize(data, ["gender"], {"gender": load_builtin("gender")}, k=3, recoding="local", search="fixed")
    assert class_sizes(result.table, ["gender"]).min() >= 3


def test_distinct_l_diversity_holds_with_k():
    data = view(4000)
    result = anonymize(data, QIS, hierarchies(), k=5, l_diversity={"attribute": "typeOfExploit", "l": 3})
    table = result.table
    keys = table[QIS].astype("string").fillna("<NA>")
    distinct = table.assign(**{q: keys[q] for q in QIS}).groupby(QIS)["typeOfExploit"].nunique()
    assert distinct.min() >= 3
    assert result.record["l_diversity"]["achieved"] >= 3
    checked = table.dropna(subset=["typeOfExploit"]).astype("string").fillna("<NA>")
    assert pycanon.anonymity.l_diversity(checked, QIS, ["typeOfExploit"]) >= 3


def test_entropy_l_diversity_holds():
    data = view(4000)
    result = anonymize(data, QIS, hierarchies(), k=5, l_diversity={"attribute": "typeOfExploit", "l": 3, "kind": "entropy"})
    table = result.table.dropna(subset=["typeOfExploit"]).astype("string").fillna("<NA>")
    assert pycanon.anonymity.entropy_l_diversity(table, QIS, ["typeOfExploit"]) >= 3
    assert result.record["l_diversity"]["achieved"] >= 3 - 1e-9


def test_unattainable_l_diversity_is_a_clear_error():
    data = view(500).assign(constant="same")
    with pytest.raises(KAnonymityError, match="l-diversity"):
        anonymize(data, QIS, hierarchies(), k=2, l_diversity={"attribute": "constant", "l": 2})


def test_k_larger_than_table_is_a_clear_error():
    with pytest.raises(KAnonymityError, match="k=10 is larger than the table"):
        anonymize(view(5), QIS, hierarchies(), k=10)


def test_empty_table_is_a_clear_error():
    with pytest.raises(KAnonymityError, match="empty"):
        anonymize(view(5).iloc[:0], QIS, hierarchies(), k=2)


def test_all_null_quasi_identifier_is_one_value():
    data = view(1000)
    data["citizenship"] = pd.array([pd.NA] * len(data), dtype="string")
    result = anonymize(data, QIS, hierarchies(), k=5)
    assert class_sizes(result.table, QIS).min() >= 5


def test_thousands_of_distinct_values_are_generalized_or_removed_never_leaked():
    data = view(3000)
    data["caseCode"] = [f"C{i}" for i in range(len(data))]  # a QI nobody gave a hierarchy
    h = {**hierarchies(), "caseCode": flat_hierarchy()}
    result = anonymize(data, QIS + ["caseCode"], h, k=5)
    assert set(result.table["caseCode"]) == {"*"}
    assert class_sizes(result.table, QIS + ["caseCode"]).min() >= 5


def test_one_huge_class_is_released_whole():
    data = pd.DataFrame({"gender": ["Female"] * 1000, "ageBroad": pd.array([30] * 1000, dtype="Int64")})
    result = anonymize(data, ["gender", "ageBroad"], {"gender": load_builtin("gender"), "ageBroad": load_builtin("age")}, k=10)
    assert result.record["levels"] == {"gender": 0, "ageBroad": 0}
    assert result.record["class_sizes"] == {"1000": 1}


def test_unknown_value_names_column_and_value():
    data = view(100)
    data.loc[3, "citizenship"] = "XX"
    with pytest.raises(HierarchyError, match="citizenship: value 'XX' has no place in hierarchy country"):
        anonymize(data, QIS, hierarchies(), k=2)


def test_partner_interval_hierarchy_is_used():
    data = view(1000)
    h = {**hierarchies(), "ageBroad": hierarchy_from_spec({"type": "interval", "name": "two", "levels": [[0, 18]]})}
    result = anonymize(data, QIS, h, k=5, levels={"ageBroad": 1})
    assert set(result.table["ageBroad"].dropna()) == {"0--17", "18+"}


def test_lattice_too_large_is_refused_with_advice():
    data = pd.DataFrame({f"c{i}": ["a", "b"] * 10 for i in range(18)})
    deep = hierarchy_from_spec({"type": "ordered", "values": ["a", "b"], "levels": [1, 2]})  # 4 levels each
    with pytest.raises(KAnonymityError, match="release.levels"):
        anonymize(data, list(data.columns), {c: deep for c in data.columns}, k=2)


def test_hundred_thousand_rows_five_qis_is_fast():
    data = view(100_000, seed=7)
    start = time.perf_counter()
    result = anonymize(data, QIS, hierarchies(), k=10)
    elapsed = time.perf_counter() - start
    assert class_sizes(result.table, QIS).min() >= 10
    assert elapsed < 5.0, f"took {elapsed:.1f} s"
