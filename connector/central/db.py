"""The receiver's tables (SQLAlchemy Core): partners, tokens (hashes only), releases and their files.

SQLite file by default, PostgreSQL by URL. File contents live in a content-addressed object folder
(`objects/<sha256>`), addressed only through `release_files` rows, so no request value ever becomes
a file-system path.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

partners = Table(
    "partners",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The `Datasource` values a partner's releases may carry (CTDC: "Case Management", "Hotline"). Set by
# the central team at registration; a partner with no row here may use auth.DEFAULT_DATASOURCES. A
# table of its own, so receivers created before it gain it through create_all.
partner_datasources = Table(
    "partner_datasources",
    metadata,
    Column("partner_id", String(63), ForeignKey("partners.id"), primary_key=True),
    Column("datasource", String(100), primary_key=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),  # the public half of a token: `<id>.<secret>`
    Column("partner_id", String(63), ForeignKey("partners.id"), nullable=True),  # NULL for admin tokens
    Column("role", String(16), nullable=False),  # "partner" | "admin"
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

releases = Table(
    "releases",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("release_id", String(40), nullable=False, unique=True),
    Column("partner_id", String(63), ForeignKey("partners.id"), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ... per partner, in order of receipt
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("schema_version", String(32), nullable=False),
    Column("method", String(32), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("k", Integer, nullable=True),
    Column("status", String(16), nullable=False, default="accepted"),
    Column("manifest", Text, nullable=False),  # manifest.json as received
    Column("privacy", Text, nullable=False),  # privacy.json as received
    Column("report", Text, nullable=False),  # the receiver's own check report (JSON)
    UniqueConstraint("partner_id", "version", name="uq_release_version"),
)

# Refused uploads, counted per partner for the central page's freshness column: a count, the time
# and status of the last one, never anything of the refused content (it may not be published).
upload_refusals = Table(
    "upload_refusals",
    metadata,
    Column("partner_id", String(63), ForeignKey("partners.id"), primary_key=True),
    Column("refused", Integer, nullable=False, default=0),
    Column("last_refused_at", DateTime(timezone=True), nullable=False),
    Column("last_status", Integer, nullable=False),
)

release_files = Table(
    "release_files",
    metadata,
    Column("release_pk", Integer, ForeignKey("releases.pk"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("content_type", String(100), nullable=False),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def make_engine(url: str) -> Engine:
    """An engine with the tables created; SQLite gets foreign keys and a busy timeout."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # The app serves requests from a thread pool (40 threads): a pool of 5 made reads queue for a
    # connection under load (bench/central_load.py). No pre-ping: a `SELECT 1` round trip before
    # every request tripled PostgreSQL's read p99 under load on two cores (254 -> 86 ms); a
    # connection the server dropped instead fails one request, which the app answers 503 +
    # Retry-After (app.py), and SQLAlchemy then renews the whole pool. Connections are renewed
    # after 30 minutes anyway.
    engine = create_engine(url, future=True, pool_pre_ping=False, pool_recycle=1800, pool_size=20, max_overflow=20, pool_timeout=30)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=10000")
            # WAL: readers are not blocked while an upload commits (the default rollback journal
            # locks the whole file for every write).
            if not url.startswith("sqlite:///:memory:") and url != "sqlite://":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    metadata.create_all(engine)
    return engine


__all__ = ["make_engine", "metadata", "now", "partner_datasources", "partners", "release_files", "releases", "tokens", "upload_refusals"]
