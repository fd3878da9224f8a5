"""A KoboToolbox (kpi) server on 127.0.0.1 serving generated cases as submissions of the HTCDS XLSForm.

The shapes follow kpi's own code (kobotoolbox/kpi at 2e5efb01, August 2026):

- `Authorization: Token <key>`; 401 `{"detail": "Invalid token."}` otherwise;
- `GET /api/v2/assets/` (count, next, previous, results) and `/api/v2/assets/{uid}/` with `content`
  (survey and choices rows as the form builder stores them: `$kuid`, `$autoname`, label lists,
  `select_from_list_name`);
- `GET /api/v2/assets/{uid}/data/?format=json` (`kpi/views/v2/data.py` `DataViewSet.list` and
  `_filter_mongo_query`, `kpi/paginators.py` `DefaultPagination`, `kpi/utils/mongo_helper.py`
  `MongoHelper.get_instances`):
  - `limit` is cut to `MAX_API_PAGE_SIZE` (1000, `kobo/settings/base.py`) *without an error*
    (DRF's `_positive_int(..., cutoff=max_limit)`); no `limit`: `DEFAULT_API_PAGE_SIZE` (100);
    a `limit` that is not a positive integer: 400;
  - `start` is the offset; `count` is the number of submissions matching `query`; `next` is the
    same URL with `limit` (the cut one) and `start` + `limit` while `start + limit < count`, else
    null (DRF `LimitOffsetPagination.get_next_link`); so a short page never ends a listing, `next`
    does;
  - `query` (a MongoDB query: equality, `$gt $gte $lt $lte $ne $in $nin $exists`, `$and`, `$or`,
    dotted paths such as `_validation_status.uid`), `sort` (JSON `{"field": 1|-1}`, default
    `{"_id": 1}`, `openrosa_backend.__get_submissions_in_json`) and `fields` (JSON list; kpi
    always adds `_uuid` and `meta/rootUuid`, and `_inject_properties` sets `_validation_status`
    to `{}` when it was not selected);
  - answers keyed by their group path (`group/name`), repeats as lists of dicts keyed by full
    path, unanswered questions left out; `_id`, `_uuid`, `meta/instanceID`, `meta/rootUuid`,
    `_submission_time` (UTC, no zone: `2019-09-01T01:02:03`), `_validation_status`,
    `_submitted_by`, `_attachments`, `_status`, `_geolocation`, `_xform_id_string`
    (`viewer/models/parsed_instance.py` `to_dict_for_mongo`); `_tags` and `_notes` are removed
    (`deployment_backends/base_backend.py` `_inject_properties`).
- An edit (Enketo or the bulk-update API: `libs/utils/logger_tools.py` `_get_instance`,
  `base_backend.py` `bulk_update_submissions`) rewrites the same submission: `_id` and
  `_submission_time` (the instance's `date_created`) stay; `meta/instanceID` and `_uuid` get a
  new uuid; the old instanceID moves to `meta/deprecatedID`; `meta/rootUuid` keeps the first one;
  `__version__` is the form version the edit was made with. No edit time reaches the data
  endpoint: the instance's `date_modified` is not in the Mongo document, and there is no
  `_last_edited` in kpi (the earlier sandbox served one; kpi never did).
- A validation-status change sets `_validation_status.timestamp`.
- Deletion removes a submission (Kobo keeps no trace of it, hence the source's id reconciliation).

A listing's matches are found and sorted once per (`query`, `sort`) and kept until the data
changes, as MongoDB's index serves `count` and `skip`/`limit` without a scan per page; only the
page's rows are rendered. A keyset page in `_id` order (`{"_id": {"$gt": n}}`, alone or as the
last term of a two-term `$and`, sorted `{"_id": 1}`) reuses the listing of the rest of the query
and starts after `n` by bisection, as the `_id` index would. Paging through 100,000 submissions
therefore costs the sandbox one filter and sort, not one per page.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlencode

from connector.sandbox import xlsform_render as render
from connector.sandbox.form_server import FormServerHandle, Reply, Request, SandboxApp, json_reply, serve

MAX_LIMIT = 1000  # kpi's MAX_API_PAGE_SIZE default
DEFAULT_LIMIT = 100  # kpi's DEFAULT_API_PAGE_SIZE default
VALIDATION_LABELS = {
    "validation_status_approved": "Approved",
    "validation_status_not_approved": "Not approved",
    "validation_status_on_hold": "On hold",
}
ID_OFFSET = 100000  # Kobo `_id`s are server-wide, so a form's ids do not start at 1


def kobo_time(moment: datetime) -> str:
    """kpi's `_submission_time`: UTC, seconds, no zone designator."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def submission_id(case: Any) -> int:
    """The `_id` the sandbox gives a case (stable across runs and edits)."""
    return ID_OFFSET + int(str(case.case_id).lstrip("C") or 0)


