"""Merging partners' releases: side by side with a partner column, every whole row re-checked for k."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.central.merge import MergeInput, lift, merge_releases
from connector.schema import load_schema
from privacy.gate import parse_csv_bytes
from privacy.hierarchies import HierarchyError, load_builtin
from tests.unit.test_central_fixtures import QIS, make_bundle


def as_input(bundle, version: int = 1) -> MergeInput:
    return MergeInput(bundle.partner, bundle.release_id, version, bundle.files["data.csv"], json.loads(bundle.files["privacy.json"]))


def test_lift_maps_a_label_to_its_ancestor_at_a_higher_level():
    age, country, year = load_builtin("age"), load_builtin("country"), load_builtin("year")
    assert lift(age, "30--34", 1, 2) == "30--38"
    assert lift(age, "19", 0, 3) == "Adult"
    assert lift(country, "UA", 0, 2) == "Europe"
    assert lift(year, "2022-2023", 1, 2) == "2020-2024"
    assert lift(age, "", 1, 2) == "" and lift(age, "", 1, 4) == "*" and lift(age, "*", 0, 1) == "*"
    with pytest.raises(HierarchyError, match="ageBroad"):
        lift(age, "30--36", 1, 2, "ageBroad")


def test_two_partners_are_merged_side_by_side_each_row_keeping_its_detail():
    """Nothing is lifted to the coarsest level any partner used: ngo-a's 2-year bands and countries
    stay as they are next to ngo-b's coarser rows (the central team counts by year and country)."""
    a, b = make_bundle("ngo-a"), make_bundle("ngo-b")
    merged = merge_releases([as_input(a), as_input(b)], load_schema())
    header, rows = parse_csv_bytes(merged.release.data_csv)
    assert header[0] == "partner"
    own = {p: {tuple(r[header.index(q)] for q in QIS) for r in rows if r[0] == p} for p in ("ngo-a", "ngo-b")}
    for partner, bundle in (("ngo-a", a), ("ngo-b", b)):
        b_header, b_rows = parse_csv_bytes(bundle.files["data.csv"])
        assert own[partner] == {tuple(r[b_header.index(q)] for q in QIS) for r in b_rows}
    assert any(r[header.index("citizenship")] in {"UA", "MD"} for r in rows if r[0] == "ngo-a")
    assert merged.release.row_count == 24 and merged.manifest["privacy"]["k"] == 3
    assert merged.manifest["detail"]["yearOfRegistration"]["full"] > 0
    assert "No column was generalized" in merged.manifest["guarantee"]


def test_a_release_made_before_the_full_row_guarantee_is_left_out_with_the_reason():
    a, b = as_input(make_bundle("ngo-a")), as_input(make_bundle("ngo-b"))
    old = MergeInput(b.partner, b.release_id, 1, b.data_csv, {k: v for k, v in b.privacy.items() if k != "guarantee"})
    merged = merge_releases([a, old], load_schema())
    assert merged.manifest["excluded"][0]["partner"] == "ngo-b" and "full-row guarantee" in merged.manifest["excluded"][0]["reason"]
    assert {r[0] for r in parse_csv_bytes(merged.release.data_csv)[1]} == {"ngo-a"}


LEVEL_CHOICES = st.fixed_dictionaries({"yearOfRegistration": st.integers(0, 2), "gender": st.integers(0, 0), "ageBroad": st.integers(0, 3), "citizenship": st.integers(0, 2)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels_a=LEVEL_CHOICES, levels_b=LEVEL_CHOICES, k_a=st.integers(2, 4), k_b=st.integers(2, 4))
def test_merging_releases_at_any_levels_keeps_every_whole_row_k_anonymous(levels_a, levels_b, k_a, k_b):
    bundles = [make_bundle("ngo-a", k=k_a, levels=levels_a), make_bundle("ngo-b", k=k_b, levels=levels_b)]
    merged = merge_releases([as_input(bundle) for bundle in bundles], load_schema())
    header, rows = parse_csv_bytes(merged.release.data_csv)
    counts: dict[tuple, int] = {}
    for row in rows:  # an independent count over every column of the merged bytes
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert min(counts.values()) >= min(k_a, k_b)
    assert merged.release.row_count == sum(json.loads(b.files["privacy.json"])["records_out"] for b in bundles)
