"""KoboToolbox: submissions of one deployed form (asset), pulled incrementally from the v2 data API.

    source = KoboSource(config, job)     # options: url, asset_uid, token (a secret reference)
    for page in source.pages(cursor): ...

Auth is kpi's API token (`Authorization: Token ...`). The form comes from `/api/v2/assets/{uid}/`
(`content`: survey and choices). Submissions come from `/api/v2/assets/{uid}/data/?format=json`
with a Mongo `query`, a `sort` and a `limit`. kpi cuts `limit` to 1000 (its `MAX_API_PAGE_SIZE`)
without an error, so no request here ever takes a short page for the end: a listing ends when
kpi's `next` is null (see `connector/sandbox/kobo.py` for the kpi code this follows).

Each run:

1. new submissions: keyset on `_submission_time` (`{"$gte": S}`, sorted by it and `_id`, the ids
   already read at exactly S skipped);
2. validation-status changes: the same on `_validation_status.timestamp`; a status in
   `skip_validation_statuses` (default: not approved) becomes a delete;
3. edits: kpi keeps no edit time. An edit gives the submission a new `meta/instanceID` and moves
   the old one to `meta/deprecatedID`, so every edited submission has a `meta/deprecatedID`. The
   source lists those (`{"meta/deprecatedID": {"$exists": true}}`, `fields=["_id",
   "meta/instanceID"]`: about 150 bytes each), compares each instanceID with the one it
   delivered (the cursor keeps a short fingerprint per edited submission) and fetches the changed
   ones in batches of `{"_id": {"$in": [...]}}`. Cost per run: one listing of the edited
   submissions, plus the changed rows.

Deletions: Kobo keeps no trace of a deleted submission, so the source reconciles ids. The cursor
holds the set of `_id`s the source has delivered (sorted, delta-encoded, zlib-compressed: a few
bytes per id). Every `reconcile_every_runs` runs or `reconcile_every_hours` hours (whichever comes
first) it lists every `_id` on the server (`fields=["_id"]`, keyset on `_id`, until `next` is
null) and deletes the ids it delivered that are gone. Nothing is deleted unless that listing read
to its end in this pass: a failed or cut-short listing raises before any delete is yielded.
Cost: ceil(N / 1000) requests and about 120 bytes of JSON per submission.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from connector.records import Page, Problem, RawRecord
from connector.secrets import Secret, SecretMissing
from connector.sources import register
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.cursor import load_versioned, unreadable
from connector.sources.form_server import FormServerOptions, FormServerSource, message_of, utc
from connector.sources.keyset import Mark, keyset_pass
from connector.sources.kobo_api import KpiApi
from connector.sources.xlsform import FormDefinition, apply_renames, flatten_answers, form_from_kobo_content

log = logging.getLogger(__name__)
MAX_LIMIT = 30000  # what the option allows; kpi itself cuts every `limit` to 1000 unless reconfigured
ID_BATCH = 100  # ids per `{"_id": {"$in": [...]}}` request: keeps the URL far below 8 KB
CURSOR_VERSION = 2
# Kobo's own keys (everything else starting with `_` is metadata too) and the instance metadata.
SKIP_PREFIXES = ("_", "formhub/", "meta/")


class KoboOptions(FormServerOptions):
    url: str = Field(description="kpi server, e.g. https://kf.kobotoolbox.org or https://eu.kobotoolbox.org")
    asset_uid: str = Field(min_length=1, description="the form's asset uid (in its URL: /#/forms/<uid>/)")
    token: Secret = Field(description="API token reference: `token_env: KOBO_TOKEN` or `token_file: PATH`")
    page_size: int = Field(1000, ge=1, le=MAX_LIMIT, description="submissions per request (`limit`; kpi cuts it to 1000, the run still reads everything)")
    skip_validation_statuses: list[str] = Field(default_factory=lambda: ["validation_status_not_approved"])
    reconcile_every_runs: int = Field(24, ge=1, description="list all ids to find deletions every N runs ...")
    reconcile_every_hours: float = Field(24.0, gt=0, description="... or when this many hours have passed")


PASSES = (("submitted", "_submission_time"), ("validated", "_validation_status.timestamp"))
EDITED = {"meta/deprecatedID": {"$exists": True}}


def incremental_query(field_path: str, mark: Mark) -> dict[str, Any]:
    """The Mongo `query` of one keyset request of a pass (a test can call this on its own)."""
    if mark.at is None:
        return {} if field_path == "_submission_time" else {field_path: {"$exists": True}}
    return {field_path: {"$gte": mark.at}}


def encode_ids(ids: set[int]) -> str:
    """A set of ids as sorted deltas in LEB128 varints, zlib-compressed and base64: a few bytes per id."""
    out = bytearray()
    last = 0
    for value in sorted(ids):
        delta = value - last
        last = value
        while True:
            byte = delta & 0x7F
            delta >>= 7
            out.append(byte | (0x80 if delta else 0))
            if not delta:
                break
    return base64.b64encode(zlib.compress(bytes(out), 9)).decode()


def decode_ids(text: str) -> set[int]:
    data = zlib.decompress(base64.b64decode(text))
    ids: set[int] = set()
    value = shift = last = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            last += value
            ids.add(last)
            value = shift = 0
    return ids


@register
class KoboSource(FormServerSource):
    type_name = "kobo"
    Options = KoboOptions
    full_snapshot = False
    auth_hint = "check the API token reference (Account settings > Security) and that the user can view submissions"
    where_hint = "check `url` and `asset_uid`"

    def __init__(self, config: Any, job: Any):
        super().__init__(config, job)
        self._api: KpiApi | None = None
        self.now = lambda: datetime.now(timezone.utc)

    @property
    def opts(self) -> KoboOptions:
        return self.options  # type: ignore[return-value]

    @property
    def api(self) -> KpiApi:
        if self._api is None:
            self._api = KpiApi(self.client, asset_uid=self.opts.asset_uid)
        return self._api

    def _where(self) -> str:
        return f"source {self.id} (kobo {self.opts.asset_uid})"

    def _auth_headers(self) -> dict[str, str]:
        try:
            return {"Authorization": f"Token {self.opts.token.get()}", "Accept": "application/json"}
        except SecretMissing as exc:
            raise SourceAuthError(self.where, f"token: {exc}") from None

    # -- form and check -------------------------------------------------------------------------------

    def _read_form(self) -> FormDefinition:
        asset = self.api.asset()
        content = asset.get("content")
        if not isinstance(content, dict) or "survey" not in content:
            raise SourceError(self.where, f"asset {self.opts.asset_uid} has no form content (is it a deployed survey?)")
        return form_from_kobo_content(content, form_id=self.opts.asset_uid, version=asset.get("deployed_version_id") or asset.get("version_id"))

    def _check_access(self) -> list[Problem]:
        try:
            self.api.data({"limit": 1, "fields": json.dumps(["_id"])}, what="data (one row)")
        except SourceAuthError as exc:
            return [Problem(self.where, f"the token can read the form but not its submissions ({message_of(exc).split(';')[0]})", hint="the token's user needs the 'View submissions' permission on this form")]
        except SourceError as exc:
            return [Problem(self.where, message_of(exc), hint="the submissions could not be read")]
        return []

    # -- records --------------------------------------------------------------------------------------

    def pages(self, cursor: str | None) -> Iterator[Page]:
        state = _load_cursor(cursor, self.where)
        first_run = cursor is None
        marks: dict[str, Mark] = state["marks"]
        known: set[int] = state["known"]
        edited: dict[int, str] = state["edited"]
        number = 0
        # What pass 1 saw of each pass's field: where pass 2 starts on the first run.
        seen: dict[str, Mark] = {field_path: Mark() for _, field_path in PASSES}

        def note(records: list[RawRecord], rows: list[dict[str, Any]]) -> None:
            for record, row in zip(records, rows):
                record_id = int(record.record_id)
                (known.discard if record.deleted else known.add)(record_id)
                if row.get("meta/deprecatedID"):
                    edited[record_id] = _fingerprint(row.get("meta/instanceID"))

        def dump(reconcile: dict[str, Any] | None = None) -> str:
            return _dump_cursor(marks, known, edited, state["reconcile"] if reconcile is None else reconcile)

        for name, field_path in PASSES:
            if first_run and name != "submitted":
                if seen[field_path].at is not None:
                    marks[name] = seen[field_path]
                continue
            for rows in self._pass(field_path, marks[name], seen):
                records = [self._record(row) for row in rows]
                note(records, rows)
                number += 1
                yield Page(records, dump(), number)

        if not first_run:
            for rows in self._edited_rows(known, edited):
                records = [self._record(row) for row in rows]
                note(records, rows)
                number += 1
                yield Page(records, dump(), number)

        runs = int(state["reconcile"].get("runs", 0)) + 1
        last = state["reconcile"].get("at")
        due = not first_run and (runs >= self.opts.reconcile_every_runs or last is None or (self.now() - _utc(last)).total_seconds() >= self.opts.reconcile_every_hours * 3600)
        if first_run or due:
            gone = self._missing_ids(known) if due else set()
            deletes = [RawRecord(str(i), {}, self.now(), deleted=True) for i in sorted(gone)]
            known -= gone
            for record_id in gone:
                edited.pop(record_id, None)
            number += 1
            yield Page(deletes, dump({"at": self.now().isoformat(), "runs": 0}), number)
        else:
            number += 1
            yield Page([], dump({"at": last, "runs": runs}), number)

    def _data(self, params: dict[str, Any], what: str) -> tuple[list[dict[str, Any]], bool]:
        """One request to the data endpoint: its rows and whether kpi's `next` says more match."""
        page = self.api.data(params, what=what)
        return page.rows, page.more

    def _pass(self, field_path: str, mark: Mark, seen: dict[str, Mark]) -> Iterator[list[dict[str, Any]]]:
        sort = json.dumps({field_path: 1, "_id": 1})

        def fetch(skip: int) -> tuple[list[Any], bool]:
            params = {"query": json.dumps(incremental_query(field_path, mark)), "sort": sort, "limit": self.opts.page_size, "start": skip}
            return self._data(params, f"data ({field_path})")

        def locate(row: Any) -> tuple[Any, int] | None:
            if "_id" not in row:
                return None
            record_id = int(row["_id"])
            for key, shadow in seen.items():
                shadow.advance(_lookup(row, key), record_id)
            return _lookup(row, field_path), record_id

        yield from keyset_pass(fetch, mark=mark, locate=locate, where=self.where)

    def _by_id(self, query: dict[str, Any], *, what: str, fields: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every submission matching `query`, in `_id` order, one list per request, until `next` is null.

        Keyset on `_id` rather than `start` offsets, which shift when a submission is deleted
        mid-listing. A response that says more match but holds no row stops the listing with an
        error: no caller may act on a list it did not read to the end.
        """
        last: int | None = None
        while True:
            bounded = query if last is None else ({"_id": {"$gt": last}} if not query else {"$and": [query, {"_id": {"$gt": last}}]})
            params: dict[str, Any] = {"query": json.dumps(bounded), "sort": json.dumps({"_id": 1}), "limit": self.opts.page_size}
            if fields:
                params["fields"] = json.dumps(fields)
            rows, more = self._data(params, what)
            ids = [int(r["_id"]) for r in rows if "_id" in r]
            if rows:
                yield rows
            if not more:
                return
            if not ids:
                raise SourceError(self.where, f"asset {self.opts.asset_uid} {what}: kpi says more submissions match but sent none; stopping this listing")
            last = max(ids)

    def _edited_rows(self, known: set[int], edited: dict[int, str]) -> Iterator[list[dict[str, Any]]]:
        """Full rows of the submissions edited since they were delivered (see the module docstring)."""
        changed: list[int] = []
        for rows in self._by_id(EDITED, what="edited submissions (ids)", fields=["_id", "meta/instanceID"]):
            for row in rows:
                record_id = int(row["_id"])
                if record_id in known and edited.get(record_id) != _fingerprint(row.get("meta/instanceID")):
                    changed.append(record_id)
        self.stats.extra["edited_listed"] = self.stats.extra.get("edited_listed", 0) + len(changed)
        for at in range(0, len(changed), ID_BATCH):
            batch = changed[at : at + ID_BATCH]
            yield from self._by_id({"_id": {"$in": batch}}, what="edited submissions")

    def _record(self, row: dict[str, Any]) -> RawRecord:
        record_id = str(row["_id"])
        submitted = _kobo_iso(row.get("_submission_time"))
        updated_at = _utc(submitted) if submitted else None  # kpi serves no edit time
        status = row.get("_validation_status") or {}
        if status.get("uid") in self.opts.skip_validation_statuses:
            return RawRecord(record_id, {}, updated_at, deleted=True)
        answers = {k: v for k, v in row.items() if not k.startswith(SKIP_PREFIXES)}
        fields = apply_renames(flatten_answers(answers, stats=self.flatten_stats), self.opts.rename)
        fields.update(
            {
                "_id": record_id,
                "_submission_time": submitted,
                "_updated_at": submitted,
                "_submitted_by": row.get("_submitted_by"),
                "_review_state": status.get("uid"),
                "_form_version": row.get("__version__"),
            }
        )
        return RawRecord(record_id, fields, updated_at)

    def _missing_ids(self, known: set[int]) -> set[int]:
        """Ids delivered earlier that the server no longer has; raises unless the whole list was read."""
        on_server: set[int] = set()
        for rows in self._by_id({}, what="id reconciliation", fields=["_id"]):
            on_server.update(int(r["_id"]) for r in rows if "_id" in r)
        self.stats.extra["reconciled_ids"] = len(on_server)
        return known - on_server


def _lookup(row: dict[str, Any], dotted: str) -> Any:
    if dotted in row:
        return row[dotted]
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _kobo_iso(value: Any) -> str | None:
    """kpi times are UTC without a zone (`2019-09-01T01:02:03`): say so, in the shared raw shape."""
    if not value:
        return None
    text = str(value)
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


_utc = utc


def _fingerprint(instance_id: Any) -> str:
    """A short stand-in for an instanceID: enough to see that an edit changed it, 10 characters."""
    return hashlib.blake2b(str(instance_id).encode(), digest_size=5).hexdigest()


def _load_cursor(cursor: str | None, where: str) -> dict[str, Any]:
    """Read a stored cursor (version 1, from before edits were listed, or 2); unreadable is a SourceError."""
    marks = {name: Mark() for name, _ in PASSES}
    if cursor is None:
        return {"marks": marks, "known": set(), "edited": {}, "reconcile": {}}
    data = load_versioned(cursor, where, (1, CURSOR_VERSION))
    try:
        for name, _ in PASSES:
            item = data.get(name)
            if item is not None and not isinstance(item, dict):
                raise TypeError(name)
            marks[name] = Mark.from_json(item)
        known = decode_ids(data["known"]) if data.get("known") else set()
        # Version 1 kept no instanceIDs: every edited submission is fetched once more, then tracked.
        edited = {int(k): str(v) for k, v in json.loads(zlib.decompress(base64.b64decode(data["edits"]))).items()} if data.get("edits") else {}
        reconcile = data.get("reconcile") or {}
        if not isinstance(reconcile, dict):
            raise TypeError("reconcile")
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise unreadable(where, f"{type(exc).__name__} in its content") from None
    return {"marks": marks, "known": known, "edited": edited, "reconcile": reconcile}


EDITS_ZLIB_LEVEL = 1


def _dump_cursor(marks: dict[str, Mark], known: set[int], edited: dict[int, str], reconcile: dict[str, Any]) -> str:
    # Level 1: the fingerprints are hashes, which level 9 shrinks by under 10 % more at 15 times the
    # CPU; this blob is rebuilt for every page, so at 100,000 submissions level 9 was a third of the sync.
    edits = base64.b64encode(zlib.compress(json.dumps({str(k): edited[k] for k in sorted(edited)}, separators=(",", ":")).encode(), EDITS_ZLIB_LEVEL)).decode()
    body = {"v": CURSOR_VERSION, **{name: m.to_json() for name, m in marks.items()}, "known": encode_ids(known), "edits": edits, "reconcile": reconcile}
    return json.dumps(body, separators=(",", ":"))
