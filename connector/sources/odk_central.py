"""ODK Central: submissions of one form, pulled incrementally over the OData feed.

    source = OdkCentralSource(config, job)      # options: url, project_id, form_id, email + password or token
    for page in source.pages(cursor): ...

Auth: a web user's session (`POST /v1/sessions` with email and a password secret reference; the
session is renewed once when it expires mid-run) or a bearer token (an app user's or API token).

Incremental pulls use three keyset passes over `Submissions`, each ordered by its own timestamp,
so that every page's cursor covers exactly what was read (a crash loses nothing, a re-run skips
nothing):

1. new submissions: `$filter=__system/submissionDate ge S`, `$orderby=__system/submissionDate`;
2. edited or reviewed ones: `__system/updatedAt ge U` (Central sets updatedAt on edits and on
   review-state changes);
3. deleted ones: `__system/deletedAt ge D` (Central only shows soft-deleted submissions when the
   filter names `deletedAt`), `$select=__id,__system`: they become deletes.

Each pass pages with `$top` and a fresh `$filter` from the last timestamp seen (`ge` plus the ids
already seen at exactly that timestamp), rather than by the server's `@odata.nextLink`: with
`$orderby` Central pages by `$skip`, which skips a row whenever an edit moves one out of the
window mid-run. The cursor is `{"submitted": {"at", "ids"}, "updated": ..., "deleted": ...}`.
On the first run (no cursor) passes 2 and 3 start at the newest timestamp pass 1 saw: anything
edited or deleted later carries a later timestamp.

Repeats: `repeats: expand` (default) asks for `$expand=*` (one request per page); `repeats: tables`
reads each submission's repeat rows from their own OData table (`Submissions('id')/rep`, joined
back by `__Submissions-id`; a row whose parent is not that submission is dropped and counted).
Review states in `skip_review_states` (default: rejected) become deletes, so a submission
rejected after it was stored leaves the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, model_validator

from connector.records import Page, Problem, RawRecord
from connector.secrets import Secret, SecretMissing
from connector.sources import register
from connector.sources.base import FieldInfo, Source, SourceAuthError, SourceError, SourceOptions
from connector.sources.http import HttpClient
from connector.sources.keyset import Mark as KeysetMark
from connector.sources.keyset import keyset_pass
from connector.sources.xlsform import (
    FlattenStats,
    FormDefinition,
    apply_renames,
    check_mapping_against_form,
    flatten_answers,
    form_from_odk_fields,
    form_from_xform,
)

log = logging.getLogger(__name__)
SKIP_KEYS = frozenset({"__id", "__system", "meta", "__Submissions-id"})


@dataclass(frozen=True)
class URLs:
    """Every Central endpoint this module touches, relative to the server root."""

    sessions: str = "v1/sessions"
    form: str = "v1/projects/{project_id}/forms/{form_id}"
    form_xml: str = "v1/projects/{project_id}/forms/{form_id}.xml"
    fields: str = "v1/projects/{project_id}/forms/{form_id}/fields"
    service: str = "v1/projects/{project_id}/forms/{form_id}.svc"
    submissions: str = "v1/projects/{project_id}/forms/{form_id}.svc/Submissions"


URLS = URLs()


class OdkCentralOptions(SourceOptions):
    url: str = Field(description="Central server, e.g. https://central.example.org")
    project_id: int = Field(ge=1)
    form_id: str = Field(min_length=1, description="the form's xmlFormId")
    email: str | None = Field(None, description="web user for session login (with `password`)")
    password: Secret | None = None
    token: Secret | None = Field(None, description="app user or API bearer token, instead of email + password")
    page_size: int = Field(1000, ge=1, le=100_000, description="rows per OData request ($top)")
    skip_review_states: list[str] = Field(default_factory=lambda: ["rejected"], description="review states treated as deleted")
    repeats: Literal["expand", "tables"] = "expand"
    rename: dict[str, str] = Field(default_factory=dict, description="the form's names -> the names the mapping expects")
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    verify_tls: bool = True

    @model_validator(mode="after")
    def _credentials(self) -> "OdkCentralOptions":
        if self.token is None and (self.email is None or self.password is None):
            raise ValueError("give `email` and `password_env`/`password_file`, or `token_env`/`token_file` (an app user or API token)")
        return self


class Mark(KeysetMark):
    """A keyset mark over Central's timestamps, compared as instants (their string forms vary)."""

    def key(self, at: Any) -> Any:
        return _instant(at)


