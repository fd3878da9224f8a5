"""k over every published column: facts, the order detail is kept in, local suppression, meanings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import ReleaseConfig
from connector.schema import load_schema
from privacy.facts import DEFAULT_IMPORTANCE, group_columns, plan_facts
from privacy.gate import admit
from privacy.hierarchies import load_builtin
from privacy.kanon_full import SUPPRESSED, protect_rows
from privacy.protect import protect

SCHEMA = load_schema()
RULES = {c.name: c.rule for c in SCHEMA.view.values()}
ROLES = SCHEMA.view_roles()
HIERARCHIES = {"yearOfRegistration": load_builtin("year"), "CountryOfExploitation": load_builtin("country"), "ageBroad": load_builtin("age"),
               "gender": load_builtin("gender"), "citizenship": load_builtin("country"), "majorityStatus": load_builtin("majority")}
MOC = [c for c in SCHEMA.view if c.startswith("meansOfControl")]


def test_a_flag_and_the_concatenated_column_that_repeats_it_are_one_fact():
    groups = {tuple(sorted(g)) for g in group_columns(list(SCHEMA.view), RULES, ROLES)}
    moc = next(g for g in groups if "meansOfControlConcatenated" in g)
    assert set(moc) == set(MOC)
    exploit = next(g for g in groups if "typeOfExploitConcatenated" in g)
    assert {"isSexualExploit", "isForcedLabour", "isSexAndLabour"} <= set(exploit)  # isSexAndLabour repeats two flags
    recruiter = next(g for g in groups if "RecruiterRelationship" in g)
    assert {"recruiterRelationFamily", "recruiterRelationFriend"} <= set(recruiter)
    assert not any("Datasource" in g or "releasePart" in g for g in groups)  # process columns are no facts


def test_default_importance_keeps_year_country_and_age_band_first():
    facts = plan_facts(list(SCHEMA.view), rules=RULES, roles=ROLES, hierarchies=HIERARCHIES)
    assert [f.name for f in facts[:4]] == ["yearOfRegistration", "CountryOfExploitation", "majorityStatus", "ageBroad"]
    assert [f.name for f in facts][: len(DEFAULT_IMPORTANCE)] == list(DEFAULT_IMPORTANCE)
    age = next(f for f in facts if f.name == "ageBroad")
    assert age.finest == 2 and age.steps == (3, 2)  # Minor/Adult, then CTDC bands; never years


def view(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    years = rng.choice([2019, 2020, 2021], n, p=[0.2, 0.3, 0.5])
    country = rng.choice(["TH", "GB", "IT", "PL"], n, p=[0.4, 0.3, 0.2, 0.1])
    names = [c for c in MOC if c not in ("meansOfControlConcatenated", "meansOfControlRestrictsMovement")]
    profiles = [set(), {names[0]}, {names[3], names[5]}, {names[0], names[1], names[3]}, set(names[6:9]), {names[rng.integers(len(names))]}]
    chosen = rng.choice(len(profiles), n, p=[0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    flags = {c: np.array([int(c in profiles[j]) for j in chosen]) for c in names}
    frame = pd.DataFrame({"yearOfRegistration": pd.array(years, dtype="Int64"), "CountryOfExploitation": country,
                          "gender": rng.choice(["Female", "Male"], n), "ageBroad": pd.array(rng.integers(12, 60, n), dtype="Int64"),
                          **{c: pd.array(v, dtype="Int64") for c, v in flags.items()}})
    frame["meansOfControlConcatenated"] = [";".join(c for c in flags if frame.at[i, c] == 1) or None for i in range(n)]
    return frame


def test_year_and_country_keep_full_detail_before_anything_else():
    frame = view(600)
    published = protect(frame, ReleaseConfig(k=10), ROLES, rules=RULES).table
    year_country_full = (published["yearOfRegistration"].isin(["2019", "2020", "2021"]) & published["CountryOfExploitation"].isin(["TH", "GB", "IT", "PL"])).mean()
    assert year_country_full > 0.95
    assert (published["meansOfControlConcatenated"] == SUPPRESSED).mean() > 0.5  # the rare, less important fact goes first


def test_importance_from_config_changes_what_is_kept():
    frame = view(600)
    config = ReleaseConfig(k=10, importance=["meansOfControlConcatenated"])
    published = protect(frame, config, ROLES, rules=RULES).table
    default = protect(frame, ReleaseConfig(k=10), ROLES, rules=RULES).table
    assert (published["meansOfControlConcatenated"] != SUPPRESSED).sum() > (default["meansOfControlConcatenated"] != SUPPRESSED).sum()


def test_a_fact_is_shown_or_suppressed_in_all_its_columns_together():
    published = protect(view(400), ReleaseConfig(k=5), ROLES, rules=RULES).table
    hidden = published[[c for c in MOC if c in published.columns]].eq(SUPPRESSED)
    assert (hidden.all(axis=1) | (~hidden).all(axis=1)).all()


def test_l_diversity_suppresses_a_fact_that_would_reveal_its_meaning():
    frame = view(300)
    frame["isSexualExploit"] = pd.array(np.where(frame["gender"] == "Female", 1, 0), dtype="Int64")
    frame["typeOfExploitConcatenated"] = np.where(frame["gender"] == "Female", "isSexualExploit", None)
    config = ReleaseConfig.model_validate({"k": 5, "l_diversity": {"facts": ["isSexualExploit"], "l": 2}})
    protected = protect(frame, config, ROLES, rules=RULES)
    table = protected.table
    shown = table[table["isSexualExploit"] != SUPPRESSED]
    qis = ["yearOfRegistration", "CountryOfExploitation", "gender", "ageBroad"]
    for _, group in shown.groupby(qis, dropna=False):  # no class where the flag is 1 for everyone shown
        assert not (group["isSexualExploit"] == "1").all()
    admit(table, protected.privacy, roles=ROLES)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 120), k=st.integers(2, 8), seed=st.integers(0, 10**6))
def test_every_whole_row_occurs_at_least_k_times_and_every_cell_tells_the_truth(n, k, seed):
    frame = view(n, seed)
    facts = plan_facts(list(frame.columns), rules=RULES, roles=ROLES, hierarchies={c: h for c, h in HIERARCHIES.items() if c in frame.columns})
    if n < k:
        with pytest.raises(ValueError):
            protect_rows(frame, facts, k)
        return
    published, _ = protect_rows(frame, facts, k)
    rows = [tuple("" if v is None else v for v in row) for row in published.itertuples(index=False, name=None)]
    assert len(rows) == n  # nobody is withheld from a part that has k rows
    assert min(Counter(rows).values()) >= k
    for i in range(n):  # each published cell is the value, a generalization of it, or *
        for column in frame.columns:
            cell, true = published.at[i, column], frame.at[i, column]
            if cell == SUPPRESSED:
                continue
            if pd.isna(true):
                assert cell is None
            elif column in HIERARCHIES:
                assert cell in HIERARCHIES[column].path(str(true))
            else:
                assert cell == str(true)
    again, _ = protect_rows(frame, facts, k)
    assert again.equals(published)  # deterministic: release ids are content hashes


def test_the_record_says_how_many_rows_keep_year_and_country_in_full_counting_published_rows_only():
    protected = protect(view(600), ReleaseConfig(k=10), ROLES, rules=RULES)
    table, share = protected.table, protected.privacy["year_and_country_full"]
    own = (table["yearOfRegistration"].str.fullmatch(r"\d{4}") & table["CountryOfExploitation"].str.fullmatch(r"[A-Z]{2}")).mean()
    assert share == round(float(own), 4) and share > 0.9
