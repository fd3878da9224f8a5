"""The Salesforce sandbox's query planner: the stamp index and IN-list sets change cost, never the answer.

Each query's Ids are compared with a full scan of the same object through `Org.matches`, the way
the org answered before it had an index, at the boundaries where an off-by-one would show.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector.sandbox.generate import evolve, generate_cases
from connector.sandbox.salesforce_org import Org
from connector.sandbox.salesforce_soql import parse
from connector.sources.salesforce_soql import soql_datetime, soql_string


@pytest.fixture(scope="module")
def org() -> Org:
    cases = generate_cases(80, seed=5)
    org = Org()
    org.set_cases(cases)
    org.set_cases(evolve(cases, seed=6))  # a second stamp for the edited records, deletions too
    return org


def _scan(org: Org, text: str, include_deleted: bool) -> list[str]:
    query = parse(text)
    obj = org._object(query.obj)
    org.clear_query_cache()
    return [r["Id"] for r in org.records[obj].values() if (include_deleted or not r["IsDeleted"]) and org.matches(obj, r, query.where)]


def _stamps(org: Org, obj: str) -> list:
    return sorted({r["SystemModstamp"] for r in org.records[obj].values()})


@pytest.mark.parametrize("include_deleted", [False, True])
@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "="])
def test_a_stamp_range_gives_what_a_full_scan_gives(org: Org, op: str, include_deleted: bool) -> None:
    stamps = _stamps(org, "Case")
    assert len(stamps) >= 2, "the fixture must hold cases with different stamps"
    for stamp in (stamps[0], stamps[len(stamps) // 2], stamps[-1], stamps[-1] + timedelta(seconds=1)):
        text = f"SELECT Id FROM Case WHERE SystemModstamp {op} {soql_datetime(stamp)}"
        org.clear_query_cache()
        assert org.run(parse(text), include_deleted) == _scan(org, text, include_deleted), text


def test_a_window_with_other_conditions_and_an_or_gives_what_a_full_scan_gives(org: Org) -> None:
    stamps = _stamps(org, "Case")
    low, high = soql_datetime(stamps[0]), soql_datetime(stamps[-1])
    some_id = next(iter(org.records["Case"]))
    for text in (
        f"SELECT Id FROM Case WHERE SystemModstamp >= {low} AND SystemModstamp <= {high}",
        f"SELECT Id FROM Case WHERE SystemModstamp > {low} AND SystemModstamp <= {high} AND IsDeleted = false",
        f"SELECT Id FROM Case WHERE (SystemModstamp > {high} OR Id = {soql_string(some_id)})",
        f"SELECT Id FROM Case WHERE LastModifiedDate >= {low} AND CreatedDate >= 2000-01-01",
    ):
        org.clear_query_cache()
        assert org.run(parse(text), True) == _scan(org, text, True), text


@pytest.mark.parametrize("op", [">", ">=", "<="])
def test_a_parent_stamp_range_gives_what_a_full_scan_gives(org: Org, op: str) -> None:
    """`Contact.SystemModstamp > X` on Case (the source's changed-contacts query): the changed
    Contacts' Cases, through a reverse index of the lookup."""
    stamps = _stamps(org, "Contact")
    found_any = False
    for stamp in (stamps[0], stamps[len(stamps) // 2], stamps[-1]):
        text = f"SELECT Id FROM Case WHERE Contact.SystemModstamp {op} {soql_datetime(stamp)} AND Contact.SystemModstamp <= {soql_datetime(stamps[-1])}"
        org.clear_query_cache()
        found = org.run(parse(text), False)
        assert found == _scan(org, text, False), text
        found_any = found_any or bool(found)
    assert found_any, "the fixture must give the query something to find"
    for text in (
        f"SELECT Id FROM Case WHERE Contact.SystemModstamp >= {soql_datetime(stamps[0])} AND Contact.SystemModstamp <= {soql_datetime(stamps[-1])}",
    ):
        org.clear_query_cache()
        assert org.run(parse(text), True) == _scan(org, text, True), text


def test_an_id_list_matches_case_insensitively_as_equality_does(org: Org) -> None:
    ids = list(org.records["Case"])[:5]
    listed = ", ".join(soql_string(i.lower() if n % 2 else i) for n, i in enumerate(ids))
    text = f"SELECT Id FROM Case WHERE Id IN ({listed})"
    org.clear_query_cache()
    found = org.run(parse(text), True)
    assert found == _scan(org, text, True)
    assert found == ids


@pytest.mark.parametrize("include_deleted", [False, True])
def test_a_lookup_in_a_list_gives_what_a_full_scan_gives(org: Org, include_deleted: bool) -> None:
    """`Case__c IN (...)`, the keyed read of a batch's children, served from an index of the
    lookup's values: same rows, same order, deleted rows only under queryAll, other conditions kept."""
    child = "Connected_Person_or_Organisation__c"
    case_ids = list(org.records["Case"])
    chunk = [i.upper() if n % 3 == 0 else i for n, i in enumerate(case_ids[::3])] + ["500000000000000AAA"]
    listed = ", ".join(soql_string(i) for i in chunk)
    deleted_parents = {r["Case__c"] for r in org.records[child].values() if r["IsDeleted"]}
    assert deleted_parents & {i.casefold() for i in chunk} | deleted_parents & set(chunk), "the fixture must list a case with a deleted child"
    for text in (
        f"SELECT Id, Case__c FROM {child} WHERE Case__c IN ({listed}) AND IsDeleted = false ORDER BY Case__c, Id",
        f"SELECT Id FROM {child} WHERE Case__c IN ({listed})",
        f"SELECT Id FROM {child} WHERE Case__c IN ({listed}) AND Type__c != 'Victim'",
        f"SELECT Id FROM {child} WHERE (Case__c IN ({listed}) OR Type__c = 'Victim')",
    ):
        org.clear_query_cache()
        found = org.run(parse(text), include_deleted)
        org.clear_query_cache()
        scanned = _scan(org, text, include_deleted)
        if "ORDER BY" in text:
            assert sorted(found) == sorted(scanned) and found == sorted(found, key=lambda i: (org.records[child][i]["Case__c"], i)), text
        else:
            assert found == scanned, text
        assert found, text
