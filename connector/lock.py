"""One run per job at a time: a lock file beside an SQLite store, an advisory lock in a PostgreSQL one.

`flock` is released by the kernel when the process dies, so a crashed run (even kill -9) never
leaves a lock that blocks the next night's run; the file's content only says who held it. A lock
file only works on one host, though: two hosts or two Kubernetes pods running the same partner's
job against one PostgreSQL store would both run. So with PostgreSQL the lock lives in the store
itself: `pg_try_advisory_lock` keyed by the store's schema, the partner and the job, held on a
connection of its own for the whole run. The server releases it when that session ends, so a
killed run (or a lost host) leaves no stale lock there either.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.errors import LockedError, StoreError, storage_problem


class JobLock:
    """An exclusive `flock` on a file; LockedError names the pid that holds it."""

    def __init__(self, path: os.PathLike[str] | str):
        from pathlib import Path

        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> "JobLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the job's lock file {self.path}: {storage_problem(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"another run of this job is in progress (lock {self.path}, held by pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def advisory_key(*parts: str) -> int:
    """A signed 64-bit key for pg_advisory_lock from names (stable across processes and hosts)."""
    digest = hashlib.sha256("\x1f".join(("htcds-connector", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresJobLock:
    """`pg_try_advisory_lock(key)` on a dedicated connection, held until `__exit__` (or the session
    ends). The holder tags its session `htcds-connector <host> pid <pid>` so that a run refused the
    lock can say who has it."""

    def __init__(self, engine: Engine, partner: str, job: str, where: str):
        self.engine, self.partner, self.job, self.where = engine, partner, job, where
        self._conn: Connection | None = None
        self.key: int | None = None

    def __enter__(self) -> "PostgresJobLock":
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the case store at {self.where} to take the job's lock: {_first_line(exc)}") from None
        try:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            self.key = advisory_key(str(schema), self.partner, self.job)
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar_one():
                holder = _holder(conn, self.key)
                conn.close()
                raise LockedError(
                    f"another run of job {self.job} is in progress (PostgreSQL advisory lock in the store at {self.where}, held by {holder})"
                )
            conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": f"htcds-connector {socket.gethostname()} pid {os.getpid()}"[:63]})
        except SQLAlchemyError as exc:
            conn.close()
            raise StoreError(f"the case store at {self.where} failed while taking the job's lock: {_first_line(exc)}") from None
        self._conn = conn
        return self

    def lost(self) -> bool:
        """True when the lock's session is gone (a server restart, a failover, a terminated
        backend): the lock went with it, and another host may start the job. The pipeline asks after
        each committed page and stops the run; pooled store connections would reconnect silently."""
        if self._conn is None:
            return True
        try:
            return not self._conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()")
            ).scalar_one()
        except SQLAlchemyError:
            return True

    def __exit__(self, *exc: object) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        except SQLAlchemyError:
            pass  # the session is gone, and its locks with it
        finally:
            self._conn.close()
            self._conn = None


def _holder(conn: Connection, key: int) -> str:
    """Who holds the advisory lock `key`: the holder's session name and backend pid, if visible."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row: Any = conn.execute(
        text(
            "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1 LIMIT 1"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "another session"
    name, pid = row
    return f"{name or 'a session'} (server backend {pid})"


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__
