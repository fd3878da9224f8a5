"""Mapping a source's pages: in this process, or in a worker process one page ahead of the commits.

Why a worker: a first sync of 100,000 cases spends about a third of its CPU reading the source,
a quarter mapping and an eighth committing, and one Python process uses one core. With
`MapAhead`, a second process maps page N (and writes each case's canonical JSON, the store's
costliest step) while this process reads page N+1 from the source and commits page N-1.

What does not change: pages are committed in order, each with its cursor, by this process only;
the worker holds nothing that is not read again on the next run. It exits when its pipe closes
(the parent stopped or died, even by `kill -9`) and ignores SIGINT/SIGTERM, which stop the parent
after its current page (a service manager signals the whole process group). If the worker cannot
start or dies, the page it held is mapped here and so is the rest of the run, with one warning:
the worker is a speed-up, never a reason for a run to fail.

The worker is a clean interpreter (`python -P -c`, talking over two pipes with
`multiprocessing.connection`; it imports this very package, gets the mapping's text as this
process read it, and stops at once if its code is not this process's), not a `fork`: the parent may hold a database connection, threads
of the scheduler and signal handlers that a forked copy would share; and not `multiprocessing`'s
`spawn`, which would import the parent's main module (the whole CLI) first.
"""

from __future__ import annotations

import dataclasses
import logging
import marshal
import os
import pickle
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from connector.case_json import canonical_json
from connector.mapping import Mapping, load_mapping
from connector.records import CaseRecord, MappedPage, Page, RawRecord, Rejection

log = logging.getLogger(__name__)

# The worker starts once a source has delivered `run.map_worker_after_records` records in a run
# (default 2,000, connector/config.py): below that, starting an interpreter (about half a
# CPU-second) costs more than it saves, and a quiet night stays cheap.


def map_page(mapping: Mapping, source_id: str, page: Page) -> MappedPage:
    """Map a page; a record that breaks the mapper itself becomes a rejection, not a failed run.
    Records the source itself rejected (`page.rejections`) are added as they are."""
    mapped = _map_records(mapping, source_id, page)
    if page.rejections:
        mapped.rejections.extend(page.rejections)
    return mapped


def _map_records(mapping: Mapping, source_id: str, page: Page) -> MappedPage:
    try:
        return mapping.map_page(source_id, page)
    except Exception:  # noqa: BLE001 - isolate the record at fault below
        out = MappedPage(cursor=page.cursor, number=page.number)
        for raw in page.records:
            try:
                case, rejections = mapping.map_record(source_id, raw)
            except Exception as exc:  # noqa: BLE001 - the stored version (if any) is kept as it was
                out.rejections.append(Rejection(source_id, raw.record_id, "*", None, f"mapping failed: {type(exc).__name__}"))
                continue
            out.cases.append(case)
            out.rejections.extend(rejections)
        return out


def with_json(page: MappedPage) -> MappedPage:
    """The page with each live case's canonical JSON made and sent in place of its fields.

    A case whose fields cannot be written as JSON keeps its fields, so the store raises the same
    error, naming the field, that it raises without the worker."""
    cases = []
    for case in page.cases:
        if case.deleted or case.data is not None:
            cases.append(case)
            continue
        try:
            data = canonical_json(case.fields)
        except Exception:  # noqa: BLE001 - the store reports it, with the record and field
            cases.append(case)
            continue
        cases.append(CaseRecord(case.source, case.record_id, {}, case.updated_at, case.deleted, data))
    return MappedPage(cases=cases, rejections=page.rejections, cursor=page.cursor, number=page.number)


