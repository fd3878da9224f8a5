"""ODK Central source against `responses`-mocked HTTP: auth, keyset passes, deletes, repeats, errors."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from connector.config import SourceConfig
from connector.secrets import fold_secret_references
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.odk_central import Mark, OdkCentralSource, incremental_query

BASE = "https://central.example.org"
SVC = f"{BASE}/v1/projects/3/forms/cases.svc/Submissions"
PASSWORD = "pw-not-to-leak-9731"


def make_source(monkeypatch: pytest.MonkeyPatch, **options: object) -> OdkCentralSource:
    monkeypatch.setenv("ODK_TEST_PASSWORD", PASSWORD)
    raw = {"url": BASE, "project_id": 3, "form_id": "cases", "email": "me@example.org", "password_env": "ODK_TEST_PASSWORD", "page_size": 2, **options}
    raw = {k: v for k, v in raw.items() if v is not None}
    cfg = SourceConfig(id="odk", type="odk_central", mapping="xlsform_htcds", options=raw)
    cfg.parsed_options = OdkCentralSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = OdkCentralSource(cfg, None)
    source.client.sleep = lambda seconds: None
    return source


def row(iid: str, submitted: str, *, updated: str | None = None, deleted: str | None = None, review: str | None = None, **answers: object) -> dict:
    return {
        "__id": iid,
        **answers,
        "meta": {"instanceID": iid},
        "__system": {"submissionDate": submitted, "updatedAt": updated, "deletedAt": deleted, "submitterId": "5", "reviewState": review, "formVersion": "1"},
    }


def feed(*rows: dict, more: bool = False) -> dict:
    """An OData page; `more`: Central adds its next link (with a `$skiptoken`) while rows remain."""
    body: dict = {"@odata.context": f"{BASE}/v1/projects/3/forms/cases.svc/$metadata#Submissions", "value": list(rows)}
    if more:
        body["@odata.nextLink"] = f"{SVC}?%24top=2&%24skiptoken=01eyJpbnN0YW5jZUlkIjoieCJ9"
    return body


def login(rsps: responses.RequestsMock, *tokens: str) -> None:
    for token in tokens:
        rsps.post(f"{BASE}/v1/sessions", json={"token": token, "csrf": "x", "expiresAt": "2030-01-01T00:00:00.000Z"})


def params_of(call: responses.Call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def test_incremental_query_filters_each_pass_on_its_own_timestamp() -> None:
    assert incremental_query("__system/submissionDate", Mark(), top=100) == {"$orderby": "__system/submissionDate asc", "$top": "100"}
    later = incremental_query("__system/updatedAt", Mark("2024-01-02T03:04:05.000Z", {"a"}), top=50, skip=50, expand=True)
    assert later == {
        "$filter": "__system/updatedAt ge 2024-01-02T03:04:05.000Z",
        "$orderby": "__system/updatedAt asc",
        "$top": "50",
        "$skip": "50",
        "$expand": "*",
    }
    first_deleted = incremental_query("__system/deletedAt", Mark(), top=10, ids_only=True)
    assert first_deleted["$filter"] == "__system/deletedAt ne null" and first_deleted["$select"] == "__id,__system"


@responses.activate
def test_first_run_pages_by_submission_date_and_cursor_skips_rows_already_read(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok-1")
    responses.get(SVC, json=feed(row("a", "2024-01-01T00:00:00.000Z", prs_Gender="Feminine"), row("b", "2024-01-02T00:00:00.000Z"), more=True))
    responses.get(SVC, json=feed(row("b", "2024-01-02T00:00:00.000Z"), row("c", "2024-01-02T00:00:00.000Z", updated="2024-02-01T00:00:00.000Z"), more=True))
    responses.get(SVC, json=feed(row("b", "2024-01-02T00:00:00.000Z"), row("c", "2024-01-02T00:00:00.000Z"), more=True))
    responses.get(SVC, json=feed())  # $skip=2 past the rows already read
    source = make_source(monkeypatch)
    pages = list(source.pages(None))
    ids = [r.record_id for p in pages for r in p.records]
    assert ids == ["a", "b", "c"]  # "b" came twice from the server (same timestamp) and is read once
    gets = [c for c in responses.calls if c.request.method == "GET"]
    assert params_of(gets[1])["$filter"] == "__system/submissionDate ge 2024-01-02T00:00:00.000Z"
    assert params_of(gets[3])["$skip"] == "2"
    cursor = json.loads(pages[-1].cursor)
    assert cursor["submitted"] == {"at": "2024-01-02T00:00:00.000Z", "ids": ["b", "c"]}
    # Passes 2 and 3 start where pass 1's timestamps ended, without a request on the first run.
    assert cursor["updated"]["at"] == "2024-02-01T00:00:00.000Z" and cursor["deleted"]["at"] == "2024-02-01T00:00:00.000Z"
    assert all(c.request.headers["Authorization"] == "Bearer tok-1" for c in gets)
    record = pages[0].records[0]
    assert record.fields["prs_Gender"] == "Feminine" and record.fields["_submission_time"] == "2024-01-01T00:00:00.000Z"
    assert "__system" not in record.fields and "meta" not in record.fields


@responses.activate
def test_later_run_turns_edits_rejections_and_deletions_into_records_and_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    cursor = json.dumps({"submitted": {"at": "2024-01-02T00:00:00.000Z", "ids": ["b"]}, "updated": {"at": "2024-01-05T00:00:00.000Z", "ids": []}, "deleted": {"at": "2024-01-05T00:00:00.000Z", "ids": []}})
    responses.get(SVC, json=feed(row("b", "2024-01-02T00:00:00.000Z")))  # nothing new
    responses.get(SVC, json=feed(row("a", "2024-01-01T00:00:00.000Z", updated="2024-01-06T00:00:00.000Z", prs_Gender="Masculine"), row("x", "2024-01-01T00:00:00.000Z", updated="2024-01-07T00:00:00.000Z", review="rejected"), more=True))
    responses.get(SVC, json=feed())
    responses.get(SVC, json=feed(row("d", "2023-12-01T00:00:00.000Z", deleted="2024-01-08T00:00:00.000Z")))
    pages = list(make_source(monkeypatch).pages(cursor))
    records = {r.record_id: r for p in pages for r in p.records}
    assert records["a"].fields["prs_Gender"] == "Masculine" and not records["a"].deleted
    assert records["x"].deleted and records["x"].fields == {}
    assert records["d"].deleted
    filters = [params_of(c).get("$filter") for c in responses.calls if c.request.method == "GET"]
    assert filters[-2:] == ["__system/deletedAt ge 2024-01-05T00:00:00.000Z", "__system/deletedAt ne null"]  # deleted pass, then the trash
    assert json.loads(pages[-1].cursor)["deleted"]["at"] == "2024-01-08T00:00:00.000Z"


@responses.activate
def test_review_states_to_skip_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    responses.get(SVC, json=feed(row("a", "2024-01-01T00:00:00.000Z", review="rejected"), row("b", "2024-01-01T00:00:01.000Z", review="hasIssues")))
    responses.get(SVC, json=feed())
    source = make_source(monkeypatch, skip_review_states=["hasIssues"])
    records = {r.record_id: r for p in source.pages(None) for r in p.records}
    assert not records["a"].deleted and records["b"].deleted


@responses.activate
def test_expired_session_logs_in_again_once_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "old", "new")
    responses.get(SVC, json={"code": 401.2, "message": "Could not authenticate with the provided credentials."}, status=401)
    responses.get(SVC, json=feed(row("a", "2024-01-01T00:00:00.000Z")))
    records = [r for p in make_source(monkeypatch).pages(None) for r in p.records]
    assert [r.record_id for r in records] == ["a"]
    gets = [c for c in responses.calls if c.request.method == "GET"]
    assert [c.request.headers["Authorization"] for c in gets] == ["Bearer old", "Bearer new", "Bearer new"]  # the last: the trash


@responses.activate
def test_refused_password_is_an_auth_error_that_does_not_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.post(f"{BASE}/v1/sessions", json={"code": 401.2, "message": "Could not authenticate with the provided credentials."}, status=401)
    with pytest.raises(SourceAuthError) as err:
        list(make_source(monkeypatch).pages(None))
    assert "credentials refused" in str(err.value) and PASSWORD not in str(err.value) and "source odk" in str(err.value)


@responses.activate
def test_token_auth_sends_bearer_without_login_and_does_not_retry_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODK_APP_TOKEN", "app-user-token-123")
    responses.get(SVC, json={"code": 401.2, "message": "Could not authenticate with the provided credentials."}, status=401)
    source = make_source(monkeypatch, email=None, password_env=None, token_env="ODK_APP_TOKEN")
    with pytest.raises(SourceAuthError) as err:
        list(source.pages(None))
    assert len(responses.calls) == 1 and responses.calls[0].request.headers["Authorization"] == "Bearer app-user-token-123"
    assert "app-user-token-123" not in str(err.value)


def test_options_need_a_password_or_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        OdkCentralSource.Options.model_validate({"url": BASE, "project_id": 1, "form_id": "f", "email": "me@example.org"})


@responses.activate
def test_429_is_retried_after_the_server_s_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    responses.get(SVC, json={"message": "slow down"}, status=429, headers={"Retry-After": "7"})
    responses.get(SVC, json=feed())
    source = make_source(monkeypatch)
    waits: list[float] = []
    source.client.sleep = waits.append
    assert [r for p in source.pages(None) for r in p.records] == []
    assert waits == [7.0]


@responses.activate
def test_html_error_page_is_reported_by_its_title_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    for _ in range(3):
        responses.get(SVC, body=page, status=502, content_type="text/html")
    source = make_source(monkeypatch, max_retries=2)
    with pytest.raises(SourceError) as err:
        list(source.pages(None))
    assert "HTML page titled '502 Bad Gateway'" in str(err.value) and "form cases" in str(err.value)
    assert err.value.transient


@responses.activate
def test_a_200_html_page_instead_of_json_is_named_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    for _ in range(2):
        responses.get(SVC, body="<html><head><title>Sign in</title></head></html>", status=200, content_type="text/html")
    with pytest.raises(SourceError, match="HTML page titled 'Sign in' instead of JSON"):
        list(make_source(monkeypatch, max_retries=1).pages(None))


@responses.activate
def test_repeat_tables_are_joined_by_parent_id_and_orphan_rows_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    link = "Submissions('a')/perpetrators"
    submission = row("a", "2024-01-01T00:00:00.000Z", **{"perpetrators@odata.navigationLink": link})
    responses.get(SVC, json=feed(submission))
    responses.get(
        f"{BASE}/v1/projects/3/forms/cases.svc/Submissions('a')/perpetrators",
        json={"value": [{"__id": "r1", "__Submissions-id": "a", "per_Role_in_Process": "Exploiter"}, {"__id": "r2", "__Submissions-id": "zz", "per_Role_in_Process": "Smuggler"}]},
    )
    source = make_source(monkeypatch, repeats="tables")
    records = [r for p in source.pages(None) for r in p.records]
    assert records[0].fields["perpetrators"] == [{"per_Role_in_Process": "Exploiter"}]
    assert source.stats.extra["orphan_repeat_rows"] == 1


@responses.activate
def test_nested_repeat_rows_are_checked_against_their_parent_row_and_lose_every_parent_key(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    svc = f"{BASE}/v1/projects/3/forms/cases.svc"
    submission = row("a", "2024-01-01T00:00:00.000Z", **{"perpetrators@odata.navigationLink": "Submissions('a')/perpetrators"})
    responses.get(SVC, json=feed(submission))
    responses.get(
        f"{svc}/Submissions('a')/perpetrators",
        json={"value": [{"__id": "p1", "__Submissions-id": "a", "per_Role_in_Process": "Exploiter", "aliases@odata.navigationLink": "Submissions('a')/perpetrators('p1')/aliases"}]},
    )
    responses.get(
        f"{svc}/Submissions('a')/perpetrators('p1')/aliases",
        json={"value": [{"__id": "n1", "__Submissions-perpetrators-id": "p1", "alias": "Big J"}, {"__id": "n2", "__Submissions-perpetrators-id": "p9", "alias": "Not his"}]},
    )
    source = make_source(monkeypatch, repeats="tables")
    records = [r for p in source.pages(None) for r in p.records]
    assert records[0].fields["perpetrators"] == [{"per_Role_in_Process": "Exploiter", "aliases": [{"alias": "Big J"}]}]
    assert source.stats.extra["orphan_repeat_rows"] == 1


@responses.activate
def test_a_restore_check_reads_the_trash_and_refetches_what_left_it(monkeypatch: pytest.MonkeyPatch) -> None:
    login(responses, "tok")
    cursor = json.dumps({"v": 2, "submitted": {"at": "2024-01-02T00:00:00.000Z", "ids": ["b"]}, "updated": {"at": "2024-01-05T00:00:00.000Z", "ids": []},
                         "deleted": {"at": "2024-01-05T00:00:00.000Z", "ids": []}, "trash": ["r", "p", "t"]})
    for _ in range(3):
        responses.get(SVC, json=feed())  # new, updated, deleted: nothing (a restore moves no timestamp)
    responses.get(SVC, json=feed({"__id": "t"}, more=True))  # the trash, first page
    responses.get(SVC, json=feed({"__id": "u"}))
    responses.get(f"{SVC}('r')", json=feed(row("r", "2023-01-01T00:00:00.000Z", prs_Gender="Feminine")))  # restored
    responses.get(f"{SVC}('p')", json={"code": 404.1, "message": "Could not find the resource you were looking for."}, status=404)  # purged
    pages = list(make_source(monkeypatch).pages(cursor))
    records = {r.record_id: r for p in pages for r in p.records}
    assert list(records) == ["r"] and records["r"].fields["prs_Gender"] == "Feminine" and not records["r"].deleted
    trash_calls = [params_of(c) for c in responses.calls if c.request.method == "GET" and c.request.url.startswith(SVC + "?")][3:]
    assert trash_calls[0] == {"$filter": "__system/deletedAt ne null", "$select": "__id", "$top": "2"} and "$skiptoken" in trash_calls[1]
    assert json.loads(pages[-1].cursor)["trash"] == ["t", "u"]


@pytest.mark.parametrize("stored", ["not json", "[]", '{"v": 7}', '{"v": 2, "submitted": "x"}'])
def test_an_unreadable_cursor_is_a_source_error_that_says_how_to_reset(monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    with pytest.raises(SourceError) as err:
        list(make_source(monkeypatch).pages(stored))
    assert "source odk" in str(err.value) and "--reset-cursor odk" in str(err.value)


FORM_XML = """<?xml version="1.0"?><h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa">
<h:head><h:title>cases</h:title><model><instance><data id="cases" version="7"><prs_Sex/><vic_Methods_of_Control/><meta><instanceID/></meta></data></instance>
<bind nodeset="/data/prs_Sex" type="string"/><bind nodeset="/data/vic_Methods_of_Control" type="string"/></model></h:head>
<h:body><select1 ref="/data/prs_Sex"><label>Sex</label><item><label>F</label><value>F</value></item><item><label>M</label><value>M</value></item></select1>
<select ref="/data/vic_Methods_of_Control"><label>Control</label><item><label>Debt bondage</label><value>DebtBondage</value></item><item><label>Curse</label><value>juju</value></item></select></h:body></h:html>"""
FIELDS = [
    {"path": "/prs_Sex", "name": "prs_Sex", "type": "string", "binary": None, "selectMultiple": None},
    {"path": "/vic_Methods_of_Control", "name": "vic_Methods_of_Control", "type": "string", "binary": None, "selectMultiple": True},
    {"path": "/meta", "name": "meta", "type": "structure", "binary": None, "selectMultiple": None},
]


def _mock_form(rsps: responses.RequestsMock) -> None:
    login(rsps, "tok")
    rsps.get(f"{BASE}/v1/projects/3/forms/cases", json={"xmlFormId": "cases", "version": "7"})
    rsps.get(f"{BASE}/v1/projects/3/forms/cases.xml", body=FORM_XML, content_type="application/xml")
    rsps.get(f"{BASE}/v1/projects/3/forms/cases/fields", json=FIELDS)
    rsps.get(SVC, json=feed(row("a", "2024-01-01T00:00:00.000Z")))
    rsps.get(f"{BASE}/version.txt", body="versions:\nabc (v2024.3.1)\n def client (v2024.3.1)\n", content_type="text/plain")


@responses.activate
def test_check_reports_a_mapped_field_the_form_renamed_and_unknown_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_form(responses)
    problems = make_source(monkeypatch).check()
    assert [(p.severity, p.message) for p in problems if p.severity == "info"] == [("info", "ODK Central v2024.3.1")]
    assert not any("submissions" in p.message for p in problems)
    gender = [p for p in problems if "prs_Gender" in p.message]
    assert gender and gender[0].severity == "error" and "version 7" in gender[0].where
    choices = [p for p in problems if "juju" in p.message]
    assert choices and choices[0].severity == "warning" and "methods_of_control" in choices[0].message
    assert not any("DebtBondage" in p.message for p in problems)


@responses.activate
def test_rename_option_maps_the_form_s_name_back_and_check_is_satisfied(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_form(responses)
    source = make_source(monkeypatch, rename={"prs_Sex": "prs_Gender"})
    assert not [p for p in source.check() if "prs_Gender" in p.message]
    assert "prs_Gender" in {f.name for f in source.fields()}


def test_retry_after_accepts_seconds_and_http_dates_and_ignores_junk() -> None:
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    from connector.retry import parse_retry_after

    assert parse_retry_after("12") == 12.0
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after(soon) <= 31  # type: ignore[operator]
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_the_server_version_is_read_from_centrals_version_txt() -> None:
    from connector.sources.odk_central import parse_version

    text = "versions:\n0c8e6b2 (v2024.3.1)\n 1a2b3c4 client (v2024.3.1)\n 9f8e7d6 server (v2024.3.2)\n"
    assert parse_version(text) == (2024, 3, 1)
    assert parse_version("versions:\n0c8e6b2 (v2025.1.0-3-gabc123)\n") == (2025, 1, 0)
    assert parse_version("<html>not found</html>") is None
