"""Bulk API 2.0 query jobs for large pulls: create, poll until JobComplete, stream the CSV results.

    rows = bulk_rows(api, "Case", soql, operation="queryAll", max_records=50_000)
    for row in rows: ...            # dicts keyed by the CSV header, one results page in flight

Jobs are created and polled through simple-salesforce's Bulk 2.0 client; result pages are read as a
stream (csv over the socket, `Sforce-Locator` to the next page) so memory does not grow with the
page size or the record count. Child rows of a large pull go to a temporary SQLite file keyed by
Case Id (`ChildStore`), so joining them to the case stream needs neither a sort nor the heap.

The spooled rows are written with `marshal`, not JSON: they hold only what the CSV reader and
`typed_value` made (str, int, float, bool, None, dicts and lists of them), marshal writes and reads
those several times faster, and the file is this process's own, in a private temporary directory,
deleted on `close` (issue #16: the sync at the speed of the parsers).

Bulk queries carry no ORDER BY: Salesforce documents that it disables PK chunking and risks query
timeouts on exactly the large pulls Bulk is for, and without it rows arrive in chunk order, not in
cursor order. So the case rows of a pull are spooled to the same kind of file (`CaseSpool`) and
read back ordered by (cursor field, Id): each page's cursor is then a true high-water mark, below
which every row of the window is committed, and a crash mid-way loses nothing.
"""

from __future__ import annotations

import csv
import io
import marshal
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.sources.base import SourceError
from connector.sources.read_ahead import ReadAhead

if TYPE_CHECKING:
    from connector.sources.salesforce import SalesforceApi


def bulk_rows(api: "SalesforceApi", obj: str, soql: str, *, operation: str, max_records: int) -> Iterator[dict[str, str]]:
    """Run one query job and yield its rows; SourceError names the object if the job fails."""
    job = api.call(f"{obj}: create Bulk API 2.0 query job", lambda: api.bulk_client(obj).create_job(operation, soql))
    job_id = job["id"]
    api.stats.extra["bulk_jobs"] = api.stats.extra.get("bulk_jobs", 0) + 1
    api.sleep(api.options.bulk_poll_seconds)
    while True:
        info = api.call(f"{obj}: poll query job {job_id}", lambda: api.bulk_client(obj).get_job(job_id, True))
        state = info.get("state")
        if state == "JobComplete":
            break
        if state in ("Failed", "Aborted"):
            raise SourceError(api.where, f"{obj}: Bulk API 2.0 query job {job_id} ended {state}: {info.get('errorMessage', 'no message')}")
        api.sleep(api.options.bulk_poll_seconds)
    locator = ""
    while True:
        params: dict[str, Any] = {"maxRecords": max_records}
        if locator:
            params["locator"] = locator
        url = f"{api.sf.bulk2_url}query/{job_id}/results"
        response = api.call(f"{obj}: results of query job {job_id}", lambda: api.raw_get(url, params=params, accept="text/csv", stream=True))
        locator = response.headers.get("Sforce-Locator", "null")
        response.raw.decode_content = True
        response.raw.auto_close = False  # let the text wrapper see EOF instead of a closed file
        body = ReadAhead(response.raw)  # the socket is read while rows are parsed (read_ahead.py)
        text = io.TextIOWrapper(io.BufferedReader(body), encoding="utf-8", newline="")
        try:
            yield from csv_rows(text)
        finally:
            body.close()
            response.close()
        if not locator or locator == "null":
            return