class KoboApp(SandboxApp):
    """The application behind `start_kobo_sandbox`; tests reach it through `handle.app`."""

    def __init__(
        self,
        cases: Iterable[Any],
        *,
        page_size: int,
        variant: str,
        transform: Callable[[Any, dict], dict] | None,
        token: str | None = None,
        max_limit: int = MAX_LIMIT,
    ):
        super().__init__()
        self.token = token or secrets.token_hex(20)
        self.asset_uid = "aHtcdsSandbox7xQ2mWkLpZ"
        self.page_size = page_size
        self.max_limit = max_limit
        self.variant = variant
        self.transform = transform
        self.content = render.kobo_content(variant)
        self.validation: dict[str, dict[str, Any]] = {}  # case id -> _validation_status
        self.rows: list[dict[str, Any]] = []
        self._generation = 0  # bumped by every change of the data: the listing cache below is only valid within one
        self._listing: tuple[tuple[int, str, str], list[dict[str, Any]], list[int] | None] | None = None
        self._range_keys: tuple[list[dict[str, Any]], str, list[tuple] | None] | None = None  # a listing, its first sort field, their keys
        self.set_cases(cases)

    def set_cases(self, cases: Iterable[Any]) -> None:
        """Serve these cases' current state: deleted cases disappear, as they do in Kobo.

        A case whose answers or `updated_at` differ from what was served is an edit: same `_id`
        and `_submission_time`, a new `meta/instanceID`, the old one in `meta/deprecatedID`.
        """
        with self.lock:
            before = {r["_case_id"]: r for r in self.rows}
        rows = []
        for case in sorted(cases, key=lambda c: (c.created_at, c.case_id)):
            if case.deleted:
                continue
            answers = render.render_answers(case, self.variant)
            if self.transform is not None:
                answers = self.transform(case, answers)
            rows.append(self._row(case, answers, before.get(case.case_id)))
        with self.lock:
            self.rows = rows
            self._generation += 1

    def _row(self, case: Any, answers: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        root = render.instance_id(case)
        row: dict[str, Any] = {"_id": submission_id(case), "formhub/uuid": "5f2e0b3c1a7d4e9b8c6a2d1e0f3b4c5a"}
        for path, value in answers.items():
            if isinstance(value, list):
                if value:
                    row[path] = [{f"{path}/{k}": v for k, v in child.items() if v not in (None, "")} for child in value]
                continue
            if value not in (None, ""):
                row[path] = value
        # The instanceID of this version: the root one until the first edit, then one per edit.
        version = root if case.updated_at <= case.created_at else _edit_instance_id(case)
        deprecated = None
        if version != root:
            if previous is not None and previous["meta/instanceID"] != version:
                deprecated = previous["meta/instanceID"]
            else:
                deprecated = previous.get("meta/deprecatedID", root) if previous is not None else root
        row["meta/instanceID"] = version
        if deprecated is not None:
            row["meta/deprecatedID"] = deprecated
        row["meta/rootUuid"] = root
        row.update(
            {
                "_xform_id_string": self.asset_uid,
                "_uuid": version.removeprefix("uuid:"),
                "_attachments": [],
                "_status": "submitted_via_web",
                "_geolocation": [None, None],
                "_submission_time": kobo_time(case.created_at),
                "_validation_status": self.validation.get(case.case_id, {}),
                "_submitted_by": "sandbox_collector",
            }
        )
        row["_case_id"] = case.case_id  # sandbox bookkeeping, removed before serving
        return row

    def set_validation_status(self, case_id: str, uid: str | None, at: datetime | None = None) -> None:
        """Validate a submission as a project manager would; `None` clears the status."""
        moment = at or datetime.now(timezone.utc)
        status = {} if uid is None else {"timestamp": int(moment.timestamp()), "uid": uid, "by_whom": "sandbox_manager", "label": VALIDATION_LABELS[uid]}
        with self.lock:
            self.validation[case_id] = status
            for row in self.rows:
                if row["_case_id"] == case_id:
                    row["_validation_status"] = status
            self._generation += 1

    def delete(self, case_id: str) -> None:
        with self.lock:
            self.rows = [r for r in self.rows if r["_case_id"] != case_id]
            self._generation += 1

    # -- HTTP ---------------------------------------------------------------------------------------

    def fault_reply(self, fault: Any) -> Reply | None:
        if fault.status == 401:
            return json_reply({"detail": "Invalid token."}, status=401)
        if fault.status == 429:
            wait = int(fault.retry_after or 1)
            return json_reply({"detail": f"Request was throttled. Expected available in {wait} seconds."}, status=429)
        return None

    def route(self, request: Request) -> tuple[str, Reply]:
        header = request.headers.get("Authorization") or ""
        if not header:
            return "unauthorized", json_reply({"detail": "Authentication credentials were not provided."}, status=401)
        if header != f"Token {self.token}":
            return "unauthorized", json_reply({"detail": "Invalid token."}, status=401)
        path = request.path
        base = f"http://{request.host}"
        if path in ("/api/v2/assets/", "/api/v2/assets.json", "/api/v2/assets"):
            return "assets", json_reply({"count": 1, "next": None, "previous": None, "results": [self._asset(base, with_content=False)]})
        match = re.fullmatch(r"/api/v2/assets/([^/]+)/?", path)
        if match:
            if match.group(1) != self.asset_uid:
                return "not_found", json_reply({"detail": "Not found."}, status=404)
            return "asset", json_reply(self._asset(base, with_content=True))
        match = re.fullmatch(r"/api/v2/assets/([^/]+)/data(?:/|\.json)?", path)
        if match:
            if match.group(1) != self.asset_uid:
                return "not_found", json_reply({"detail": "Not found."}, status=404)
            return "data", self._data(request, base)
        return "not_found", json_reply({"detail": "Not found."}, status=404)

    def _asset(self, base: str, *, with_content: bool) -> dict[str, Any]:
        url = f"{base}/api/v2/assets/{self.asset_uid}/"
        asset = {
            "url": url,
            "uid": self.asset_uid,
            "name": "HTCDS case form",
            "asset_type": "survey",
            "owner__username": "sandbox",
            "has_deployment": True,
            "deployment__active": True,
            "deployment__submission_count": len(self.rows),
            "version_id": self.content["settings"]["version"],
            "deployed_version_id": self.content["settings"]["version"],
            "date_modified": "2025-01-01T00:00:00.000000Z",
            "data": f"{url}data/",
        }
        if with_content:
            asset["content"] = self.content
        return asset

    def _data(self, request: Request, base: str) -> Reply:
        query = request.query
        try:
            limit = _positive_int(query["limit"], cutoff=self.max_limit) if "limit" in query else self.page_size
        except ValueError:
            return json_reply({"limit": ["A positive integer is required"]}, status=400)
        try:
            start = int(query.get("start", 0) or 0)
            if start < 0:
                raise ValueError
        except ValueError:
            return json_reply({"start": ["A positive integer is required."]}, status=400)
        try:
            mongo = json.loads(query["query"]) if query.get("query") else {}
            sort = json.loads(query["sort"]) if query.get("sort") else {"_id": 1}
            fields = json.loads(query["fields"]) if query.get("fields") else None
        except ValueError:
            return json_reply({"detail": "Value must be valid JSON."}, status=400)
        if not isinstance(mongo, dict) or not isinstance(sort, dict) or (fields is not None and not isinstance(fields, list)):
            return json_reply({"detail": "Unsupported query"}, status=400)
        rows = self._matching(mongo, sort)
        page = rows[start : start + limit]
        if fields:
            fields = [*fields, "_uuid", "meta/rootUuid"]  # MongoHelper._get_cursor_and_count adds both
        results = []
        for row in page:
            item = {k: v for k, v in row.items() if k != "_case_id"}
            if fields:
                item = {k: v for k, v in item.items() if k in fields}
                item["_validation_status"] = item.get("_validation_status") or {}
            results.append(item)
        count = len(rows)

        def page_url(at: int) -> str:
            # DRF's replace_query_param: the request's own URL with `limit` and `start` replaced.
            params = [(k, v) for k, v in parse_qsl(request.raw_query, keep_blank_values=True) if k not in ("limit", "start")]
            return f"{base}{request.path}?{urlencode([*params, ('limit', str(limit)), ('start', str(at))])}"

        return json_reply(
            {
                "count": count,
                "next": page_url(start + limit) if start + limit < count else None,
                "previous": (page_url(start - limit) if start - limit > 0 else page_url(0)) if start > 0 else None,
                "results": results,
            }
        )


    def _matching(self, mongo: dict[str, Any], sort: dict[str, Any]) -> list[dict[str, Any]]:
        """The submissions matching `mongo`, in `sort` order; computed once per query while the data is unchanged."""
        keyset = _id_keyset(mongo, sort)
        if keyset is not None:
            base, after = keyset
            rows, ids = self._listed(base, sort)
            if ids is not None and type(after) is int:  # noqa: E721 - an int, not a bool
                return rows[bisect_right(ids, after) :]
        ranged = _range_on_first_sort_key(mongo, sort)
        if ranged is not None:
            found = self._range(sort, *ranged)
            if found is not None:
                return found
        return self._listed(mongo, sort)[0]

    def _range(self, sort: dict[str, Any], field_name: str, op: str, arg: Any) -> list[dict[str, Any]] | None:
        """`{field: {"$gte"|"$gt": text}}` sorted by that field first: a slice of the listing of all
        submissions (the index range scan of a keyset pass by time), or None when values are not all
        text or empty (then the scan decides, with Mongo's type brackets)."""
        if not isinstance(arg, str):
            return None
        rows, _ = self._listed({}, sort)
        with self.lock:
            if self._range_keys is None or self._range_keys[0] is not rows or self._range_keys[1] != field_name:
                values = [_get(r, field_name) for r in rows]
                plain = all(v is _MISSING or v is None or isinstance(v, str) for v in values)
                self._range_keys = (rows, field_name, [_mongo_sort_key(v) for v in values] if plain else None)
            keys = self._range_keys[2]
        if keys is None:
            return None
        at = (bisect_left if op == "$gte" else bisect_right)(keys, (2, arg))
        return rows[at:]

    def _listed(self, mongo: dict[str, Any], sort: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int] | None]:
        """The cached listing and its `_id`s (None unless every one is an int, when bisection is exact)."""
        with self.lock:
            key = (self._generation, json.dumps(mongo, sort_keys=True), json.dumps(list(sort.items())))
            if self._listing is not None and self._listing[0] == key:
                return self._listing[1], self._listing[2]
            rows = [r for r in self.rows if _matches(r, mongo)]
            for field_name, direction in reversed(list(sort.items())):
                rows.sort(key=lambda r, k=field_name: _mongo_sort_key(_get(r, k)), reverse=int(direction) < 0)
            ids: list[int] | None = [r.get("_id") for r in rows]
            if not all(type(i) is int for i in ids):  # type: ignore[union-attr]  # noqa: E721
                ids = None
            self._listing = (key, rows, ids)
            return rows, ids