class MapAhead:
    """Maps the pages of one source in a worker process, one page ahead of the caller's commits.

    Use: `put(page)` hands a page over and returns at once; `take()` returns the mapped page that
    was handed over last (only one is in flight, so neither side ever blocks on a full pipe).
    """

    def __init__(self, mapping: Mapping, source_id: str):
        self.mapping = mapping  # this process's copy, for a page the worker could not map
        self.source_id = source_id
        self._held: Page | None = None
        self._used = False  # a page was sent
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if mapping.text is None:  # not loaded by load_mapping: nothing to send the worker
            self._give_up("has no mapping text")
            return
        to_worker = from_worker = (-1, -1)
        try:
            to_worker = os.pipe()  # not inherited, but for the ends passed
            from_worker = os.pipe()
            self._proc = subprocess.Popen(_worker_command(to_worker[0], from_worker[1]), pass_fds=(to_worker[0], from_worker[1]), stdin=subprocess.DEVNULL)
        except Exception as exc:  # noqa: BLE001 - mapping in this process works as well, only slower
            for fd in (*to_worker, *from_worker):
                if fd >= 0:
                    os.close(fd)
            self._give_up(f"could not start ({type(exc).__name__}: {exc})")
            return
        os.close(to_worker[0])  # the worker's ends: it must see EOF when this process closes or dies
        os.close(from_worker[1])
        self._conn = _Duplex(Connection(from_worker[0], writable=False), Connection(to_worker[1], readable=False))
        try:
            # the mapping's text as this process read it (not its file again: it may have changed),
            # and this module's file, so a worker that imported other code stops at once
            self._conn.send((mapping.path, mapping.text, mapping.schema, source_id, _this_file()))
        except Exception as exc:  # noqa: BLE001
            self._give_up(f"could not start ({type(exc).__name__}: {exc})")

    @property
    def running(self) -> bool:
        return self._conn is not None

    def put(self, page: Page) -> None:
        if self._held is not None:
            raise RuntimeError("MapAhead.put: the page before has not been taken")
        self._held = page
        if self._conn is not None:
            try:
                self._used = True
                self._conn.writer.send_bytes(pack(page))
            except Exception as exc:  # noqa: BLE001 - e.g. the worker died; take() maps it here
                self._give_up(f"stopped taking pages ({type(exc).__name__})")

    def take(self) -> MappedPage:
        page, self._held = self._held, None
        if page is None:
            raise RuntimeError("MapAhead.take: no page was put")
        if self._conn is not None:
            try:
                data = self._conn.reader.recv_bytes()
                mapped = unpack(data) if data[:1] != _FAILED else None
                if isinstance(mapped, MappedPage):
                    return mapped
                self._give_up(f"failed: {data[1:].decode(errors='replace')}")
            except Exception as exc:  # noqa: BLE001 - EOFError when it died: map the page here
                self._give_up(f"stopped ({type(exc).__name__})")
        return with_json(map_page(self.mapping, self.source_id, page))

    def close(self) -> None:
        """Stop the worker; a page still in it is dropped (its cursor was never committed)."""
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            try:
                conn.close()  # the worker reads EOF and returns
            except OSError:
                pass
        if proc is not None:
            if not self._used:
                proc.kill()  # still starting, perhaps: nothing to wait for
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # left to the system; the run's outcome stands
                    pass

    def _give_up(self, why: str) -> None:
        log.warning("mapping worker %s; mapping in this process from here on", why, extra={"source": self.source_id})
        self.close()

    def __enter__(self) -> MapAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FAILED = b"E"  # a worker's answer that it could not map a page, and why (a type name, never a value)
_RAW = tuple(f.name for f in dataclasses.fields(RawRecord))
_CASE = tuple(f.name for f in dataclasses.fields(CaseRecord))
_REJECTION = tuple(f.name for f in dataclasses.fields(Rejection))


