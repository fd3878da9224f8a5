"""Behaviour of the case store on SQLite.

Every test that takes the `store` fixture is a behaviour test: tests/integration/test_store_postgres.py
collects the same functions and runs them against PostgreSQL too, so keep them dialect-neutral.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from connector.records import CaseRecord, MappedPage, Rejection
from connector.migrations import LATEST
from connector.store import PageCounts, Store, StoreError, canonical_json, cases, content_hash, cursors
from connector.store import rejections as rejections_table

SF = "sf"


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path}/state/cases.sqlite")
    yield store
    store.close()


# -- helpers -----------------------------------------------------------------------------------


def case(record_id: str, source: str = SF, **fields: Any) -> CaseRecord:
    return CaseRecord(source=source, record_id=record_id, fields=fields)


def page(*records: CaseRecord, rejections: list[Rejection] = (), cursor: str | None = None) -> MappedPage:
    return MappedPage(cases=list(records), rejections=list(rejections), cursor=cursor)


def reject(record_id: str, field: str = "gender", reason: str = "unknown code", value: str = "x") -> Rejection:
    return Rejection(source=SF, record_id=record_id, field=field, value=value, reason=reason)


def rows(store: Store, table) -> list[dict[str, Any]]:
    """Every row of a table, in key order, as the database holds it."""
    with store._engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()]


def case_row(store: Store, record_id: str, source: str = SF) -> dict[str, Any] | None:
    found = [r for r in rows(store, cases) if r["source"] == source and r["record_id"] == record_id]
    return found[0] if found else None


def current_rejections(store: Store) -> list[tuple[str, str, str]]:
    return sorted((r["record_id"], r["field"], r["reason"]) for r in store.rejections(limit=1000))


# -- upserts -----------------------------------------------------------------------------------


def test_new_records_are_inserted_and_counted_across_id_chunks(store: Store) -> None:
    run = store.start_run("job", "sync")
    records = [case(f"r{i:05d}", age=i, gender="female") for i in range(1200)]

    counts = store.commit_page(SF, run, page(*records))

    assert counts == PageCounts(inserted=1200)
    assert store.counts()["sources"] == {SF: {"live": 1200, "deleted": 0, "rejections": 0}}
    row = case_row(store, "r00007")
    assert row["data"] == '{"age":7,"gender":"female"}'
    assert row["content_hash"] == content_hash(row["data"])
    assert row["deleted"] is False and row["last_run_id"] == run


def test_unchanged_records_only_move_last_seen(store: Store) -> None:
    first = store.start_run("job", "sync")
    store.commit_page(SF, first, page(case("a", age=30, countries=["GR", "TR"]), case("b", age=41)))
    before = case_row(store, "a")

    second = store.start_run("job", "sync")
    # Same content with keys in another order: the canonical JSON makes it the same hash.
    counts = store.commit_page(SF, second, page(CaseRecord(SF, "a", {"countries": ["GR", "TR"], "age": 30})))

    assert counts == PageCounts(unchanged=1)
    after = case_row(store, "a")
    assert after["data"] == before["data"] and after["first_seen"] == before["first_seen"]
    assert after["last_seen"] > before["last_seen"]
    assert after["last_run_id"] == second
    assert case_row(store, "b")["last_run_id"] == first


def test_changed_content_is_updated_and_first_seen_kept(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", age=30), case("b", age=41)))
    before = case_row(store, "a")

    counts = store.commit_page(SF, run, page(case("a", age=31), case("b", age=41), case("c", age=5)))

    assert counts == PageCounts(inserted=1, updated=1, unchanged=1)
    after = case_row(store, "a")
    assert after["data"] == '{"age":31}'
    assert after["content_hash"] != before["content_hash"]
    assert after["first_seen"] == before["first_seen"]


def test_last_copy_of_a_record_on_a_page_wins(store: Store) -> None:
    run = store.start_run("job", "sync")

    counts = store.commit_page(SF, run, page(case("a", age=1), case("a", age=2)))

    assert counts == PageCounts(inserted=1)
    assert case_row(store, "a")["data"] == '{"age":2}'


def test_deletes_clear_data_and_leave_the_snapshot(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", name="Jane Doe", age=30), case("b", age=41), case("c", age=52)))

    flagged = CaseRecord(SF, "b", {}, deleted=True)
    counts = store.commit_page(SF, run, page(flagged), deleted_ids=["a"])

    assert counts == PageCounts(deleted=2)
    for record_id in ("a", "b"):
        row = case_row(store, record_id)
        assert row["deleted"] is True
        assert row["data"] == "{}" and row["content_hash"] == content_hash("{}")
    assert "Jane Doe" not in str(rows(store, cases))
    assert list(store.snapshot()["record_id"]) == ["c"]
    assert [c.record_id for c in store.iter_cases()] == ["c"]
    assert store.counts()["sources"][SF] == {"live": 1, "deleted": 2, "rejections": 0}


def test_delete_wins_over_a_live_copy_on_the_same_page(store: Store) -> None:
    run = store.start_run("job", "sync")

    counts = store.commit_page(SF, run, page(case("a", age=30)), deleted_ids=["a"])

    assert counts == PageCounts(deleted=1)
    assert case_row(store, "a")["deleted"] is True


def test_repeated_delete_is_unchanged_and_unknown_id_becomes_tombstone(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", age=30)))
    store.commit_page(SF, run, page(), deleted_ids=["a"])

    counts = store.commit_page(SF, run, page(), deleted_ids=["a", "never-seen"])

    assert counts == PageCounts(unchanged=1, deleted=1)
    assert case_row(store, "never-seen")["deleted"] is True
    assert case_row(store, "never-seen")["data"] == "{}"


def test_deleted_record_that_returns_is_updated_back_to_live(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", age=30)))
    store.commit_page(SF, run, page(), deleted_ids=["a"])

    counts = store.commit_page(SF, run, page(case("a", age=30)))

    assert counts == PageCounts(updated=1)
    row = case_row(store, "a")
    assert row["deleted"] is False and row["data"] == '{"age":30}'


def test_empty_fields_record_revived_counts_as_update(store: Store) -> None:
    """A live record with no fields has the tombstone's hash; the deleted flag still tells them apart."""
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(), deleted_ids=["a"])

    counts = store.commit_page(SF, run, page(case("a")))

    assert counts == PageCounts(updated=1)
    assert list(store.snapshot()["record_id"]) == ["a"]


