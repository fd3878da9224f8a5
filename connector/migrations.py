"""The case store's schema, versioned: ordered, recorded migrations that upgrade a store in place.

A partner's store holds what a new version must not lose: the privacy-budget ledger (epsilon
already spent can never be spent again) and the cursors (where every source resumes). So a new
connector upgrades the store it finds, one recorded step at a time, instead of asking for a new one
(sqlite-utils' and Django's way: a table of applied migrations, each applied once, in order).

    migrate(engine, metadata, "sqlite:///state/cases.sqlite")   # Store.__init__ calls it

- A new (empty) store is created at the latest version from `metadata`, and every migration is
  recorded as applied.
- A store at an older version gets each later migration, in order, each recorded in
  `schema_migrations` in the same transaction as its change.
- Before and after, the store's tables must match the shape of its recorded version (every table
  and column the migrations up to it add, nothing missing, no unknown column in them). A store
  that does not match is refused (StoreError, exit 2), never run against: writing cases or spending
  budget into a damaged or foreign store would make things worse.
- A store of a newer version than this connector knows is refused: stores are never downgraded.

Creation and migration are serialized: on PostgreSQL by a transaction-scoped advisory lock (two
jobs starting on a new store at once would otherwise both create the tables and one would fail
with a duplicate key), on SQLite by the write lock (BEGIN IMMEDIATE). Everything happens in one
transaction, so a failed migration leaves the store as it was.

To change the schema: change the tables in `connector/store.py`, then append a `Migration` here
with the next version, the change as SQL (`apply`), and what it adds (`adds`); the test
`test_the_latest_shape_is_the_store_metadata` fails until both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Column, Integer, MetaData, String, Table, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from connector.errors import StoreError
from connector.lock import advisory_key

migrations_metadata = MetaData()

# One row per applied migration. (`store_meta.schema_version` is kept equal to the latest version,
# so that an older connector, which reads only that, refuses a newer store.)
schema_migrations = Table(
    "schema_migrations",
    migrations_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", String(32), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One step of the schema. `adds` maps each table it creates or extends to the columns it adds."""

    version: int
    name: str
    apply: Callable[[Connection], None]
    adds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _never(_conn: Connection) -> None:
    """Version 1 is the first schema: a store either has it (recorded in store_meta) or is new."""
    raise StoreError("version 1 is never applied as a step: a new store is created at the latest version")


def _v2(conn: Connection) -> None:
    schema_migrations.create(conn, checkfirst=True)
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_runs_job_status ON runs (job, status)"))


def _v3(conn: Connection) -> None:
    """The release_parts table as version 3 had it (later versions add columns)."""
    from connector.store import release_parts

    at_v3 = Table("release_parts", MetaData(), *(c._copy() for c in release_parts.columns if c.name != "vp_csv"))
    at_v3.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE release_parts ADD COLUMN vp_csv TEXT"))


def _v5(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE privacy_budget ADD COLUMN parts TEXT"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the first schema: runs, cases, cursors, rejections, source status, releases, privacy budget",
        _never,
        adds={
            "store_meta": ("key", "value"),
            "runs": ("run_id", "job", "kind", "started_at", "finished_at", "status", "counts", "error"),
            "cases": ("source", "record_id", "data", "content_hash", "source_updated_at", "deleted", "first_seen", "last_seen", "last_run_id"),
            "cursors": ("source", "value", "updated_at", "run_id"),
            "rejections": ("id", "run_id", "source", "record_id", "field", "value", "reason", "created_at"),
            "source_status": ("source", "last_success_at", "last_error", "last_error_at"),
            "releases": ("release_id", "created_at", "run_id", "method", "destination", "published_at", "privacy"),
            "privacy_budget": ("entry_id", "partner", "run_id", "release_id", "epsilon", "delta", "status", "input_hash", "created_at", "settled_at"),
        },
    ),
    Migration(
        2,
        "migrations recorded in schema_migrations; runs indexed by job and status (crashed runs are found at each start)",
        _v2,
        adds={"schema_migrations": ("version", "name", "applied_at")},
    ),
    Migration(
        3,
        "the frozen parts of each job's k-anonymized release series (release_parts)",
        _v3,
        adds={"release_parts": ("job", "series", "seq", "label", "created_at", "release_id", "retired_at", "retired_by", "rows", "data_csv", "members")},
    ),
    Migration(4, "each release part keeps its victim-perpetrator rows", _v4, adds={"release_parts": ("vp_csv",)}),
    Migration(5, "a budget entry records its epsilon per table (victims, victim-perpetrator)", _v5, adds={"privacy_budget": ("parts",)}),
)
LATEST = MIGRATIONS[-1].version


