"""An ODK Central server on 127.0.0.1 that serves generated cases as submissions of the HTCDS XLSForm.

It speaks the parts of Central's API a connector (and pyodk) uses, with Central's shapes as its
code and its own API tests show them (getodk/central-backend at 4f5943d1, v2026.2.x; and
getodk/central for `/version.txt`):

- `POST /v1/sessions` {email, password} -> {token, csrf, expiresAt, createdAt}; Bearer tokens
  (web-user sessions, and an app-user token); `GET /v1/users/current`;
- `GET /v1/projects`, `/v1/projects/{id}`, `/forms`, `/forms/{xmlFormId}`, `.xml`,
  `/fields?odata=true`; `PATCH .../submissions/{instanceId}` {reviewState}; `DELETE` (soft delete:
  sets `deletedAt`, leaves `updatedAt`); `POST .../submissions/{instanceId}/restore` (clears
  `deletedAt`, leaves `updatedAt`; 404 unless the submission is deleted: `lib/resources/
  submissions.js`, `lib/util/db.js` `markUndeleted`);
- OData: the service document, `$metadata`, `Submissions` with `$top`, `$skip`, `$skiptoken`,
  `$count`, `$filter`, `$orderby`, `$select`, `$expand=*`, `@odata.nextLink`, `__id`, `__system`
  (submissionDate, updatedAt, deletedAt, submitterId, submitterName, reviewState, formVersion,
  edits, status, ...); repeats as navigation links, their own tables (`Submissions.perpetrators`,
  with `__id` and `__Submissions-id`) and `Submissions('id')/perpetrators`;
- `GET /version.txt` (no auth; written by `files/prebuild/write-version.sh` of getodk/central and
  served by its nginx): `versions:` then `<sha> (v2026.2.2)` and one line per submodule.

Central's rules kept:
- the default order is newest first (`createdAt DESC, id DESC`, `lib/model/query/submissions.js`
  `DEFAULT_ORDER_BY`);
- the next link always carries `$skiptoken` = `01` + base64 JSON `{"instanceId": last}` (`{"repeatId":
  ...}` for repeat tables) and drops `$skip` (`lib/util/odata.js` `nextUrlFor`), also when the
  request had `$orderby`; and `$orderby` with `$skiptoken` is refused with 501.1 (`lib/util/db.js`
  `QueryOptions.fromODataRequest`), so a client ordering by a field cannot follow the next link.
  A `$skiptoken` means "older than that submission in the default order", even if it was deleted
  since (`joinOnSkiptoken`);
- a next link is added while `remaining > 0`, where remaining is the count of matching rows after
  the `$skiptoken` (all matching rows without one) minus the rows sent: with `$skip` that count
  ignores the offset, so a next link can come with the last rows (`lib/formats/odata.js`);
- soft-deleted submissions are left out unless the filter names `__system/deletedAt`
  (`lib/data/odata-filter.js` `odataExcludeDeleted`); `updatedAt` is null until a submission is
  edited or reviewed;
- an encrypted submission that was not decrypted has only `__id` and `__system`, with `status`
  `notDecrypted` (or `missingEncryptedFormData` without its data): `lib/data/odata.js`;
- an app user (role `app-user`: `open_form.read`, `submission.create`) can read the form, its XML
  and fields, but the OData feed answers 403.1 (`submission.read` is a Project Viewer's verb:
  `lib/model/migrations/20190923-01-add-project-viewer-role.js`);
- older servers, with `server_version=`: before v2024.1 `$orderby` is not a supported parameter
  (501.1, `lib/http/endpoint.js` `supportedParams` at v2023.5.0); before v2024.3 a filter on
  `__system/deletedAt` names an unknown field (501.5, `lib/data/submission.js` `filterableFields`
  at v2024.2.0); before v2025.3 so does a filter on `__id`.
A page of `Submissions` in the default order (no `$orderby`, no `$count`) is served the way
Central's database serves it, an index walk that stops after the page and one more row (enough
to know `remaining > 0`): the submissions are kept sorted once per `set_cases`, so neither time
nor memory per request grows with the form's size. `$count=true` or `$orderby` read every match.
Where Central's behaviour is not documented the sandbox picks one and says so: a non-numeric answer
in an `int` field is returned as text.

Use:
    handle = start_odk_sandbox(generate_cases(100))
    handle.url, handle.email, handle.password, handle.project_id, handle.form_id
    handle.faults.add(429, retry_after=1); handle.expire_sessions(); handle.stop()
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlencode

from connector.sandbox import xlsform_render as render
from connector.sandbox.form_server import FormServerHandle, Reply, Request, SandboxApp, json_reply, serve
from connector.sources.xlsform import FormDefinition, form_from_rows

ODATA_JSON = "application/json; charset=utf-8; odata.metadata=minimal"
SUBMITTER_ID = "5"
SUBMITTER_NAME = "Sandbox Collector"


@dataclass
class _Submission:
    instance_id: str
    case_id: str
    seq: int
    submission_date: str
    updated_at: str | None
    deleted_at: str | None
    review_state: str | None
    answers: dict[str, Any]  # flat XForm paths -> values, repeats -> list of child dicts
    form_version: str
    edits: int = 0
    status: str | None = None  # notDecrypted | missingEncryptedFormData for an encrypted submission


@dataclass
class OdkSandboxState:
    submissions: dict[str, _Submission] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    _ascending: list[_Submission] | None = field(default=None, repr=False)
    _keys: list[tuple[str, int]] = field(default_factory=list, repr=False)
    # system date path -> (moments ascending, submissions in (moment, seq) order); cleared when a date changes
    _indexes: dict[str, tuple[list[datetime], list[_Submission]]] = field(default_factory=dict, repr=False)

    def by_date(self, path: str) -> tuple[list[datetime], list[_Submission]]:
        """The submissions with a `path` date (`__system/submissionDate`, `__system/updatedAt`),
        ordered by it then by creation: the database index Central's ordered, filtered feed walks."""
        if path not in self._indexes:
            name = path.removeprefix("__system/")
            dated = [(_parse_moment(v), s.seq, s) for s in self.submissions.values() if (v := _date_of(s, name)) is not None]
            dated.sort(key=lambda t: (t[0], t[1]))
            self._indexes[path] = ([t[0] for t in dated], [t[2] for t in dated])
        return self._indexes[path]

    def newest_first(self, before: tuple[str, int] | None = None) -> Iterator[_Submission]:
        """Submissions in Central's default order (createdAt DESC, id DESC), lazily, optionally only
        those older than `before` (a `$skiptoken`'s submission): the index walk of a paged query.
        Sorted once per state (`set_cases` makes a new state; reviews and deletes keep the order)."""
        if self._ascending is None or len(self._ascending) != len(self.submissions):
            self._ascending = sorted(self.submissions.values(), key=lambda s: (s.submission_date, s.seq))
            self._keys = [(s.submission_date, s.seq) for s in self._ascending]
        end = len(self._ascending) if before is None else bisect_left(self._keys, before)
        return (self._ascending[i] for i in range(end - 1, -1, -1))


