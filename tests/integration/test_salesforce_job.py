"""A job with a Salesforce source, through the real pipeline and store, against the Salesforce sandbox
(an org laid out like the published HTCDS package, plus the fields a partner added under other names,
lookups to Account and Contact, several perpetrators per case, events logged as Events or Tasks, and
deleted child rows in the recycle bin).

The first run pulls every case, the store equals the generator's truth after mapping (perpetrators
with their Contact's details, events from Events and Tasks, the months trafficked); a second run
after edits, new cases and deletes pulls only those (plus the cases the lookback window re-reads),
deletes become tombstones and the store equals the new truth. Both over REST and Bulk API 2.0.
Then the failures a run must survive: an expired session mid-paging is renewed, a persistent 503
fails the run with exit code 3 and the cursor at the last committed page, and the next run finishes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from connector.config import load_config
from connector.mapping import load_mapping
from connector.pipeline import EXIT_SOURCE, Pipeline, SyncReport
from connector.records import Page
from connector.sandbox import generate as gen
from connector.sandbox.salesforce import SandboxHandle, start_sandbox
from connector.sandbox.salesforce_org import location_of_recruitment
from connector.sources.base import SourceError
from connector.sources.salesforce import SalesforceSource
from connector.sources.salesforce_soql import Cursor

SOURCE = "sf"
LOOKBACK = timedelta(seconds=300)
# The REST path commits one page per sandbox batch (25 rows, children counting); the Bulk path
# commits pages of `batch_size` cases (at least 200), so it needs more cases for several pages.
SIZES = {"rest": 60, "bulk": 450}


def _job(tmp_path: Path, handle: SandboxHandle, **options: Any) -> Path:
    """A job file whose source options come from the sandbox (key and CA as file paths)."""
    opts = {
        **handle.config_options(),
        "backoff_seconds": 0,
        "bulk_poll_seconds": 0,
        "lookback_seconds": int(LOOKBACK.total_seconds()),
        "batch_size": 200,
        "bulk_max_records": 100,
        **options,
    }
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"""\
partner: {{id: ngo-test}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: {SOURCE}
    type: salesforce
    mapping: salesforce_htcds
    options: {json.dumps(opts)}
""",
        encoding="utf-8",
    )
    return path


def _sync(path: Path) -> tuple[SyncReport, Pipeline]:
    pipeline = Pipeline(load_config(path))
    return pipeline.sync(), pipeline


@pytest.fixture()
def pages_seen(monkeypatch: pytest.MonkeyPatch) -> list[Page]:
    """Every page the Salesforce source hands the pipeline (cleared by the test between runs)."""
    seen: list[Page] = []
    original = SalesforceSource.pages

    def spy(self: SalesforceSource, cursor: str | None) -> Iterator[Page]:
        for page in original(self, cursor):
            seen.append(page)
            yield page

    monkeypatch.setattr(SalesforceSource, "pages", spy)
    return seen


def _case_id(handle: SandboxHandle, case: gen.GeneratedCase) -> str:
    return handle.org.record_id("Case", (case.case_id,))


def _stamp(case: gen.GeneratedCase) -> datetime:
    """The SystemModstamp the sandbox gives a case's records (whole seconds, UTC)."""
    return case.updated_at.astimezone(timezone.utc).replace(microsecond=0)


def _fetched(pages: list[Page]) -> tuple[set[str], set[str]]:
    """(live, deleted) record ids the source yielded."""
    records = [r for p in pages for r in p.records]
    return {r.record_id for r in records if not r.deleted}, {r.record_id for r in records if r.deleted}


def _expected_rejections(cases: list[gen.GeneratedCase]) -> int:
    # A Salesforce date field cannot hold the free text the generator typed: it stays empty, unrejected.
    return sum(len(gen.expected_rejections(c, events=True) - {f for f in ("prs_Birthdate",) if c.mess.get(f) == "free_text"}) for c in cases if not c.deleted)


def _assert_store_equals_truth(pipeline: Pipeline, handle: SandboxHandle, cases: list[gen.GeneratedCase]) -> None:
    targets = load_mapping("salesforce_htcds").targets()
    frame = pipeline.store.snapshot([SOURCE])
    stored = {row["record_id"]: row for row in frame.to_dict("records")}
    live = [c for c in cases if not c.deleted]
    assert set(stored) == {_case_id(handle, c) for c in live}
    for case in live:
        expected = {**gen.expected_fields(case), "vic_LocationOfRecruitment": location_of_recruitment(case)}  # kept by the package
        row = stored[_case_id(handle, case)]
        assert {t: row.get(t) for t in targets} == {t: expected.get(t) for t in targets}, case.case_id
    # Perpetrators and events: one entry per live child row, several for some cases, none from the
    # recycle bin (the org's deleted Connected Person row has no Contact and two roles of its own).
    entries = [e for row in stored.values() for e in row["ext_Perpetrators"] or []]
    org_rows = handle.org.records["Connected_Person_or_Organisation__c"].values()
    live_ids = {_case_id(handle, c) for c in live}
    assert len(entries) == sum(1 for r in org_rows if not r["IsDeleted"] and r["Case__c"] in live_ids)
    assert any(len(row["ext_Perpetrators"] or []) >= 2 for row in stored.values())
    assert all(e["per_Gender"] is not None for e in entries)  # every live row has its Contact
    assert any(e["per_MoneyPaid"] is True for e in entries) and any(e["per_AgeAtRegistration"] for e in entries)
    events = [e for row in stored.values() for e in row["ext_TraffickingEvents"] or []]
    assert len(events) == sum(len(c.events) for c in live)
    assert any(row["ext_TraffickMonths"] is not None for row in stored.values())


@pytest.mark.parametrize("api", ["rest", "bulk"])
def test_job_pulls_everything_then_only_edits_new_and_deletes(tmp_path: Path, pages_seen: list[Page], api: str) -> None:
    cases = gen.generate_cases(SIZES[api], seed=41)
    with start_sandbox(cases, page_size=25) as handle:
        org = handle.org
        assert any(len(c.perpetrators) > 1 for c in cases)  # several Connected Person rows per case
        live_cases = {r["Id"] for r in org.records["Case"].values() if not r["IsDeleted"]}
        for obj in ("Connected_Person_or_Organisation__c", "Event", "Task"):  # deleted children of live cases
            assert any(r["IsDeleted"] and (r.get("Case__c") or r.get("WhatId")) in live_cases for r in org.records[obj].values()), obj
        # ... and cases with both: several live perpetrators and one in the recycle bin.
        persons = org.records["Connected_Person_or_Organisation__c"].values()
        live_count = {cid: sum(1 for r in persons if r["Case__c"] == cid and not r["IsDeleted"]) for cid in live_cases}
        assert any(live_count[r["Case__c"]] >= 2 for r in persons if r["IsDeleted"] and r["Case__c"] in live_cases)
        job = _job(tmp_path, handle, api=api)
        checker = Pipeline(load_config(job))
        problems = checker.check()
        checker.close()
        assert [p for p in problems if p.severity == "error"] == []  # the org is laid out like the published package
        assert any("vic_TraffickingStatus <- Case.Victim_Status__c (help text)" in p.message for p in problems if p.severity == "info")

        first, pipeline = _sync(job)
        (report,) = first.sources
        assert (report.status, report.error) == ("ok", None)
        assert report.fetched == report.inserted == len(cases)
        assert len([p for p in pages_seen if p.records]) >= 3  # several committed pages
        assert report.rejected == _expected_rejections(cases)
        assert handle.counts.get("bulk_create" if api == "bulk" else "query_more", 0) > 0  # the API asked for was used
        _assert_store_equals_truth(pipeline, handle, cases)
        cursor = Cursor.loads(pipeline.store.cursor(SOURCE))
        assert cursor is not None and cursor.ts == handle.org.now()
        pipeline.close()

        later = gen.evolve(cases, seed=42, edit_share=0.1, delete_share=0.05, new=4)
        edited = [c for old, c in zip(cases, later) if c is not old and not c.deleted]
        deleted = [c for old, c in zip(cases, later) if c is not old and c.deleted]
        new = later[len(cases) :]
        assert edited and deleted and len(new) == 4
        # Cases stamped within the lookback before the cursor are read again by design.
        reread = {_case_id(handle, c) for old, c in zip(cases, later) if c is old and _stamp(c) >= cursor.ts - LOOKBACK}
        handle.set_cases(later)
        pages_seen.clear()

        second, pipeline = _sync(job)
        (report,) = second.sources
        assert (report.status, report.error) == ("ok", None)
        live_ids, deleted_ids = _fetched(pages_seen)
        assert live_ids == {_case_id(handle, c) for c in edited + new} | reread
        assert deleted_ids == {_case_id(handle, c) for c in deleted}
        assert report.fetched == len(live_ids) + len(deleted_ids) < len(later) // 4
        assert (report.inserted, report.deleted) == (len(new), len(deleted))
        assert report.updated == len(edited)  # every edit changes a mapped field
        _assert_store_equals_truth(pipeline, handle, later)  # edits stored, deletes out of the snapshot
        counts = pipeline.store.counts()["sources"][SOURCE]
        assert (counts["live"], counts["deleted"]) == (len(later) - len(deleted), len(deleted))  # tombstones kept
        pipeline.close()

        pages_seen.clear()
        third, pipeline = _sync(job)
        (report,) = third.sources
        assert report.status == "ok" and report.inserted == report.updated == report.deleted == 0
        assert report.fetched < len(later) // 4
        _assert_store_equals_truth(pipeline, handle, later)
        pipeline.close()


@pytest.mark.parametrize(("api", "path"), [("rest", "/queryAll/"), ("bulk", "/results")])
def test_session_expired_mid_paging_is_renewed_and_the_run_completes(tmp_path: Path, api: str, path: str) -> None:
    cases = gen.generate_cases(SIZES["rest"], seed=43)
    with start_sandbox(cases, page_size=25) as handle:
        handle.faults.add("expire_token", path=path, after=1)
        report, pipeline = _sync(_job(tmp_path, handle, api=api))
        assert (report.sources[0].status, report.sources[0].error) == ("ok", None)
        assert report.exit_code in (0, 1)  # 1: the generator's messy values are rejected, as they should be
        assert handle.counts.get("fault_expire_token") == 1  # the fault did hit mid-paging
        assert handle.counts["token"] == 2  # logged in once, renewed once
        _assert_store_equals_truth(pipeline, handle, cases)
        pipeline.close()


def test_persistent_503_fails_with_exit_3_and_the_next_run_resumes_from_the_last_committed_page(tmp_path: Path, pages_seen: list[Page]) -> None:
    cases = gen.generate_cases(SIZES["rest"], seed=44)
    with start_sandbox(cases, page_size=25) as handle:
        job = _job(tmp_path, handle, api="rest", max_retries=1)
        # queryMore locators are .../queryAll/<id>-<n>: the first query and two more batches pass.
        handle.faults.add("unavailable", path="/queryAll/", after=2, times=1000)

        failed, pipeline = _sync(job)
        (report,) = failed.sources
        assert failed.exit_code == EXIT_SOURCE == 3
        assert report.status == "failed" and "503" in (report.error or "")
        committed = [p for p in pages_seen if p.records]
        assert len(committed) == 3 and report.pages == 3
        assert pipeline.store.cursor(SOURCE) == committed[-1].cursor
        cursor = Cursor.loads(committed[-1].cursor)
        assert cursor is not None and cursor.id  # a mid-stream cursor, not the end-of-run one
        stored = set(pipeline.store.snapshot([SOURCE])["record_id"])
        by_id = {_case_id(handle, c): c for c in cases}
        assert stored == {r.record_id for p in committed for r in p.records}
        assert stored == {i for i, c in by_id.items() if (_stamp(c), i) <= (cursor.ts, cursor.id)}
        assert 0 < len(stored) < len(cases)
        pipeline.close()

        handle.faults.clear()
        pages_seen.clear()
        resumed, pipeline = _sync(job)
        (report,) = resumed.sources
        assert (report.status, report.error) == ("ok", None)
        live_ids, _ = _fetched(pages_seen)
        assert live_ids >= set(by_id) - stored
        assert live_ids & stored == {i for i in stored if _stamp(by_id[i]) >= cursor.ts - LOOKBACK}  # only the lookback re-reads
        assert report.inserted == len(cases) - len(stored)
        _assert_store_equals_truth(pipeline, handle, cases)
        pipeline.close()


def test_bulk_rows_arrive_out_of_cursor_order_and_a_crash_mid_way_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk 2.0 results come in PK-chunk order, not SystemModstamp order (the connector sends no
    ORDER BY); a run that dies after two committed pages must leave a cursor that the next run can
    resume from without skipping any of the rows it had not yet stored."""
    cases = gen.generate_cases(SIZES["bulk"], seed=45)
    with start_sandbox(cases, page_size=25, bulk_chunk_size=40) as handle:
        job = _job(tmp_path, handle, api="bulk")
        original = SalesforceSource.pages

        def crash_after_two_pages(self: SalesforceSource, cursor: str | None) -> Iterator[Page]:
            for page in original(self, cursor):
                if page.number > 2:
                    raise SourceError(self.where, "simulated crash after two committed pages")
                yield page

        monkeypatch.setattr(SalesforceSource, "pages", crash_after_two_pages)
        crashed, pipeline = _sync(job)
        assert crashed.sources[0].status == "failed" and crashed.sources[0].pages == 2
        stored = set(pipeline.store.snapshot([SOURCE])["record_id"])
        assert 0 < len(stored) < len(cases)
        pipeline.close()
        assert handle.counts.get("bulk_order_by", 0) == 0  # no Bulk query disabled PK chunking

        monkeypatch.setattr(SalesforceSource, "pages", original)
        resumed, pipeline = _sync(job)
        assert (resumed.sources[0].status, resumed.sources[0].error) == ("ok", None)
        _assert_store_equals_truth(pipeline, handle, cases)
        pipeline.close()


def test_an_unreadable_stored_cursor_fails_the_sync_naming_the_way_out_and_reset_cursor_recovers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from connector.cli import main

    cases = gen.generate_cases(30, seed=46)
    with start_sandbox(cases, page_size=25) as handle:
        job = _job(tmp_path, handle, api="rest")
        assert main(["sync", str(job)]) in (0, 1)
        with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:  # what a hand edit or a downgrade leaves behind
            db.execute("UPDATE cursors SET value = ? WHERE source = ?", ('{"when": "last tuesday"}', SOURCE))
        capsys.readouterr()

        assert main(["sync", str(job)]) == EXIT_SOURCE
        assert f"--reset-cursor {SOURCE}" in capsys.readouterr().err
        assert main(["sync", str(job), "--reset-cursor", "nope"]) == 2

        assert main(["sync", str(job), "--reset-cursor", SOURCE]) in (0, 1)  # 1: the generator's messy values are rejected
        pipeline = Pipeline(load_config(job))
        _assert_store_equals_truth(pipeline, handle, cases)
        assert json.loads(pipeline.store.cursor(SOURCE) or "{}")["v"] == 1
        pipeline.close()
