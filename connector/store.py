"""The local case store: mapped cases, cursors, run history, rejections and the release ledger.

It lives at the partner (an SQLite file by default, PostgreSQL by URL) and is the only place raw
mapped cases are kept. Two rules shape it:

- A page is committed whole or not at all: its cases, deletions, rejections and the cursor it
  reaches are written in ONE transaction (`commit_page`), so a cursor never moves past data that is
  not stored and a re-run after a crash resumes from the last committed page.
- A deleted record keeps only its key: its data is cleared to `{}` so a victim's data does not
  linger after the source removed it.

Example:
    store = Store("sqlite:///state/cases.sqlite")
    run_id = store.start_run("nightly", "sync")
    counts = store.commit_page("sf", run_id, mapped_page)

SQLAlchemy 2 Core only (no ORM). Timestamps are tz-aware UTC everywhere: `timestamptz` on
PostgreSQL, fixed-width ISO-8601 text on SQLite (so text order is time order).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from sqlalchemy import (
    cast,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    select,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, create_engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from connector.case_json import as_utc as _as_utc
from connector.case_json import canonical_json, content_hash
from connector.errors import STORAGE_ERRNOS, ReleaseRefused, StoreError, storage_problem
from connector.faults import fault_point
from connector.lock import PostgresJobLock
from connector.migrations import LATEST, migrate
from connector.records import CaseRecord, MappedPage, Rejection

SCHEMA_VERSION = LATEST  # the schema's version and its upgrades: connector/migrations.py
RUN_KINDS = ("sync", "release", "run")
FINAL_STATUSES = ("ok", "rejections", "failed")
# A run found `running` when the next run of its job starts was cut short (kill -9, out of memory,
# a host restart): nothing else can hold the job's lock, so it is marked so, for `status` to show.
CRASHED = "crashed"
CRASHED_ERROR = "the process ended without finishing this run (killed, out of memory or a restart); the next run resumed from its last committed page"
EMPTY_DATA = "{}"
# IN-lists are chunked: SQLite limits bound parameters, and PostgreSQL plans short lists better.
_IN_CHUNK = 500
# Rows fetched per round trip when streaming cases out (server-side cursor on PostgreSQL).
_STREAM_CHUNK = 1000


class UTCDateTime(TypeDecorator):
    """A tz-aware UTC timestamp that reads back identically from SQLite and PostgreSQL.

    SQLite has no timestamp type and SQLAlchemy's DateTime drops the offset there, so on SQLite the
    value is stored as fixed-width ISO text (`2024-05-01T12:00:00.000000+00:00`), whose text order is
    time order. Naive datetimes are taken as UTC (sources give offsets; a naive value is a bug
    upstream that must not shift times by the server's local zone).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = _as_utc(value)
        if dialect.name == "sqlite":
            return value.isoformat(timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return _as_utc(value)


metadata = MetaData()

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("job", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("counts", Text, nullable=False, default=EMPTY_DATA),
    Column("error", Text),
    Index("ix_runs_job_status", "job", "status"),
)

cases = Table(
    "cases",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("record_id", String(255), primary_key=True),
    Column("data", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source_updated_at", UTCDateTime),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("last_run_id", String(36), ForeignKey("runs.run_id"), nullable=False),
)

cursors = Table(
    "cursors",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("run_id", String(36), ForeignKey("runs.run_id"), nullable=False),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), ForeignKey("runs.run_id"), nullable=False),
    Column("source", String(100), nullable=False),
    Column("record_id", String(255), nullable=False),
    Column("field", String(200), nullable=False),
    Column("value", Text),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_rejections_source_record", "source", "record_id"),
    Index("ix_rejections_run", "run_id"),
)

source_status = Table(
    "source_status",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("last_success_at", UTCDateTime),
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
)

releases = Table(
    "releases",
    metadata,
    Column("release_id", String(200), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("run_id", String(36), ForeignKey("runs.run_id")),
    Column("method", String(32), nullable=False),
    Column("destination", Text, nullable=False),
    Column("published_at", UTCDateTime),
    Column("privacy", Text, nullable=False),
)

# The privacy budget ledger: one row per differentially private release attempt that got past the
# gate. `pending` is written BEFORE publishing and counts as spent (if the process dies mid-publish
# the bytes may have left); it becomes `spent` in the same transaction as the release's row in
# `releases`, or `void` when the publish failed and the destination knows nothing left the partner
# (connector.errors.PublishError.sent).
privacy_budget = Table(
    "privacy_budget",
    metadata,
    Column("entry_id", String(36), primary_key=True),
    Column("partner", String(100), nullable=False),
    Column("run_id", String(36), ForeignKey("runs.run_id")),
    Column("release_id", String(200)),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("input_hash", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime),
    # JSON {table: epsilon} when one release spends on several tables (victims and the
    # victim-perpetrator table); `epsilon` is their sum and is what every budget check counts
    Column("parts", Text),
    Index("ix_privacy_budget_partner", "partner", "status"),
)
BUDGET_COUNTED = ("pending", "spent")

# The frozen parts of each job's k-anonymized release series (privacy.series). A part's published
# rows are kept as the CSV bytes that went out, so later releases republish them unchanged; its
# members (source, record id, digest of the view row when published) say which records it holds.
# A part is written in the same transaction as the release that first published it, and retired
# in the same transaction as the release that removed it.
release_parts = Table(
    "release_parts",
    metadata,
    Column("job", String(200), primary_key=True),
    Column("series", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("label", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("release_id", String(200), nullable=False),
    Column("retired_at", UTCDateTime),
    Column("retired_by", String(200)),
    Column("rows", Integer, nullable=False),
    Column("data_csv", Text, nullable=False),
    Column("members", Text, nullable=False),
    Column("vp_csv", Text),
)


@dataclass(frozen=True)
class SeriesChange:
    """The parts one k-anonymized release added and retired (privacy.series.Part objects)."""

    job: str
    added: tuple[tuple[str, Any], ...] = ()  # (series id, Part)
    retired: tuple[tuple[str, int], ...] = ()  # (series id, seq)


class BudgetExceeded(ReleaseRefused, ValueError):
    """A release would take the partner's privacy budget over its total; the message says what is left."""

    def __init__(self, partner: str, epsilon: float, spent: float, total: float):
        self.partner, self.epsilon, self.spent, self.total = partner, epsilon, spent, total
        self.left = max(total - spent, 0.0)
        super().__init__(
            f"privacy budget of {partner}: this release needs epsilon {epsilon:g} but only {self.left:g} of "
            f"{total:g} is left ({spent:g} spent by earlier releases); lower release.synthetic.epsilon or "
            f"release k-anonymized data"
        )


@dataclass(frozen=True)
class PageCounts:
    """What one committed page did, for the run record.

    Every distinct record id on the page falls in exactly one of inserted / updated / unchanged /
    deleted. `deleted` counts records this page turned into tombstones (including ids the store
    had never seen); a repeated delete of a tombstone is `unchanged`.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    # Rejections of records that are new or changed on this page: a record re-read unchanged was
    # reported before, so an unattended run does not cry "rejections" every night for old data.
    rejected_new: int = 0

    def __add__(self, other: PageCounts) -> PageCounts:
        return PageCounts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Store:
    """The case store behind one SQLAlchemy URL. Open once per process; `close()` when done."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.display_url = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        if self._sqlite:
            try:
                _make_sqlite_folder(parsed.database)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the case store at {self.display_url}: {storage_problem(exc)}") from None
        # hide_parameters: a failing statement's error must not echo case data into logs.
        options: dict[str, Any] = {"hide_parameters": True}
        if not self._sqlite:
            options["pool_pre_ping"] = True
        try:
            self._engine: Engine = create_engine(parsed, **options)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open the case store at {self.display_url}: {_first_line(exc)}") from None
        if self._sqlite:
            _configure_sqlite(self._engine)
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        try:
            migrate(self._engine, metadata, self.display_url)
        except StoreError:
            self._engine.dispose()
            raise
        except SQLAlchemyError as exc:
            self._engine.dispose()
            message = _first_line(getattr(exc, "orig", None) or exc)
            raise StoreError(f"cannot open the case store at {self.display_url}: {message}") from None

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections (and SQLite file handles, so the file can be moved)."""
        self._engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return self._sqlite

    def job_lock(self, partner: str, job: str) -> PostgresJobLock:
        """The lock that keeps one run of `job` at a time across hosts: an advisory lock in this
        PostgreSQL store (connector.lock.PostgresJobLock). SQLite stores use a lock file instead."""
        if self._sqlite:
            raise ValueError("an SQLite store is locked with a file beside it (connector.lock.JobLock)")
        return PostgresJobLock(self._engine, partner, job, self.display_url)

    # -- pages -------------------------------------------------------------------------------

    def commit_page(
        self, source: str, run_id: str, page: MappedPage, deleted_ids: Iterable[str] = ()
    ) -> PageCounts:
        """Store one mapped page and the cursor it reaches in ONE transaction.

        New records are inserted; a record whose content hash or deleted flag changed is updated;
        otherwise only `last_seen`/`last_run_id` move. `deleted_ids` and cases flagged deleted
        become tombstones with data `{}` (a delete wins over a live copy on the same page). The
        earlier rejections of every record stored on the page are replaced by this page's. The cursor is
        set to `page.cursor` unless it is None. If anything fails, nothing of the page is written.

        A record the store cannot hold (an id too long for its column, a NUL in the id) becomes a
        rejection showing its id escaped and shortened; the rest of the page and the cursor go on.
        A record rejected without being stored here keeps its stored version, and that version's
        rejections of other fields.
        """
        page = self._what_fits(source, page)
        deleted_ids = [i for i in deleted_ids if unstorable_id(i) is None]
        incoming = self._incoming_rows(source, page, deleted_ids)
        for rejection in page.rejections:
            if rejection.source != source:
                raise ValueError(
                    f"rejection of {rejection.source}/{rejection.record_id} on a page of source {source!r}"
                )
        touched_ids = set(incoming)
        now = _now()
        with self._write() as conn:
            existing = self._existing_states(conn, source, list(incoming))
            changed: list[dict[str, Any]] = []
            unchanged: list[str] = []
            inserted = updated = deleted = 0
            for record_id, row in incoming.items():
                before = existing.get(record_id)
                if before is not None and before == (row["content_hash"], row["deleted"]):
                    unchanged.append(record_id)
                    continue
                changed.append(row)
                if row["deleted"]:
                    deleted += 1
                elif before is None:
                    inserted += 1
                else:
                    updated += 1
            unchanged_ids = set(unchanged)
            self._upsert_cases(conn, source, run_id, changed, now)
            if changed:
                self._bump_cases_version(conn)
            self._touch_cases(conn, source, run_id, unchanged, now)
            self._replace_rejections(conn, source, run_id, touched_ids, page, now)
            if page.cursor is not None:
                self._set_cursor(conn, source, run_id, page.cursor, now)
            fault_point("store.commit")
        return PageCounts(
            inserted=inserted,
            updated=updated,
            unchanged=len(unchanged),
            deleted=deleted,
            rejected=len(page.rejections),
            rejected_new=sum(1 for r in page.rejections if r.record_id not in unchanged_ids),
        )

    def mark_missing_deleted(self, source: str, run_id: str, seen_ids: set[str]) -> int:
        """For full-snapshot sources: tombstone every live record of `source` not in `seen_ids`.

        Call it only after a complete, successful read of the source: an empty `seen_ids` deletes
        every record of the source. One transaction; returns how many records were deleted.
        """
        now = _now()
        with self._write() as conn:
            live = conn.execute(
                select(cases.c.record_id).where(cases.c.source == source, cases.c.deleted.is_(False))
            ).scalars()
            missing = sorted(set(live) - set(seen_ids))
            for chunk in _chunks(missing, _IN_CHUNK):
                conn.execute(
                    update(cases)
                    .where(cases.c.source == source, cases.c.record_id.in_(chunk))
                    .values(deleted=True, data=EMPTY_DATA, content_hash=_EMPTY_HASH, last_run_id=run_id)
                )
                conn.execute(
                    sa_delete(rejections).where(rejections.c.source == source, rejections.c.record_id.in_(chunk))
                )
            if missing:
                self._bump_cases_version(conn)
        return len(missing)

    # -- the change marker -------------------------------------------------------------------
    # `cases_version` moves in the same transaction as any change to a case (insert, update,
    # delete); a release remembers the version and settings it was computed from, so a night on
    # which nothing changed skips the release step without reading a case.

    def cases_version(self) -> int:
        with self._read() as conn:
            value = conn.execute(select(store_meta.c.value).where(store_meta.c.key == "cases_version")).scalar_one_or_none()
        return int(value or 0)

    def release_marker(self, job: str, method: str) -> str | None:
        """What the last release of `job` by `method` was computed from (`mark_released`)."""
        with self._read() as conn:
            return conn.execute(select(store_meta.c.value).where(store_meta.c.key == _marker_key(job, method))).scalar_one_or_none()

    def mark_released(self, job: str, method: str, marker: str) -> None:
        """Remember that a release (published, or found unchanged) was computed from `marker`."""
        key = _marker_key(job, method)
        with self._write() as conn:
            conn.execute(sa_delete(store_meta).where(store_meta.c.key == key))
            conn.execute(store_meta.insert().values(key=key, value=marker))

    def _bump_cases_version(self, conn: Connection) -> None:
        updated = conn.execute(
            update(store_meta).where(store_meta.c.key == "cases_version").values(value=cast(cast(store_meta.c.value, Integer) + 1, String(64)))
        ).rowcount
        if not updated:
            conn.execute(store_meta.insert().values(key="cases_version", value="1"))

    # -- cursors -----------------------------------------------------------------------------

    def cursor(self, source: str) -> str | None:
        """The cursor the last committed page of `source` reached; None before the first page."""
        with self._read() as conn:
            return conn.execute(select(cursors.c.value).where(cursors.c.source == source)).scalar_one_or_none()

    def reset_cursor(self, source: str) -> None:
        """Forget `source`'s cursor so the next sync re-reads it from the start (records are kept)."""
        with self._write() as conn:
            conn.execute(sa_delete(cursors).where(cursors.c.source == source))

    # -- runs and status ---------------------------------------------------------------------

    def start_run(self, job: str, kind: str) -> str:
        """Record a run as `running` and return its id, so a crash leaves a visible trace.

        Runs of `job` still `running` are marked `crashed` in the same transaction: call this only
        while holding the job's lock (every command does), so no other run of the job is live."""
        if kind not in RUN_KINDS:
            raise ValueError(f"run kind must be one of {', '.join(RUN_KINDS)}, not {kind!r}")
        run_id = str(uuid.uuid4())
        with self._write() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.job == job, runs.c.status == "running")
                .values(status=CRASHED, finished_at=_now(), error=CRASHED_ERROR)
            )
            conn.execute(
                runs.insert().values(
                    run_id=run_id, job=job, kind=kind, started_at=_now(), status="running", counts=EMPTY_DATA
                )
            )
        return run_id

    def finish_run(self, run_id: str, status: str, counts: dict[str, Any], error: str | None = None) -> None:
        """Close a run with its outcome. `error` must be a safe message (no personal data, no secrets)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        with self._write() as conn:
            result = conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(finished_at=_now(), status=status, counts=_dumps(counts), error=_no_nul(error))
            )
            if result.rowcount != 1:
                raise StoreError(f"run {run_id} is not in the store")

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first, with `counts` decoded."""
        query = select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "counts": json.loads(row["counts"])} for row in rows]

    def record_source_status(self, source: str, ok: bool, error: str | None = None) -> None:
        """Remember a source's last success or last error for `status`.

        A success keeps the last error (with its time) so `status` can say when it last failed;
        `ok` in `source_status()` compares the two times.
        """
        now = _now()
        values: dict[str, Any] = {"last_success_at": now} if ok else {"last_error": _no_nul(error), "last_error_at": now}
        stmt = self._insert(source_status).values(source=source, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[source_status.c.source], set_=values)
        with self._write() as conn:
            conn.execute(stmt)

    def source_status(self) -> list[dict[str, Any]]:
        """One dict per source: last success, last error and `ok` (the latest outcome was a success)."""
        with self._read() as conn:
            rows = conn.execute(select(source_status).order_by(source_status.c.source)).mappings().all()
        out = []
        for row in rows:
            success, failure = row["last_success_at"], row["last_error_at"]
            ok = success is not None and (failure is None or success >= failure)
            out.append({**row, "ok": ok})
        return out

    # -- reading cases -----------------------------------------------------------------------

    def snapshot(self, sources: list[str] | None = None, fields: Iterable[str] | None = None) -> pd.DataFrame:
        """Live cases as a frame: `source`, `record_id`, then one column per field found in data.

        Columns after the key are sorted by name; a field a record lacks is None; rows are in
        (source, record_id) order, so the same store always gives the same frame. Rows are
        streamed from the database in chunks, so memory is bounded by the frame itself. Field
        columns have dtype object, so ints stay ints and unknowns stay None. `fields` keeps only
        those fields (the release view needs a fraction of them: issue #16, a release of 100,000
        cases within 1 GiB), and equal strings of a column share one object, as a categorical would.
        """
        keys: dict[str, list[Any]] = {"source": [], "record_id": []}
        columns: dict[str, list[Any]] = {}
        shared: dict[str, dict[str, str]] = {}
        wanted = None if fields is None else frozenset(fields)
        n = 0
        for source, record_id, data in self._stream_live(sources):
            keys["source"].append(source)
            keys["record_id"].append(record_id)
            for name, value in json.loads(data).items():
                if wanted is not None and name not in wanted:
                    continue
                column = columns.get(name)
                if column is None:
                    column = columns[name] = [None] * n
                    shared[name] = {}
                if value.__class__ is str:
                    value = shared[name].setdefault(value, value)
                column.append(value)
            n += 1
            for name, column in columns.items():
                if len(column) < n:
                    column.append(None)
        frame = {name: pd.Series(values, dtype=object) for name, values in keys.items()}
        del shared
        for name in sorted(columns):
            frame[name] = pd.Series(columns.pop(name), dtype=object)
        return pd.DataFrame(frame, columns=list(frame))

    def iter_cases(self, source: str | None = None) -> Iterator[CaseRecord]:
        """Live cases as CaseRecords in (source, record_id) order, streamed (for exports and checks)."""
        query = select(cases.c.source, cases.c.record_id, cases.c.data, cases.c.source_updated_at).where(
            cases.c.deleted.is_(False)
        )
        if source is not None:
            query = query.where(cases.c.source == source)
        query = query.order_by(cases.c.source, cases.c.record_id)
        with self._read() as conn:
            result = conn.execution_options(yield_per=_STREAM_CHUNK).execute(query)
            for row in result:
                yield CaseRecord(
                    source=row.source,
                    record_id=row.record_id,
                    fields=json.loads(row.data),
                    updated_at=row.source_updated_at,
                )

    def counts(self) -> dict[str, Any]:
        """Per source: live, deleted and rejections; plus rejections by reason, for `status`."""
        per_source: dict[str, dict[str, int]] = {}
        by_reason: dict[str, int] = {}
        with self._read() as conn:
            case_rows = conn.execute(
                select(cases.c.source, cases.c.deleted, func.count()).group_by(cases.c.source, cases.c.deleted)
            )
            for source, is_deleted, n in case_rows:
                entry = per_source.setdefault(source, {"live": 0, "deleted": 0, "rejections": 0})
                entry["deleted" if is_deleted else "live"] += n
            for source, n in conn.execute(
                select(rejections.c.source, func.count()).group_by(rejections.c.source)
            ):
                per_source.setdefault(source, {"live": 0, "deleted": 0, "rejections": 0})["rejections"] = n
            for reason, n in conn.execute(
                select(rejections.c.reason, func.count()).group_by(rejections.c.reason)
            ):
                by_reason[reason] = n
        return {
            "sources": dict(sorted(per_source.items())),
            "rejections_by_reason": dict(sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))),
        }

    def rejections(
        self, limit: int | None = 50, run_id: str | None = None, *, source: str | None = None, field: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest current rejections (optionally of one run, source or field), newest first; `limit=None`: all."""
        query = select(rejections).order_by(rejections.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(rejections.c.run_id == run_id)
        if source is not None:
            query = query.where(rejections.c.source == source)
        if field is not None:
            query = query.where(rejections.c.field == field)
        with self._read() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def rejections_by_reason(self) -> list[dict[str, Any]]:
        """Current rejections grouped by source, field and reason, most frequent first: what to fix."""
        n = func.count().label("count")
        query = (
            select(rejections.c.source, rejections.c.field, rejections.c.reason, n)
            .group_by(rejections.c.source, rejections.c.field, rejections.c.reason)
            .order_by(n.desc(), rejections.c.source, rejections.c.field, rejections.c.reason)
        )
        with self._read() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # -- releases ----------------------------------------------------------------------------

    def record_release(
        self,
        release_id: str,
        run_id: str | None,
        method: str,
        destination: str,
        privacy: dict[str, Any],
        published_at: datetime | None = None,
        budget_entry: str | None = None,
        series: "SeriesChange | None" = None,
    ) -> bool:
        """Add a release to the ledger; False if it is already there (publishing is idempotent).

        `budget_entry` (from `reserve_budget`) is marked spent, and `series` (the parts a
        k-anonymized release added and retired) is applied, in the same transaction."""
        now = _now()
        stmt = (
            self._insert(releases)
            .values(
                release_id=release_id,
                created_at=now,
                run_id=run_id,
                method=method,
                destination=destination,
                published_at=published_at or now,
                privacy=_dumps(privacy),
            )
            .on_conflict_do_nothing(index_elements=[releases.c.release_id])
        )
        with self._write() as conn:
            added = conn.execute(stmt).rowcount == 1
            if budget_entry is not None:
                conn.execute(
                    update(privacy_budget)
                    .where(privacy_budget.c.entry_id == budget_entry, privacy_budget.c.status == "pending")
                    .values(status="spent", release_id=release_id, settled_at=now)
                )
            if series is not None:
                self._apply_series(conn, release_id, series, now)
            return added

    # -- release series (k-anonymized parts) ----------------------------------------------------

    def active_parts(self, job: str) -> list[tuple[str, Any]]:
        """(series id, Part) of every part of `job` not retired, oldest first."""
        from privacy.series import Part

        query = (
            select(release_parts)
            .where(release_parts.c.job == job, release_parts.c.retired_at.is_(None))
            .order_by(release_parts.c.series, release_parts.c.seq)
        )
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            (row["series"], Part(int(row["seq"]), row["label"], tuple(tuple(m) for m in json.loads(row["members"])), row["data_csv"].encode("utf-8"), int(row["rows"]),
                                 row["vp_csv"].encode("utf-8") if row["vp_csv"] is not None else None))
            for row in rows
        ]

    def next_part_seq(self, job: str) -> int:
        """One more than any part `job` ever had, retired ones and other series included."""
        with self._read() as conn:
            top = conn.execute(select(func.max(release_parts.c.seq)).where(release_parts.c.job == job)).scalar_one_or_none()
        return int(top or 0) + 1

    def _apply_series(self, conn: Connection, release_id: str, change: "SeriesChange", now: datetime) -> None:
        for series, seq in change.retired:
            conn.execute(
                update(release_parts)
                .where(release_parts.c.job == change.job, release_parts.c.series == series, release_parts.c.seq == seq, release_parts.c.retired_at.is_(None))
                .values(retired_at=now, retired_by=release_id)
            )
        for series, part in change.added:
            exists = conn.execute(
                select(release_parts.c.seq).where(release_parts.c.job == change.job, release_parts.c.series == series, release_parts.c.seq == part.seq)
            ).first()
            if exists is None:
                conn.execute(
                    release_parts.insert().values(
                        job=change.job, series=series, seq=part.seq, label=part.label, created_at=now, release_id=release_id, rows=part.rows,
                        data_csv=part.data_csv.decode("utf-8"), members=json.dumps([list(m) for m in part.members]),
                        vp_csv=part.vp_csv.decode("utf-8") if part.vp_csv is not None else None,
                    )
                )

    # -- privacy budget ------------------------------------------------------------------------

    def spent(self, partner: str) -> tuple[float, float]:
        """(epsilon, delta) spent by `partner`'s releases, pending ones included (basic composition:
        the sums bound the privacy loss of all of them together)."""
        query = select(func.coalesce(func.sum(privacy_budget.c.epsilon), 0.0), func.coalesce(func.sum(privacy_budget.c.delta), 0.0)).where(
            privacy_budget.c.partner == partner, privacy_budget.c.status.in_(BUDGET_COUNTED)
        )
        with self._read() as conn:
            epsilon, delta = conn.execute(query).one()
        return float(epsilon), float(delta)

    def reserve_budget(
        self, partner: str, epsilon: float, delta: float, total: float, run_id: str | None = None, input_hash: str | None = None,
        parts: Mapping[str, float] | None = None,
    ) -> str:
        """Check the budget and write a `pending` entry in one write transaction (so two runs cannot
        both take the last of it); raise BudgetExceeded, saying what is left, when it does not fit.
        Call after the gate and before publishing; then `record_release(..., budget_entry=...)` or
        `void_budget`. `parts` (a release of several tables: epsilon per table) is recorded with
        the entry; `epsilon` must be their sum, and is what the check counts."""
        if parts is not None and abs(sum(parts.values()) - epsilon) > 1e-9:
            raise ValueError(f"the budget entry's epsilon {epsilon} is not the sum of its parts {dict(parts)}")
        entry_id = str(uuid.uuid4())
        with self._write() as conn:
            spent = conn.execute(
                select(func.coalesce(func.sum(privacy_budget.c.epsilon), 0.0)).where(
                    privacy_budget.c.partner == partner, privacy_budget.c.status.in_(BUDGET_COUNTED)
                )
            ).scalar_one()
            if float(spent) + epsilon > total + 1e-9:
                raise BudgetExceeded(partner, epsilon, float(spent), total)
            conn.execute(
                privacy_budget.insert().values(
                    entry_id=entry_id, partner=partner, run_id=run_id, epsilon=float(epsilon), delta=float(delta),
                    status="pending", input_hash=input_hash, created_at=_now(),
                    parts=json.dumps(dict(parts), sort_keys=True) if parts is not None else None,
                )
            )
        return entry_id

    def void_budget(self, entry_id: str) -> None:
        """Give back a pending entry whose publish failed: nothing left the partner."""
        with self._write() as conn:
            conn.execute(
                update(privacy_budget)
                .where(privacy_budget.c.entry_id == entry_id, privacy_budget.c.status == "pending")
                .values(status="void", settled_at=_now())
            )

    def released_input(self, partner: str, input_hash: str) -> str | None:
        """The release id of a spent entry made from exactly this input (data and parameters), if any:
        re-synthesizing unchanged data would spend budget for nothing."""
        query = select(privacy_budget.c.release_id).where(
            privacy_budget.c.partner == partner, privacy_budget.c.input_hash == input_hash, privacy_budget.c.status == "spent"
        )
        with self._read() as conn:
            return conn.execute(query.limit(1)).scalar_one_or_none()

    def budget_ledger(self, partner: str | None = None) -> list[dict[str, Any]]:
        """Every budget entry, oldest first (for `status` and audits)."""
        query = select(privacy_budget).order_by(privacy_budget.c.created_at, privacy_budget.c.entry_id)
        if partner is not None:
            query = query.where(privacy_budget.c.partner == partner)
        with self._read() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
        return [{**row, "parts": json.loads(row["parts"]) if row.get("parts") else None} for row in rows]

    def last_release(self, method: str) -> dict[str, Any] | None:
        """The newest release of that method in the ledger (what an unchanged run still stands on,
        and the k its rows were published under), with `privacy` decoded."""
        query = select(releases.c.release_id, releases.c.privacy).where(releases.c.method == method).order_by(releases.c.created_at.desc()).limit(1)
        with self._read() as conn:
            row = conn.execute(query).first()
        return {"release_id": row.release_id, "privacy": json.loads(row.privacy)} if row else None

    def releases(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest releases in the ledger, newest first, with `privacy` decoded."""
        query = select(releases).order_by(releases.c.created_at.desc(), releases.c.release_id).limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "privacy": json.loads(row["privacy"])} for row in rows]

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE), so
        the hashes read at its start cannot go stale before the writes."""
        with self._guard("writing"), self._engine.connect() as conn:
            conn = conn.execution_options(htcds_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reading, with the store's failures reported as StoreError."""
        with self._guard("reading"), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Database and storage failures -> StoreError (exit 2) naming the store and the driver's
        first line (never a statement's parameters, which are case data: `hide_parameters`).

        A dropped connection, a read-only store or a full disk must end the run with its documented
        exit code and a message that says what to fix, not with a traceback."""
        try:
            yield
        except SQLAlchemyError as exc:
            message = _QUOTED_VALUE.sub(r'\1"..."', _first_line(getattr(exc, "orig", None) or exc))
            raise StoreError(f"the case store at {self.display_url} failed while {doing}: {message}") from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            raise StoreError(f"the case store at {self.display_url} failed while {doing}: {storage_problem(exc)}") from None
        except ValueError as exc:
            if "NUL" not in str(exc):  # psycopg2 refuses a NUL before sending, unwrapped by SQLAlchemy
                raise
            raise StoreError(f"the case store at {self.display_url} failed while {doing}: a text holds a NUL character, which it cannot store") from None

    def _incoming_rows(
        self, source: str, page: MappedPage, deleted_ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        """The page as one row per record id (the last copy wins; a delete wins over a live copy),
        serialised and hashed before the transaction starts."""
        rows: dict[str, dict[str, Any]] = {}
        for case in page.cases:
            if case.source != source:
                raise ValueError(f"case {case.source}/{case.record_id} on a page of source {source!r}")
            if case.deleted:
                rows[case.record_id] = _tombstone(case.record_id, case.updated_at)
                continue
            if rows.get(case.record_id, {}).get("deleted"):
                continue
            data = case.data if case.data is not None else canonical_json(case.fields, where=f"{source}/{case.record_id}")
            rows[case.record_id] = {
                "record_id": case.record_id,
                "data": data,
                "content_hash": content_hash(data),
                "deleted": False,
                "source_updated_at": case.updated_at,
            }
        for record_id in deleted_ids:
            rows[record_id] = _tombstone(record_id, None)
        return rows

    def _what_fits(self, source: str, page: MappedPage) -> MappedPage:
        """The page without the records the store cannot hold, each of those a rejection instead
        (on SQLite as on PostgreSQL: SQLite would take them, but the same job must behave the same
        on either); rejection texts made storable (no NUL, ids shown safely)."""
        kept: list[CaseRecord] = []
        refused: dict[str, Rejection] = {}
        for case in page.cases:
            problem = unstorable_id(case.record_id)
            if problem is None:
                kept.append(case)
            elif case.record_id not in refused:
                refused[case.record_id] = Rejection(source, safe_id(case.record_id), "record_id", None, problem)
        if not refused and all(_storable_rejection(r) for r in page.rejections):
            return page
        others = [_storable(r) for r in page.rejections if r.record_id not in refused]
        return MappedPage(cases=kept, rejections=[*refused.values(), *others], cursor=page.cursor, number=page.number)

    def _existing_states(self, conn: Connection, source: str, ids: list[str]) -> dict[str, tuple[str, bool]]:
        states: dict[str, tuple[str, bool]] = {}
        for chunk in _chunks(ids, _IN_CHUNK):
            query = (
                select(cases.c.record_id, cases.c.content_hash, cases.c.deleted)
                .where(cases.c.source == source, cases.c.record_id.in_(chunk))
                .with_for_update()
            )
            for record_id, digest, is_deleted in conn.execute(query):
                states[record_id] = (digest, bool(is_deleted))
        return states

    def _upsert_cases(
        self, conn: Connection, source: str, run_id: str, rows: list[dict[str, Any]], now: datetime
    ) -> None:
        if not rows:
            return
        stmt = self._insert(cases)
        stmt = stmt.on_conflict_do_update(
            index_elements=[cases.c.source, cases.c.record_id],
            set_={
                "data": stmt.excluded.data,
                "content_hash": stmt.excluded.content_hash,
                "deleted": stmt.excluded.deleted,
                "source_updated_at": func.coalesce(stmt.excluded.source_updated_at, cases.c.source_updated_at),
                "last_seen": stmt.excluded.last_seen,
                "last_run_id": stmt.excluded.last_run_id,
            },
        )
        params = [
            {**row, "source": source, "first_seen": now, "last_seen": now, "last_run_id": run_id} for row in rows
        ]
        conn.execute(stmt, params)

    def _touch_cases(self, conn: Connection, source: str, run_id: str, ids: list[str], now: datetime) -> None:
        for chunk in _chunks(ids, _IN_CHUNK):
            conn.execute(
                update(cases)
                .where(cases.c.source == source, cases.c.record_id.in_(chunk))
                .values(last_seen=now, last_run_id=run_id)
            )

    def _replace_rejections(
        self, conn: Connection, source: str, run_id: str, ids: set[str], page: MappedPage, now: datetime
    ) -> None:
        for chunk in _chunks(sorted(ids), _IN_CHUNK):
            conn.execute(
                sa_delete(rejections).where(rejections.c.source == source, rejections.c.record_id.in_(chunk))
            )
        # A record rejected but not stored by this page keeps its stored version and the rejections
        # of that version; only its earlier rejections of the same field are replaced.
        by_field: dict[str, set[str]] = {}
        for r in page.rejections:
            if r.record_id not in ids:
                by_field.setdefault(r.field, set()).add(r.record_id)
        for field_name, field_ids in sorted(by_field.items()):
            for chunk in _chunks(sorted(field_ids), _IN_CHUNK):
                conn.execute(
                    sa_delete(rejections).where(
                        rejections.c.source == source, rejections.c.field == field_name, rejections.c.record_id.in_(chunk)
                    )
                )
        if page.rejections:
            conn.execute(
                rejections.insert(),
                [
                    {
                        "run_id": run_id,
                        "source": source,
                        "record_id": r.record_id,
                        "field": r.field,
                        "value": r.value,
                        "reason": r.reason,
                        "created_at": now,
                    }
                    for r in page.rejections
                ],
            )

    def _set_cursor(self, conn: Connection, source: str, run_id: str, value: str, now: datetime) -> None:
        values = {"value": value, "updated_at": now, "run_id": run_id}
        stmt = self._insert(cursors).values(source=source, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=[cursors.c.source], set_=values))

    def _stream_live(self, sources: list[str] | None) -> Iterator[tuple[Any, ...]]:
        query = select(cases.c.source, cases.c.record_id, cases.c.data).where(cases.c.deleted.is_(False))
        if sources is not None:
            query = query.where(cases.c.source.in_(sources))
        query = query.order_by(cases.c.source, cases.c.record_id)
        with self._read() as conn:
            yield from conn.execution_options(yield_per=_STREAM_CHUNK).execute(query)


def unstorable_id(record_id: str) -> str | None:
    """Why the store cannot hold a record with this id (the reason of its rejection), or None."""
    limit = cases.c.record_id.type.length
    if len(record_id) > limit:
        return f"the record id is longer than the {limit} characters the store holds"
    if "\x00" in record_id:
        return "the record id contains a NUL character, which the store cannot hold"
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError:
        return "the record id is not valid Unicode (a lone surrogate)"
    return None


def safe_id(record_id: str, keep: int = 60) -> str:
    """A record id as it may be shown and stored: control characters escaped (`\\x00`), and an id
    longer than `keep` characters cut, saying how long it was."""
    shown = "".join(ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else ascii(ch)[1:-1] for ch in record_id[: keep + 1])
    if len(record_id) > keep:
        return f"{shown[:keep]}... ({len(record_id):,} characters)"
    return shown


def _no_nul(text: str | None) -> str | None:
    """A message as PostgreSQL can store it: a NUL (from a server's answer quoted in an error)
    written as `\\x00`."""
    return text.replace("\x00", "\\x00") if text else text


def _storable_rejection(rejection: Rejection) -> bool:
    texts = (rejection.record_id, rejection.field, rejection.value or "", rejection.reason)
    return unstorable_id(rejection.record_id) is None and not any("\x00" in text for text in texts)


def _storable(rejection: Rejection) -> Rejection:
    if _storable_rejection(rejection):
        return rejection
    clean = {name: getattr(rejection, name).replace("\x00", "\\x00") for name in ("field", "reason") if getattr(rejection, name)}
    value = rejection.value.replace("\x00", "\\x00") if rejection.value else rejection.value
    record_id = safe_id(rejection.record_id) if unstorable_id(rejection.record_id) else rejection.record_id
    return replace(rejection, record_id=record_id, value=value, **clean)


def _marker_key(job: str, method: str) -> str:
    return f"released:{hashlib.sha256(f'{job}|{method}'.encode()).hexdigest()[:40]}"


_EMPTY_HASH = content_hash(EMPTY_DATA)


def _tombstone(record_id: str, updated_at: datetime | None) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "data": EMPTY_DATA,
        "content_hash": _EMPTY_HASH,
        "deleted": True,
        "source_updated_at": updated_at,
    }


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# A driver message ending in a quoted value (`invalid input syntax for type integer: "..."`) would
# echo a value of a record: the value is blanked, the rest of the line kept.
_QUOTED_VALUE = re.compile(r'(:\s*)"[^"]*"\s*$')


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _make_sqlite_folder(database: str | None) -> None:
    """Create the SQLite file's folder: `state/` does not exist on a fresh install."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers do not block the writer), a busy timeout (wait, don't fail, on a lock),
    foreign keys, and transactions that really begin where SQLAlchemy says they do.

    pysqlite's own transaction handling starts a transaction only at the first write, so a read
    at the start of `commit_page` would sit outside it; we turn that off and emit BEGIN ourselves.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("htcds_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
