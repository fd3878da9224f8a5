"""The Salesforce source against the Salesforce sandbox over real HTTPS on 127.0.0.1.

The first tests drive simple-salesforce itself (unmodified) against the sandbox, so the sandbox's
shapes are the ones the library expects; the rest run the source: full pull, incremental pull with
edits, deletes and child-only changes, REST and Bulk API 2.0, faults, and the mapped result
compared with the generator's truth.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import timedelta
from typing import Any

import pytest
from simple_salesforce import Salesforce

from connector.config import SourceConfig
from connector.mapping import load_mapping
from connector.records import Page
from connector.sandbox.generate import evolve, expected_fields, expected_rejections, generate_cases
from connector.sandbox.salesforce import start_sandbox
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.salesforce import SalesforceSource

N_CASES = 60


@pytest.fixture(scope="module")
def cases() -> list:
    return generate_cases(N_CASES, seed=11)


@pytest.fixture()
def sandbox(cases):
    handle = start_sandbox(cases, page_size=25)
    yield handle
    handle.stop()


def make_source(handle, **overrides: Any) -> SalesforceSource:
    options = {
        "login_url": handle.url,
        "auth": "jwt",
        "client_id": handle.credentials.client_id,
        "username": handle.credentials.username,
        "private_key": {"file": str(handle.private_key_file)},
        "ca_file": str(handle.ca_file),
        "backoff_seconds": 0,
        "bulk_poll_seconds": 0,
        "lookback_seconds": 0,
    }
    options.update(overrides)
    return SalesforceSource(SourceConfig(id="sf", type="salesforce", mapping="salesforce_htcds", options=options), None, sleep=lambda s: None)


def pull(source: SalesforceSource, cursor: str | None = None) -> list[Page]:
    try:
        return list(source.pages(cursor))
    finally:
        source.close()


def records(pages: list[Page]) -> dict[str, Any]:
    return {r.fields["CaseNumber"] if not r.deleted else r.record_id: r for p in pages for r in p.records}


# -- simple-salesforce, unmodified, against the sandbox -------------------------------------------------


def test_simple_salesforce_query_all_and_iter_follow_next_records_url(sandbox):
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    result = sf.query_all("SELECT Id, CaseNumber, Contact.Gender__c FROM Case ORDER BY CaseNumber")
    assert result["totalSize"] == N_CASES
    assert [r["CaseNumber"] for r in result["records"]] == sorted(c.case_id for c in generate_cases(N_CASES, seed=11))
    assert result["records"][0]["attributes"]["type"] == "Case"
    assert sandbox.counts["query_more"] == 2  # 60 rows in batches of 25
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Contact WHERE Gender__c != null")]
    assert len(ids) == len(set(ids)) > N_CASES  # victims and perpetrators
    assert sf.query("SELECT COUNT() FROM Case")["totalSize"] == N_CASES
    assert sf.api_usage["api-usage"].used == sandbox.counts["api"]


def test_simple_salesforce_bulk2_query_pages_with_locator(sandbox):
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    chunks = list(sf.bulk2.Case.query("SELECT Id, CaseNumber, Contact.Gender__c FROM Case", max_records=25, wait=0))
    assert len(chunks) == 3
    rows = [row for chunk in chunks for row in csv.DictReader(io.StringIO(chunk))]
    assert len(rows) == N_CASES and set(rows[0]) == {"Id", "CaseNumber", "Contact.Gender__c"}
    assert sandbox.counts["bulk_results"] == 3


def test_bulk_results_without_order_by_are_pk_chunked_not_in_stamp_order(sandbox):
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    rows = [r for chunk in sf.bulk2.Case.query("SELECT Id, SystemModstamp FROM Case", wait=0) for r in csv.DictReader(io.StringIO(chunk))]
    assert len(rows) == N_CASES
    stamps = [(r["SystemModstamp"], r["Id"]) for r in rows]
    assert stamps != sorted(stamps) and [r["Id"] for r in rows] != sorted(r["Id"] for r in rows)
    assert sandbox.counts.get("bulk_order_by", 0) == 0
    ordered = [r for chunk in sf.bulk2.Case.query("SELECT Id, SystemModstamp FROM Case ORDER BY SystemModstamp, Id", wait=0) for r in csv.DictReader(io.StringIO(chunk))]
    assert [(r["SystemModstamp"], r["Id"]) for r in ordered] == sorted(stamps)  # honoured, but counted:
    assert sandbox.counts["bulk_order_by"] == 1  # ORDER BY disables PK chunking on Salesforce


def test_lookup_relationship_fields_have_the_documented_rest_and_bulk_shapes(sandbox):
    """REST nests the parent as {"attributes", "Name"} or null (SOQL guide, "Understanding Query
    Results"); Bulk CSV has one column per selected path, empty for a null relationship."""
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    soql = "SELECT Id, Referring_Organisation__c, Referring_Organisation__r.Name, Referred_Organisation__r.Name FROM Case"
    records = sf.query_all(soql)["records"]
    linked = next(r for r in records if r["Referring_Organisation__c"])
    assert linked["Referring_Organisation__r"]["attributes"]["type"] == "Account" and linked["Referring_Organisation__r"]["Name"]
    assert any(r["Referred_Organisation__r"] is None for r in records)
    rows = [r for chunk in sf.bulk2.Case.query(soql, wait=0) for r in csv.DictReader(io.StringIO(chunk))]
    assert set(rows[0]) == {"Id", "Referring_Organisation__c", "Referring_Organisation__r.Name", "Referred_Organisation__r.Name"}
    by_id = {r["Id"]: r for r in rows}
    assert by_id[linked["Id"]]["Referring_Organisation__r.Name"] == linked["Referring_Organisation__r"]["Name"]
    assert any(r["Referred_Organisation__r.Name"] == "" for r in rows)


def test_query_all_subqueries_return_deleted_children_unless_filtered(sandbox):
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    soql = "SELECT Id, (SELECT Id, IsDeleted FROM Connected_Persons_or_Organisations__r{}) FROM Case"

    def children(records):
        return [c for r in records for c in ((r["Connected_Persons_or_Organisations__r"] or {}).get("records") or [])]

    with_deleted = children(sf.query_all(soql.format(""), include_deleted=True)["records"])
    assert any(c["IsDeleted"] for c in with_deleted)  # queryAll: the recycle bin too, subqueries included
    assert not any(c["IsDeleted"] for c in children(sf.query_all(soql.format(""))["records"]))
    assert not any(c["IsDeleted"] for c in children(sf.query_all(soql.format(" WHERE IsDeleted = false"), include_deleted=True)["records"]))


def test_source_reads_events_logged_as_tasks_and_leaves_deleted_children_out(sandbox, cases):
    pages = pull(make_source(sandbox, api="rest"))
    org = sandbox.org
    deleted_children = {r["Id"] for obj in ("Connected_Person_or_Organisation__c", "Event", "Task") for r in org.records[obj].values() if r["IsDeleted"]}
    assert deleted_children and org.records["Task"]  # the org has both
    by_number = {c.case_id: c for c in cases}
    for record in (r for p in pages for r in p.records if not r.deleted):
        truth = by_number[record.fields["CaseNumber"]]
        assert len(record.fields["events"]) == len(truth.events)  # Events and Tasks, none deleted
        assert len(record.fields["perpetrators"]) == len(truth.perpetrators)
        assert not {row["Id"] for key in ("events", "perpetrators") for row in record.fields[key]} & deleted_children


def test_sandbox_answers_documented_error_body_for_unknown_field(sandbox):
    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    with pytest.raises(Exception) as info:
        sf.query("SELECT Id, Nope__c FROM Case")
    assert info.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "Nope__c" in info.value.content[0]["message"]


# -- the source -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["rest", "bulk"])
def test_full_pull_maps_to_the_generators_truth(sandbox, cases, api):
    source = make_source(sandbox, api=api, bulk_max_records=20)
    pages = pull(source)
    mapping = load_mapping("salesforce_htcds")
    by_number = {c.case_id: c for c in cases}
    seen = 0
    for page in pages:
        mapped = mapping.map_page("sf", page)
        rejected: dict[str, set[str]] = {}
        for rejection in mapped.rejections:
            rejected.setdefault(rejection.record_id, set()).add(rejection.field)
        for raw, case in zip(page.records, mapped.cases):
            truth = by_number[raw.fields["CaseNumber"]]
            expected = expected_fields(truth)
            assert {k: case.fields[k] for k in expected} == expected, truth.case_id
            # A Salesforce date field cannot hold the free text the generator typed: it stays empty, unrejected.
            typed_free_text = {f for f in ("prs_Birthdate",) if truth.mess.get(f) == "free_text"}
            assert rejected.get(raw.record_id, set()) == expected_rejections(truth, events=True) - typed_free_text
            seen += 1
    assert seen == N_CASES
    assert source.stats.requests > 0 and source.stats.extra["bulk"] == (api == "bulk")


def test_second_run_pulls_only_edits_new_and_deletes(sandbox, cases):
    first = pull(make_source(sandbox))
    cursor = first[-1].cursor
    later = evolve(cases, seed=12, edit_share=0.1, delete_share=0.05, new=4)
    sandbox.set_cases(later)
    second = pull(make_source(sandbox), cursor)
    got = records(second)
    changed = {c.case_id for old, c in zip(cases, later) if c is not old and not c.deleted} | {c.case_id for c in later[len(cases) :]}
    deleted_ids = {sandbox.org.record_id("Case", (c.case_id,)) for old, c in zip(cases, later) if c is not old and c.deleted}
    assert {k for k, r in got.items() if not r.deleted} == changed
    assert {k for k, r in got.items() if r.deleted} == deleted_ids
    assert all(not r.fields for r in got.values() if r.deleted)
    third = pull(make_source(sandbox), second[-1].cursor)
    assert records(third) == {}


def test_child_only_change_rereads_its_case(sandbox, cases):
    first = pull(make_source(sandbox))
    target = next(c for c in cases if c.perpetrators)
    edited_perp = dict(target.perpetrators[0], relation="Family" if target.perpetrators[0]["relation"] != "Family" else "Friend")
    edited = dataclasses.replace(target, perpetrators=[edited_perp] + target.perpetrators[1:], updated_at=max(c.updated_at for c in cases) + timedelta(days=1))
    sandbox.set_cases([edited if c is target else c for c in cases])
    case_row = sandbox.org.records["Case"][sandbox.org.record_id("Case", (target.case_id,))]
    assert case_row["SystemModstamp"] == target.updated_at.replace(microsecond=0)  # the Case itself did not change
    second = pull(make_source(sandbox), first[-1].cursor)
    got = records(second)
    assert set(got) == {target.case_id}
    assert got[target.case_id].fields["perpetrators"][0]["Type__c"] == edited_perp["relation"]


def test_cursor_moves_page_by_page_and_resume_rereads_nothing_before_it(sandbox):
    pages = pull(make_source(sandbox, api="rest"))
    data_pages = [p for p in pages if p.records]
    assert len(data_pages) >= 2
    resumed = pull(make_source(sandbox, api="rest"), data_pages[0].cursor)
    # Pages that keep the incoming cursor re-read cases whose children are stamped at the cursor's
    # second (ambiguous without lookback, so read again); the main stream starts after the cursor.
    main = [p for p in resumed if p.cursor != data_pages[0].cursor]
    first_ids = {r.record_id for r in data_pages[0].records}
    assert not first_ids & {r.record_id for p in main for r in p.records}
    assert sum(len(p.records) for p in main) == N_CASES - len(first_ids)


def test_expired_session_mid_paging_is_renewed_once(sandbox):
    sandbox.faults.add("expire_token", path="/queryAll/", after=1)
    pages = pull(make_source(sandbox, api="rest"))
    assert sum(len(p.records) for p in pages) == N_CASES
    assert sandbox.counts["token"] == 2


def test_503_with_retry_after_is_retried(sandbox):
    slept: list[float] = []
    sandbox.faults.add("unavailable", path="/query", times=2, retry_after=3)
    source = make_source(sandbox, api="rest")
    source.api.sleep = slept.append
    pages = pull(source)
    assert sum(len(p.records) for p in pages) == N_CASES
    assert len(slept) == 2 and min(slept) >= 3


def test_html_instead_of_json_fails_clearly_after_retries(sandbox):
    sandbox.faults.add("html", path="/query", times=10)
    with pytest.raises(SourceError, match="instead of JSON"):
        pull(make_source(sandbox, api="rest", max_retries=2))


def test_budget_stops_after_the_last_full_page(sandbox):
    sandbox.set_api_usage(used=0, limit=24)
    source = make_source(sandbox, api="rest", max_api_share=0.5)  # 12 calls: describe x5, limits, queries...
    got: list[Page] = []
    with pytest.raises(SourceError, match="API budget"):
        for page in source.pages(None):
            got.append(page)
    assert got and all(p.cursor for p in got)
    assert sandbox.counts["api"] <= 12


def test_daily_limit_exhausted_is_not_retried(sandbox):
    sandbox.set_api_usage(used=100, limit=100)
    with pytest.raises(SourceError, match="limit"):
        pull(make_source(sandbox, api="rest", max_api_share=1.0))


def test_renamed_field_is_mapped_back_and_hidden_field_is_reported(cases):
    with start_sandbox(cases, renames={"Contact.Gender__c": "Sex__c"}, hidden={"Case.Methods_of_Control__c"}) as handle:
        problems = make_source(handle).check()
        assert [p.where for p in problems if p.severity == "error"] == []  # not a core field: a warning
        assert [p.where for p in problems if p.severity == "warning" and "Methods_of_Control" in p.where] == ["source sf: Case.Methods_of_Control__c"]
        pages = pull(make_source(handle, field_names={"Contact.Gender__c": "Sex__c"}))
        victim = next(r for p in pages for r in p.records).fields["Contact"]
        assert "Gender__c" in victim and "Sex__c" not in victim


@pytest.mark.parametrize("flow", ["password", "client_credentials"])
def test_other_oauth_flows_log_in(sandbox, flow, monkeypatch):
    monkeypatch.setenv("SF_SECRET", sandbox.credentials.client_secret)
    monkeypatch.setenv("SF_PASSWORD", sandbox.credentials.password)
    monkeypatch.setenv("SF_TOKEN", sandbox.credentials.security_token)
    extra = {"auth": flow, "client_secret": {"env": "SF_SECRET"}}
    if flow == "password":
        extra.update(password={"env": "SF_PASSWORD"}, security_token={"env": "SF_TOKEN"})
    assert [p for p in make_source(sandbox, **extra).check() if p.severity != "info"] == []


def test_wrong_password_is_an_auth_error_without_the_secret(sandbox, monkeypatch):
    monkeypatch.setenv("SF_SECRET", sandbox.credentials.client_secret)
    monkeypatch.setenv("SF_PASSWORD", "not-the-password-xyz")
    source = make_source(sandbox, auth="password", client_secret={"env": "SF_SECRET"}, password={"env": "SF_PASSWORD"})
    with pytest.raises(SourceAuthError) as info:
        list(source.pages(None))
    assert "invalid_grant" in str(info.value) and "not-the-password-xyz" not in str(info.value)


def test_contact_without_case_and_case_with_two_victims_are_reported(sandbox):
    org = sandbox.org
    some_case = next(iter(org.records["Case"].values()))
    stamp = some_case["SystemModstamp"]
    base = {"IsDeleted": False, "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp}
    with org.lock:
        org.records["Contact"]["003Hc9999999999AAA"] = {**base, "Id": "003Hc9999999999AAA", "LastName": "Orphan", "Gender__c": "Feminine"}
        row = {**base, "Id": "a01Hc9999999999AAA", "Name": "CP-x", "Case__c": some_case["Id"], "Type__c": "Victim", "Role_in_Process__c": None}
        org.records["Connected_Person_or_Organisation__c"][row["Id"]] = row
        org._reindex()
    problems = make_source(sandbox).check()
    messages = {p.where: p.message for p in problems}
    assert all(p.severity in ("warning", "info") for p in problems)
    assert "1 person contact(s) belong to no Case" in messages["source sf: Contact"]
    assert "1 connected person row(s) of type Victim" in messages["source sf: Connected_Person_or_Organisation__c"]
    source = make_source(sandbox)
    pull(source)
    assert source.stats.extra["cases_with_several_victims"] == 1


def test_bulk_results_are_streamed_in_chunks_not_built_whole(sandbox):
    """A results set goes out as HTTP/1.1 chunks, rendered a few rows at a time with the org unlocked
    between them: a 100,000-row set no longer sits whole in the sandbox before the first byte."""
    import threading

    from connector.sandbox import salesforce as sandbox_module

    sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.token(), session=sandbox.session())
    job = sf.bulk2.Case._client.create_job("query", "SELECT Id, CaseNumber FROM Case")
    sf.bulk2.Case._client.wait_for_job(job["id"], is_query=True, wait=0)
    response = sandbox.session().get(f"{sandbox.url}/services/data/v{sandbox_module.API_VERSION}/jobs/query/{job['id']}/results",
                                     params={"maxRecords": N_CASES}, headers={"Authorization": f"Bearer {sandbox.token()}"}, stream=True)
    assert response.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in response.headers
    assert response.headers["Sforce-NumberOfRecords"] == str(N_CASES) and response.headers["Sforce-Locator"] == "null"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == N_CASES and {r["CaseNumber"] for r in rows} == {c.case_id for c in generate_cases(N_CASES, seed=11)}

    stored = sandbox.state.jobs[job["id"]]
    unlocked_between = []
    chunks = []
    for data in sandbox_module._csv_chunks(sandbox.org, stored, stored.ids, rows_per_chunk=25):
        chunks.append(data)
        probe = threading.Thread(target=lambda: unlocked_between.append(sandbox.org.lock.acquire(timeout=5) and (sandbox.org.lock.release() or True)))
        probe.start()
        probe.join()
    assert len(chunks) == 3 and all(unlocked_between)  # header + 25 rows, 25 rows, 10 rows
    assert list(csv.DictReader(io.StringIO(b"".join(chunks).decode()))) == rows