def _range_on_first_sort_key(mongo: dict[str, Any], sort: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(field, "$gte"|"$gt", value) for a query that is one lower bound on the first, ascending sort key."""
    items = list(sort.items())
    if len(mongo) != 1 or not items or int(items[0][1]) != 1:
        return None
    (field_name, cond), = mongo.items()
    if field_name != items[0][0] or field_name.startswith("$") or not isinstance(cond, dict) or len(cond) != 1:
        return None
    (op, arg), = cond.items()
    return (field_name, op, arg) if op in ("$gte", "$gt") else None


def _id_keyset(mongo: dict[str, Any], sort: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """(the rest of the query, n) for a keyset page `_id > n` in `_id` order; None for any other query."""
    if list(sort.items()) != [("_id", 1)]:
        return None

    def bound(term: Any) -> Any:
        if isinstance(term, dict) and list(term) == ["_id"] and isinstance(term["_id"], dict) and list(term["_id"]) == ["$gt"]:
            return term["_id"]["$gt"]
        return None

    if bound(mongo) is not None:
        return {}, bound(mongo)
    terms = mongo.get("$and") if list(mongo) == ["$and"] else None
    if isinstance(terms, list) and len(terms) == 2 and isinstance(terms[0], dict) and bound(terms[1]) is not None:
        return terms[0], bound(terms[1])
    return None


def _positive_int(text: str, *, cutoff: int) -> int:
    """DRF's `_positive_int(strict=True, cutoff=...)`: a positive integer, silently cut to `cutoff`."""
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return min(value, cutoff)


def _edit_instance_id(case: Any) -> str:
    """The instanceID an edit gives a submission: new for each edit (here: each `updated_at`)."""
    return f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'htcds-sandbox-edit/{case.case_id}/{case.updated_at.isoformat()}')}"


