"""Kobo source against `responses`-mocked HTTP: token, keyset passes, validation, id reconciliation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from connector.config import SourceConfig
from connector.secrets import fold_secret_references
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.kobo import KoboSource, Mark, _dump_cursor, _fingerprint, decode_ids, encode_ids, incremental_query

BASE = "https://kf.example.org"
DATA = f"{BASE}/api/v2/assets/aUID/data/"
TOKEN = "kobo-token-not-to-leak-5521"


def make_source(monkeypatch: pytest.MonkeyPatch, **options: object) -> KoboSource:
    monkeypatch.setenv("KOBO_TEST_TOKEN", TOKEN)
    raw = {"url": BASE, "asset_uid": "aUID", "token_env": "KOBO_TEST_TOKEN", "page_size": 2, **options}
    cfg = SourceConfig(id="kobo", type="kobo", mapping="xlsform_htcds", options=raw)
    cfg.parsed_options = KoboSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = KoboSource(cfg, None)
    source.client.sleep = lambda seconds: None
    return source


def sub(_id: int, submitted: str, **extra: object) -> dict:
    return {"_id": _id, "_uuid": f"u{_id}", "meta/instanceID": f"uuid:u{_id}", "formhub/uuid": "f", "_submission_time": submitted, "_validation_status": {}, "_attachments": [], "_tags": [], **extra}


def data(*rows: dict, count: int | None = None, more: bool = False) -> dict:
    """A kpi data page; `more`: kpi's `next` is a link (more submissions match), else null."""
    nxt = f"{DATA}?format=json&limit=1000&start=1000" if more else None
    return {"count": len(rows) if count is None else count, "next": nxt, "previous": None, "results": list(rows)}


def params_of(call: responses.Call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def test_incremental_query_uses_gte_on_the_pass_field_and_exists_before_the_first_value() -> None:
    assert incremental_query("_submission_time", Mark()) == {}
    assert incremental_query("_validation_status.timestamp", Mark()) == {"_validation_status.timestamp": {"$exists": True}}
    assert incremental_query("_submission_time", Mark("2024-01-01T00:00:00", {1})) == {"_submission_time": {"$gte": "2024-01-01T00:00:00"}}


def test_id_sets_round_trip_in_a_few_bytes_per_id() -> None:
    ids = set(range(100_000, 200_000, 3)) | {7, 10**9}
    text = encode_ids(ids)
    assert decode_ids(text) == ids
    assert len(text) < len(ids) // 4  # sequential ids compress to far less than a byte each
    assert decode_ids(encode_ids(set())) == set()


@responses.activate
def test_first_run_sends_token_query_sort_and_keeps_group_paths_and_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        sub(11, "2024-01-01T10:00:00", prs_Gender="Feminine", **{"outgoing_referral/cas_OutgoingReferralDate": "2024-02-01"}, vic_Methods_of_Control="DebtBondage TakesEarnings"),
        sub(12, "2024-01-02T10:00:00", perpetrators=[{"perpetrators/per_Role_in_Process": "RecruiterOrIntermediary Exploiter"}], **{"meta/deprecatedID": "uuid:old12"}),
    ]
    responses.get(DATA, json=data(*rows, more=True))
    responses.get(DATA, json=data(rows[1]))
    source = make_source(monkeypatch)
    pages = list(source.pages(None))
    records = {r.record_id: r for p in pages for r in p.records}
    first = params_of(responses.calls[0])
    assert responses.calls[0].request.headers["Authorization"] == f"Token {TOKEN}"
    assert json.loads(first["query"]) == {} and json.loads(first["sort"]) == {"_submission_time": 1, "_id": 1} and first["limit"] == "2"
    assert json.loads(params_of(responses.calls[1])["query"]) == {"_submission_time": {"$gte": "2024-01-02T10:00:00"}}
    a = records["11"].fields
    assert a["cas_OutgoingReferralDate"] == "2024-02-01" and a["outgoing_referral/cas_OutgoingReferralDate"] == "2024-02-01"
    assert a["vic_Methods_of_Control"] == "DebtBondage TakesEarnings"
    assert a["_submission_time"] == "2024-01-01T10:00:00Z" and "formhub/uuid" not in a and "_uuid" not in a and "instanceID" not in a
    assert records["12"].fields["perpetrators"] == [{"per_Role_in_Process": "RecruiterOrIntermediary Exploiter"}]
    assert records["12"].updated_at == datetime(2024, 1, 2, 10, tzinfo=timezone.utc)  # kpi keeps no edit time
    cursor = json.loads(pages[-1].cursor)
    assert cursor["v"] == 2 and "edited" not in cursor
    assert decode_ids(cursor["known"]) == {11, 12}


