"""`records` fields (perpetrators, events) and the months trafficked, through the mapping engine.

Uses the packaged common schema, so the entry keys and code lists are the real ones.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from connector.mapping import MappingError, load_mapping, traffick_months
from connector.records import RawRecord

MAPPING = """\
profile: test_records
fields:
  ext_RegistrationDate: created
  ext_Perpetrators:
    from: perpetrators
    unless: {Type__c: Victim}
    each:
      per_RoleInProcess: {from: roles, split: ";"}
      per_Gender: person.gender
      per_AgeAtRegistration: {age_at: {birth: person.born, on: ext_RegistrationDate}}
      per_Citizenship: person.country
      per_RelationshipToVictim: Type__c
      per_MoneyPaid: paid
  ext_TraffickingEvents:
    from: events
    each:
      hte_Date: date
      hte_Type: type
      hte_Country: country
derive:
  ext_TraffickMonths:
    months_from_events: {events: ext_TraffickingEvents, types: [Recruitment, Exploitation], until: ext_RegistrationDate}
"""


@pytest.fixture()
def mapping(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return load_mapping(path)


def _map(mapping, **fields):
    return mapping.map_record("src", RawRecord("case-1", {"created": "2021-06-15", **fields}))


def test_each_child_becomes_an_entry_typed_by_its_key_victims_left_out(mapping) -> None:
    perpetrators = [
        {"roles": "Exploiter;RecruiterOrIntermediary", "person": {"gender": "masculine", "born": "1980-06-16", "country": "ua"}, "Type__c": "Family", "paid": "Yes"},
        {"roles": "Transporter", "person": None, "Type__c": "Other", "paid": None},
        {"roles": None, "person": {"gender": "Feminine"}, "Type__c": "Victim"},  # a further victim
    ]
    case, rejections = _map(mapping, perpetrators=perpetrators)
    assert rejections == []
    assert case.fields["ext_Perpetrators"] == [
        {"per_RoleInProcess": ["Exploiter", "RecruiterOrIntermediary"], "per_Gender": "Masculine", "per_AgeAtRegistration": 40,
         "per_Citizenship": "UA", "per_RelationshipToVictim": "Family", "per_MoneyPaid": True},
        {"per_RoleInProcess": ["Transporter"], "per_Gender": None, "per_AgeAtRegistration": None,
         "per_Citizenship": None, "per_RelationshipToVictim": "Other", "per_MoneyPaid": None},
    ]


def test_entries_are_stored_in_one_order_whatever_the_api_order(mapping) -> None:
    events = [
        {"date": "2020-03-01", "type": "Exploitation", "country": "PL"},
        {"date": "2020-01-10", "type": "Recruitment", "country": "UA"},
    ]
    one, _ = _map(mapping, events=events)
    other, _ = _map(mapping, events=list(reversed(events)))
    assert one.fields["ext_TraffickingEvents"] == other.fields["ext_TraffickingEvents"]
    assert [e["hte_Type"] for e in one.fields["ext_TraffickingEvents"]] == ["Recruitment", "Exploitation"]


def test_no_children_is_unknown_not_an_empty_list(mapping) -> None:
    case, _ = _map(mapping, perpetrators=[], events=None)
    assert case.fields["ext_Perpetrators"] is None and case.fields["ext_TraffickingEvents"] is None
    assert case.fields["ext_TraffickMonths"] is None


def test_a_bad_entry_value_is_a_rejection_naming_the_key_and_the_rest_is_kept(mapping) -> None:
    case, rejections = _map(mapping, perpetrators=[{"roles": "Exploiter", "person": {"gender": "Call Anna on 0123"}, "Type__c": "Friend"}])
    (rejection,) = rejections
    assert (rejection.source, rejection.record_id, rejection.field) == ("src", "case-1", "per_Gender")
    assert "Anna" not in str(rejection.value)
    (entry,) = case.fields["ext_Perpetrators"]
    assert entry["per_Gender"] is None and entry["per_RoleInProcess"] == ["Exploiter"]


def test_months_from_the_earliest_recruitment_or_exploitation_event_to_registration(mapping) -> None:
    events = [
        {"date": "2019-02-20", "type": "Transit", "country": "PL"},  # not a start
        {"date": "2019-03-15", "type": "Recruitment", "country": "UA"},
        {"date": "2019-05-01", "type": "Exploitation", "country": "PL"},
    ]
    case, rejections = _map(mapping, events=events)
    assert rejections == []
    assert case.fields["ext_TraffickMonths"] == 27  # 2019-03-15 -> 2021-06-15


def test_months_unknown_without_a_start_event_or_a_registration_date(mapping) -> None:
    case, _ = _map(mapping, events=[{"date": "2019-02-20", "type": "Transit", "country": "PL"}])
    assert case.fields["ext_TraffickMonths"] is None
    case, _ = mapping.map_record("src", RawRecord("case-2", {"events": [{"date": "2019-03-15", "type": "Recruitment"}]}))
    assert case.fields["ext_TraffickMonths"] is None


def test_an_event_after_registration_is_a_named_rejection_and_the_months_unknown(mapping) -> None:
    events = [{"date": "2019-03-15", "type": "Recruitment", "country": "UA"}, {"date": "2021-07-01", "type": "Exploitation", "country": "PL"}]
    case, rejections = _map(mapping, events=events)
    assert case.fields["ext_TraffickMonths"] is None
    (rejection,) = rejections
    assert (rejection.source, rejection.record_id, rejection.field) == ("src", "case-1", "hte_Date")
    assert "Exploitation event dated after the registration date" in rejection.reason
    assert rejection.value == "[redacted, 10 chars]"


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2020, 1, 31), date(2020, 2, 29), 0),
        (date(2020, 1, 15), date(2020, 2, 15), 1),
        (date(2020, 1, 15), date(2021, 1, 14), 11),
        (date(2020, 1, 15), date(2021, 1, 15), 12),
        (date(2021, 6, 15), date(2021, 6, 15), 0),
    ],
)
def test_whole_months_count_once_the_day_is_reached(start: date, end: date, months: int) -> None:
    assert traffick_months(start, end) == months


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  ext_Perpetrators: perpetrators\n", "`each:` is for a records field"),
        ("  ext_Perpetrators:\n    from: p\n    each: {per_Nickname: x}\n", "'per_Nickname' is not an entry key of ext_Perpetrators"),
        ("  ext_Perpetrators:\n    from: p\n    each: {per_Gender: {age_at: {birth: b, on: ext_RegistrationDate}}}\n", "age_at needs"),
        ("  ext_Perpetrators:\n    from: p\n    each: {per_Gender: {from: g, map: {f: Femme}}}\n", "'Femme' is not a code of list 'gender'"),
        ("  prs_Gender: {from: g, each: {per_Gender: x}}\n", "`each:` is for a records field"),
    ],
)
def test_a_bad_records_rule_is_refused_on_load_naming_the_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("profile: bad\nfields:\n" + body, encoding="utf-8")
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert message in str(error.value) and f"{path}:" in str(error.value)


def test_a_bad_months_derivation_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "profile: bad\nfields:\n  ext_RegistrationDate: c\nderive:\n"
        "  ext_TraffickMonths: {months_from_events: {events: ext_TraffickingEvents, types: [Arrival], until: ext_RegistrationDate}}\n",
        encoding="utf-8",
    )
    with pytest.raises(MappingError, match="types must be a list of event_type codes"):
        load_mapping(path)