def pack(page: Page | MappedPage) -> bytes:
    """A page as bytes for the other process: `marshal` of plain tuples where every value is a
    plain JSON-like value (a fifth of pickle's cost on a page of API records, which was a tenth of
    a Salesforce sync), else `pickle` (an Excel cell's datetime, a value of another type)."""
    try:
        if isinstance(page, Page):
            body = (0, page.number, page.cursor, [_plain(r, _RAW) for r in page.records], [_plain(r, _REJECTION) for r in page.rejections])
        else:
            body = (1, page.number, page.cursor, [_plain(c, _CASE) for c in page.cases], [_plain(r, _REJECTION) for r in page.rejections])
        return b"M" + marshal.dumps(body)
    except ValueError:  # marshal takes only exact built-in types: anything else goes by pickle
        return b"P" + pickle.dumps(page, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> Page | MappedPage:
    if data[:1] == b"P":
        return pickle.loads(data[1:])
    kind, number, cursor, rows, rejections = marshal.loads(data[1:])
    refused = [Rejection(*row) for row in rejections]
    if kind == 0:
        return Page([RawRecord(*_typed(row, _RAW)) for row in rows], cursor, number, rejections=refused)
    return MappedPage(cases=[CaseRecord(*_typed(row, _CASE)) for row in rows], rejections=refused, cursor=cursor, number=number)


# marshal writes any object with a byte buffer (a numpy scalar, a bytearray) as bytes: a field
# value of any type but these goes by pickle. Values nested in a list or dict are the API's JSON
# (str, numbers, bools, None, lists, dicts) in every source today.
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), list, dict, tuple})


def _plain(record: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    values = []
    for name in names:
        value = getattr(record, name)
        if name == "fields" and not all(map(_PLAIN_TYPES.__contains__, map(type, value.values()))):
            raise ValueError("a field value of another type")  # kept exactly by pickle
        if name == "updated_at" and value is not None:
            if value.tzinfo not in (None, timezone.utc):
                raise ValueError("a time zone other than UTC")  # kept exactly by pickle
            value = value.isoformat()
        values.append(value)
    return tuple(values)


def _typed(row: tuple[Any, ...], names: tuple[str, ...]) -> list[Any]:
    return [datetime.fromisoformat(value) if name == "updated_at" and value is not None else value for name, value in zip(names, row)]


def _this_file() -> str:
    return os.path.realpath(__file__)


def _worker_command(read_fd: int, write_fd: int) -> list[str]:
    """`python -P -c ...`: signals ignored before anything is imported (a SIGTERM to the process
    group stops only the parent, after its page); no current folder on the path (`-P`), but the
    folder holding this very package, so the worker imports the code this process runs."""
    root = str(Path(_this_file()).parents[1])
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"import sys\nif {root!r} not in sys.path: sys.path.insert(0, {root!r})\n"
        f"from connector.map_pages import serve; serve({read_fd}, {write_fd})"
    )
    return [sys.executable, "-P", "-c", code]


class _Duplex:
    """Two one-way pipes used as one connection (a worker started by `subprocess` gets plain fds)."""

    def __init__(self, reader: Connection, writer: Connection):
        self.reader, self.writer = reader, writer

    def send(self, obj: Any) -> None:
        self.writer.send(obj)

    def recv(self) -> Any:
        return self.reader.recv()


    def close(self) -> None:
        for end in (self.writer, self.reader):
            try:
                end.close()
            except OSError:
                pass


def serve(read_fd: int, write_fd: int) -> None:
    """The worker: map each page it is sent and send it back with its cases' JSON; stop at EOF.

    The first message names the mapping; a failure before the loop ends the worker quietly (the
    parent, reading EOF, maps in its own process and says so)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = _Duplex(Connection(read_fd, writable=False), Connection(write_fd, readable=False))
    try:
        path, text, schema, source_id, parents_file = conn.recv()
        if parents_file != _this_file():
            return  # other code than the parent's: the parent maps, and says so
        mapping = load_mapping(path, schema, text=text)
    except Exception:  # noqa: BLE001 - EOF, or a mapping this process cannot load: the parent maps
        return
    while True:
        try:
            data = conn.reader.recv_bytes()
        except (EOFError, OSError):
            return
        number = "?"
        try:
            page = unpack(data)
            number = str(page.number + 1)
            reply = pack(with_json(map_page(mapping, source_id, page)))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the parent maps this page itself; no value in the text
            reply = _FAILED + f"{type(exc).__name__} on page {number}".encode()
        try:
            conn.writer.send_bytes(reply)
        except (EOFError, OSError):
            return