@responses.activate
def test_not_approved_submissions_become_deletes_and_leave_the_known_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    status = {"uid": "validation_status_not_approved", "timestamp": 1700000000, "label": "Not approved"}
    responses.get(DATA, json=data(sub(11, "2024-01-01T10:00:00"), sub(12, "2024-01-01T11:00:00", _validation_status=status)))
    responses.get(DATA, json=data(sub(12, "2024-01-01T11:00:00", _validation_status=status)))
    pages = list(make_source(monkeypatch).pages(None))
    records = {r.record_id: r for p in pages for r in p.records}
    assert records["12"].deleted and not records["11"].deleted
    assert decode_ids(json.loads(pages[-1].cursor)["known"]) == {11}


def _cursor(known: set[int], *, runs: int, at: datetime, edited: dict[int, str] | None = None) -> str:
    marks = {"submitted": Mark("2024-01-02T00:00:00", {12}), "validated": Mark()}
    return _dump_cursor(marks, known, {k: _fingerprint(v) for k, v in (edited or {}).items()}, {"at": at.isoformat(), "runs": runs})


@responses.activate
def test_reconciliation_lists_ids_only_and_deletes_the_ids_that_are_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.get(DATA, json=data(sub(12, "2024-01-02T00:00:00")))  # pass 1: nothing new
    responses.get(DATA, json=data())  # validation statuses
    responses.get(DATA, json=data())  # edited submissions
    responses.get(DATA, json=data({"_id": 11}, {"_id": 13}))  # reconciliation
    source = make_source(monkeypatch, reconcile_every_runs=3)
    cursor = _cursor({11, 12, 13}, runs=2, at=datetime.now(timezone.utc))
    pages = list(source.pages(cursor))
    assert [(r.record_id, r.deleted) for p in pages for r in p.records] == [("12", True)]
    reconcile = params_of(responses.calls[-1])
    assert json.loads(reconcile["fields"]) == ["_id"] and reconcile["limit"] == "2" and json.loads(reconcile["sort"]) == {"_id": 1}
    last = json.loads(pages[-1].cursor)
    assert decode_ids(last["known"]) == {11, 13} and last["reconcile"]["runs"] == 0


@responses.activate
def test_reconciliation_waits_until_it_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        responses.get(DATA, json=data())
    source = make_source(monkeypatch, reconcile_every_runs=5, reconcile_every_hours=24)
    pages = list(source.pages(_cursor({11}, runs=1, at=datetime.now(timezone.utc) - timedelta(hours=1))))
    assert len(responses.calls) == 3  # new, validated, edited: no id listing
    assert json.loads(pages[-1].cursor)["reconcile"]["runs"] == 2
    source.now = lambda: datetime.now(timezone.utc) + timedelta(hours=30)  # a day later it is due
    responses.get(DATA, json=data({"_id": 11}))
    list(source.pages(pages[-1].cursor))
    assert json.loads(params_of(responses.calls[-1])["fields"]) == ["_id"]


@responses.activate
def test_refused_token_is_an_auth_error_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.get(DATA, json={"detail": "Invalid token."}, status=401)
    with pytest.raises(SourceAuthError) as err:
        list(make_source(monkeypatch).pages(None))
    assert "Invalid token." in str(err.value) and TOKEN not in str(err.value)


@responses.activate
def test_truncated_body_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.get(DATA, body='{"count": 1, "results": [{"_id": 1', status=200, content_type="application/json")
    responses.get(DATA, json=data(sub(1, "2024-01-01T00:00:00")))
    responses.get(DATA, json=data())
    records = [r for p in make_source(monkeypatch).pages(None) for r in p.records]
    assert [r.record_id for r in records] == ["1"]