def _get(doc: dict[str, Any], dotted: str) -> Any:
    if dotted in doc:
        return doc[dotted]
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _mongo_sort_key(value: Any) -> tuple:
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$and":
            if not all(_matches(doc, q) for q in cond):
                return False
            continue
        if key == "$or":
            if not any(_matches(doc, q) for q in cond):
                return False
            continue
        value = _get(doc, key)
        if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            for op, arg in cond.items():
                if not _op(value, op, arg):
                    return False
        elif value is _MISSING or value != cond:
            return False
    return True


def _op(value: Any, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op == "$in":
        return value is not _MISSING and value in arg
    if op == "$nin":
        return value is _MISSING or value not in arg
    if op == "$ne":
        return value is _MISSING or value != arg
    if op == "$eq":
        return value is not _MISSING and value == arg
    if value is _MISSING or value is None or isinstance(value, (int, float)) != isinstance(arg, (int, float)):
        return False  # Mongo compares only within a type bracket
    try:
        return {"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg, "$lte": value <= arg}[op]
    except KeyError:
        raise ValueError(f"unsupported query operator {op}") from None


class KoboSandboxHandle(FormServerHandle):
    """`start_kobo_sandbox`'s handle: url, token and asset uid for a config, faults, counts, state changes."""

    app: KoboApp

    @property
    def token(self) -> str:
        return self.app.token

    @property
    def asset_uid(self) -> str:
        return self.app.asset_uid

    def set_validation_status(self, case_id: str, uid: str | None, at: datetime | None = None) -> None:
        self.app.set_validation_status(case_id, uid, at)

    def config_options(self, token_env: str = "KOBO_TOKEN") -> dict[str, Any]:
        """Source options for a job config pointing at this sandbox (the token itself goes in `token_env`)."""
        return {"url": self.url, "asset_uid": self.asset_uid, "token_env": token_env}


def start_kobo_sandbox(
    cases: Iterable[Any],
    *,
    port: int = 0,
    page_size: int = 100,
    variant: str = "partner",
    transform: Callable[[Any, dict], dict] | None = None,
    token: str | None = None,
    max_limit: int = MAX_LIMIT,
) -> KoboSandboxHandle:
    """Serve `cases` as one deployed Kobo asset with the HTCDS form on 127.0.0.1:`port`.

    `page_size` is the server's default `limit` when a client sends none; `variant` "partner"
    (default, with repeats and a group) or "htcds"; `transform(case, answers)` may change answers
    before they are served (bad input for tests); `token` fixes the API token (default: random);
    `max_limit` is the server's cap on `limit` (kpi's `MAX_API_PAGE_SIZE`, 1000 by default).
    """
    app = KoboApp(list(cases), page_size=page_size, variant=variant, transform=transform, token=token, max_limit=max_limit)
    handle = serve(app, port)
    handle.__class__ = KoboSandboxHandle
    return handle  # type: ignore[return-value]