class OdkCentralApp(SandboxApp):
    """The application behind `start_odk_sandbox`; tests reach it through `handle.app`."""

    def __init__(
        self,
        cases: Iterable[Any],
        *,
        page_size: int | None,
        variant: str,
        transform: Callable[[Any, dict], dict] | None,
        password: str | None = None,
        server_version: str = "v2026.2.2",
    ):
        super().__init__()
        self.server_version = server_version
        self.encrypted: dict[str, str] = {}  # case id -> status
        self.email = "sandbox@example.org"
        self.password = password or secrets.token_urlsafe(12)
        self.app_user_token = secrets.token_urlsafe(48)
        self.project_id = 1
        self.form_id = render.FORM_ID
        self.page_size = page_size  # server-side page limit when the client asks for none (Central has none)
        self.tokens: set[str] = set()
        self.variant = variant
        self.transform = transform
        self.review_states: dict[str, tuple[str, str]] = {}  # case id -> (state, at)
        self._set_form(*render.form_rows(variant), xml=render.xform_xml(variant))
        self.state = OdkSandboxState()
        self.set_cases(cases)

    # -- state --------------------------------------------------------------------------------------

    def _set_form(self, survey: list[dict], choices: list[dict], settings: dict, xml: str | None = None) -> None:
        self.survey, self.choices, self.settings = survey, choices, settings
        self.form: FormDefinition = form_from_rows(survey, choices, settings)
        self.xml = xml or render.xform_from_rows(survey, choices, settings)
        self.int_paths = {f.path for f in self.form.fields if f.type == "integer"}
        self.num_paths = {f.path for f in self.form.fields if f.type == "decimal"}

    def set_form(self, survey: list[dict], choices: list[dict], settings: dict) -> None:
        """Publish a new form version (renamed or removed questions); existing submissions keep their answers."""
        with self.lock:
            self._set_form(survey, choices, settings)

    def set_cases(self, cases: Iterable[Any]) -> None:
        """Replace the served submissions with these cases' current state (edits, new, deleted)."""
        with self.lock:
            old = self.state.submissions
            state = OdkSandboxState()
            for seq, case in enumerate(sorted(cases, key=lambda c: (c.created_at, c.case_id))):
                iid = render.instance_id(case)
                answers = render.render_answers(case, self.variant)
                if self.transform is not None:
                    answers = self.transform(case, answers)
                updated = render.utc_iso(case.updated_at) if case.updated_at > case.created_at else None
                previous = old.get(iid)
                edits = previous.edits + (1 if previous and previous.answers != answers else 0) if previous else 0
                review = self.review_states.get(case.case_id)
                if review is not None and (updated is None or review[1] > updated):
                    updated = review[1]
                state.submissions[iid] = _Submission(
                    instance_id=iid,
                    case_id=case.case_id,
                    seq=seq,
                    submission_date=render.utc_iso(case.created_at),
                    updated_at=updated,
                    deleted_at=render.utc_iso(case.updated_at) if case.deleted else None,
                    review_state=review[0] if review else None,
                    answers=answers,
                    form_version=str(answers.get("__version__") or self.settings.get("version") or ""),
                    edits=edits,
                    status=self.encrypted.get(case.case_id),
                )
                state.order.append(iid)
            self.state = state

    def set_review_state(self, case_id: str, state: str | None, at: datetime | None = None) -> None:
        """Review a submission as a project manager would (approved, hasIssues, rejected, edited); bumps updatedAt."""
        moment = render.utc_iso(at or datetime.now(timezone.utc))
        with self.lock:
            self.review_states[case_id] = (state, moment)  # type: ignore[assignment]
            self.state._indexes.clear()  # updatedAt moves
            for sub in self.state.submissions.values():
                if sub.case_id == case_id:
                    sub.review_state = state
                    sub.updated_at = moment

    def set_encrypted(self, case_id: str, status: str = "notDecrypted") -> None:
        """Serve a submission as an encrypted one Central could not decrypt (`notDecrypted`, `missingEncryptedFormData`)."""
        with self.lock:
            self.encrypted[case_id] = status
            for sub in self.state.submissions.values():
                if sub.case_id == case_id:
                    sub.status = status

    def version_at_least(self, year: int, release: int) -> bool:
        match = re.match(r"v(\d{4})\.(\d+)", self.server_version)
        return match is None or (int(match.group(1)), int(match.group(2))) >= (year, release)

    def expire_sessions(self) -> None:
        """Every web-user session token stops working (as after Central's session timeout)."""
        with self.lock:
            self.tokens.clear()

    # -- HTTP ---------------------------------------------------------------------------------------

    def fault_reply(self, fault: Any) -> Reply | None:
        if fault.status == 401:
            return _problem(401, 401.2, "Could not authenticate with the provided credentials.")
        if fault.status == 429:
            return _problem(429, 429.1, "Too many requests.")
        return None

    def route(self, request: Request) -> tuple[str, Reply]:
        path = unquote(request.path)
        if path == "/version.txt":
            text = f"versions:\n0c8e6b2f4a1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f ({self.server_version})\n 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b client ({self.server_version})\n 9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e server ({self.server_version})\n"
            return "version", Reply(body=text.encode(), content_type="text/plain")
        if request.method == "POST" and path == "/v1/sessions":
            return "sessions", self._login(request)
        if not path.startswith("/v1/"):
            return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
        if not self._authorized(request):
            return "unauthorized", _problem(401, 401.2, "Could not authenticate with the provided credentials.")
        if path == "/v1/users/current":
            return "users_current", json_reply({"id": 5, "type": "user", "displayName": "Sandbox", "email": self.email, "createdAt": "2015-01-01T00:00:00.000Z"})
        if path == "/v1/projects":
            return "projects", json_reply([self._project()])
        match = re.fullmatch(r"/v1/projects/(\d+)(/.*)?", path)
        if not match or int(match.group(1)) != self.project_id:
            return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
        rest = match.group(2) or ""
        if rest == "":
            return "project", json_reply(self._project())
        if rest == "/forms":
            return "forms", json_reply([self._form_json()])
        match = re.fullmatch(r"/forms/([^/]+?)(\.svc|\.xml)?(/.*)?", rest)
        if not match or match.group(1) != self.form_id:
            return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
        suffix, tail = match.group(2), match.group(3) or ""
        with self.lock:
            if suffix == ".xml":
                return "form_xml", Reply(body=self.xml.encode("utf-8"), content_type="application/xml")
            if suffix == ".svc":
                if self._app_user(request):
                    return "forbidden", _problem(403, 403.1, "The authentication you provided does not have rights to perform that action.")
                return self._odata(request, tail)
            if tail == "":
                return "form", json_reply(self._form_json())
            if tail == "/fields":
                return "fields", json_reply(self._fields())
            restore = re.fullmatch(r"/submissions/([^/]+)/restore", tail)
            if restore and request.method == "POST":
                return "submission_restore", self._restore(restore.group(1))
            sub = re.fullmatch(r"/submissions/([^/]+)", tail)
            if sub and request.method == "PATCH":
                return "submission_patch", self._patch(sub.group(1), request)
            if sub and request.method == "DELETE":
                return "submission_delete", self._delete(sub.group(1))
        return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")

    def _login(self, request: Request) -> Reply:
        body = request.json() or {}
        if body.get("email") != self.email or body.get("password") != self.password:
            return _problem(401, 401.2, "Could not authenticate with the provided credentials.")
        token = secrets.token_urlsafe(48)
        with self.lock:
            self.tokens.add(token)
        now = datetime.now(timezone.utc)
        return json_reply({"createdAt": render.utc_iso(now), "expiresAt": render.utc_iso(now + timedelta(hours=24)), "token": token, "csrf": secrets.token_urlsafe(24)})

    def _app_user(self, request: Request) -> bool:
        return (request.headers.get("Authorization") or "") == f"Bearer {self.app_user_token}"

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :].strip()
        return token == self.app_user_token or token in self.tokens

    def _project(self) -> dict[str, Any]:
        return {"id": self.project_id, "name": "HTCDS sandbox", "description": "Generated cases", "archived": False, "keyId": None, "createdAt": "2015-01-01T00:00:00.000Z", "updatedAt": None}

    def _form_json(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "xmlFormId": self.form_id,
            "name": self.form_id,
            "version": self.settings.get("version"),
            "enketoId": "sandbox",
            "hash": hashlib.md5(self.xml.encode()).hexdigest(),
            "keyId": None,
            "state": "open",
            "publishedAt": "2015-01-01T00:00:00.000Z",
            "createdAt": "2015-01-01T00:00:00.000Z",
            "updatedAt": None,
        }

    def _fields(self) -> list[dict[str, Any]]:
        """Central's `/fields?odata=true`: one entry per node, structures and repeats included, in form order."""
        out = []
        stack: list[str] = []
        for row in self.survey:
            kind = str(row.get("type", "")).strip()
            name = str(row.get("name") or "")
            base, _, _ = kind.partition(" ")
            if base in ("end_group", "end_repeat", "end group", "end repeat"):
                stack.pop()
                continue
            path = "/" + "/".join(stack + [name])
            if base in ("begin_group", "begin_repeat", "begin group", "begin repeat"):
                out.append({"path": path, "name": name, "type": "repeat" if "repeat" in base else "structure", "binary": None, "selectMultiple": None})
                stack.append(name)
                continue
            if base == "note" or not name:
                continue
            xtype = {"integer": "int", "decimal": "decimal", "date": "date", "start": "dateTime", "end": "dateTime"}.get(base, "string")
            out.append({"path": path, "name": name, "type": xtype, "binary": None, "selectMultiple": True if base == "select_multiple" else None})
        out.append({"path": "/meta", "name": "meta", "type": "structure", "binary": None, "selectMultiple": None})
        out.append({"path": "/meta/instanceID", "name": "instanceID", "type": "string", "binary": None, "selectMultiple": None})
        return out

    def _patch(self, instance_id: str, request: Request) -> Reply:
        sub = self.state.submissions.get(instance_id)
        if sub is None or sub.deleted_at:
            return _problem(404, 404.1, "Could not find the resource you were looking for.")
        body = request.json() or {}
        if "reviewState" in body:
            state = body["reviewState"]
            if state not in ("approved", "hasIssues", "rejected", "edited", None):
                return _problem(400, 400.8, f"Unexpected reviewState value {state!r}.")
            self.set_review_state(sub.case_id, state)
        return json_reply(self._rest_submission(self.state.submissions[instance_id]))

    def _delete(self, instance_id: str) -> Reply:
        sub = self.state.submissions.get(instance_id)
        if sub is None or sub.deleted_at:
            return _problem(404, 404.1, "Could not find the resource you were looking for.")
        sub.deleted_at = render.utc_iso(datetime.now(timezone.utc))
        return json_reply({"success": True})

    def _restore(self, instance_id: str) -> Reply:
        """Central's restore: only a deleted (not yet purged) submission; `deletedAt` cleared, `updatedAt` untouched."""
        sub = self.state.submissions.get(instance_id)
        if sub is None or not sub.deleted_at:
            return _problem(404, 404.1, "Could not find the resource you were looking for.")
        sub.deleted_at = None
        return json_reply({"success": True})

    def _rest_submission(self, sub: _Submission) -> dict[str, Any]:
        return {
            "instanceId": sub.instance_id,
            "submitterId": int(SUBMITTER_ID),
            "deviceId": None,
            "createdAt": sub.submission_date,
            "updatedAt": sub.updated_at,
            "reviewState": sub.review_state,
            "deletedAt": sub.deleted_at,
        }

    # -- OData --------------------------------------------------------------------------------------

    def _service_root(self, request: Request) -> str:
        return f"http://{request.host}/v1/projects/{self.project_id}/forms/{self.form_id}.svc"

    def _odata(self, request: Request, tail: str) -> tuple[str, Reply]:
        root = self._service_root(request)
        if tail in ("", "/"):
            value = [{"name": "Submissions", "kind": "EntitySet", "url": "Submissions"}]
            value += [{"name": "Submissions." + r.replace("/", "."), "kind": "EntitySet", "url": "Submissions." + r.replace("/", ".")} for r in self.form.repeats]
            return "odata_service", json_reply({"@odata.context": f"{root}/$metadata", "value": value}, content_type=ODATA_JSON, headers={"OData-Version": "4.0"})
        if tail == "/$metadata":
            return "odata_metadata", Reply(body=self._metadata().encode(), content_type="application/xml")
        if tail == "/Submissions":
            return "odata_submissions", self._submissions_table(request, root)
        match = re.fullmatch(r"/Submissions\.([\w.]+)", tail)
        if match:
            repeat = match.group(1).replace(".", "/")
            if repeat not in self.form.repeats:
                return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
            rows = [row for iid in self.state.order for row in self._repeat_rows(self.state.submissions[iid], repeat, only_live=True)]
            return "odata_repeat_table", self._table_reply(request, root, f"Submissions.{match.group(1)}", rows, key="repeatId")
        match = re.fullmatch(r"/Submissions\('([^']+)'\)((?:/[\w]+)*)", tail)
        if match:
            sub = self.state.submissions.get(match.group(1))
            if sub is None or sub.deleted_at:
                return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
            nav = match.group(2).strip("/")
            if not nav:
                row = self._row(sub, expand=request.query.get("$expand") == "*")
                return "odata_submission", json_reply({"@odata.context": f"{root}/$metadata#Submissions", "value": [row]}, content_type=ODATA_JSON)
            if nav not in self.form.repeats:
                return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")
            rows = self._repeat_rows(sub, nav, only_live=False)
            return "odata_repeat", self._table_reply(request, root, "Submissions." + nav.replace("/", "."), rows, key="repeatId", link_base=f"Submissions('{sub.instance_id}')/{nav}")
        return "not_found", _problem(404, 404.1, "Could not find the resource you were looking for.")

    def _submissions_table(self, request: Request, root: str) -> Reply:
        query = request.query
        if "$orderby" in query and not self.version_at_least(2024, 1):
            return _problem(501, 501.1, "The requested feature $orderby is not supported by this server.")
        if "$orderby" in query and "$skiptoken" in query:
            return _problem(501, 501.1, "The requested feature using $orderby and $skiptoken together is not supported by this server.")
        text = query.get("$filter") or ""
        for field_name, since in (("__system/deletedAt", (2024, 3)), ("__id", (2025, 3))):
            at = text.find(field_name)
            if at >= 0 and not self.version_at_least(*since):
                return _problem(501, 501.5, f"The given OData filter expression references fields not supported by this server: {field_name} at {at}")
        try:
            predicate = parse_filter(text) if text else None
            order = parse_orderby(query.get("$orderby", "")) if query.get("$orderby") else None
        except FilterError as exc:
            return _problem(501, 501.4, f"The given OData filter expression uses features not supported by this server: {exc}")
        include_deleted = "__system/deletedAt" in text

        def matches(sub: _Submission) -> bool:
            if not include_deleted and sub.deleted_at is not None:
                return False
            return predicate is None or bool(predicate(lambda name: self._system_value(sub, name)))

        token = query.get("$skiptoken")
        cursor_key: tuple[str, int] | None = None
        if token:
            try:
                wanted = json.loads(base64.b64decode(token[2:]).decode())["instanceId"] if token.startswith("01") else None
            except (ValueError, KeyError, TypeError):
                wanted = None
            if wanted is None:
                return _problem(400, 400.35, "Invalid $skiptoken")
            cursor = self.state.submissions.get(wanted)  # deleted or not: Central joins on it regardless
            cursor_key = (cursor.submission_date, cursor.seq) if cursor is not None else ("", -1)  # unknown: nothing is older
        window = _page_window(query, self.page_size)
        try:
            expand = query.get("$expand") == "*"
            if window is not None and not order:  # the page (after any $skip) and one row more say all _table_reply needs
                subs = list(itertools.islice(filter(matches, self.state.newest_first(cursor_key)), window))
                return self._table_reply(request, root, "Submissions", subs, key="instanceId", convert=lambda s: self._row(s, expand=expand), database_paged=True)
            walk = self._ordered_walk(text, order) if window is not None and order and cursor_key is None else None
            if walk is not None:  # ordered by a date the filter bounds from below: walk its index from the bound
                subs = list(itertools.islice(filter(matches, walk), window))
                return self._table_reply(request, root, "Submissions", subs, key="instanceId", convert=lambda s: self._row(s, expand=expand), database_paged=True)
            subs = [s for s in (self.state.submissions[iid] for iid in self.state.order) if matches(s)]
        except FilterError as exc:
            return _problem(501, 501.4, f"The given OData filter expression uses features not supported by this server: {exc}")
        if cursor_key is not None:
            subs = [s for s in subs if (s.submission_date, s.seq) < cursor_key]
        if order:
            subs.sort(key=lambda s: s.seq)
            for path, descending in reversed(order):
                subs.sort(key=lambda s, p=path, d=descending: _sort_key(self._system_value(s, p), d), reverse=descending)
        else:
            subs.sort(key=lambda s: (s.submission_date, s.seq), reverse=True)
        expand = query.get("$expand") == "*"
        return self._table_reply(request, root, "Submissions", subs, key="instanceId", convert=lambda s: self._row(s, expand=expand), database_paged=True)

    def _ordered_walk(self, text: str, order: list[tuple[str, bool]]) -> Iterator[_Submission] | None:
        """The submissions from the filter's lower bound on a date, in `$orderby` order, when the query
        is `$filter=<date> ge|gt X [and ...]&$orderby=<date> asc` (the connector's incremental feed):
        Central answers it from the index on that column, so a page costs its own rows, not the table's.
        Rows with no such date cannot pass a `ge`/`gt` filter, and `matches` still checks every
        condition, so this changes the cost, never the answer. None when the query is not of that shape."""
        if len(order) != 1 or order[0][1] or order[0][0] not in _INDEXED_DATES:
            return None
        path = order[0][0]
        try:
            tokens = _tokenize(text)
        except FilterError:
            return None
        if any(t == ("word", "or") or t == ("word", "not") for t in tokens):
            return None
        bounds = [_parse_moment(tokens[i + 2][1]) for i in range(len(tokens) - 2)
                  if tokens[i] == ("word", path) and tokens[i + 1] in (("word", "ge"), ("word", "gt")) and tokens[i + 2][0] == "dt"]
        if not bounds:
            return None
        moments, subs = self.state.by_date(path)
        start = bisect_left(moments, max(bounds))
        return (subs[i] for i in range(start, len(subs)))

    def _table_reply(
        self,
        request: Request,
        root: str,
        entity: str,
        rows: list[Any],
        *,
        key: str,
        convert: Callable[[Any], dict] | None = None,
        database_paged: bool = False,
        link_base: str | None = None,
    ) -> Reply:
        """One OData page: `rows` is every matching row (for Submissions, already after the `$skiptoken`)."""
        query = request.query
        try:
            top = int(query["$top"]) if "$top" in query else self.page_size
            skip = int(query.get("$skip", 0)) if "$skiptoken" not in query else 0
        except ValueError:
            return _problem(400, 400.11, "Expected an integer for $top / $skip.")
        if entity != "Submissions" and query.get("$filter"):
            try:
                predicate = parse_filter(query["$filter"])
            except FilterError as exc:
                return _problem(501, 501.4, f"The given OData filter expression uses features not supported by this server: {exc}")
            rows = [r for r in rows if predicate(lambda name, r=r: r.get(name))]
        total = len(rows)
        start = skip
        token = query.get("$skiptoken")
        if token and not database_paged:
            try:
                wanted = json.loads(base64.b64decode(token[2:]).decode())["repeatId"]
            except (ValueError, KeyError, json.JSONDecodeError):
                return _problem(400, 400.35, "Invalid $skiptoken")
            ids = [r["__id"] for r in rows]
            if wanted not in ids:
                return _problem(400, 400.34, "Record associated with the provided $skiptoken not found.")
            start = ids.index(wanted) + 1
        page = rows[start:] if top is None else rows[start : start + top]
        values = [convert(r) for r in page] if convert else page
        selected = query.get("$select")
        if selected:
            keep = [s.strip() for s in selected.split(",")]
            values = [{k: v for k, v in row.items() if k in keep or k.split("@")[0] in keep} for row in values]
        body: dict[str, Any] = {"@odata.context": f"{root}/$metadata#{entity}"}
        # Central: remaining = (matching rows after the skiptoken, or all of them) - rows sent; the
        # offset of a `$skip` is not subtracted (lib/formats/odata.js, lib/resources/odata.js).
        remaining = (total - len(page)) if database_paged else (total - start - len(page))
        if top is not None and remaining > 0 and page:
            params = [(k, v) for k, v in _ordered_query(request.raw_query) if k not in ("$skip", "$skiptoken")]
            last = page[-1]
            last_id = last.instance_id if key == "instanceId" else last["__id"]
            params.append(("$skiptoken", "01" + base64.b64encode(json.dumps({key: last_id}, separators=(",", ":")).encode()).decode()))
            base = f"{root}/{link_base or entity}"
            body["@odata.nextLink"] = f"{base}?{urlencode(params)}"
        if str(query.get("$count", "")).lower() == "true":
            body["@odata.count"] = total
        body["value"] = values
        return json_reply(body, content_type=ODATA_JSON, headers={"OData-Version": "4.0"})

    def _system_value(self, sub: _Submission, name: str) -> Any:
        name = name.removeprefix("$root/Submissions/")
        if name == "__id":
            return sub.instance_id
        if name.startswith("__system/"):
            return self._system(sub).get(name[len("__system/") :])
        raise FilterError(f"only __id and __system fields can be filtered, not {name}")

    def _system(self, sub: _Submission) -> dict[str, Any]:
        return {
            "submissionDate": sub.submission_date,
            "updatedAt": sub.updated_at,
            "deletedAt": sub.deleted_at,
            "submitterId": SUBMITTER_ID,
            "submitterName": SUBMITTER_NAME,
            "attachmentsPresent": 0,
            "attachmentsExpected": 0,
            "status": sub.status,
            "reviewState": sub.review_state,
            "deviceId": None,
            "edits": sub.edits,
            "formVersion": sub.form_version,
        }

    def _row(self, sub: _Submission, *, expand: bool) -> dict[str, Any]:
        """A submission as Central's OData shows it: groups nested, repeats as links (or inline with `$expand=*`)."""
        row: dict[str, Any] = {"__id": sub.instance_id}
        if sub.status is not None:  # encrypted and not decrypted: no data at all (lib/data/odata.js)
            row["__system"] = self._system(sub)
            return row
        for path, value in sub.answers.items():
            parts = path.split("/")
            node = row
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            name = parts[-1]
            if isinstance(value, list):
                if not value:
                    continue
                if expand:
                    node[name] = [self._repeat_value(sub, path, i, child) for i, child in enumerate(value)]
                else:
                    node[f"{name}@odata.navigationLink"] = f"Submissions('{sub.instance_id}')/{path}"
                continue
            node[name] = self._typed(path, value)
        row["meta"] = {"instanceID": sub.instance_id}
        row["__system"] = self._system(sub)
        return row

    def _typed(self, path: str, value: Any) -> Any:
        if value is None or value == "":
            return None
        if path in self.int_paths or path in self.num_paths:
            try:
                return int(value) if path in self.int_paths else float(value)
            except (TypeError, ValueError):
                return value  # Central's handling of a non-number in a number field is not documented: keep the text
        return value

    def _repeat_value(self, sub: _Submission, path: str, index: int, child: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in child.items():
            parts = key.split("/")
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            if value not in (None, ""):
                node[parts[-1]] = self._typed(f"{path}/{key}", value)
        out["__id"] = _repeat_id(sub.instance_id, path, index)
        return out

    def _repeat_rows(self, sub: _Submission, repeat: str, *, only_live: bool) -> list[dict[str, Any]]:
        if only_live and sub.deleted_at is not None:
            return []
        children = sub.answers.get(repeat) or []
        rows = []
        for i, child in enumerate(children):
            row = self._repeat_value(sub, repeat, i, child)
            row["__Submissions-id"] = sub.instance_id
            rows.append(row)
        return rows

    def _metadata(self) -> str:
        props = "".join(f'<Property Name="{f.name}" Type="Edm.String"/>' for f in self.form.fields if f.repeat is None and "/" not in f.path)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
            f'<edmx:DataServices><Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="org.opendatakit.user.{self.form_id}">'
            f'<EntityType Name="Submissions"><Key><PropertyRef Name="__id"/></Key><Property Name="__id" Type="Edm.String"/>{props}</EntityType>'
            "</Schema></edmx:DataServices></edmx:Edmx>"
        )


