"""KoboToolbox: submissions of one deployed form (asset), pulled incrementally from the v2 data API.

    source = KoboSource(config, job)     # options: url, asset_uid, token (a secret reference)
    for page in source.pages(cursor): ...

Auth is kpi's API token (`Authorization: Token ...`). The form comes from `/api/v2/assets/{uid}/`
(`content`: survey and choices). Submissions come from `/api/v2/assets/{uid}/data/?format=json`
with a Mongo `query`, a `sort` and `limit` (kpi allows at most 30000 per request), in three
keyset passes, each ordered by its own field so every page's cursor covers exactly what was read:

1. new submissions: `{"_submission_time": {"$gte": S}}`, sorted by `_submission_time`, `_id`;
2. edited ones, where the server keeps `_last_edited`: `{"_last_edited": {"$gte": E}}`;
3. validation-status changes: `{"_validation_status.timestamp": {"$gte": V}}`.

Each request starts again from the last value read (with the ids already read at exactly that
value skipped) instead of `start` offsets, which shift when submissions are added or deleted
mid-run. `_validation_status.uid` in `skip_validation_statuses` (default: not approved) becomes a
delete. On the first run passes 2 and 3 start where pass 1 ended (later changes carry later times).

Deletions: Kobo keeps no trace of a deleted submission, so the source reconciles ids. The cursor
holds the set of `_id`s the source has delivered (sorted, delta-encoded, zlib-compressed: a few
bytes per id). Every `reconcile_every_runs` runs or `reconcile_every_hours` hours (whichever comes
first) it lists every `_id` on the server (`fields=["_id"]`, keyset on `_id`, 30000 per request)
and deletes the ids it delivered that are gone. Cost: ceil(N / 30000) requests and about 15 bytes
of JSON per submission (100,000 submissions: 4 requests, about 1.5 MB); between reconciliations a
deleted submission stays in the store.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from pydantic import Field

from connector.records import Page, Problem, RawRecord
from connector.secrets import Secret, SecretMissing
from connector.sources import register
from connector.sources.base import FieldInfo, Source, SourceAuthError, SourceError, SourceOptions
from connector.sources.http import HttpClient
from connector.sources.keyset import Mark, keyset_pass
from connector.sources.xlsform import FlattenStats, FormDefinition, apply_renames, check_mapping_against_form, flatten_answers, form_from_kobo_content

log = logging.getLogger(__name__)
MAX_LIMIT = 30000
# Kobo's own keys (everything else starting with `_` is metadata too) and the instance metadata.
SKIP_PREFIXES = ("_", "formhub/", "meta/")


@dataclass(frozen=True)
class URLs:
    """Every kpi endpoint this module touches, relative to the server root."""

    asset: str = "api/v2/assets/{uid}/"
    data: str = "api/v2/assets/{uid}/data/"


URLS = URLs()


class KoboOptions(SourceOptions):
    url: str = Field(description="kpi server, e.g. https://kf.kobotoolbox.org or https://eu.kobotoolbox.org")
    asset_uid: str = Field(min_length=1, description="the form's asset uid (in its URL: /#/forms/<uid>/)")
    token: Secret = Field(description="API token reference: `token_env: KOBO_TOKEN` or `token_file: PATH`")
    page_size: int = Field(1000, ge=1, le=MAX_LIMIT, description="submissions per request (`limit`)")
    skip_validation_statuses: list[str] = Field(default_factory=lambda: ["validation_status_not_approved"])
    reconcile_every_runs: int = Field(24, ge=1, description="list all ids to find deletions every N runs ...")
    reconcile_every_hours: float = Field(24.0, gt=0, description="... or when this many hours have passed")
    rename: dict[str, str] = Field(default_factory=dict, description="the form's names -> the names the mapping expects")
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    verify_tls: bool = True


PASSES = (("submitted", "_submission_time"), ("edited", "_last_edited"), ("validated", "_validation_status.timestamp"))


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
class KoboSource(Source):
    type_name = "kobo"
    Options = KoboOptions
    full_snapshot = False

    def __init__(self, config: Any, job: Any):
        super().__init__(config, job)
        self.opts: KoboOptions = self.options  # type: ignore[assignment]
        self.where = f"source {self.id} (kobo {self.opts.asset_uid})"
        self._client: HttpClient | None = None
        self._form: FormDefinition | None = None
        self.flatten_stats = FlattenStats()
        self.now = lambda: datetime.now(timezone.utc)

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            self._client = HttpClient(
                self.where,
                self.opts.url,
                stats=self.stats,
                auth_headers=self._auth_headers,
                timeout=self.opts.timeout,
                max_retries=self.opts.max_retries,
                verify=self.opts.verify_tls,
            )
        return self._client

    def _auth_headers(self) -> dict[str, str]:
        try:
            return {"Authorization": f"Token {self.opts.token.get()}", "Accept": "application/json"}
        except SecretMissing as exc:
            raise SourceAuthError(self.where, f"token: {exc}") from None

    def _path(self, template: str) -> str:
        return template.format(uid=quote(self.opts.asset_uid, safe=""))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- form -----------------------------------------------------------------------------------------

    def form(self, refresh: bool = False) -> FormDefinition:
        if self._form is None or refresh:
            asset = self.client.get_json(self._path(URLS.asset), params={"format": "json"}, what=f"asset {self.opts.asset_uid}")
            content = asset.get("content") if isinstance(asset, dict) else None
            if not isinstance(content, dict) or "survey" not in content:
                raise SourceError(self.where, f"asset {self.opts.asset_uid} has no form content (is it a deployed survey?)")
            self._form = form_from_kobo_content(content, form_id=self.opts.asset_uid, version=asset.get("deployed_version_id") or asset.get("version_id"))
        return self._form

    def fields(self) -> list[FieldInfo]:
        renames = self.opts.rename
        return [FieldInfo(renames.get(f.name, f.name), f.label, f.type, f.choices) for f in self.form().field_infos()]

    def check(self) -> list[Problem]:
        try:
            form = self.form(refresh=True)
        except SourceAuthError as exc:
            return [Problem(self.where, str(exc).split(": ", 1)[-1], hint="check the API token reference (Account settings > Security) and that the user can view submissions")]
        except SourceError as exc:
            return [Problem(self.where, str(exc).split(": ", 1)[-1], hint="check `url` and `asset_uid`")]
        return check_mapping_against_form(form, self.config.mapping, where=self.where, renames=self.opts.rename, base_dir=getattr(self.job, "base_dir", None))

    # -- records --------------------------------------------------------------------------------------

    def pages(self, cursor: str | None) -> Iterator[Page]:
        state = _load_cursor(cursor, self.where)
        first_run = cursor is None
        marks: dict[str, Mark] = state["marks"]
        known: set[int] = state["known"]
        number = 0
        # What pass 1 saw of each pass's field: where passes 2 and 3 start on the first run.
        seen: dict[str, Mark] = {field_path: Mark() for _, field_path in PASSES}
        # `_id` -> `_last_edited` of what pass 1 delivered in this run: pass 2 skips those unchanged.
        delivered: dict[int, Any] = {}

        def dump(extra: dict[str, Any] | None = None) -> str:
            return _dump_cursor(marks, known, {**state["reconcile"], **(extra or {})})

        for name, field_path in PASSES:
            if first_run and name != "submitted":
                if seen[field_path].at is not None:
                    marks[name] = seen[field_path]
                continue
            for records in self._pass(field_path, marks[name], seen, delivered if not first_run else None, name):
                for record in records:
                    (known.discard if record.deleted else known.add)(int(record.record_id))
                number += 1
                yield Page(records, dump(), number)

        runs = int(state["reconcile"].get("runs", 0)) + 1
        last = state["reconcile"].get("at")
        due = not first_run and (runs >= self.opts.reconcile_every_runs or last is None or (self.now() - _utc(last)).total_seconds() >= self.opts.reconcile_every_hours * 3600)
        if first_run or due:
            gone = self._missing_ids(known) if due else set()
            deletes = [RawRecord(str(i), {}, self.now(), deleted=True) for i in sorted(gone)]
            known -= gone
            number += 1
            yield Page(deletes, _dump_cursor(marks, known, {"at": self.now().isoformat(), "runs": 0}), number)
        else:
            number += 1
            yield Page([], _dump_cursor(marks, known, {"at": last, "runs": runs}), number)

    def _pass(self, field_path: str, mark: Mark, seen: dict[str, Mark], delivered: dict[int, Any] | None = None, name: str = "") -> Iterator[list[RawRecord]]:
        sort = json.dumps({field_path: 1, "_id": 1})

        def fetch(skip: int) -> list[Any]:
            params = {"format": "json", "query": json.dumps(incremental_query(field_path, mark)), "sort": sort, "limit": self.opts.page_size, "start": skip}
            body = self.client.get_json(self._path(URLS.data), params=params, what=f"asset {self.opts.asset_uid} data ({field_path})")
            rows = body.get("results") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise SourceError(self.where, f"asset {self.opts.asset_uid}: the data API answered without a `results` list")
            return rows

        def locate(row: Any) -> tuple[Any, int] | None:
            if not isinstance(row, dict) or "_id" not in row:
                return None
            record_id = int(row["_id"])
            for key, shadow in seen.items():
                shadow.advance(_lookup(row, key), record_id)
            return _lookup(row, field_path), record_id

        def keep(row: dict[str, Any], at: Any, record_id: int) -> bool:
            if delivered is not None:
                if name == "edited" and record_id in delivered and delivered[record_id] == row.get("_last_edited"):
                    return False  # new since the last run and already delivered by pass 1 in this state
                if name == "submitted":
                    delivered[record_id] = row.get("_last_edited")
            return True

        for rows in keyset_pass(fetch, page_size=self.opts.page_size, mark=mark, locate=locate, keep=keep, where=self.where):
            yield [self._record(row) for row in rows]

    def _record(self, row: dict[str, Any]) -> RawRecord:
        record_id = str(row["_id"])
        submitted = _kobo_iso(row.get("_submission_time"))
        edited = _kobo_iso(row.get("_last_edited"))
        updated_at = _utc(edited or submitted) if (edited or submitted) else None
        status = row.get("_validation_status") or {}
        if status.get("uid") in self.opts.skip_validation_statuses:
            return RawRecord(record_id, {}, updated_at, deleted=True)
        answers = {k: v for k, v in row.items() if not k.startswith(SKIP_PREFIXES)}
        fields = apply_renames(flatten_answers(answers, stats=self.flatten_stats), self.opts.rename)
        fields.update(
            {
                "_id": record_id,
                "_submission_time": submitted,
                "_updated_at": edited or submitted,
                "_submitted_by": row.get("_submitted_by"),
                "_review_state": status.get("uid"),
                "_form_version": row.get("__version__"),
            }
        )
        return RawRecord(record_id, fields, updated_at)

    def _missing_ids(self, known: set[int]) -> set[int]:
        """Ids delivered earlier that the server no longer has (keyset on `_id`, ids only)."""
        on_server: set[int] = set()
        last: int | None = None
        while True:
            query = {} if last is None else {"_id": {"$gt": last}}
            params = {"format": "json", "query": json.dumps(query), "sort": json.dumps({"_id": 1}), "fields": json.dumps(["_id"]), "limit": MAX_LIMIT}
            body = self.client.get_json(self._path(URLS.data), params=params, what=f"asset {self.opts.asset_uid} id reconciliation")
            rows = body.get("results") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise SourceError(self.where, f"asset {self.opts.asset_uid}: the data API answered without a `results` list")
            ids = [int(r["_id"]) for r in rows if isinstance(r, dict) and "_id" in r]
            on_server.update(ids)
            if len(rows) < MAX_LIMIT or not ids:
                break
            last = max(ids)
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


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _load_cursor(cursor: str | None, where: str) -> dict[str, Any]:
    marks = {name: Mark() for name, _ in PASSES}
    if cursor is None:
        return {"marks": marks, "known": set(), "reconcile": {}}
    try:
        data = json.loads(cursor)
        for name, _ in PASSES:
            item = data.get(name) or {}
            marks[name] = Mark(item.get("at"), set(item.get("ids") or ()))
        known = decode_ids(data["known"]) if data.get("known") else set()
    except (ValueError, KeyError, TypeError, zlib.error):
        raise SourceError(where, "stored cursor cannot be read; reset the source's cursor to pull everything again") from None
    return {"marks": marks, "known": known, "reconcile": data.get("reconcile") or {}}


def _dump_cursor(marks: dict[str, Mark], known: set[int], reconcile: dict[str, Any]) -> str:
    body = {"v": 1, **{name: {"at": m.at, "ids": sorted(m.ids)} for name, m in marks.items()}, "known": encode_ids(known), "reconcile": reconcile}
    return json.dumps(body, separators=(",", ":"))