@responses.activate
def test_check_compares_the_asset_content_with_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    content = {
        "survey": [
            {"type": "begin_group", "name": "victim", "$kuid": "g"},
            {"type": "select_one", "select_from_list_name": "sex", "$autoname": "prs_Sex", "label": ["Sex"]},
            {"type": "end_group", "$kuid": "e"},
        ],
        "choices": [{"list_name": "sex", "name": "F", "label": ["Female"]}],
    }
    responses.get(f"{BASE}/api/v2/assets/aUID/", json={"uid": "aUID", "content": content, "deployed_version_id": "v9"})
    responses.get(DATA, json=data(sub(1, "2024-01-01T00:00:00")))
    problems = make_source(monkeypatch).check()
    assert not any("submissions" in p.message for p in problems)
    assert any("prs_Gender" in p.message and p.severity == "error" and "v9" in p.where for p in problems)
    renamed = make_source(monkeypatch, rename={"prs_Sex": "prs_Gender"})
    assert not any("prs_Gender" in p.message and p.severity == "error" for p in renamed.check())
    assert [f.name for f in renamed.fields() if f.type != "metadata"] == ["prs_Gender"]
    assert "_submission_time" in {f.name for f in renamed.fields()}  # `check` must not say it stays unknown


@responses.activate
def test_a_page_cut_short_by_kpis_limit_cap_is_not_the_end_while_next_is_a_link(monkeypatch: pytest.MonkeyPatch) -> None:
    # kpi cuts `limit` to 1000 without an error: 5000 asked, 2 sent here, and `next` says more match.
    responses.get(DATA, json=data(sub(1, "2024-01-01T00:00:00"), sub(2, "2024-01-01T00:00:01"), more=True))
    responses.get(DATA, json=data(sub(3, "2024-01-01T00:00:02")))
    records = [r.record_id for p in make_source(monkeypatch, page_size=5000).pages(None) for r in p.records]
    assert records == ["1", "2", "3"]
    assert params_of(responses.calls[0])["limit"] == "5000"


@responses.activate
def test_reconciliation_follows_next_past_short_pages_and_deletes_only_what_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        responses.get(DATA, json=data())  # new, validated, edited: nothing
    responses.get(DATA, json=data({"_id": 11}, more=True))  # short page (cap), more to come
    responses.get(DATA, json=data({"_id": 13}, more=True))
    responses.get(DATA, json=data({"_id": 14}))
    source = make_source(monkeypatch, page_size=5000, reconcile_every_runs=1)
    pages = list(source.pages(_cursor({11, 12, 13, 14}, runs=0, at=datetime.now(timezone.utc))))
    assert [(r.record_id, r.deleted) for p in pages for r in p.records] == [("12", True)]
    listing = [json.loads(params_of(c)["query"]) for c in responses.calls[3:]]
    assert listing == [{}, {"_id": {"$gt": 11}}, {"_id": {"$gt": 13}}]  # keyset on `_id`, not offsets


@responses.activate
def test_a_reconciliation_cut_off_mid_list_deletes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        responses.get(DATA, json=data())
    responses.get(DATA, json=data({"_id": 11}, more=True))
    responses.get(DATA, json={"detail": "upstream timed out"}, status=503)
    source = make_source(monkeypatch, reconcile_every_runs=1, max_retries=0)
    delivered = []
    with pytest.raises(SourceError):
        for page in source.pages(_cursor({11, 12, 13}, runs=0, at=datetime.now(timezone.utc))):
            delivered.extend(page.records)
    assert not any(r.deleted for r in delivered)


@responses.activate
def test_a_listing_that_says_more_but_sends_nothing_deletes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        responses.get(DATA, json=data())
    responses.get(DATA, json=data(more=True))
    source = make_source(monkeypatch, reconcile_every_runs=1)
    with pytest.raises(SourceError, match="more submissions match but sent none"):
        for page in source.pages(_cursor({11, 12}, runs=0, at=datetime.now(timezone.utc))):
            assert not any(r.deleted for r in page.records)


