"""Merging partners' releases: common levels by the hierarchies, then k re-checked on the union."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.central.merge import MergeInput, lift, merge_releases
from connector.release import build_bundle
from connector.schema import load_schema
from privacy.gate import admit, parse_csv_bytes
from privacy.hierarchies import HierarchyError, load_builtin
from privacy.kanon import anonymize
from tests.unit.test_central_fixtures import HIERARCHIES, QIS, level0_table, make_bundle


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


def test_two_partners_are_brought_to_the_coarsest_level_and_the_manifest_says_so():
    a, b = make_bundle("ngo-a"), make_bundle("ngo-b")
    merged = merge_releases([as_input(a), as_input(b)], load_schema())
    header, rows = parse_csv_bytes(merged.release.data_csv)
    by_partner = {p: {tuple(r[header.index(q)] for q in QIS) for r in rows if r[0] == p} for p in ("ngo-a", "ngo-b")}
    assert ("2020-2024", "Female", "30--38", "Eastern Europe") in by_partner["ngo-a"]
    assert all(r[header.index("ageBroad")] in {"18--20", "21--23", "24--26", "30--38", "39--47"} for r in rows)
    steps = {s["column"]: s for s in merged.manifest["generalization"]}
    assert steps["citizenship"]["from_levels"] == {"ngo-a": 0, "ngo-b": 1} and steps["citizenship"]["target_level"] == 1
    assert steps["gender"]["action"] == "already at a common level"
    assert merged.manifest["privacy"]["quasi_identifiers"][:2] == ["partner", "release"]
    assert merged.release.row_count == 24 and merged.manifest["privacy"]["k"] == 3


def test_a_partner_hierarchy_the_receiver_cannot_know_is_suppressed_to_star():
    a = make_bundle("ngo-a")
    b = as_input(make_bundle("ngo-b"))
    privacy = {**b.privacy, "hierarchies": {**b.privacy["hierarchies"], "citizenship": "partner-regions"}}
    merged = merge_releases([as_input(a), MergeInput(b.partner, b.release_id, 1, b.data_csv, privacy)], load_schema())
    header, rows = parse_csv_bytes(merged.release.data_csv)
    assert {r[header.index("citizenship")] for r in rows} == {"*"}
    step = next(s for s in merged.manifest["generalization"] if s["column"] == "citizenship")
    assert step["action"] == "suppressed to *" and "differ" in step["reason"]


def test_a_release_whose_labels_do_not_fit_its_declared_level_is_excluded_with_the_reason():
    a, b = as_input(make_bundle("ngo-a")), as_input(make_bundle("ngo-b"))
    wrong = MergeInput(b.partner, b.release_id, 1, b.data_csv, {**b.privacy, "levels": {**b.privacy["levels"], "ageBroad": 1}})
    merged = merge_releases([a, wrong], load_schema())
    assert merged.manifest["excluded"][0]["partner"] == "ngo-b" and "30--38" in merged.manifest["excluded"][0]["reason"]
    assert {r[0] for r in parse_csv_bytes(merged.release.data_csv)[1]} == {"ngo-a"}


def _bundle_at(partner: str, levels: dict[str, int], k: int):
    schema = load_schema()
    hierarchies = {q: load_builtin(HIERARCHIES[q]) for q in QIS}
    result = anonymize(level0_table(partner, copies=k), QIS, hierarchies, k=k, suppression_limit=0.0, levels=levels, search="fixed")
    release = admit(result.table, {**result.record, "schema_version": schema.version}, roles=schema.view_roles())
    return build_bundle(release, partner=partner, schema=schema, run_ids=["r"])


LEVEL_CHOICES = st.fixed_dictionaries({"yearOfRegistration": st.integers(0, 3), "gender": st.integers(0, 1), "ageBroad": st.integers(0, 4), "citizenship": st.integers(0, 3)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels_a=LEVEL_CHOICES, levels_b=LEVEL_CHOICES, k_a=st.integers(2, 4), k_b=st.integers(2, 4))
def test_merging_releases_generalized_to_any_levels_stays_k_anonymous(levels_a, levels_b, k_a, k_b):
    merged = merge_releases([as_input(_bundle_at("ngo-a", levels_a, k_a)), as_input(_bundle_at("ngo-b", levels_b, k_b))], load_schema())
    header, rows = parse_csv_bytes(merged.release.data_csv)
    qi_index = [header.index(c) for c in ("partner", *QIS)]
    counts: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[i] for i in qi_index)
        counts[key] = counts.get(key, 0) + 1
    assert min(counts.values()) >= min(k_a, k_b)
    for q in QIS:  # one level per column across partners
        assert merged.manifest["privacy"]["levels"][q] == max(levels_a[q], levels_b[q])
