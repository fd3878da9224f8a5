"""Kobo source against the Kobo sandbox over real HTTP: full and incremental pulls, deletions found by
id reconciliation, mapping to the generator's truth, faults and bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from connector.config import SourceConfig
from connector.mapping import load_mapping
from connector.sandbox import generate as gen
from connector.sandbox import xlsform_render
from connector.sandbox.kobo import KoboSandboxHandle, start_kobo_sandbox, submission_id
from connector.secrets import fold_secret_references
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.kobo import KoboSource, decode_ids


@pytest.fixture(scope="module")
def cases() -> list[gen.GeneratedCase]:
    return gen.generate_cases(120, seed=21, mess_rate=0.1)


@pytest.fixture
def sandbox(cases: list[gen.GeneratedCase]) -> Iterator[KoboSandboxHandle]:
    handle = start_kobo_sandbox(cases)
    yield handle
    handle.stop()


def make_source(handle: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch, **options: Any) -> KoboSource:
    monkeypatch.setenv("KOBO_SANDBOX_TOKEN", handle.token)
    raw = {**handle.config_options(token_env="KOBO_SANDBOX_TOKEN"), "page_size": 25, **options}
    cfg = SourceConfig(id="kobo", type="kobo", mapping="xlsform_htcds", options=raw)
    cfg.parsed_options = KoboSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = KoboSource(cfg, None)
    source.client.backoff = 0.01
    return source


def pull(source: KoboSource, cursor: str | None) -> tuple[dict[str, Any], str | None]:
    records: dict[str, Any] = {}
    for page in source.pages(cursor):
        records.update({r.record_id: r for r in page.records})
        cursor = page.cursor
    return records, cursor


def test_sandbox_speaks_kpi_shapes(sandbox: KoboSandboxHandle) -> None:
    headers = {"Authorization": f"Token {sandbox.token}"}
    assets = requests.get(f"{sandbox.url}/api/v2/assets/", headers=headers, timeout=10).json()
    assert assets["count"] == 1 and assets["results"][0]["uid"] == sandbox.asset_uid
    page = requests.get(f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/", params={"format": "json", "limit": 30, "start": 30}, headers=headers, timeout=10).json()
    assert page["count"] == 120 and len(page["results"]) == 30 and "start=60" in page["next"] and "start=0" in page["previous"]
    row = page["results"][0]
    assert {"_id", "_uuid", "_submission_time", "_validation_status", "meta/instanceID"} <= set(row)
    assert "T" in row["_submission_time"] and not row["_submission_time"].endswith("Z")
    assert requests.get(f"{sandbox.url}/api/v2/assets/", timeout=10).status_code == 401


def test_full_pull_maps_every_case_to_the_generator_truth(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    records, cursor = pull(make_source(sandbox, monkeypatch), None)
    mapping = load_mapping("xlsform_htcds")
    by_id = {str(submission_id(c)): c for c in cases}
    assert set(records) == set(by_id)
    for record_id, record in records.items():
        case = by_id[record_id]
        mapped, rejections = mapping.map_record("kobo", record)
        expected = xlsform_render.expected_for_form(case)
        assert {t: mapped.fields.get(t) for t in mapping.targets()} == {t: expected.get(t) for t in mapping.targets()}, case.case_id
        assert {r.field for r in rejections} == gen.expected_rejections(case, events=True), case.case_id
    assert decode_ids(json.loads(cursor)["known"]) == {int(i) for i in by_id}


def test_the_published_htcds_form_without_repeats_maps_with_the_partner_fields_unknown(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    handle = start_kobo_sandbox(cases[:10], variant="htcds")
    try:
        records, _ = pull(make_source(handle, monkeypatch), None)
        mapping = load_mapping("xlsform_htcds")
        for case in cases[:10]:
            mapped, _ = mapping.map_record("kobo", records[str(submission_id(case))])
            expected = xlsform_render.expected_for_form(case, "htcds")
            assert {t: mapped.fields.get(t) for t in mapping.targets()} == {t: expected.get(t) for t in mapping.targets()}, case.case_id
            assert mapped.fields["ext_Perpetrators"] is mapped.fields["ext_TraffickingEvents"] is mapped.fields["ext_TraffickMonths"] is None
    finally:
        handle.stop()


def test_second_run_pulls_edits_new_not_approved_and_reconciled_deletions(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch, reconcile_every_runs=2)
    first, cursor = pull(source, None)
    quiet, cursor = pull(source, cursor)  # run 1 of 2: no reconciliation yet
    assert quiet == {}
    later = gen.evolve(cases, seed=22)
    sandbox.set_cases(later)
    rejected = next(c for c in later if c in cases)
    sandbox.set_validation_status(rejected.case_id, "validation_status_not_approved", at=max(c.updated_at for c in later) + timedelta(hours=1))
    before = source.stats.requests
    second, cursor = pull(source, cursor)  # run 2 of 2: reconciles
    gone = {str(submission_id(c)) for c in later if c.deleted}
    changed = {str(submission_id(c)) for c in later if not any(c is old for old in cases)}
    assert set(second) == changed | {str(submission_id(rejected))}
    assert {rid for rid, r in second.items() if r.deleted} == gone | {str(submission_id(rejected))}
    # kpi has no edit time: the edits come from one listing of the edited submissions (ids and
    # instanceIDs only) and one `_id $in` fetch; the deletions from one listing of every id.
    with sandbox.app.lock:
        edited_on_server = sum(1 for r in sandbox.app.rows if "meta/deprecatedID" in r)
        live = len(sandbox.app.rows)
    pages = lambda n: -(-n // 25)  # noqa: E731
    assert source.stats.requests - before == 1 + 1 + pages(edited_on_server) + 1 + pages(live)
    third, _ = pull(source, cursor)
    assert third == {}


def test_faults_are_retried_and_the_run_completes(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.faults.add(429, retry_after=1, path="/data")
    sandbox.faults.add(500, path="/data")
    sandbox.faults.add(kind="truncate", path="/data")
    sandbox.faults.add(502, kind="html", path="/data")
    records, _ = pull(make_source(sandbox, monkeypatch), None)
    assert len(records) == 120 and sandbox.faults.pending() == 0 and sandbox.requests["faults"] == 4


def test_a_refused_token_stops_the_run_with_an_auth_error(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.faults.add(401, path="/data")
    with pytest.raises(SourceAuthError) as err:
        pull(make_source(sandbox, monkeypatch), None)
    assert "Invalid token." in str(err.value) and sandbox.token not in str(err.value)


def test_bad_input_becomes_named_rejections_and_the_run_goes_on(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    targets = {c.case_id: i for i, c in enumerate(cases[:4])}

    def damage(case: gen.GeneratedCase, answers: dict[str, Any]) -> dict[str, Any]:
        kind = targets.get(case.case_id)
        if kind == 0:  # submitted with an older form version: fewer questions
            return {k: v for k, v in answers.items() if k not in ("vic_Methods_of_Control", "events")}
        if kind == 1:
            return {**answers, "vic_Methods_of_Control": "DebtBondage Curse"}  # a choice not in the list
        if kind == 2:
            return {**answers, "prs_First_Name": "é" * 100_000}
        if kind == 3:
            return {**answers, "cas_IncomingReferralDate": "last Tuesday"}
        return answers

    handle = start_kobo_sandbox(cases[:10], transform=damage)
    try:
        records, _ = pull(make_source(handle, monkeypatch), None)
        mapping = load_mapping("xlsform_htcds")
        mapped = {c.case_id: mapping.map_record("kobo", records[str(submission_id(c))]) for c in cases[:10]}
        assert len(records) == 10
        old, _ = mapped[cases[0].case_id]
        assert old.fields["vic_MethodsOfControl"] is None and old.fields["ext_CountryOfExploitation"] is None
        case1, rejections = mapped[cases[1].case_id]
        assert [r.value for r in rejections if r.field == "vic_MethodsOfControl"] == ["[redacted, 5 chars]"]  # not a misspelt code: shown only by its length
        long, _ = mapped[cases[2].case_id]
        assert len(long.fields["prs_FirstName"]) == 100_000
        _, rejections = mapped[cases[3].case_id]
        assert any(r.field == "cas_IncomingReferralDate" for r in rejections)
    finally:
        handle.stop()


def test_a_run_resumed_from_any_committed_page_misses_nothing(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    pages = list(make_source(sandbox, monkeypatch).pages(None))
    for crash_after in (0, len(pages) // 2):
        delivered = {r.record_id for p in pages[: crash_after + 1] for r in p.records}
        resumed, cursor = pull(make_source(sandbox, monkeypatch), pages[crash_after].cursor)
        assert delivered | set(resumed) == {str(submission_id(c)) for c in cases}
        assert not any(r.deleted for r in resumed.values())  # the reconciliation finds nothing gone


N_LARGE = int(__import__("os").environ.get("KOBO_LARGE_N", "2500"))


@pytest.fixture(scope="module")
def large() -> Iterator[tuple[KoboSandboxHandle, list[gen.GeneratedCase]]]:
    cases = gen.generate_cases(N_LARGE, seed=23)
    handle = start_kobo_sandbox(cases)
    yield handle, cases
    handle.stop()


def test_sandbox_cuts_limit_to_1000_without_an_error_as_kpi_does(large: tuple[KoboSandboxHandle, list[gen.GeneratedCase]]) -> None:
    sandbox, _ = large
    headers = {"Authorization": f"Token {sandbox.token}"}
    url = f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/"
    page = requests.get(url, params={"format": "json", "limit": 30000}, headers=headers, timeout=30).json()
    assert page["count"] == N_LARGE and len(page["results"]) == 1000
    assert "limit=1000" in page["next"] and "start=1000" in page["next"] and page["previous"] is None
    assert len(requests.get(url, params={"format": "json"}, headers=headers, timeout=30).json()["results"]) == 100  # kpi's default
    assert requests.get(url, params={"limit": 0}, headers=headers, timeout=30).status_code == 400
    ids = requests.get(url, params={"fields": '["_id"]', "limit": 2}, headers=headers, timeout=30).json()["results"]
    assert set(ids[0]) == {"_id", "_uuid", "meta/rootUuid", "_validation_status"}  # kpi adds the uuids and the status
    last = requests.get(url, params={"limit": 1000, "start": N_LARGE - 5}, headers=headers, timeout=30).json()
    assert len(last["results"]) == 5 and last["next"] is None


def test_an_edit_keeps_id_and_submission_time_and_moves_the_instance_id_as_kpi_does(cases: list[gen.GeneratedCase]) -> None:
    handle = start_kobo_sandbox(cases[:5])
    try:
        headers = {"Authorization": f"Token {handle.token}"}
        url = f"{handle.url}/api/v2/assets/{handle.asset_uid}/data/"
        before = {r["_id"]: r for r in requests.get(url, headers=headers, timeout=10).json()["results"]}
        later = gen.evolve(cases[:5], seed=3, edit_share=1.0, delete_share=0.0, new=0)
        handle.set_cases(later)
        after = {r["_id"]: r for r in requests.get(url, headers=headers, timeout=10).json()["results"]}
        for record_id, row in after.items():
            old = before[record_id]
            assert row["_submission_time"] == old["_submission_time"] and "_last_edited" not in row
            assert row["meta/instanceID"] != old["meta/instanceID"] and row["meta/deprecatedID"] == old["meta/instanceID"]
            assert row["_uuid"] == row["meta/instanceID"].removeprefix("uuid:") and row["meta/rootUuid"] == old["meta/rootUuid"]
            assert "_tags" not in row and "_notes" not in row
    finally:
        handle.stop()


def test_2500_submissions_arrive_in_one_run_above_the_cap_and_reconciliation_deletes_none(
    large: tuple[KoboSandboxHandle, list[gen.GeneratedCase]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox, cases = large
    source = make_source(sandbox, monkeypatch, page_size=5000, reconcile_every_runs=1)
    first, cursor = pull(source, None)
    assert set(first) == {str(submission_id(c)) for c in cases}  # one run, though kpi sends 1000 at a time
    second, cursor = pull(source, cursor)  # reconciles: lists every id, 1000 per request
    assert second == {} and source.stats.extra["reconciled_ids"] == N_LARGE
    assert decode_ids(json.loads(cursor)["known"]) == {submission_id(c) for c in cases}


def test_a_reconciliation_interrupted_mid_list_deletes_none(large: tuple[KoboSandboxHandle, list[gen.GeneratedCase]], monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox, cases = large
    source = make_source(sandbox, monkeypatch, page_size=1000, reconcile_every_runs=1, max_retries=0)
    _, cursor = pull(source, None)
    listing = {"n": 0}
    real = source.client.get_json

    def cut_after_the_first_id_page(path: str, params: Any = None, **kw: Any) -> Any:
        if params and params.get("fields") == '["_id"]':
            listing["n"] += 1
            if listing["n"] == 2:
                sandbox.faults.add(502)  # the proxy fails the second page of the id listing
        return real(path, params, **kw)

    source.client.get_json = cut_after_the_first_id_page  # type: ignore[method-assign]
    delivered = []
    with pytest.raises(SourceError):
        for page in source.pages(cursor):
            delivered.extend(page.records)
    assert listing["n"] == 2 and not any(r.deleted for r in delivered)


def test_a_listing_is_filtered_once_per_query_and_changes_still_show(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    """Paging one query filters and sorts the submissions once (as MongoDB's index would), not once
    per page; a validation or a deletion between pages is seen by the next page."""
    from connector.sandbox import kobo as kobo_module

    headers = {"Authorization": f"Token {sandbox.token}"}
    url = f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/"
    query = json.dumps({"_submission_time": {"$gte": "2000-01-01T00:00:00"}})
    tested: list[int] = []
    real = kobo_module._matches
    monkeypatch.setattr(kobo_module, "_matches", lambda doc, q: tested.append(1) or real(doc, q))
    seen: list[int] = []
    page = requests.get(url, params={"format": "json", "limit": 20, "query": query}, headers=headers, timeout=10).json()
    while True:
        seen += [r["_id"] for r in page["results"]]
        if not page["next"]:
            break
        page = requests.get(page["next"], headers=headers, timeout=10).json()
    assert seen == sorted(seen) and len(seen) == 120
    assert len(tested) == 120  # one pass for six pages
    sandbox.app.delete(cases[0].case_id)
    after = requests.get(url, params={"format": "json", "limit": 20, "query": query}, headers=headers, timeout=10).json()
    assert after["count"] == 119 and len(tested) == 120 + 119  # the change made a new pass


def test_a_keyset_listing_by_id_bisects_the_cached_listing_and_agrees_with_a_scan(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_id > n` pages (the source's id listings) start after n in the cached listing, with the rows and
    counts a full scan gives."""
    from connector.sandbox import kobo as kobo_module

    headers = {"Authorization": f"Token {sandbox.token}"}
    url = f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/"
    everything = requests.get(url, params={"format": "json", "limit": 1000}, headers=headers, timeout=10).json()["results"]
    pivot = sorted(r["_id"] for r in everything)[40]
    tested: list[int] = []
    real = kobo_module._matches
    monkeypatch.setattr(kobo_module, "_matches", lambda doc, q: tested.append(1) or real(doc, q))
    for query in ({"_id": {"$gt": pivot}}, {"$and": [{"_submission_time": {"$gte": "2000-01-01T00:00:00"}}, {"_id": {"$gt": pivot}}]}):
        page = requests.get(url, params={"format": "json", "limit": 20, "query": json.dumps(query), "sort": json.dumps({"_id": 1})}, headers=headers, timeout=10).json()
        scanned = sorted(r["_id"] for r in everything if real(r, query))
        assert page["count"] == len(scanned) == 79 and [r["_id"] for r in page["results"]] == scanned[:20]
    before = len(tested)
    nxt = {"$and": [{"_submission_time": {"$gte": "2000-01-01T00:00:00"}}, {"_id": {"$gt": pivot + 5}}]}
    requests.get(url, params={"format": "json", "limit": 20, "query": json.dumps(nxt), "sort": json.dumps({"_id": 1})}, headers=headers, timeout=10)
    assert len(tested) == before  # the next keyset page of the same listing scans nothing


def test_a_time_keyset_page_is_a_slice_of_the_listing_and_agrees_with_a_scan(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """`{field: {"$gte"|"$gt": t}}` sorted by that field then `_id` (the source's passes) is served from
    the listing of all submissions by bisection, with the rows and counts a scan gives."""
    from connector.sandbox import kobo as kobo_module

    headers = {"Authorization": f"Token {sandbox.token}"}
    url = f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/"
    everything = requests.get(url, params={"format": "json", "limit": 1000}, headers=headers, timeout=10).json()["results"]
    times = sorted(r["_submission_time"] for r in everything)
    sort = json.dumps({"_submission_time": 1, "_id": 1})
    tested: list[int] = []
    real = kobo_module._matches
    monkeypatch.setattr(kobo_module, "_matches", lambda doc, q: tested.append(1) or real(doc, q))
    for at in (times[0], times[57], times[-1], "2999-01-01T00:00:00", "0"):
        for op in ("$gte", "$gt"):
            query = {"_submission_time": {op: at}}
            page = requests.get(url, params={"format": "json", "limit": 25, "start": 10, "query": json.dumps(query), "sort": sort}, headers=headers, timeout=10).json()
            scanned = sorted((r for r in everything if real(r, query)), key=lambda r: (r["_submission_time"], r["_id"]))
            assert page["count"] == len(scanned) and [r["_id"] for r in page["results"]] == [r["_id"] for r in scanned[10:35]], (op, at)
    assert len(tested) == len(everything)  # one pass, for the listing of all submissions
