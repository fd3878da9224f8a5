"""The PostgreSQL server the tests use, and a fresh schema per test so tests never share tables.

The server is `HTCDS_TEST_POSTGRES_URL` (default postgres@127.0.0.1:5432/test). A test that needs it
is skipped, with the reason, only when nothing listens there and we are not in CI; in CI (`CI` set)
an absent server fails the test: a PostgreSQL behaviour must not pass by not running.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text

PG_URL = os.environ.get("HTCDS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def require_postgres() -> str:
    """The server's URL; skip (fail in CI) when it does not answer."""
    parsed = make_url(PG_URL)
    host, port = parsed.host or "127.0.0.1", parsed.port or 5432
    try:
        with socket.create_connection((host, port), timeout=2):
            return PG_URL
    except OSError as exc:
        reason = f"PostgreSQL at {host}:{port} is unreachable ({exc.strerror or exc}); set HTCDS_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def fresh_schema(application_name: str | None = None) -> Iterator[tuple[str, str]]:
    """(store URL whose search_path is a new schema, schema name); the schema is dropped after.

    `application_name` tags the store's connections, so a test can find and terminate them."""
    base = require_postgres()
    schema = f"htcds_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    query = {"options": f"-csearch_path={schema}"}
    if application_name:
        query["application_name"] = application_name
    url = make_url(base).update_query_dict(query).render_as_string(hide_password=False)
    try:
        yield url, schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def admin_engine():
    """An engine on the test database outside any test schema (to inspect or disturb a store)."""
    return create_engine(require_postgres())