_INDEXED_DATES = ("__system/submissionDate", "__system/updatedAt")


def _date_of(sub: _Submission, name: str) -> str | None:
    return sub.submission_date if name == "submissionDate" else sub.updated_at


def _repeat_id(instance_id: str, path: str, index: int) -> str:
    return hashlib.sha1(f"{instance_id}/{path}/{index}".encode()).hexdigest()


def _ordered_query(raw_query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw_query, keep_blank_values=True)


def _sort_key(value: Any, descending: bool) -> tuple:
    # PostgreSQL: NULLS LAST ascending, NULLS FIRST descending; `reverse=` flips both, so nulls sort high.
    return (value is None, value if value is not None else "")


def _problem(status: int, code: float, message: str) -> Reply:
    return json_reply({"code": code, "message": message}, status=status)


# -- the $filter subset ----------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter the sandbox (like Central) does not support."""


_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'(?:[^']|'')*')|(?P<dt>\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_$][\w$/.-]*))"
)
_OPS = {"eq", "ne", "lt", "le", "gt", "ge"}


def _page_window(query: dict[str, str], page_size: int | None) -> int | None:
    """How many matching rows, in order, a page needs: `$skip` + `$top` + 1; None when it needs them
    all (`$count=true`, no page size) or the numbers are bad (the full path then answers the error)."""
    if str(query.get("$count", "")).lower() == "true":
        return None
    try:
        top = int(query["$top"]) if "$top" in query else page_size
        skip = int(query.get("$skip", 0)) if "$skiptoken" not in query else 0
    except ValueError:
        return None
    if top is None or top < 0 or skip < 0:
        return None
    return skip + top + 1


