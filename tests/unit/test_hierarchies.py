"""Generalization hierarchies: packaged data, partner-declared specs, nesting and unknown values."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from privacy.hierarchies import TOP, HierarchyError, hierarchy_for, hierarchy_from_spec, load_builtin

CTDC_BANDS = ["0--8", "9--17", "18--20", "21--23", "24--26", "27--29", "30--38", "39--47", "48+"]


def _nests(h, values):
    """Values sharing a label at one level share it at every level above."""
    paths = [h.path(str(v)) for v in values]
    for level in range(1, h.height):
        parent = {}
        for path in paths:
            assert parent.setdefault(path[level], path[level + 1]) == path[level + 1]


def test_age_reaches_ctdc_bands_then_minor_adult_then_top():
    age = load_builtin("age")
    assert age.level_names == ("years", "5-year bands", "CTDC bands", "Minor/Adult", TOP)
    assert age.path("17") == ("17", "13--17", "9--17", "Minor", TOP)
    assert age.path("18") == ("18", "18--20", "18--20", "Adult", TOP)
    assert age.path("8")[2] == "0--8"
    assert age.path("95")[1:3] == ("60+", "48+")
    assert sorted({age.path(str(a))[2] for a in range(0, 121)}, key=CTDC_BANDS.index) == CTDC_BANDS


def test_age_levels_nest_over_whole_domain():
    _nests(load_builtin("age"), range(0, 121))


def test_year_bands_nest_inside_five_year_bands():
    year = load_builtin("year")
    assert year.path("2020") == ("2020", "2020-2021", "2020-2024", TOP)
    assert year.path("2024")[1:3] == ("2024", "2020-2024")
    assert year.path("2019")[2] == "2015-2019"
    _nests(year, range(1900, 2100))


def test_country_goes_to_m49_sub_region_then_region():
    country = load_builtin("country")
    assert country.path("GR") == ("GR", "Southern Europe", "Europe", TOP)
    assert country.path("NG") == ("NG", "Western Africa", "Africa", TOP)
    assert country.path("MX") == ("MX", "Central America", "Americas", TOP)
    assert country.path("VN")[1] == "South-eastern Asia"


def test_country_covers_every_code_of_the_schema_codelist():
    country = load_builtin("country")
    with resources.files("mappings").joinpath("schema", "source", "countries.csv").open(encoding="utf-8") as handle:
        codes = [row["code"] for row in csv.DictReader(handle)]
    assert len(codes) > 240
    country.validate(codes, "citizenship")


def test_unknown_value_error_names_column_value_and_hierarchy():
    with pytest.raises(HierarchyError, match=r"citizenship: value 'XX' has no place in hierarchy country"):
        load_builtin("country").validate(["GR", "XX"], "citizenship")
    with pytest.raises(HierarchyError, match=r"ageBroad: value '130' has no place in hierarchy age"):
        load_builtin("age").path("130", "ageBroad")
    with pytest.raises(HierarchyError, match="gender: value 'female'"):
        load_builtin("gender").path("female", "gender")


def test_gender_and_majority_are_value_then_top():
    assert load_builtin("gender").path("Transgender") == ("Transgender", TOP)
    assert load_builtin("majority").path("Minor") == ("Minor", TOP)


def test_partner_interval_hierarchy_from_cut_points():
    h = hierarchy_from_spec({"type": "interval", "levels": [[0, 18, 65], [0, 18]]})
    assert h.path("70") == ("70", "65+", "18+", TOP)
    assert h.path("17") == ("17", "0--17", "0--17", TOP)
    with pytest.raises(HierarchyError, match="has no place"):
        h.path("-1", "age")


def test_partner_interval_that_does_not_nest_is_refused():
    with pytest.raises(HierarchyError, match="does not nest"):
        hierarchy_from_spec({"type": "interval", "levels": [[0, 10, 20], [0, 15]]})


def test_partner_explicit_hierarchy_value_to_parent_per_level():
    h = hierarchy_from_spec({"type": "explicit", "name": "site", "levels": [{"a": "north", "b": "north", "c": "south"}, {"north": "all", "south": "all"}]})
    assert h.path("c") == ("c", "south", "all", TOP)
    assert h.height == 3


def test_partner_explicit_hierarchy_with_missing_parent_is_refused():
    with pytest.raises(HierarchyError, match="no parent"):
        hierarchy_from_spec({"type": "explicit", "levels": [{"a": "north", "b": "south"}, {"north": "all"}]})


def test_explicit_table_whose_levels_do_not_nest_is_refused():
    spec = {"type": "explicit", "rows": [["value", "l1", "l2"], ["a", "x", "p"], ["b", "x", "q"]]}
    with pytest.raises(HierarchyError, match="do not nest"):
        hierarchy_from_spec(spec)


def test_partner_ordered_hierarchy_groups_in_order():
    h = hierarchy_from_spec({"type": "ordered", "values": ["none", "low", "mid", "high"], "levels": [2, 4]})
    assert h.path("mid") == ("mid", "mid--high", "none--high", TOP)
    with pytest.raises(HierarchyError, match="multiple"):
        hierarchy_from_spec({"type": "ordered", "values": ["a", "b", "c"], "levels": [2, 3]})


def test_hierarchy_for_prefers_config_then_view_then_default_then_flat():
    assert hierarchy_for("citizenship").name == "country"
    assert hierarchy_for("ageBroad", {"ageBroad": {"type": "interval", "name": "mine", "levels": [[0, 18]]}}).name == "mine"
    assert hierarchy_for("someColumn", None, "gender").name == "gender"
    flat = hierarchy_for("someColumn")
    assert flat.path("anything") == ("anything", TOP)


def test_unknown_type_is_refused():
    with pytest.raises(HierarchyError, match="type must be"):
        hierarchy_from_spec({"type": "tree"})
