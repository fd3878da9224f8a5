"""The Salesforce source with HTTP mocked by `responses`: auth flows, session renewal, paging,
Bulk API 2.0 locators, retries, the API budget and error messages."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import responses

from connector.config import SourceConfig
from connector.sandbox.salesforce_org import Org
from connector.sandbox.salesforce_tls import key_material
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.salesforce import SalesforceSource
from connector.sources.salesforce_soql import Cursor, Layout, Window, case_query

LOGIN = "https://login.salesforce.com"
INSTANCE = "https://ngo.my.salesforce.com"
DATA = f"{INSTANCE}/services/data/v59.0"
OBJECTS = ["Case", "Contact", "Connected_Person_or_Organisation__c", "Event", "Task", "Support_Plan__c"]
DATE = "Wed, 01 May 2024 12:00:00 GMT"


@pytest.fixture()
def key_file(tmp_path):
    path = tmp_path / "jwt.pem"
    path.write_bytes(key_material().jwt_private_pem)
    return path


def source(key_file, **overrides: Any) -> SalesforceSource:
    options = {"auth": "jwt", "client_id": "3MVGclient", "username": "int@ngo.org", "private_key": {"file": str(key_file)}, "backoff_seconds": 1, "lookback_seconds": 0}
    options.update(overrides)
    return SalesforceSource(SourceConfig(id="sf", type="salesforce", mapping="salesforce_htcds", options=options), None, sleep=lambda s: None)


def token_ok(rsps: responses.RequestsMock, login: str = LOGIN) -> None:
    rsps.post(f"{login}/services/oauth2/token", json={"access_token": "00D!tok", "instance_url": INSTANCE, "token_type": "Bearer", "issued_at": "1", "signature": "x"})


def describes(rsps: responses.RequestsMock, org: Org | None = None) -> None:
    org = org or Org()
    for obj in OBJECTS:
        rsps.get(f"{DATA}/sobjects/{obj}/describe", json=org.describe(obj, "/services/data/v59.0"))


def limits(rsps: responses.RequestsMock, used: int = 10, limit: int = 15000) -> None:
    rsps.get(f"{DATA}/limits/", json={"DailyApiRequests": {"Max": limit, "Remaining": limit - used}}, headers={"Date": DATE, "Sforce-Limit-Info": f"api-usage={used}/{limit}"})


def case_row(n: int, **extra: Any) -> dict[str, Any]:
    row = {
        "attributes": {"type": "Case", "url": f"/services/data/v59.0/sobjects/Case/500{n:015d}"},
        "Id": f"500{n:015d}",
        "CaseNumber": f"C{n:06d}",
        "IsDeleted": False,
        "CreatedDate": "2024-01-01T00:00:00.000+0000",
        "SystemModstamp": f"2024-01-{n + 1:02d}T00:00:00.000+0000",
        "ContactId": f"003{n:015d}",
        "Contact": {"attributes": {"type": "Contact"}, "Gender__c": "Feminine"},
        "Owner": {"attributes": {"type": "User"}, "Name": "Case Worker"},
        "Connected_Persons_or_Organisations__r": {"totalSize": 1, "done": True, "records": [{"attributes": {}, "Type__c": "Friend", "Role_in_Process__c": "RecruiterOrIntermediary;Transporter"}]},
        "Events": None,
        "Support_Plans__r": None,
    }
    row.update(extra)
    return row


# -- auth ----------------------------------------------------------------------------------------------


@responses.activate
def test_jwt_bearer_sends_a_signed_assertion_for_the_integration_user(key_file):
    token_ok(responses)
    describes(responses)
    src = source(key_file)
    src.discover()
    form = parse_qs(responses.calls[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], key_material().jwt_public_pem, algorithms=["RS256"], audience=LOGIN)
    assert claims["iss"] == "3MVGclient" and claims["sub"] == "int@ngo.org"
    assert src.stats.requests == 1 + len(OBJECTS)


@responses.activate
def test_sandbox_org_domain_logs_in_at_test_salesforce(key_file, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "s3cret")
    token_ok(responses, "https://test.salesforce.com")
    describes(responses)
    source(key_file, auth="client_credentials", domain="test", client_secret={"env": "SF_SECRET"}).discover()
    form = parse_qs(responses.calls[0].request.body)
    assert form == {"grant_type": ["client_credentials"], "client_id": ["3MVGclient"], "client_secret": ["s3cret"]}


@responses.activate
def test_password_flow_appends_the_security_token(key_file, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "s3cret")
    monkeypatch.setenv("SF_PASSWORD", "pw")
    monkeypatch.setenv("SF_TOKEN", "TOK")
    token_ok(responses, "https://ngo.my.salesforce.com")
    describes(responses)
    options = dict(auth="password", login_url=INSTANCE, client_secret={"env": "SF_SECRET"}, password={"env": "SF_PASSWORD"}, security_token={"env": "SF_TOKEN"})
    source(key_file, **options).discover()
    assert parse_qs(responses.calls[0].request.body)["password"] == ["pwTOK"]


@responses.activate
def test_refused_login_names_the_error_but_never_the_secret(key_file, monkeypatch):
    monkeypatch.setenv("SF_SECRET", "very-secret-value")
    responses.post(f"{LOGIN}/services/oauth2/token", status=400, json={"error": "invalid_client", "error_description": "invalid client credentials"})
    with pytest.raises(SourceAuthError) as info:
        source(key_file, auth="client_credentials", client_secret={"env": "SF_SECRET"}).discover()
    assert "invalid_client" in str(info.value) and "very-secret-value" not in str(info.value)


@responses.activate
def test_login_page_answering_html_says_check_login_url(key_file):
    responses.post(f"{LOGIN}/services/oauth2/token", status=200, body="<html>login</html>", content_type="text/html")
    with pytest.raises(SourceAuthError, match="check login_url"):
        source(key_file).discover()


def test_unusable_private_key_is_reported_without_its_content(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SourceAuthError, match="not a usable RSA private key") as info:
        source(bad).discover()
    assert "not a key" not in str(info.value)


# -- paging, renewal, retries ----------------------------------------------------------------------------


@responses.activate
def test_rest_pages_follow_next_records_url_and_cursor_moves_per_page(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 3, "done": False, "nextRecordsUrl": "/services/data/v59.0/queryAll/01gX-2", "records": [case_row(1), case_row(2)]})
    responses.get(f"{DATA}/queryAll/01gX-2", json={"totalSize": 3, "done": True, "records": [case_row(3, IsDeleted=True)]})
    pages = list(source(key_file, api="rest").pages(None))
    assert [len(p.records) for p in pages] == [2, 1, 0]
    assert json.loads(pages[0].cursor) == {"v": 1, "ts": "2024-01-03T00:00:00Z", "id": "500000000000000002"}
    assert pages[1].records[0].deleted and pages[1].records[0].fields == {}
    assert json.loads(pages[2].cursor) == {"v": 1, "ts": "2024-05-01T12:00:00Z", "id": ""}  # the org's clock at the start
    first = pages[0].records[0].fields
    assert first["Contact"] == {"Gender__c": "Feminine"} and first["Owner"] == {"Name": "Case Worker"}
    assert first["perpetrators"][0]["Role_in_Process__c"] == "RecruiterOrIntermediary;Transporter"
    query = parse_qs(responses.calls[len(OBJECTS) + 2].request.url.split("?", 1)[1])["q"][0]
    assert "SystemModstamp <= 2024-05-01T12:00:00Z" in query and query.endswith("ORDER BY SystemModstamp, Id")


@responses.activate
def test_expired_session_is_renewed_once_and_the_call_repeated(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", status=401, json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [case_row(1)]})
    pages = list(source(key_file, api="rest").pages(None))
    assert sum(len(p.records) for p in pages) == 1
    assert sum(1 for c in responses.calls if c.request.url.endswith("/oauth2/token")) == 2


@responses.activate
def test_second_401_after_renewal_is_an_auth_error(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", status=401, json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    with pytest.raises(SourceAuthError, match="INVALID_SESSION_ID"):
        list(source(key_file, api="rest").pages(None))


@responses.activate
def test_503_is_retried_with_backoff_honouring_retry_after(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", status=503, body="<html>down</html>", content_type="text/html", headers={"Retry-After": "7"})
    responses.get(f"{DATA}/queryAll/", status=500, json=[{"message": "boom", "errorCode": "UNKNOWN_EXCEPTION"}])
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [case_row(1)]})
    slept: list[float] = []
    src = source(key_file, api="rest")
    src.api.sleep = slept.append
    assert sum(len(p.records) for p in src.pages(None)) == 1
    assert slept[0] == 7 and 1 <= slept[1] <= 2  # Retry-After, then equal jitter over 1 s * 2^1
    assert src.stats.extra["retries"] == 2


@responses.activate
def test_transient_failure_gives_up_after_max_retries(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", status=503, body="down")
    with pytest.raises(SourceError, match="after 3 attempts") as info:
        list(source(key_file, api="rest", max_retries=2).pages(None))
    assert info.value.transient


@responses.activate
def test_invalid_field_names_object_and_field(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    message = "\nNo such column 'Gender__c' on entity 'Contact'. If you are attempting to use a custom field, be sure to append the '__c'"
    responses.get(f"{DATA}/queryAll/", status=400, json=[{"message": message, "errorCode": "INVALID_FIELD"}])
    with pytest.raises(SourceError, match=r"Contact\.Gender__c: the org has no such field") as info:
        list(source(key_file, api="rest").pages(None))
    assert len([c for c in responses.calls if "/queryAll/" in c.request.url]) == 1  # not retried


@responses.activate
def test_budget_stops_cleanly_before_the_configured_share(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses, used=97, limit=200)
    responses.get(
        f"{DATA}/queryAll/",
        json={"totalSize": 3, "done": False, "nextRecordsUrl": "/services/data/v59.0/queryAll/01gX-2", "records": [case_row(1)]},
        headers={"Sforce-Limit-Info": "api-usage=100/200"},
    )
    src = source(key_file, api="rest", max_api_share=0.5)
    got = []
    with pytest.raises(SourceError, match="API budget reached: 100 of the org's 200"):
        for page in src.pages(None):
            got.append(page)
    assert [len(p.records) for p in got] == [1]
    assert not any("01gX-2" in c.request.url for c in responses.calls)


@responses.activate
def test_auto_mode_uses_bulk_over_the_threshold_and_follows_locators(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 5, "done": True, "records": []})  # SELECT COUNT()
    jobs = iter(f"750J{i}" for i in range(10))
    created: list[dict] = []

    def create(request):
        body = json.loads(request.body)
        created.append(body)
        return 200, {}, json.dumps({"id": next(jobs), "state": "UploadComplete", "operation": body["operation"]})

    responses.add_callback(responses.POST, f"{DATA}/jobs/query", callback=create)
    for i in range(5):
        responses.get(f"{DATA}/jobs/query/750J{i}", json={"id": f"750J{i}", "state": "JobComplete"})
    for i in range(4):
        responses.get(f"{DATA}/jobs/query/750J{i}/results", body="Id\n", headers={"Sforce-Locator": "null", "Sforce-NumberOfRecords": "0"})
    header = '"Id","CaseNumber","IsDeleted","SystemModstamp","ContactId","Contact.Gender__c","Owner.Name"\n'
    responses.get(
        f"{DATA}/jobs/query/750J4/results",
        body=header + '"500A","C1","false","2024-01-02T00:00:00.000Z","003A","Feminine","W"\n',
        headers={"Sforce-Locator": "MQ==", "Sforce-NumberOfRecords": "1"},
        match=[responses.matchers.query_param_matcher({"maxRecords": "100000"})],
    )
    responses.get(
        f"{DATA}/jobs/query/750J4/results",
        body=header + '"500B","C2","true","2024-01-03T00:00:00.000Z","","",""\n',
        headers={"Sforce-Locator": "null", "Sforce-NumberOfRecords": "1"},
        match=[responses.matchers.query_param_matcher({"maxRecords": "100000", "locator": "MQ=="})],
    )
    src = source(key_file, api="auto", bulk_threshold=5, bulk_poll_seconds=0)
    records = [r for p in src.pages(None) for r in p.records]
    assert [r.record_id for r in records] == ["500A", "500B"]
    assert records[0].fields["Contact"] == {"Gender__c": "Feminine"} and records[0].fields["IsDeleted"] is False
    assert records[0].fields["SystemModstamp"] == "2024-01-02T00:00:00.000+0000"
    assert records[1].deleted
    assert [c["operation"] for c in created] == ["queryAll"] * 5  # children too: archived activities come only from queryAll
    assert "IN (SELECT Id FROM Case" in created[0]["query"] and "IsDeleted = false" in created[0]["query"]
    assert not any("ORDER BY" in c["query"] for c in created)  # ORDER BY disables PK chunking
    assert src.stats.extra["bulk"] == 1 and src.stats.extra["bulk_jobs"] == 5


# -- describe-driven checks and queries ---------------------------------------------------------------------


def _check(key_file, org: Org, **options: Any) -> tuple[SalesforceSource, list]:
    token_ok(responses)
    describes(responses, org)
    limits(responses)
    responses.get(f"{DATA}/query/", json={"totalSize": 0, "done": True, "records": []})
    src = source(key_file, **options)
    return src, src.check()


@responses.activate
def test_check_passes_on_an_org_laid_out_like_the_published_package_and_prints_the_field_map(key_file):
    """The package has no Trafficking Status, Decision Making Organisation or Relationship to
    Trafficker field: this org added its own under other names (see sandbox PARTNER_FIELDS)."""
    src, problems = _check(key_file, Org())
    assert [p for p in problems if p.severity == "error"] == []
    (field_map,) = [p for p in problems if p.severity == "info"]
    lines = set(field_map.message.splitlines()[1:])
    assert "  vic_TraffickingStatus <- Case.Victim_Status__c (help text)" in lines  # "HTCDS field vic_TraffickingStatus: ..."
    assert "  vic_TraffickingStatusDecisionMakingOrg <- Case.Decision_Making_Organization__c (label)" in lines  # the 2.0 spelling
    assert "  vic_RelationshipToTrafficker <- Case.Relationship_with_Trafficker__c (help text)" in lines  # "(HTCDS RelationshipToTrafficker)"
    assert "  vic_LocationOfRecruitment <- Case.Location_of_Recruitment__c (API name)" in lines
    assert {"  prs_MobilePhone <- Contact.MobilePhone (API name)", "  prs_MobilePhone <- Contact.Mobile_Phone__c (API name)"} <= lines
    assert src.layout.actual("case", "Trafficking_Status__c") == "Victim_Status__c"


@responses.activate
def test_check_warns_but_passes_when_a_non_package_field_is_absent_and_fails_only_on_core_fields(key_file):
    org = Org(renames={"Contact.Gender__c": "Sex_Custom__c"}, hidden={"Case.Relationship_to_Trafficker__c", "Case.Methods_of_Control__c", "Event.WhatId"})
    src, problems = _check(key_file, org)
    assert [p.where for p in problems if p.severity == "error"] == ["source sf: Event.WhatId"]  # joins events to cases: core
    warnings = {p.where: p for p in problems if p.severity == "warning"}
    assert "vic_RelationshipToTrafficker will stay unknown" in warnings["source sf: Case.Relationship_to_Trafficker__c"].message
    assert "field_names" in (warnings["source sf: Case.Methods_of_Control__c"].hint or "")
    assert src.layout.actual("contact", "Gender__c") == "Sex_Custom__c"  # found by its label "Gender"


def test_a_label_or_help_text_matching_two_fields_finds_neither():
    layout = Layout.conventional()
    describe = {"fields": [{"name": n, "label": "Trafficking Status", "custom": True, "inlineHelpText": None} for n in ("A__c", "B__c")]}
    layout.resolve("case", describe, {})
    assert "Trafficking_Status__c" in layout.missing["case"]


def test_incremental_condition_is_strict_on_ts_then_id_without_lookback():
    layout = Layout.conventional()
    window = Window("SystemModstamp", Cursor(datetime(2024, 1, 2, tzinfo=timezone.utc), "500X"), lookback=__import__("datetime").timedelta(0), upper=None)
    soql = case_query(layout, window, subqueries=False)
    assert "(SystemModstamp > 2024-01-02T00:00:00Z OR (SystemModstamp = 2024-01-02T00:00:00Z AND Id > '500X'))" in soql
    assert soql.endswith("ORDER BY SystemModstamp, Id")


def test_lookback_widens_the_window():
    from datetime import timedelta

    window = Window("LastModifiedDate", Cursor(datetime(2024, 1, 2, tzinfo=timezone.utc), "500X"), timedelta(minutes=5), None)
    assert window.condition() == "LastModifiedDate >= 2024-01-01T23:55:00Z"


@responses.activate
def test_unreachable_login_url_is_transient_and_says_check_login_url(key_file):
    import requests

    responses.post(f"{LOGIN}/services/oauth2/token", body=requests.ConnectionError("refused"))
    with pytest.raises(SourceError, match="cannot reach https://login.salesforce.com") as info:
        source(key_file).discover()
    assert info.value.transient


@responses.activate
def test_fields_lists_the_orgs_readable_fields_under_raw_names(key_file):
    token_ok(responses)
    describes(responses)
    names = {f.name: f for f in source(key_file).fields()}
    assert "Contact.Gender__c" in names and "perpetrators[].Role_in_Process__c" in names
    assert "Feminine" in names["Contact.Gender__c"].choices


@responses.activate
def test_lookups_are_read_as_the_related_records_name_never_the_id(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    acme = {"attributes": {"type": "Account", "url": "/services/data/v59.0/sobjects/Account/001A"}, "Name": "Acme Shelter"}
    row = case_row(1, Referring_Organisation__c="001A", Referring_Organisation__r=acme, Referred_Organisation__c=None, Referred_Organisation__r=None)
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [row]})
    src = source(key_file, api="rest")
    (page, _) = list(src.pages(None))
    fields = page.records[0].fields
    assert fields["Referring_Organisation__r"] == {"Name": "Acme Shelter"} and fields["Referred_Organisation__r"] is None
    assert "Referring_Organisation__c" not in fields  # the Id never reaches the mapping
    query = parse_qs(responses.calls[len(OBJECTS) + 2].request.url.split("?", 1)[1])["q"][0]
    assert "Referring_Organisation__r.Name" in query and "Referred_Primary_Case_Worker__r.Name" in query
    from connector.mapping import load_mapping

    case, _ = load_mapping("salesforce_htcds").map_record("sf", page.records[0])
    assert case.fields["cas_ReferringOrganisation"] == "Acme Shelter"


def test_a_bulk_csv_lookup_column_nests_like_the_rest_answer(key_file):
    src = source(key_file)
    layout = Layout.conventional()
    layout.lookups["Referring_Organisation__c"] = "Referring_Organisation__r"
    row = {"Id": "500A", "ContactId": "", "Referring_Organisation__c": "001A", "Referring_Organisation__r.Name": "Acme Shelter", "Owner.Name": ""}
    nested = src._nest_csv(layout, row)
    assert nested["Referring_Organisation__r"] == {"Name": "Acme Shelter"} and nested["Owner"] is None and nested["Contact"] is None
    assert src._lookup_names(layout, nested, {})["Referring_Organisation__r"] == {"Name": "Acme Shelter"}


@pytest.mark.parametrize(
    ("stored", "why"),
    [("not json", "not JSON"), ("{}", 'no "ts"'), ('{"v": 2, "ts": "2024-01-02T00:00:00Z", "id": ""}', "version 2"), ('{"ts": "yesterday"}', "not a Salesforce datetime"), ("[1]", "not a JSON object")],
)
def test_an_unreadable_cursor_is_a_source_error_that_says_how_to_reset_it(key_file, stored, why):
    with pytest.raises(SourceError) as info:
        list(source(key_file).pages(stored))  # no HTTP mocked: it stops before the first request
    message = str(info.value)
    assert message.startswith("source sf: stored cursor cannot be read") and why in message
    assert "htcds-connector sync CONFIG --reset-cursor sf" in message and not info.value.transient


def test_cursor_carries_its_version_and_the_unversioned_format_still_reads():
    cursor = Cursor(datetime(2024, 1, 2, tzinfo=timezone.utc), "500X")
    assert json.loads(cursor.dumps()) == {"v": 1, "ts": "2024-01-02T00:00:00Z", "id": "500X"}
    assert Cursor.loads(cursor.dumps()) == cursor
    assert Cursor.loads('{"id": "500X", "ts": "2024-01-02T00:00:00Z"}') == cursor  # written before the version


def test_case_spool_gives_bulk_rows_back_in_cursor_order_whatever_order_they_arrived_in():
    from connector.sources.salesforce_bulk import CaseSpool

    spool = CaseSpool()
    try:
        for stamp, case_id in [("2024-01-03T00:00:00.000000", "500B"), ("", "500Z"), ("2024-01-01T00:00:00.000000", "500C"), ("2024-01-03T00:00:00.000000", "500A")]:
            spool.add(stamp, case_id, {"Id": case_id})
        assert [[r["Id"] for r in page] for page in spool.pages(3)] == [["500Z", "500C", "500A"], ["500B"]]
    finally:
        spool.close()


@responses.activate
def test_a_perpetrators_contact_is_read_through_connected_contact_and_mapped_per_perpetrator(key_file):
    token_ok(responses)
    describes(responses)
    limits(responses)
    person = {"attributes": {"type": "Contact"}, "Gender__c": "Masculine", "Birthdate": "1980-03-01", "Nationality__c": "UA"}
    perpetrators = {"totalSize": 2, "done": True, "records": [
        {"attributes": {}, "Type__c": "Family", "Role_in_Process__c": "RecruiterOrIntermediary;SoldIndividual", "Money_Paid__c": "Yes", "Connected_Contact__r": person},
        {"attributes": {}, "Type__c": "Other", "Role_in_Process__c": "Exploiter", "Money_Paid__c": None, "Connected_Contact__r": None},
    ]}  # fmt: skip
    events = {"totalSize": 1, "done": True, "records": [{"attributes": {}, "Type__c": "Recruitment", "Country__c": "UA", "Date__c": "2022-11-20"}]}
    tasks = {"totalSize": 1, "done": True, "records": [{"attributes": {}, "Type__c": "Exploitation", "Country__c": "PL", "Date__c": "2023-02-01"}]}
    row = case_row(1, Connected_Persons_or_Organisations__r=perpetrators, Events=events, Tasks=tasks)
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [row]})
    (page, _) = list(source(key_file, api="rest").pages(None))
    query = parse_qs(responses.calls[len(OBJECTS) + 2].request.url.split("?", 1)[1])["q"][0]
    assert "Connected_Contact__r.Gender__c" in query and "Connected_Contact__r.Birthdate" in query and "Money_Paid__c" in query
    first, second = page.records[0].fields["perpetrators"]
    assert first["Connected_Contact"] == {"Gender__c": "Masculine", "Birthdate": "1980-03-01", "Nationality__c": "UA"}
    assert second["Connected_Contact"] is None
    from connector.mapping import load_mapping

    case, rejections = load_mapping("salesforce_htcds").map_record("sf", page.records[0])
    assert rejections == []
    assert case.fields["ext_Perpetrators"] == [
        {"per_RoleInProcess": ["Exploiter"], "per_Gender": None, "per_AgeAtRegistration": None, "per_Citizenship": None,
         "per_RelationshipToVictim": "Other", "per_MoneyPaid": None},
        {"per_RoleInProcess": ["RecruiterOrIntermediary", "SoldIndividual"], "per_Gender": "Masculine", "per_AgeAtRegistration": 43,
         "per_Citizenship": "UA", "per_RelationshipToVictim": "Family", "per_MoneyPaid": True},
    ]  # fmt: skip
    assert [e["hte_Type"] for e in case.fields["ext_TraffickingEvents"]] == ["Recruitment", "Exploitation"]  # an Event and a Task
    assert case.fields["ext_TraffickMonths"] == 13  # 2022-11-20 -> registered 2024-01-01


def test_a_bulk_csv_connected_contact_column_nests_like_the_rest_answer(key_file):
    src = source(key_file)
    layout = Layout.conventional()
    row = {"Id": "a01A", "Type__c": "Friend", "Connected_Contact__r.Gender__c": "Feminine", "Connected_Contact__r.Birthdate": "1990-01-02", "Connected_Contact__r.Nationality__c": None}
    child = src._child(layout, "connected", row)
    assert child["Connected_Contact"] == {"Gender__c": "Feminine", "Birthdate": "1990-01-02", "Nationality__c": None}
    assert not any("." in key for key in child)
    empty = src._child(layout, "connected", {"Id": "a01B", "Connected_Contact__r.Gender__c": None})
    assert empty["Connected_Contact"] is None


@responses.activate
def test_several_perpetrators_per_case_and_a_deleted_one_in_the_recycle_bin_are_read_as_the_live_ones(key_file):
    # queryAll answers the recycle bin too, child subqueries included: the query says
    # `WHERE IsDeleted = false`, and should a deleted row arrive anyway (the source also drops a
    # row flagged IsDeleted), it is no perpetrator: neither an entry nor its roles.
    token_ok(responses)
    describes(responses)
    limits(responses)
    perpetrators = {"totalSize": 3, "done": True, "records": [
        {"attributes": {}, "Type__c": "IntimatePartner", "Role_in_Process__c": "RecruiterOrIntermediary;ControlledIndividual", "IsDeleted": False},
        {"attributes": {}, "Type__c": "Other", "Role_in_Process__c": "Transporter", "IsDeleted": False},
        {"attributes": {}, "Type__c": "Family", "Role_in_Process__c": "SoldIndividual;Exploiter", "IsDeleted": True},
    ]}  # fmt: skip
    responses.get(f"{DATA}/queryAll/", json={"totalSize": 1, "done": True, "records": [case_row(1, Connected_Persons_or_Organisations__r=perpetrators)]})
    (page, _) = list(source(key_file, api="rest").pages(None))
    query = parse_qs(responses.calls[len(OBJECTS) + 2].request.url.split("?", 1)[1])["q"][0]
    assert "FROM Connected_Persons_or_Organisations__r WHERE IsDeleted = false" in query
    from connector.mapping import load_mapping

    case, _ = load_mapping("salesforce_htcds").map_record("sf", page.records[0])
    assert [(e["per_RelationshipToVictim"], e["per_RoleInProcess"]) for e in case.fields["ext_Perpetrators"]] == [
        ("IntimatePartner", ["ControlledIndividual", "RecruiterOrIntermediary"]),
        ("Other", ["Transporter"]),
    ]
    assert case.fields["ext_PerpetratorRoles"] == ["ControlledIndividual", "RecruiterOrIntermediary", "Transporter"]  # none of the deleted row's roles
    assert case.fields["ext_RecruiterRelation"] == ["IntimatePartner"]
