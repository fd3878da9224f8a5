"""The case store's behaviour tests, run against SQLite AND PostgreSQL.

The tests themselves live in tests/unit/test_store.py (every test there that takes the `store`
fixture); this module collects them and overrides `store` with a fixture parametrized over both
databases, so the two dialects are held to exactly the same behaviour. Each PostgreSQL test gets
its own schema (via the connection's `search_path`), dropped afterwards.

The server is `HTCDS_TEST_POSTGRES_URL` (default postgres@127.0.0.1:5432/test); the PostgreSQL
cases are skipped only when nothing listens there, and fail instead in CI (`CI` set).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from connector.store import Store
from tests.postgres import require_postgres

PG_URL = os.environ.get("HTCDS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _behaviour_tests() -> dict[str, object]:
    """The unit module's tests that take `store`, imported under the name pytest gives that file,
    so pytest's assertion rewriting applies and a whole-suite run does not import it twice."""
    unit_dir = str(Path(__file__).resolve().parents[1] / "unit")
    if unit_dir not in sys.path:
        sys.path.insert(0, unit_dir)
    module = importlib.import_module("test_store")
    return {
        name: obj
        for name, obj in vars(module).items()
        if name.startswith("test_") and callable(obj) and "store" in inspect.signature(obj).parameters
    }


globals().update(_behaviour_tests())


@pytest.fixture
def pg_store() -> Iterator[Store]:
    """A PostgreSQL store in a fresh schema of its own, dropped afterwards."""
    require_postgres()  # skips with the reason when the server is absent; fails in CI
    schema = f"htcds_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    store = Store(url.render_as_string(hide_password=False))
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_store")
        return
    store = Store(f"sqlite:///{tmp_path}/cases.sqlite")
    yield store
    store.close()


@pytest.mark.postgres
def test_postgres_store_tables_live_in_the_test_schema(pg_store: Store) -> None:
    """Guards the fixture itself: the PostgreSQL store must not write to the shared public schema."""
    with pg_store._engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        tables = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
            ).scalars()
        )
    assert schema.startswith("htcds_test_")
    assert {"cases", "cursors", "runs", "rejections", "source_status", "releases", "store_meta"} <= tables