def csv_rows(text: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The rows csv.DictReader gives (keyed by the header, blank lines skipped, a short row padded
    with None, a long row's extra cells under None), without its per-row Python overhead."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    width = len(header)
    for row in reader:
        if not row:
            continue
        yield dict(zip(header, row)) if len(row) == width else _ragged(header, row)


def _ragged(header: list[str], row: list[str]) -> dict[str, Any]:
    """A row with more or fewer cells than the header, as csv.DictReader gives it (extra cells under
    None, missing ones None)."""
    out: dict[str, Any] = dict(zip(header, row))
    if len(row) > len(header):
        out[None] = row[len(header):]  # type: ignore[index]
    else:
        for name in header[len(row):]:
            out[name] = None
    return out


class ChildStore:
    """Child rows by Case Id in a temporary SQLite file, deleted on `close`."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sf-children-")
        self._db = sqlite3.connect(Path(self._dir.name) / "children.sqlite")
        self._db.execute("CREATE TABLE child (role TEXT, case_id TEXT, child_id TEXT, row BLOB)")

    def add_all(self, role: str, rows: Iterator[tuple[str, dict[str, Any]]]) -> int:
        count = 0
        batch: list[tuple[str, str, str, bytes]] = []
        for case_id, row in rows:
            batch.append((role, case_id, str(row.get("Id") or ""), marshal.dumps(row)))
            count += 1
            if len(batch) >= 5000:
                self._db.executemany("INSERT INTO child VALUES (?, ?, ?, ?)", batch)
                batch.clear()
        if batch:
            self._db.executemany("INSERT INTO child VALUES (?, ?, ?, ?)", batch)
        self._db.commit()
        return count

    def index(self) -> None:
        self._db.execute("CREATE INDEX IF NOT EXISTS child_case ON child (case_id, role, child_id)")

    def for_cases(self, case_ids: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """{case id: {role: [rows in Id order]}} for a page of cases (the order REST subqueries ask for)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for start in range(0, len(case_ids), 500):
            chunk = case_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for role, case_id, row in self._db.execute(f"SELECT role, case_id, row FROM child WHERE case_id IN ({marks}) ORDER BY case_id, role, child_id", chunk):
                out.setdefault(case_id, {}).setdefault(role, []).append(marshal.loads(row))
        return out

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


class CaseSpool:
    """Case rows of one Bulk pull in a temporary SQLite file, read back in cursor order.

        spool.add(stamp, case_id, row)        # in whatever order the Bulk chunks arrive
        for page in spool.pages(200): ...     # lists of rows, ordered by (stamp, Id)

    `stamp` is the cursor field as an aware UTC datetime (None sorts first: a row without a stamp
    cannot be placed after any cursor, so it is delivered before every cursor move).
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sf-cases-")
        self._db = sqlite3.connect(Path(self._dir.name) / "cases.sqlite")
        self._db.execute("CREATE TABLE spool (stamp TEXT, id TEXT, row BLOB)")
        self._batch: list[tuple[str, str, bytes]] = []
        self.count = 0

    def add(self, stamp: str, case_id: str, row: dict[str, Any]) -> None:
        """`stamp`: the cursor field as sortable UTC text (`YYYY-MM-DDTHH:MM:SS`), "" when absent."""
        self._batch.append((stamp, case_id, marshal.dumps(row)))
        self.count += 1
        if len(self._batch) >= 5000:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._db.executemany("INSERT INTO spool VALUES (?, ?, ?)", self._batch)
            self._batch.clear()

    def pages(self, size: int) -> Iterator[list[dict[str, Any]]]:
        self._flush()
        self._db.commit()
        self._db.execute("CREATE INDEX IF NOT EXISTS spool_order ON spool (stamp, id)")
        page: list[dict[str, Any]] = []
        for (row,) in self._db.execute("SELECT row FROM spool ORDER BY stamp, id"):
            page.append(marshal.loads(row))
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


def typed_value(kind: str, text: str) -> Any:
    """A Bulk CSV string read back into the JSON type the REST API gives for the field's describe type."""
    if text == "":
        return None
    if kind == "boolean":
        return text.lower() == "true"
    if kind in ("int",):
        try:
            return int(text)
        except ValueError:
            return text
    if kind in ("double", "currency", "percent"):
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "datetime" and text.endswith("Z"):
        return text[:-1] + "+0000"
    return text