def test_records_are_kept_per_source(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page("odk", run, MappedPage(cases=[case("a", source="odk", age=9)]))

    counts = store.commit_page(SF, run, page(case("a", age=30)))

    assert counts == PageCounts(inserted=1)
    assert case_row(store, "a", source="odk")["data"] == '{"age":9}'


def test_page_with_a_case_of_another_source_is_refused_whole(store: Store) -> None:
    run = store.start_run("job", "sync")

    with pytest.raises(ValueError, match="odk/b"):
        store.commit_page(SF, run, page(case("a", age=1), case("b", source="odk"), cursor="c1"))

    assert rows(store, cases) == [] and store.cursor(SF) is None


def test_value_that_is_not_json_is_refused_naming_the_field(store: Store) -> None:
    run = store.start_run("job", "sync")

    with pytest.raises(StoreError, match="sf/a field blob"):
        store.commit_page(SF, run, page(case("a", blob=object())))


def test_source_timestamps_read_back_as_utc(store: Store) -> None:
    run = store.start_run("job", "sync")
    athens = timezone(timedelta(hours=3))
    updated = datetime(2024, 5, 1, 15, 30, tzinfo=athens)
    store.commit_page(SF, run, page(CaseRecord(SF, "a", {"age": 3}, updated_at=updated)))

    row = case_row(store, "a")
    (record,) = store.iter_cases(SF)

    assert row["source_updated_at"] == updated
    assert row["source_updated_at"].utcoffset() == timedelta(0)
    assert record.updated_at == updated
    assert row["first_seen"].tzinfo is not None


# -- rejections --------------------------------------------------------------------------------


def test_rejections_of_a_remapped_record_are_replaced(store: Store) -> None:
    first = store.start_run("job", "sync")
    store.commit_page(
        SF,
        first,
        page(case("a"), case("b"), rejections=[reject("a"), reject("a", field="age", reason="not a number"), reject("b")]),
    )
    assert len(current_rejections(store)) == 3

    second = store.start_run("job", "sync")
    counts = store.commit_page(SF, second, page(case("a", gender="male"), rejections=[reject("a", reason="new reason")]))

    assert counts.rejected == 1
    assert current_rejections(store) == [("a", "gender", "new reason"), ("b", "gender", "unknown code")]
    assert [r["record_id"] for r in store.rejections(run_id=second)] == ["a"]
    assert store.counts()["rejections_by_reason"] == {"new reason": 1, "unknown code": 1}
    assert store.rejections_by_reason() == [
        {"source": SF, "field": "gender", "reason": "new reason", "count": 1},
        {"source": SF, "field": "gender", "reason": "unknown code", "count": 1},
    ]


def test_remapped_record_without_problems_loses_its_rejections(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a"), rejections=[reject("a")]))

    store.commit_page(SF, run, page(case("a", gender="female")))

    assert current_rejections(store) == []
    assert store.counts()["sources"][SF]["rejections"] == 0


def test_rejections_by_reason_counts_most_frequent_first(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(
        SF,
        run,
        page(case("a"), case("b"), case("c"), rejections=[reject("a", reason="rare"), reject("b"), reject("c")]),
    )

    grouped = store.rejections_by_reason()

    assert [(g["reason"], g["count"]) for g in grouped] == [("unknown code", 2), ("rare", 1)]
    assert [r["record_id"] for r in store.rejections(limit=2)] == ["c", "b"]


# -- cursors and atomicity ---------------------------------------------------------------------


def test_cursor_moves_only_with_its_page(store: Store) -> None:
    run = store.start_run("job", "sync")
    assert store.cursor(SF) is None

    store.commit_page(SF, run, page(case("a"), cursor='{"after": "2024-01-01"}'))
    assert store.cursor(SF) == '{"after": "2024-01-01"}'

    store.commit_page(SF, run, page(case("b"), cursor=None))
    assert store.cursor(SF) == '{"after": "2024-01-01"}'

    store.commit_page(SF, run, page(case("c"), cursor="c3"))
    assert store.cursor(SF) == "c3"
    assert store.cursor("odk") is None

    store.reset_cursor(SF)
    assert store.cursor(SF) is None
    assert len(rows(store, cases)) == 3


@pytest.mark.parametrize("failing_step", ["_upsert_cases", "_touch_cases", "_replace_rejections", "_set_cursor"])
def test_failure_inside_a_page_leaves_store_and_cursor_as_they_were(
    store: Store, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", age=1), case("b", age=2), case("c", age=3), rejections=[reject("a")], cursor="c1"))
    tables = (cases, cursors, rejections_table)
    before = [rows(store, t) for t in tables]

    real = getattr(store, failing_step)

    def step_then_fail(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the step's statements run inside the transaction, then it fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, failing_step, step_then_fail)
    second = store.start_run("job", "sync")
    changes = page(case("a", age=10), case("b", age=2), case("d", age=4), rejections=[reject("d")], cursor="c2")
    with pytest.raises(RuntimeError, match="disk full"):
        store.commit_page(SF, second, changes, deleted_ids=["c"])

    assert [rows(store, t) for t in tables] == before
    assert store.cursor(SF) == "c1"

    monkeypatch.undo()
    assert store.commit_page(SF, second, changes, deleted_ids=["c"]) == PageCounts(
        inserted=1, updated=1, unchanged=1, deleted=1, rejected=1, rejected_new=1
    )
    assert store.cursor(SF) == "c2"


# -- full-snapshot deletes ---------------------------------------------------------------------


def test_mark_missing_deleted_tombstones_only_unseen_live_records(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(*(case(f"r{i}", age=i) for i in range(5)), rejections=[reject("r3")]))
    store.commit_page(SF, run, page(), deleted_ids=["r4"])
    store.commit_page("odk", run, MappedPage(cases=[case("r0", source="odk", age=1), case("x9", source="odk")]))

    second = store.start_run("job", "sync")
    deleted = store.mark_missing_deleted(SF, second, {"r0", "r1"})

    assert deleted == 2  # r2, r3; r4 was already deleted
    assert list(store.snapshot([SF])["record_id"]) == ["r0", "r1"]
    assert case_row(store, "r3")["data"] == "{}" and case_row(store, "r3")["last_run_id"] == second
    assert current_rejections(store) == []
    assert [c.record_id for c in store.iter_cases("odk")] == ["r0", "x9"]
    assert store.mark_missing_deleted(SF, second, {"r0", "r1"}) == 0


# -- reading -----------------------------------------------------------------------------------


def test_snapshot_has_live_cases_in_key_order_with_missing_fields_as_none(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("b", age=41, gender="male"), case("a", age=30, flags=["x", "y"])))
    store.commit_page("odk", run, MappedPage(cases=[case("z", source="odk", gender="female"), case("c", source="odk")]))
    store.commit_page(SF, run, page(), deleted_ids=["gone"])

    frame = store.snapshot()

    assert list(frame.columns) == ["source", "record_id", "age", "flags", "gender"]
    assert frame.to_dict("records") == [
        {"source": "odk", "record_id": "c", "age": None, "flags": None, "gender": None},
        {"source": "odk", "record_id": "z", "age": None, "flags": None, "gender": "female"},
        {"source": SF, "record_id": "a", "age": 30, "flags": ["x", "y"], "gender": None},
        {"source": SF, "record_id": "b", "age": 41, "flags": None, "gender": "male"},
    ]
    assert type(frame.loc[2, "age"]) is int
    assert list(store.snapshot([SF])["record_id"]) == ["a", "b"]
    assert store.snapshot(["nothing"]).empty


def test_snapshot_of_an_empty_store_has_the_key_columns(store: Store) -> None:
    frame = store.snapshot()

    assert list(frame.columns) == ["source", "record_id"] and len(frame) == 0


def test_iter_cases_yields_live_case_records(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("b", age=41), case("a", age=30)), deleted_ids=["c"])
    store.commit_page("odk", run, MappedPage(cases=[case("a", source="odk", age=1)]))

    assert [(c.source, c.record_id, c.fields) for c in store.iter_cases(SF)] == [
        (SF, "a", {"age": 30}),
        (SF, "b", {"age": 41}),
    ]
    assert [c.source for c in store.iter_cases()] == ["odk", SF, SF]


# -- runs, status, releases --------------------------------------------------------------------


def test_runs_are_recorded_and_listed_newest_first(store: Store) -> None:
    first = store.start_run("nightly", "sync")
    second = store.start_run("nightly", "release")
    store.finish_run(first, "rejections", {"pages": 2, "inserted": 10, "rejected": 1})

    listed = store.runs()

    assert [r["run_id"] for r in listed] == [second, first]
    assert listed[0]["status"] == "running" and listed[0]["finished_at"] is None
    assert listed[1]["status"] == "rejections"
    assert listed[1]["counts"] == {"pages": 2, "inserted": 10, "rejected": 1}
    assert listed[1]["finished_at"] >= listed[1]["started_at"]
    assert store.runs(limit=1)[0]["run_id"] == second

    store.finish_run(second, "failed", {}, error="sf: authentication refused")
    assert store.runs()[0]["error"] == "sf: authentication refused"


def test_run_arguments_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.start_run("job", "backup")
    run = store.start_run("job", "run")
    with pytest.raises(ValueError, match="status"):
        store.finish_run(run, "running", {})
    with pytest.raises(StoreError, match="not in the store"):
        store.finish_run("00000000-0000-0000-0000-000000000000", "ok", {})


def test_source_status_reports_the_latest_outcome(store: Store) -> None:
    store.record_source_status(SF, ok=True)
    store.record_source_status("odk", ok=True)
    store.record_source_status("odk", ok=False, error="odk: HTTP 503 from /v1/projects")

    status = {s["source"]: s for s in store.source_status()}

    assert status[SF]["ok"] is True and status[SF]["last_error"] is None
    assert status["odk"]["ok"] is False
    assert status["odk"]["last_error"] == "odk: HTTP 503 from /v1/projects"

    store.record_source_status("odk", ok=True)
    status = {s["source"]: s for s in store.source_status()}
    assert status["odk"]["ok"] is True
    assert status["odk"]["last_error"] == "odk: HTTP 503 from /v1/projects"  # kept, with its time
    assert status["odk"]["last_success_at"] > status["odk"]["last_error_at"]


def test_record_release_is_idempotent(store: Store) -> None:
    run = store.start_run("job", "release")

    assert store.record_release("ngo-2024-05-01-abc", run, "k_anonymity", "folder:releases", {"k": 10}) is True
    assert store.record_release("ngo-2024-05-01-abc", run, "k_anonymity", "folder:other", {"k": 5}) is False

    (release,) = store.releases()
    assert release["destination"] == "folder:releases" and release["privacy"] == {"k": 10}


# -- SQLite specifics (not part of the shared behaviour tests) -----------------------------------


def test_sqlite_store_creates_its_folder_and_uses_wal(tmp_path) -> None:
    path = tmp_path / "deep" / "state" / "cases.sqlite"

    with Store(f"sqlite:///{path}") as store:
        store.start_run("job", "sync")

    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()[0] == str(LATEST)


def test_store_reopens_with_its_data(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/cases.sqlite"
    with Store(url) as store:
        store.commit_page(SF, store.start_run("job", "sync"), page(case("a", age=1), cursor="c1"))

    with Store(url) as store:
        assert store.cursor(SF) == "c1"
        assert list(store.snapshot()["record_id"]) == ["a"]


def test_store_from_a_newer_connector_is_refused(tmp_path) -> None:
    path = tmp_path / "cases.sqlite"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="schema version 99"):
        Store(f"sqlite:///{path}")


def test_unreachable_store_error_hides_the_password() -> None:
    url = "postgresql+psycopg2://partner:s3cr3t-pw@127.0.0.1:1/cases?connect_timeout=2"

    with pytest.raises(StoreError) as raised:
        Store(url)

    assert "s3cr3t-pw" not in str(raised.value)
    assert "partner:***@127.0.0.1:1/cases" in str(raised.value)
    assert "s3cr3t-pw" not in repr(raised.value.__cause__) + repr(raised.value.__context__)


def test_canonical_json_is_order_independent_and_writes_dates_as_iso() -> None:
    from datetime import date

    assert canonical_json({"b": 1, "a": [date(2024, 5, 1)], "n": float("nan")}) == (
        '{"a":["2024-05-01"],"b":1,"n":null}'
    )
    assert canonical_json({"a": 1, "b": "é"}) == canonical_json({"b": "é", "a": 1})


def test_rejections_of_records_reread_unchanged_are_not_new(store: Store) -> None:
    run = store.start_run("job", "sync")
    first = store.commit_page(SF, run, page(case("a", age=1), case("b", age=2), rejections=[reject("a")], cursor="c1"))
    assert (first.rejected, first.rejected_new) == (1, 1)
    again = store.commit_page(SF, run, page(case("a", age=1), case("b", age=3), rejections=[reject("a"), reject("b")], cursor="c2"))
    assert (again.unchanged, again.updated, again.rejected, again.rejected_new) == (1, 1, 2, 1)


# -- records the store cannot hold ---------------------------------------------------------------


def test_records_whose_id_the_store_cannot_hold_become_rejections_and_the_page_goes_on(store: Store) -> None:
    run = store.start_run("job", "sync")
    long_id, nul_id = "L" * 300, "a\x00b"
    counts = store.commit_page(
        SF, run, page(case("ok1", age=1), case(long_id, age=2), case(nul_id, age=3), case("ok2", age=4),
                      rejections=[reject(long_id), reject("ok2", value="v\x00")], cursor="c1")
    )

    assert [r["record_id"] for r in rows(store, cases)] == ["ok1", "ok2"]
    assert store.cursor(SF) == "c1" and counts.inserted == 2 and counts.rejected == 3
    got = {r["field"] + ":" + r["record_id"]: r for r in store.rejections(limit=10)}
    assert set(got) == {"record_id:" + "L" * 60 + "... (300 characters)", "record_id:a\\x00b", "gender:ok2"}
    assert "longer than the 255 characters" in got["record_id:" + "L" * 60 + "... (300 characters)"]["reason"]
    assert "NUL" in got["record_id:a\\x00b"]["reason"] and got["gender:ok2"]["value"] == "v\\x00"

    # the next run with the same page is not stuck on it, and does not pile up rejections
    again = store.commit_page(SF, store.start_run("job", "sync"), page(case("ok1", age=1), case(long_id, age=2), case(nul_id, age=3), cursor="c2"))
    assert store.cursor(SF) == "c2" and again.unchanged == 1
    assert len([r for r in store.rejections(limit=10) if r["field"] == "record_id"]) == 2


def test_a_record_rejected_whole_keeps_its_stored_version_and_its_other_rejections(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.commit_page(SF, run, page(case("a", age=1), rejections=[reject("a", field="gender")]))
    # a later copy of `a` is rejected as a duplicate: the stored copy and its gender rejection stay
    duplicate = reject("a", field="record_id", reason="duplicate record id", value="row 3 and row 9")
    store.commit_page(SF, run, page(rejections=[duplicate]))
    store.commit_page(SF, run, page(rejections=[duplicate]))  # re-read (a resumed run): replaced, not doubled
    assert current_rejections(store) == [("a", "gender", "unknown code"), ("a", "record_id", "duplicate record id")]
    assert case_row(store, "a")["data"] == '{"age":1}'


def test_starting_a_run_marks_the_jobs_runs_left_running_as_crashed(store: Store) -> None:
    killed = store.start_run("job", "sync")  # never finished: the process was killed
    other = store.start_run("other-job", "sync")  # another job's run is none of this job's business
    store.start_run("job", "sync")

    by_id = {r["run_id"]: r for r in store.runs()}
    assert by_id[killed]["status"] == "crashed" and by_id[killed]["finished_at"] is not None
    assert "ended without finishing" in by_id[killed]["error"]
    assert by_id[other]["status"] == "running"


def test_a_driver_error_quoting_a_value_does_not_echo_it(store: Store) -> None:
    from sqlalchemy import text as sql

    with pytest.raises(StoreError) as raised, store._write() as conn:
        conn.execute(sql("SELECT CAST('Maria Papadopoulou' AS INTEGER) + 0 FROM runs WHERE 1 = 0 UNION ALL SELECT CAST('Maria Papadopoulou' AS INTEGER)"))
        if store.is_sqlite:  # SQLite casts text to 0 instead of failing: fail the same way by hand
            raise __import__("sqlalchemy").exc.DataError("SELECT", {}, Exception('invalid input syntax for type integer: "Maria Papadopoulou"'))
    assert "Maria" not in str(raised.value) and 'for type integer: "..."' in str(raised.value)


def test_a_nul_in_an_error_message_is_stored_escaped(store: Store) -> None:
    run = store.start_run("job", "sync")
    store.record_source_status(SF, ok=False, error="source sf: HTTP 500 (body: a\x00b)")
    store.finish_run(run, "failed", {}, "sf: a\x00b")
    assert store.source_status()[0]["last_error"] == "source sf: HTTP 500 (body: a\\x00b)"
    assert store.runs()[0]["error"] == "sf: a\\x00b"
