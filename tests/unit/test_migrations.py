"""The store's schema is versioned: older stores are upgraded in place (ledger and cursors survive),
a store that does not match its recorded version is refused, and concurrent creation of a new
PostgreSQL store is serialized. Each test runs on SQLite and on PostgreSQL (a fresh schema)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from connector import cli
from connector.errors import EXIT_CONFIG
from connector.migrations import LATEST, MIGRATIONS, applied, migrations_metadata, shape
from connector.records import CaseRecord, MappedPage
from connector.store import Store, StoreError, metadata
from tests.postgres import fresh_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cases.sqlite"
        return
    with fresh_schema() as (pg_url, _schema):
        yield pg_url


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def store_with_history(url: str) -> tuple[dict, list]:
    """A store with a cursor and a spent privacy budget entry; returns (cursors, ledger)."""
    with Store(url) as store:
        run = store.start_run("ngo", "sync")
        store.commit_page("sf", run, MappedPage(cases=[CaseRecord("sf", "a", {"age": 3})], cursor='{"mark": "2024-05-01"}'))
        entry = store.reserve_budget("ngo", 1.0, 1e-6, 10.0, run)
        store.record_release("rel-1", run, "synthetic", "folder", {"epsilon": 1.0}, budget_entry=entry)
        return {"sf": store.cursor("sf")}, store.budget_ledger("ngo")


def downgrade_to_version_1(url: str) -> None:
    """What a store written by the connector before migrations looks like (version 1)."""
    execute(url, "DROP TABLE schema_migrations", "DROP TABLE release_parts", "DROP INDEX ix_runs_job_status", "ALTER TABLE privacy_budget DROP COLUMN parts", "UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")


def test_the_latest_shape_is_the_store_metadata():
    tables = {**metadata.tables, **migrations_metadata.tables}
    assert shape(LATEST) == {name: {c.name for c in table.columns} for name, table in tables.items()}
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_ledger_and_cursors(url):
    cursors, ledger = store_with_history(url)
    downgrade_to_version_1(url)

    with Store(url) as store:
        assert {"sf": store.cursor("sf")} == cursors and store.budget_ledger("ngo") == ledger
        assert store.spent("ngo")[0] == 1.0  # the epsilon already spent still counts
        assert len(store.snapshot()) == 1
        with store._engine.connect() as conn:
            steps = applied(conn)
            indexes = {i["name"] for i in inspect(conn).get_indexes("runs")}
    assert [s["version"] for s in steps] == [m.version for m in MIGRATIONS] and "recorded on upgrade" in steps[0]["name"]
    assert "ix_runs_job_status" in indexes
    with Store(url) as store:  # the release series' table came with migration 3
        assert store.active_parts("ngo") == [] and store.next_part_seq("ngo") == 1

    with Store(url) as store:  # opening again changes nothing
        with store._engine.connect() as conn:
            assert [s["applied_at"] for s in applied(conn)] == [s["applied_at"] for s in steps]


def test_a_new_store_records_every_migration(url):
    with Store(url) as store, store._engine.connect() as conn:
        steps = applied(conn)
    assert [s["version"] for s in steps] == [m.version for m in MIGRATIONS]
    assert all("new store" in s["name"] for s in steps)


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("ALTER TABLE cursors RENAME TO cursors_old", "table cursors is missing"),
        ("ALTER TABLE cases ADD COLUMN nickname TEXT", f"column cases.nickname is not in version {LATEST}"),
    ],
)
def test_a_store_whose_tables_do_not_match_its_version_is_refused(url, damage, problem):
    store_with_history(url)
    execute(url, damage)
    with pytest.raises(StoreError) as raised:
        Store(url)
    assert f"records schema version {LATEST} but its tables do not match it" in str(raised.value) and problem in str(raised.value)


def test_a_damaged_version_1_store_is_refused_before_any_migration_runs(url):
    store_with_history(url)
    downgrade_to_version_1(url)
    execute(url, "ALTER TABLE privacy_budget RENAME TO privacy_budget_old")
    with pytest.raises(StoreError, match="records schema version 1 but its tables do not match it: table privacy_budget is missing"):
        Store(url)
    engine = create_engine(url)
    with engine.connect() as conn:  # nothing was changed: still version 1, not half-migrated
        assert "schema_migrations" not in inspect(conn).get_table_names()
    engine.dispose()


def test_tables_without_a_recorded_version_are_refused(url):
    execute(url, "CREATE TABLE cases (source TEXT, record_id TEXT)")
    with pytest.raises(StoreError, match="no recorded schema version"):
        Store(url)


def test_a_newer_store_is_refused(url):
    Store(url).close()
    execute(url, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'from the future', '2030-01-01')")
    with pytest.raises(StoreError, match=f"has schema version 99; this connector knows versions up to {LATEST}"):
        Store(url)


def test_the_cli_exits_2_on_a_store_that_does_not_match(url, tmp_path, capsys):
    from tests.faults.jobs import write_job

    store_with_history(url)
    execute(url, "ALTER TABLE cursors RENAME TO cursors_old")
    assert cli.main(["status", str(write_job(tmp_path, store_url=url))]) == EXIT_CONFIG
    err = " ".join(capsys.readouterr().err.split())
    assert "tables do not match" in err and "Traceback" not in err


@pytest.mark.postgres
def test_jobs_creating_a_new_postgres_store_at_once_all_succeed():
    with fresh_schema() as (url, _schema):
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_store() -> None:
            try:
                barrier.wait(timeout=30)
                Store(url).close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        with Store(url) as store, store._engine.connect() as conn:
            assert [s["version"] for s in applied(conn)] == [m.version for m in MIGRATIONS]
