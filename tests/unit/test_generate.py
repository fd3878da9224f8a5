"""The case generator: reproducible, realistic in its joint distributions, messy at the promised rate."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from connector.mapping import fold
from connector.sandbox import generate as gen
from connector.sandbox.generate import (
    LABELS,
    MESS_KINDS,
    MESSABLE,
    GeneratedCase,
    evolve,
    expected_fields,
    expected_rejections,
    exploitation_country,
    generate_cases,
    personal_values,
    render,
)


@pytest.fixture(scope="module")
def cases() -> list[GeneratedCase]:
    return generate_cases(6000, seed=11)


@pytest.fixture(scope="module")
def expected(cases) -> dict[str, dict]:
    return {c.case_id: expected_fields(c) for c in cases}


def test_same_seed_gives_identical_cases_and_other_seed_differs():
    assert generate_cases(300, seed=4) == generate_cases(300, seed=4)
    assert generate_cases(300, seed=4) != generate_cases(300, seed=5)


def test_ids_are_unique_and_follow_registration_order(cases):
    assert [c.case_id for c in cases] == [f"C{i:06d}" for i in range(1, len(cases) + 1)]
    assert all(a.created_at <= b.created_at for a, b in zip(cases, cases[1:]))
    assert all(c.created_at.tzinfo is timezone.utc and c.updated_at >= c.created_at for c in cases)
    assert {c.created_at.year for c in cases} == set(range(2015, 2026))


def test_about_a_fifth_to_a_quarter_are_minors(expected):
    known = [e["ext_MajorityStatus"] for e in expected.values() if e["ext_MajorityStatus"]]
    assert 0.19 <= known.count("Minor") / len(known) <= 0.27


def test_sexual_exploitation_mostly_female_and_forced_labour_mostly_adult_men(cases, expected):
    sexual = [c.victim["prs_Gender"] for c in cases if "SexualExploitation" in c.case["vic_TypeOfExploitation"]]
    labour = [
        c.victim["prs_Gender"]
        for c in cases
        if c.case["vic_TypeOfExploitation"] == ["ForcedLabour"] and expected[c.case_id]["ext_MajorityStatus"] == "Adult"
    ]
    assert Counter(sexual)["Feminine"] / len(sexual) > 0.75
    assert Counter(labour)["Masculine"] / len(labour) > 0.6


def test_child_labour_only_for_minors(cases, expected):
    statuses = Counter(expected[c.case_id]["ext_MajorityStatus"] for c in cases if "ChildLabour" in c.case["vic_TypeOfExploitation"])
    # only a re-registration of the same person may have turned 18 in between
    assert statuses["Adult"] <= 0.01 * sum(statuses.values()) and statuses["Minor"] > 0


def test_labour_industry_only_on_labour_cases(cases):
    for c in cases:
        if c.case["vic_ForcedLabourIndustry"] is not None:
            assert {"ForcedLabour", "ChildLabour"} & set(c.case["vic_TypeOfExploitation"])
        if c.case["vic_TypeOfSexExploitation"]:
            assert "SexualExploitation" in c.case["vic_TypeOfExploitation"]


def test_citizenship_and_exploitation_follow_real_corridors(cases):
    pairs = Counter((c.victim["prs_Citizenship"][0], exploitation_country(c)) for c in cases)
    top = {pair for pair, _ in pairs.most_common(12)}
    assert {("UA", "PL"), ("NG", "IT"), ("MM", "TH"), ("PH", "SA"), ("RO", "GB")} <= top
    domestic = sum(n for (cit, coe), n in pairs.items() if cit == coe) / len(cases)
    assert 0.1 <= domestic <= 0.35


def test_means_of_control_usually_two_to_four_and_perpetrators_one_to_three(cases):
    sizes = Counter(len(c.case["vic_MethodsOfControl"]) for c in cases)
    assert (sizes[2] + sizes[3] + sizes[4]) / len(cases) > 0.8
    assert all(1 <= len(c.perpetrators) <= 3 for c in cases)
    assert all("RecruiterOrIntermediary" in c.perpetrators[0]["per_RoleInProcess"] for c in cases)
    relations = Counter(p["relation"] for c in cases for p in c.perpetrators)
    assert set(relations) == {"IntimatePartner", "Friend", "Family", "Other", "Unknown"}


def test_non_latin_names_appear(cases):
    scripts = {
        "cyrillic": r"[\u0400-\u04FF]", "arabic": r"[\u0600-\u06FF]", "thai": r"[\u0E00-\u0E7F]",
        "burmese": r"[\u1000-\u109F]", "ethiopic": r"[\u1200-\u137F]",
    }  # fmt: skip
    names = " ".join(c.victim["prs_FirstName"] for c in cases)
    for script, pattern in scripts.items():
        assert re.search(pattern, names), script


def test_mess_applied_at_the_set_rate_with_every_kind():
    cases = generate_cases(3000, seed=2, mess_rate=0.1)
    available = sum(1 for c in cases for name in MESSABLE if _has_value(c, name))
    messed = sum(len(c.mess) for c in cases)
    assert 0.085 <= messed / available <= 0.115
    assert set(Counter(k for c in cases for k in c.mess.values())) == set(MESS_KINDS)
    for c in cases:
        for name, kind in c.mess.items():
            assert kind in MESSABLE[name]


def test_no_mess_rate_means_clean_cases_without_future_births_or_duplicates():
    cases = generate_cases(2000, seed=2, mess_rate=0.0)
    assert all(not c.mess and not expected_rejections(c) for c in cases)
    ids = [c.victim["prs_IdentityNumber"] for c in cases if c.victim["prs_IdentityNumber"]]
    assert len(ids) == len(set(ids))


def test_duplicates_are_the_same_person_under_a_new_id():
    cases = generate_cases(3000, seed=3, mess_rate=0.1)
    by_identity: dict[str, list[GeneratedCase]] = {}
    for c in cases:
        if c.victim["prs_IdentityNumber"]:
            by_identity.setdefault(c.victim["prs_IdentityNumber"], []).append(c)
    twins = [group for group in by_identity.values() if len(group) > 1]
    assert twins
    for group in twins:
        assert len({c.case_id for c in group}) == len(group)
        assert len({(c.victim["prs_FirstName"], c.victim["prs_Birthdate"]) for c in group}) == 1


def test_future_birth_dates_become_rejections_and_unknown_age():
    cases = generate_cases(4000, seed=6, mess_rate=0.1)
    future = [c for c in cases if c.victim["prs_Birthdate"] and c.victim["prs_Birthdate"] > c.created_at.date()]
    assert future
    for c in future:
        e = expected_fields(c)
        assert e["prs_Birthdate"] is None and e["ext_AgeAtRegistration"] is None and e["ext_MajorityStatus"] is None
        if c.mess.get("prs_Birthdate") not in ("blank", "free_text"):
            assert "prs_Birthdate" in expected_rejections(c)


def test_expected_fields_are_normalised_and_consistent(cases, expected):
    for c in cases[:2000]:
        e = expected[c.case_id]
        assert e["ext_RegistrationDate"] == c.created_at.date().isoformat() == e["cas_IncomingReferralDate"]
        if e["prs_Birthdate"]:
            born = date.fromisoformat(e["prs_Birthdate"])
            age = e["ext_AgeAtRegistration"]
            assert _add_years(born, age) <= c.created_at.date() < _add_years(born, age + 1)
            assert e["ext_MajorityStatus"] == ("Minor" if age < 18 else "Adult")
        for name, value in e.items():
            if isinstance(value, list) and name not in ("ext_Perpetrators", "ext_TraffickingEvents"):  # records: lists of dicts
                assert value == sorted(value) and value
        for name in ("vic_MethodsOfControl", "prs_Gender", "cas_Status"):
            kind = c.mess.get(name)
            if kind in ("blank", "unknown_code", "free_text"):
                assert e[name] is None
            elif kind == "spaces_case":
                assert e[name] is not None
        assert e["ext_PerpetratorRoles"] == sorted({r for p in c.perpetrators for r in p["per_RoleInProcess"]})


def test_rejections_are_exactly_unknown_codes_free_text_and_future_births(cases):
    for c in cases:
        wanted = {n if n != "vic_LocationOfExploitation" else "ext_CountryOfExploitation" for n, k in c.mess.items() if k in ("unknown_code", "free_text")}
        assert expected_rejections(c) - {"prs_Birthdate"} == wanted - {"prs_Birthdate"}


def test_render_spaces_case_keeps_the_value_for_a_case_and_space_insensitive_reader():
    case = _with_mess("vic_MethodsOfControl", "spaces_case")
    text = "Debt bondage ;False promises"
    messy = render(case, "vic_MethodsOfControl", text)
    assert messy != text
    assert [fold(p) for p in messy.split(";")] == [fold(p) for p in text.split(";")]


def test_render_date_format_is_unambiguous_and_parses_back():
    for i in range(40):
        case = _with_mess("prs_Birthdate", "date_format", case_id=f"C{i:06d}")
        day = date(2019, 2, 1 + i % 28)
        messy = render(case, "prs_Birthdate", day.isoformat())
        assert messy != day.isoformat()
        parsed = None
        for fmt in ("%d/%m/%Y", "%Y.%m.%d", "%b %d %Y"):
            try:
                parsed = datetime.strptime(messy, fmt).date()
            except ValueError:
                continue
        assert parsed == day, messy
        if messy.count("/") == 2:
            assert int(messy.split("/")[0]) > 12  # day-first only when it cannot be read month-first


def test_render_blank_unknown_and_free_text():
    assert render(_with_mess("prs_Gender", "blank"), "prs_Gender", "Feminine") in (None, "")
    unknown = render(_with_mess("prs_Gender", "unknown_code"), "prs_Gender", "Feminine")
    assert fold(unknown) not in {fold(x) for pair in LABELS["prs_Gender"].items() for x in pair}
    free = render(_with_mess("prs_Gender", "free_text"), "prs_Gender", "Feminine")
    assert "Olena" in free or "Kovalenko" in free
    assert render(_with_mess("prs_Gender", "free_text"), "cas_Status", "Active") == "Active"  # other fields untouched


def test_evolve_edits_adds_and_deletes_without_changing_the_input():
    before = generate_cases(2000, seed=8)
    snapshot = [dataclasses.replace(c) for c in before]
    after = evolve(before, seed=9, edit_share=0.1, new=50, delete_share=0.02)
    assert before == snapshot
    assert len(after) == len(before) + 50
    old = {c.case_id: c for c in before}
    deleted = [c for c in after if c.deleted]
    edited = [c for c in after if c.case_id in old and not c.deleted and c != old[c.case_id]]
    assert len(deleted) == 40
    assert 150 <= len(edited) <= 200
    latest = max(c.updated_at for c in before)
    for c in deleted + edited:
        assert c.updated_at > old[c.case_id].updated_at
    fresh = after[len(before) :]
    assert [c.case_id for c in fresh] == [f"C{i:06d}" for i in range(2001, 2051)]
    assert all(c.created_at >= max(x.created_at for x in before) for c in fresh)
    assert max(c.updated_at for c in after) <= latest + timedelta(days=30)
    assert evolve(before, seed=9, new=50) == evolve(before, seed=9, new=50)


def test_personal_values_cover_identifiers_and_free_text_but_not_codes(cases):
    values = personal_values(cases[:500])
    c = cases[0]
    assert c.victim["prs_FirstName"] in values
    for name in ("prs_Email", "prs_MobilePhone", "prs_IdentityNumber"):
        if c.victim[name]:
            assert c.victim[name] in values
    assert c.case["cas_CaseOwner"] in values
    assert c.perpetrators[0]["prs_FirstName"] in values
    assert not values & {"ForcedLabour", "Feminine", "UA", "Adult", "Closed"}


def _has_value(case: GeneratedCase, name: str):
    if name == "vic_LocationOfExploitation":
        return exploitation_country(case) is not None
    value = case.victim[name] if name in case.victim else case.case.get(name)
    return value not in (None, [])


def _with_mess(name: str, kind: str, case_id: str = "C000001") -> GeneratedCase:
    return GeneratedCase(
        case_id=case_id,
        created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
        updated_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
        deleted=False,
        victim={"prs_FirstName": "Olena", "prs_SecondName": "Kovalenko", "prs_MobilePhone": "+380501234567"},
        case={},
        mess={name: kind},
    )


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def test_perpetrator_details_go_with_the_relation(cases, expected):
    entries = [p for c in cases for p in expected[c.case_id]["ext_Perpetrators"] or []]
    assert len(entries) == sum(len(c.perpetrators) for c in cases)

    def share(rows, test):
        return sum(1 for r in rows if test(r)) / max(1, len(rows))

    family = [p for p in entries if p["per_RelationshipToVictim"] == "Family"]
    strangers = [p for p in entries if p["per_RelationshipToVictim"] == "Other"]
    assert family and strangers
    assert share(family, lambda p: "SoldIndividual" in p["per_RoleInProcess"]) > 2 * share(strangers, lambda p: "SoldIndividual" in p["per_RoleInProcess"])
    ages = lambda rows: [p["per_AgeAtRegistration"] for p in rows if p["per_AgeAtRegistration"] is not None]  # noqa: E731
    assert sum(ages(family)) / len(ages(family)) > sum(ages(strangers)) / len(ages(strangers)) + 3
    sellers = [p for p in entries if {"SoldIndividual", "BoughtIndividual", "BrokerTravelAgent"} & set(p["per_RoleInProcess"])]
    others = [p for p in entries if p not in sellers]
    assert share(sellers, lambda p: p["per_MoneyPaid"] is True) > 2 * share(others, lambda p: p["per_MoneyPaid"] is True)
    assert any(p["per_MoneyPaid"] is None for p in entries) and any(p["per_AgeAtRegistration"] is None for p in entries)


def test_forced_marriage_lasts_longer_than_sexual_exploitation_and_a_late_event_leaves_it_unknown(cases, expected):
    def mean_months(kind):
        months = [expected[c.case_id]["ext_TraffickMonths"] for c in cases if kind in (c.case["vic_TypeOfExploitation"] or [])]
        known = [m for m in months if m is not None]
        return sum(known) / len(known)

    assert mean_months("ForcedMarriage") > 1.5 * mean_months("SexualExploitation")
    late = [c for c in cases if gen.has_late_event(c)]
    assert late and all(expected[c.case_id]["ext_TraffickMonths"] is None for c in late)
    assert all("hte_Date" in expected_rejections(c, events=True) and "hte_Date" not in expected_rejections(c) for c in late)