@responses.activate
def test_edits_are_found_by_their_new_instance_id_and_fetched_by_id(monkeypatch: pytest.MonkeyPatch) -> None:
    responses.get(DATA, json=data())  # new
    responses.get(DATA, json=data())  # validated
    listing = [
        {"_id": 11, "meta/instanceID": "uuid:b11", "_uuid": "b11", "meta/rootUuid": "uuid:a11", "_validation_status": {}},  # edited again
        {"_id": 12, "meta/instanceID": "uuid:b12", "_uuid": "b12", "meta/rootUuid": "uuid:a12", "_validation_status": {}},  # as delivered
        {"_id": 13, "meta/instanceID": "uuid:b13", "_uuid": "b13", "meta/rootUuid": "uuid:a13", "_validation_status": {}},  # first edit
    ]
    responses.get(DATA, json=data(*listing))
    responses.get(DATA, json=data(sub(11, "2024-01-01T00:00:00", prs_Gender="Masculine", **{"meta/deprecatedID": "uuid:a11"}), sub(13, "2024-01-01T00:00:00", **{"meta/deprecatedID": "uuid:a13"})))
    source = make_source(monkeypatch, reconcile_every_runs=99)
    cursor = _cursor({11, 12, 13, 14}, runs=0, at=datetime.now(timezone.utc), edited={11: "uuid:a11-old", 12: "uuid:b12"})
    pages = list(source.pages(cursor))
    assert [r.record_id for p in pages for r in p.records] == ["11", "13"]
    ask = params_of(responses.calls[2])
    assert json.loads(ask["query"]) == {"meta/deprecatedID": {"$exists": True}} and json.loads(ask["fields"]) == ["_id", "meta/instanceID"]
    assert json.loads(params_of(responses.calls[3])["query"]) == {"_id": {"$in": [11, 13]}}
    # The next run finds them as delivered: nothing to fetch.
    responses.get(DATA, json=data())
    responses.get(DATA, json=data())
    responses.get(DATA, json=data({**listing[0], "meta/instanceID": "uuid:u11"}, {**listing[2], "meta/instanceID": "uuid:u13"}, listing[1]))
    calls = len(responses.calls)
    assert [r for p in source.pages(pages[-1].cursor) for r in p.records] == []
    assert len(responses.calls) == calls + 3


@pytest.mark.parametrize("stored", ["not json", "[1, 2]", '{"v": 99}', '{"v": 2, "known": "%%%"}', '{"v": 2, "submitted": 5}', '{"v": 2, "edits": "eJw="}'])
def test_an_unreadable_cursor_is_a_source_error_that_says_how_to_reset(monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    with pytest.raises(SourceError) as err:
        list(make_source(monkeypatch).pages(stored))
    assert "source kobo" in str(err.value) and "--reset-cursor kobo" in str(err.value)


@responses.activate
def test_check_reads_one_row_so_a_token_that_cannot_view_submissions_fails_there(monkeypatch: pytest.MonkeyPatch) -> None:
    content = {"survey": [{"type": "text", "$autoname": "prs_FirstName", "label": ["Name"]}], "choices": []}
    responses.get(f"{BASE}/api/v2/assets/aUID/", json={"uid": "aUID", "content": content})
    responses.get(DATA, json={"detail": "You do not have permission to perform this action."}, status=403)
    problems = make_source(monkeypatch).check()
    errors = [p for p in problems if p.severity == "error" and "not its submissions" in p.message]
    assert errors and "View submissions" in (errors[0].hint or "") and TOKEN not in str(errors[0])
    assert json.loads(params_of(responses.calls[-1])["fields"]) == ["_id"] and params_of(responses.calls[-1])["limit"] == "1"


@responses.activate
def test_a_version_1_cursor_is_read_and_its_edited_submissions_are_fetched_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = json.dumps({"v": 1, "submitted": {"at": "2024-01-02T00:00:00", "ids": [12]}, "edited": {"at": "2024-03-01T00:00:00", "ids": [12]},
                     "validated": {"at": None, "ids": []}, "known": encode_ids({11, 12}), "reconcile": {"at": datetime.now(timezone.utc).isoformat(), "runs": 0}})
    responses.get(DATA, json=data())
    responses.get(DATA, json=data())
    responses.get(DATA, json=data({"_id": 12, "meta/instanceID": "uuid:b12"}))  # v1 kept no instanceIDs
    responses.get(DATA, json=data(sub(12, "2024-01-02T00:00:00", **{"meta/deprecatedID": "uuid:a12"})))
    pages = list(make_source(monkeypatch, reconcile_every_runs=99).pages(v1))
    assert [r.record_id for p in pages for r in p.records] == ["12"]
    assert json.loads(pages[-1].cursor)["v"] == 2


def test_the_edits_in_the_cursor_are_compressed_cheaply_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edits blob (hash fingerprints, rebuilt for every page) is compressed at level 1, not 9:
    level 9 cost a third of a 100,000-submission sync for under 10 % smaller cursors."""
    import zlib

    from connector.sources import kobo as kobo_module

    levels: list[int] = []
    real = zlib.compress
    monkeypatch.setattr(kobo_module.zlib, "compress", lambda data, level=-1: levels.append(level) or real(data, level))
    edited = {i: kobo_module._fingerprint(f"uuid:{i}") for i in range(1, 2001)}
    text = kobo_module._dump_cursor({}, set(edited), edited, {})
    assert 1 in levels and levels.count(9) <= 1  # the id set may still use 9: it is small and compresses well
    assert kobo_module._load_cursor(text, "kobo")["edited"] == edited