PASSES = (("submitted", "__system/submissionDate"), ("updated", "__system/updatedAt"), ("deleted", "__system/deletedAt"))


def incremental_query(field_path: str, mark: Mark, *, top: int, skip: int = 0, expand: bool = False, ids_only: bool = False) -> dict[str, str]:
    """OData parameters for one keyset request of a pass (a test can call this on its own)."""
    params: dict[str, str] = {}
    if mark.at is not None:
        params["$filter"] = f"{field_path} ge {mark.at}"
    elif field_path != "__system/submissionDate":
        params["$filter"] = f"{field_path} ne null"
    params["$orderby"] = f"{field_path} asc"
    params["$top"] = str(top)
    if skip:
        params["$skip"] = str(skip)
    if expand:
        params["$expand"] = "*"
    if ids_only:
        params["$select"] = "__id,__system"
    return params


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@register
class OdkCentralSource(Source):
    type_name = "odk_central"
    Options = OdkCentralOptions
    full_snapshot = False

    def __init__(self, config: Any, job: Any):
        super().__init__(config, job)
        self.opts: OdkCentralOptions = self.options  # type: ignore[assignment]
        self.where = f"source {self.id} (odk_central {self.opts.form_id})"
        self._token: str | None = None
        self._client: HttpClient | None = None
        self._form: FormDefinition | None = None
        self.flatten_stats = FlattenStats()
        self._delivered: dict[str, str | None] | None = None

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def client(self) -> HttpClient:
        if self._client is None:
            base = self.opts.url.rstrip("/")
            base = base[: -len("/v1")] if base.endswith("/v1") else base
            self._client = HttpClient(
                self.where,
                base,
                stats=self.stats,
                auth_headers=self._auth_headers,
                reauthenticate=self._relogin if self.opts.token is None else None,
                timeout=self.opts.timeout,
                max_retries=self.opts.max_retries,
                verify=self.opts.verify_tls,
            )
        return self._client

    def _path(self, template: str) -> str:
        return template.format(project_id=self.opts.project_id, form_id=quote(self.opts.form_id, safe=""))

    def _auth_headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self._read_token() if self.opts.token is not None else self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _read_token(self) -> str:
        try:
            return self.opts.token.get()  # type: ignore[union-attr]
        except SecretMissing as exc:
            raise SourceAuthError(self.where, f"token: {exc}") from None

    def _login(self) -> str:
        try:
            password = self.opts.password.get()  # type: ignore[union-attr]
        except SecretMissing as exc:
            raise SourceAuthError(self.where, f"password: {exc}") from None
        body = self.client.request_json("POST", URLS.sessions, what="login (POST /v1/sessions)", json_body={"email": self.opts.email, "password": password}, auth=False)
        token = body.get("token") if isinstance(body, dict) else None
        if not token:
            raise SourceAuthError(self.where, "login answered without a session token")
        return str(token)

    def _relogin(self) -> bool:
        """A session expired mid-run: log in again once (the HTTP client then retries the request)."""
        log.info("%s: session expired; logging in again", self.where)
        self._token = self._login()
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- form -----------------------------------------------------------------------------------------

    def form(self, refresh: bool = False) -> FormDefinition:
        """The published form: labels and choices from the XForm, questions from `/fields?odata=true`."""
        if self._form is None or refresh:
            xml = self.client.get_text(self._path(URLS.form_xml), what=f"form {self.opts.form_id} definition (XML)")
            try:
                definition = form_from_xform(xml)
            except Exception as exc:  # an HTML page or a broken document
                raise SourceError(self.where, f"form {self.opts.form_id}: the form XML cannot be read ({type(exc).__name__}: {exc})") from None
            fields = self.client.get_json(self._path(URLS.fields), params={"odata": "true"}, what=f"form {self.opts.form_id} fields")
            if not isinstance(fields, list):
                raise SourceError(self.where, f"form {self.opts.form_id}: /fields did not answer a list")
            self._form = form_from_odk_fields(fields, definition=definition)
        return self._form

    def fields(self) -> list[FieldInfo]:
        renames = self.opts.rename
        return [FieldInfo(renames.get(f.name, f.name), f.label, f.type, f.choices) for f in self.form().field_infos()]

    def check(self) -> list[Problem]:
        try:
            self.client.get_json(self._path(URLS.form), what=f"form {self.opts.form_id}")
            form = self.form(refresh=True)
        except SourceAuthError as exc:
            return [Problem(self.where, str(exc).split(": ", 1)[-1], hint="check the email/password or token reference and the user's role on the project")]
        except SourceError as exc:
            return [Problem(self.where, str(exc).split(": ", 1)[-1], hint="check `url`, `project_id` and `form_id`")]
        return check_mapping_against_form(form, self.config.mapping, where=self.where, renames=self.opts.rename, base_dir=getattr(self.job, "base_dir", None))

    # -- records --------------------------------------------------------------------------------------

    def pages(self, cursor: str | None) -> Iterator[Page]:
        marks = _load_cursor(cursor, self.where)
        first_run = cursor is None
        # On the first run pass 1 reads everything; what it saw of updatedAt (and the newest of all
        # timestamps, for deletions) is where passes 2 and 3 start: a later change has a later time.
        seen = {"updatedAt": Mark(), "newest": Mark()}
        # Ids pass 1 delivered in this run, with their updatedAt: pass 2 need not deliver them again.
        self._delivered: dict[str, str | None] | None = None if first_run else {}
        number = 0
        for name, field_path in PASSES:
            if first_run and name != "submitted":
                start = seen["updatedAt"] if name == "updated" else Mark(seen["newest"].at, set())
                if start.at is not None:
                    marks[name] = start
                continue
            for records in self._pass(name, field_path, marks, seen):
                number += 1
                yield Page(records, _dump_cursor(marks), number)
        if first_run and number:
            number += 1
            yield Page([], _dump_cursor(marks), number)

    def _pass(self, name: str, field_path: str, marks: dict[str, Mark], seen: dict[str, Mark]) -> Iterator[list[RawRecord]]:
        mark = marks[name]
        top = self.opts.page_size
        expand = self.opts.repeats == "expand" and name != "deleted"
        stamp = field_path.split("/", 1)[1]

        def fetch(skip: int) -> tuple[list[Any], bool]:
            params = incremental_query(field_path, mark, top=top, skip=skip, expand=expand, ids_only=name == "deleted")
            body = self.client.get_json(self._path(URLS.submissions), params=params, what=f"form {self.opts.form_id} submissions ({name})")
            rows = body.get("value") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise SourceError(self.where, f"form {self.opts.form_id}: the OData feed answered without a `value` list")
            # Central adds a next link while rows remain (lib/util/odata.js `nextUrlFor`); it is not
            # followed (its `$skiptoken` cannot go with `$orderby`), only read as "more".
            return rows, bool(body.get("@odata.nextLink"))

        def locate(row: Any) -> tuple[Any, str] | None:
            if not isinstance(row, dict) or "__id" not in row:
                return None
            system = row.get("__system") or {}
            record_id = str(row["__id"])
            seen["updatedAt"].advance(system.get("updatedAt"), record_id)
            for moment in (system.get("submissionDate"), system.get("updatedAt"), system.get("deletedAt")):
                seen["newest"].advance(moment, record_id)
            return system.get(stamp), record_id

        def keep(row: dict[str, Any], at: Any, record_id: str) -> bool:
            delivered = self._delivered
            if delivered is not None:
                updated = (row.get("__system") or {}).get("updatedAt")
                if name == "updated" and record_id in delivered and delivered[record_id] == updated:
                    return False  # new since the last run and already delivered by pass 1 in this state
                if name == "submitted":
                    delivered[record_id] = updated
            return True

        for rows in keyset_pass(fetch, mark=mark, locate=locate, keep=keep, where=self.where):
            yield [self._record(row) for row in rows]

    def _record(self, row: dict[str, Any]) -> RawRecord:
        system = row.get("__system") or {}
        record_id = str(row["__id"])
        changed = system.get("deletedAt") or system.get("updatedAt") or system.get("submissionDate")
        updated_at = _instant(changed) if changed else None
        if system.get("deletedAt") or system.get("reviewState") in self.opts.skip_review_states:
            return RawRecord(record_id, {}, updated_at, deleted=True)
        if self.opts.repeats == "tables":
            row = self._join_repeats(record_id, row)
        fields = flatten_answers(row, skip=SKIP_KEYS, stats=self.flatten_stats)
        fields = apply_renames(fields, self.opts.rename)
        fields.update(
            {
                "_id": record_id,
                "_submission_time": system.get("submissionDate"),
                "_updated_at": system.get("updatedAt") or system.get("submissionDate"),
                "_submitted_by": system.get("submitterId"),
                "_review_state": system.get("reviewState"),
                "_form_version": system.get("formVersion"),
            }
        )
        return RawRecord(record_id, fields, updated_at)

    def _join_repeats(self, record_id: str, node: dict[str, Any]) -> dict[str, Any]:
        """Replace each `rep@odata.navigationLink` by the rows of that repeat's table, checked against the parent id."""
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.endswith("@odata.navigationLink") and isinstance(value, str):
                out[key[: -len("@odata.navigationLink")]] = self._repeat_rows(record_id, value)
            elif isinstance(value, dict):
                out[key] = self._join_repeats(record_id, value)
            else:
                out[key] = value
        return out

    def _repeat_rows(self, record_id: str, link: str) -> list[dict[str, Any]]:
        url: str | None = f"{self._path(URLS.service)}/{link}"
        rows: list[dict[str, Any]] = []
        while url:
            body = self.client.get_json(url, what=f"form {self.opts.form_id} record {record_id} repeat {link.rsplit('/', 1)[-1]}")
            for row in body.get("value", []) if isinstance(body, dict) else []:
                parent = row.get("__Submissions-id")
                if parent is not None and parent != record_id:
                    # A repeat row whose parent is another submission (or none): never join it to this one.
                    self.stats.extra["orphan_repeat_rows"] = self.stats.extra.get("orphan_repeat_rows", 0) + 1
                    log.warning("%s: record %s: repeat row %s has parent %s; dropped", self.where, record_id, row.get("__id"), parent)
                    continue
                rows.append(self._join_repeats(record_id, row))
            url = body.get("@odata.nextLink") if isinstance(body, dict) else None
        return rows


def _load_cursor(cursor: str | None, where: str) -> dict[str, Mark]:
    marks = {name: Mark() for name, _ in PASSES}
    if cursor is None:
        return marks
    try:
        data = json.loads(cursor)
    except ValueError:
        raise SourceError(where, "stored cursor is not JSON; reset the source's cursor to pull everything again") from None
    for name, _ in PASSES:
        marks[name] = Mark.from_json(data.get(name))
    return marks


def _dump_cursor(marks: dict[str, Mark]) -> str:
    return json.dumps({"v": 1, **{name: mark.to_json() for name, mark in marks.items()}}, separators=(",", ":"))