def shape(version: int) -> dict[str, set[str]]:
    """Tables -> columns a store of `version` has: what the migrations up to it add."""
    tables: dict[str, set[str]] = {}
    for migration in MIGRATIONS:
        if migration.version > version:
            break
        for table, columns in migration.adds.items():
            tables.setdefault(table, set()).update(columns)
    return tables


def migrate(engine: Engine, metadata: MetaData, where: str) -> int:
    """Bring the store behind `engine` to the latest version (see the module docstring); returns the
    version it was at (0: new). StoreError when it is newer, unversioned or does not match."""
    with engine.connect() as conn:
        conn = conn.execution_options(htcds_write=True)  # SQLite: BEGIN IMMEDIATE, the write lock
        with conn.begin():
            if conn.dialect.name == "postgresql":
                schema = conn.execute(text("SELECT current_schema()")).scalar_one()
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("schema", str(schema))})
            found = recorded_version(conn, where)
            if found > LATEST:
                raise StoreError(
                    f"the case store at {where} has schema version {found}; this connector knows versions up to {LATEST} "
                    f"(upgrade the connector: a store is never downgraded)"
                )
            if found == 0:
                metadata.create_all(conn)
                schema_migrations.create(conn, checkfirst=True)
                _record(conn, MIGRATIONS, note=" (new store, created at this version)")
            else:
                _check_shape(conn, found, where)
                pending = [m for m in MIGRATIONS if m.version > found]
                for migration in pending:
                    migration.apply(conn)
                if pending:
                    earlier = [m for m in MIGRATIONS if m.version <= found]
                    _record(conn, earlier, note=" (recorded on upgrade)", only_missing=True)
                    _record(conn, pending, note="")
            _check_shape(conn, LATEST, where)
            _set_meta_version(conn, metadata)
    return found


def recorded_version(conn: Connection, where: str) -> int:
    """The version the store says it is at: 0 for an empty database; StoreError when it has
    connector tables but no version."""
    tables = set(inspect(conn).get_table_names())
    versions = [0]
    if "schema_migrations" in tables:
        versions.append(int(conn.execute(select(func.coalesce(func.max(schema_migrations.c.version), 0))).scalar_one()))
    if "store_meta" in tables:
        value = conn.execute(text("SELECT value FROM store_meta WHERE key = 'schema_version'")).scalar_one_or_none()
        if value is not None:
            versions.append(int(value))
    version = max(versions)
    ours = tables & set(shape(LATEST))
    if version == 0 and ours:
        raise StoreError(
            f"the database at {where} has tables named like a connector store's ({', '.join(sorted(ours))}) but no recorded schema "
            f"version: it is not a connector store, or a damaged one; point store.url at a new store or restore a backup"
        )
    return version


def _check_shape(conn: Connection, version: int, where: str) -> None:
    inspector = inspect(conn)
    actual = set(inspector.get_table_names())
    problems: list[str] = []
    for table, columns in sorted(shape(version).items()):
        if table not in actual:
            problems.append(f"table {table} is missing")
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        problems += [f"column {table}.{c} is missing" for c in sorted(columns - have)]
        problems += [f"column {table}.{c} is not in version {version}" for c in sorted(have - columns)]
    if problems:
        raise StoreError(
            f"the case store at {where} records schema version {version} but its tables do not match it: {'; '.join(problems)}. "
            f"It is not run against: restore it from a backup, or point store.url at a new store"
        )


def _record(conn: Connection, migrations: list[Migration] | tuple[Migration, ...], note: str, only_missing: bool = False) -> None:
    done = set(conn.execute(select(schema_migrations.c.version)).scalars()) if only_missing else set()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{"version": m.version, "name": (m.name + note)[:200], "applied_at": now} for m in migrations if m.version not in done]
    if rows:
        conn.execute(schema_migrations.insert(), rows)


def _set_meta_version(conn: Connection, metadata: MetaData) -> None:
    meta = metadata.tables["store_meta"]
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
    if value is None:
        conn.execute(meta.insert().values(key="schema_version", value=str(LATEST)))
    elif value != str(LATEST):
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(LATEST)))


def applied(conn: Connection) -> list[dict[str, object]]:
    """The recorded migrations, oldest first (for `status` and tests)."""
    return [dict(row) for row in conn.execute(select(schema_migrations).order_by(schema_migrations.c.version)).mappings()]