def parse_filter(text: str) -> Callable[[Callable[[str], Any]], bool]:
    """Compile an OData `$filter` with eq/ne/lt/le/gt/ge, and/or/not, parentheses, strings, numbers, dates, null."""
    tokens = _tokenize(text)
    pos = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal pos
        if pos >= len(tokens):
            raise FilterError("unexpected end of filter")
        pos += 1
        return tokens[pos - 1]

    def expr_or() -> Callable:
        left = expr_and()
        while peek() == ("word", "or"):
            take()
            right = expr_and()
            left = (lambda a, b: lambda get: a(get) or b(get))(left, right)
        return left

    def expr_and() -> Callable:
        left = expr_not()
        while peek() == ("word", "and"):
            take()
            right = expr_not()
            left = (lambda a, b: lambda get: a(get) and b(get))(left, right)
        return left

    def expr_not() -> Callable:
        if peek() == ("word", "not"):
            take()
            inner = expr_not()
            return lambda get: not inner(get)
        return comparison()

    def comparison() -> Callable:
        if peek() == ("lp", "("):
            take()
            inner = expr_or()
            if take() != ("rp", ")"):
                raise FilterError("missing )")
            return inner
        left = operand()
        kind, op = take()
        if kind != "word" or op not in _OPS:
            raise FilterError(f"expected a comparison operator, got {op!r}")
        right = operand()
        return lambda get: _compare(left(get), op, right(get))

    def operand() -> Callable:
        kind, value = take()
        if kind == "str":
            text_value = value[1:-1].replace("''", "'")
            return lambda get: text_value
        if kind == "dt":
            moment = _parse_moment(value)
            return lambda get: moment
        if kind == "num":
            number = float(value)
            return lambda get: number
        if kind == "word":
            if value == "null":
                return lambda get: None
            if value in ("true", "false"):
                return lambda get: value == "true"
            if "(" in value:
                raise FilterError(f"function {value} not supported")
            return lambda get: get(value)
        raise FilterError(f"unexpected {value!r}")

    result = expr_or()
    if pos != len(tokens):
        raise FilterError(f"unexpected {tokens[pos][1]!r}")
    return result


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise FilterError(f"cannot read filter at {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))  # type: ignore[arg-type]
        if kind == "word" and pos < len(text) and text[pos] == "(" and match.group(kind) not in ("and", "or", "not"):
            raise FilterError(f"function {match.group(kind)}() not supported")
    return tokens


def _parse_moment(text: str) -> datetime:
    value = text.replace("Z", "+00:00")
    moment = datetime.fromisoformat(value) if "T" in value else datetime.fromisoformat(value + "T00:00:00+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return (left is None) != (right is None)
        return False  # SQL: a comparison with NULL is not true
    if isinstance(right, datetime) and isinstance(left, str):
        left = _parse_moment(left)
    if isinstance(left, datetime) and isinstance(right, str):
        right = _parse_moment(right)
    if isinstance(right, float) and isinstance(left, str):
        try:
            left = float(left)
        except ValueError:
            return False
    try:
        return {"eq": left == right, "ne": left != right, "lt": left < right, "le": left <= right, "gt": left > right, "ge": left >= right}[op]
    except TypeError:
        return False


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """`$orderby` clauses as (path, descending); only `__id` and `__system/*` can be ordered by."""
    out = []
    for clause in text.split(","):
        parts = clause.split()
        if not parts:
            continue
        if not (parts[0] == "__id" or parts[0].startswith("__system/")):
            raise FilterError(f"cannot order by {parts[0]}")
        out.append((parts[0], len(parts) > 1 and parts[1].lower() == "desc"))
    return out


# -- start -----------------------------------------------------------------------------------------


class OdkSandboxHandle(FormServerHandle):
    """`start_odk_sandbox`'s handle: url, credentials and ids for a config, faults, counts, state changes."""

    app: OdkCentralApp

    @property
    def email(self) -> str:
        return self.app.email

    @property
    def password(self) -> str:
        return self.app.password

    @property
    def app_user_token(self) -> str:
        return self.app.app_user_token

    @property
    def project_id(self) -> int:
        return self.app.project_id

    @property
    def form_id(self) -> str:
        return self.app.form_id

    def set_review_state(self, case_id: str, state: str | None, at: datetime | None = None) -> None:
        self.app.set_review_state(case_id, state, at)

    def set_encrypted(self, case_id: str, status: str = "notDecrypted") -> None:
        self.app.set_encrypted(case_id, status)

    def expire_sessions(self) -> None:
        self.app.expire_sessions()

    def config_options(self, password_env: str = "ODK_PASSWORD") -> dict[str, Any]:
        """Source options for a job config pointing at this sandbox (the password itself goes in `password_env`)."""
        return {"url": self.url, "project_id": self.project_id, "form_id": self.form_id, "email": self.email, "password_env": password_env}


def start_odk_sandbox(
    cases: Iterable[Any],
    *,
    port: int = 0,
    page_size: int | None = None,
    variant: str = "partner",
    transform: Callable[[Any, dict], dict] | None = None,
    password: str | None = None,
    server_version: str = "v2026.2.2",
) -> OdkSandboxHandle:
    """Serve `cases` as an ODK Central project (id 1) with the HTCDS form on 127.0.0.1:`port`.

    `page_size` caps pages when a client sends no `$top` (Central itself has no cap); `variant`
    "partner" (default, with repeats) or "htcds" (the published form as is); `transform(case,
    answers)` may change a case's answers before they are served (bad input for tests);
    `password` fixes the web user's password (default: a random one, read it from the handle);
    `server_version` (e.g. "v2024.2.1") makes it answer as that older Central does (see above).
    """
    app = OdkCentralApp(list(cases), page_size=page_size, variant=variant, transform=transform, password=password, server_version=server_version)
    handle = serve(app, port)
    handle.__class__ = OdkSandboxHandle
    return handle  # type: ignore[return-value]
