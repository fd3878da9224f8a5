"""ODK Central: submissions of one form, pulled incrementally over the OData feed.

    source = OdkCentralSource(config, job)      # options: url, project_id, form_id, email + password or token
    for page in source.pages(cursor): ...

Auth: a web user's session (`POST /v1/sessions` with email and a password secret reference; the
session is renewed once when it expires mid-run) or a bearer token. The account needs the Project
Viewer role (`submission.read`): an app user's token reads the form but gets 403 on the feed, which
`check` finds by reading one row (`$top=1`).

Incremental pulls use three keyset passes over `Submissions`, each ordered by its own timestamp,
so that every page's cursor covers exactly what was read (a crash loses nothing, a re-run skips
nothing):

1. new submissions: `$filter=__system/submissionDate ge S`, `$orderby=__system/submissionDate`;
2. edited or reviewed ones: `__system/updatedAt ge U` (Central sets updatedAt on edits and on
   review-state changes);
3. deleted ones: `__system/deletedAt ge D` (Central only shows soft-deleted submissions when the
   filter names `deletedAt`), `$select=__id,__system`: they become deletes.

Each pass pages with `$top` and a fresh `$filter` from the last timestamp seen (`ge` plus the ids
already seen at exactly that timestamp), and a `$skip` only past rows already read at that
timestamp. Central's own `@odata.nextLink` is read only as "more rows match": it always carries a
`$skiptoken`, which Central refuses together with `$orderby` (501.1, central-backend
`lib/util/db.js`). On the first run (no cursor) passes 2 and 3 start at the newest timestamp pass 1
saw: anything edited or deleted later carries a later timestamp.

Restores: Central's restore clears `deletedAt` and leaves `updatedAt` alone, so no pass sees a
restored submission. After the passes the source lists the trash (`deletedAt ne null`,
`$select=__id`, paged by `$skiptoken`); an id that was in the trash at the last run, or deleted in
this one, and is not any more was restored or purged: it is read on its own (`Submissions('id')`;
404 means purged) and a restored one is delivered again. The cursor keeps the trash's ids.

Older servers (`check` prints the version from `/version.txt`): before v2024.3 the filter on
`deletedAt` answers 501, and the deleted and restore passes are skipped with a warning (deletions
are then not seen); before v2024.1 `$orderby` answers 501, and each pass reads its window newest
first by following the `$skiptoken` next links (stable under new submissions), moving its mark
only once the pass has read to the end. The minimum is v2023.4 (the first with `$skiptoken`).

Repeats: `repeats: expand` (default) asks for `$expand=*` (one request per page); `repeats: tables`
reads each submission's repeat rows from their own OData table (`Submissions('id')/rep`, joined
back by the parent key `__Submissions-id`, `__Submissions-rep-id` for a nested repeat; a row whose
parent is not the row it is joined to is dropped and counted; the parent keys never reach the
fields). Review states in `skip_review_states` (default: rejected) become deletes. An encrypted
submission Central did not decrypt (`__system/status` `notDecrypted` or `missingEncryptedFormData`)
becomes a tombstone with a named rejection, not an empty case.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from connector.records import Page, Problem, RawRecord
from connector.secrets import Secret, SecretMissing
from connector.sources import register
from connector.sources.base import SourceAuthError, SourceError
from connector.sources.cursor import load_versioned, unreadable
from connector.sources.form_server import FormServerOptions, FormServerSource, message_of, utc
from connector.sources.http import SourceHttpError
from connector.sources.keyset import Mark as KeysetMark
from connector.sources.keyset import keyset_pass
from connector.sources.odk_central_api import CentralApi
from connector.sources.xlsform import FormDefinition, apply_renames, flatten_answers, form_from_odk_fields, form_from_xform

log = logging.getLogger(__name__)
SKIP_KEYS = frozenset({"__id", "__system", "meta", "__Submissions-id"})
PARENT_KEY = re.compile(r"^__Submissions(-.+)?-id$")  # `__Submissions-id`, `__Submissions-rep-id`, ...
ENCRYPTED = ("notDecrypted", "missingEncryptedFormData")
CURSOR_VERSION = 2
MINIMUM_VERSION = (2023, 4)


class OdkCentralOptions(FormServerOptions):
    url: str = Field(description="Central server, e.g. https://central.example.org")
    project_id: int = Field(ge=1)
    form_id: str = Field(min_length=1, description="the form's xmlFormId")
    email: str | None = Field(None, description="web user for session login (with `password`)")
    password: Secret | None = None
    token: Secret | None = Field(None, description="app user or API bearer token, instead of email + password")
    page_size: int = Field(1000, ge=1, le=100_000, description="rows per OData request ($top)")
    skip_review_states: list[str] = Field(default_factory=lambda: ["rejected"], description="review states treated as deleted")
    repeats: Literal["expand", "tables"] = "expand"

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


def incremental_query(
    field_path: str, mark: Mark, *, top: int, skip: int = 0, expand: bool = False, ids_only: bool = False, ordered: bool = True
) -> dict[str, str]:
    """OData parameters for one keyset request of a pass (a test can call this on its own)."""
    params: dict[str, str] = {}
    if mark.at is not None:
        params["$filter"] = f"{field_path} ge {mark.at}"
    elif field_path != "__system/submissionDate":
        params["$filter"] = f"{field_path} ne null"
    if ordered:
        params["$orderby"] = f"{field_path} asc"
    params["$top"] = str(top)
    if skip:
        params["$skip"] = str(skip)
    if expand:
        params["$expand"] = "*"
    if ids_only:
        params["$select"] = "__id,__system"
    return params


def parse_version(text: str) -> tuple[int, int, int] | None:
    """Central's release from `/version.txt` (`versions:` then `<sha> (v2024.3.1)`), or None."""
    match = re.search(r"\(v(\d{4})\.(\d+)\.(\d+)[^)]*\)", text or "")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


_instant = utc


@register
class OdkCentralSource(FormServerSource):
    type_name = "odk_central"
    Options = OdkCentralOptions
    full_snapshot = False
    auth_hint = "check the email/password or token reference and the user's role on the project"
    where_hint = "check `url`, `project_id` and `form_id`"

    def __init__(self, config: Any, job: Any):
        super().__init__(config, job)
        self._token: str | None = None
        self._api: CentralApi | None = None
        self._delivered: dict[str, str | None] | None = None
        self._ordered = True

    @property
    def opts(self) -> OdkCentralOptions:
        return self.options  # type: ignore[return-value]

    @property
    def api(self) -> CentralApi:
        if self._api is None:
            self._api = CentralApi(self.client, project_id=self.opts.project_id, form_id=self.opts.form_id)
        return self._api

    # -- plumbing -----------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"source {self.id} (odk_central {self.opts.form_id})"

    def _base_url(self) -> str:
        base = self.opts.url.rstrip("/")
        return base[: -len("/v1")] if base.endswith("/v1") else base

    def _reauthenticate(self) -> Callable[[], bool] | None:
        return self._relogin if self.opts.token is None else None

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
        token = self.api.login(self.opts.email, password)
        if not token:
            raise SourceAuthError(self.where, "login answered without a session token")
        return token

    def _relogin(self) -> bool:
        """A session expired mid-run: log in again once (the HTTP client then retries the request)."""
        log.info("%s: session expired; logging in again", self.where)
        self._token = self._login()
        return True

    # -- form and check -------------------------------------------------------------------------------

    def _read_form(self) -> FormDefinition:
        """The published form: labels and choices from the XForm, questions from `/fields?odata=true`."""
        xml = self.api.form_xml()
        try:
            definition = form_from_xform(xml)
        except Exception as exc:  # an HTML page or a broken document
            raise SourceError(self.where, f"form {self.opts.form_id}: the form XML cannot be read ({type(exc).__name__}: {exc})") from None
        return form_from_odk_fields(self.api.fields(), definition=definition)

    def server_version(self) -> tuple[int, int, int] | None:
        """The Central release from `/version.txt`; None where the server does not serve it."""
        text = self.api.version_text()
        return parse_version(text) if text is not None else None

    def _check_server(self) -> list[Problem]:
        problems: list[Problem] = []
        version = self.server_version()
        if version is None:
            return [Problem(self.where, "server version unknown (no /version.txt)", "warning", hint="the connector needs ODK Central v2023.4 or later")]
        shown = "v{}.{}.{}".format(*version)
        if version[:2] < MINIMUM_VERSION:
            problems.append(Problem(self.where, f"ODK Central {shown} is older than v2023.4, the oldest this connector can page without losing records", hint="upgrade Central"))
        else:
            problems.append(Problem(self.where, f"ODK Central {shown}", "info"))
        if version[:2] < (2024, 3):
            problems.append(Problem(self.where, f"ODK Central {shown} cannot filter on deletedAt (v2024.3): deleted and restored submissions are not seen", "warning", hint="upgrade Central to v2024.3 or later"))
        if version[:2] < (2024, 1):
            problems.append(Problem(self.where, f"ODK Central {shown} cannot order the feed ($orderby, v2024.1): each run reads its window newest first", "warning"))
        return problems

    def _check_access(self) -> list[Problem]:
        try:
            self.api.form()
        except SourceError as exc:
            return [Problem(self.where, message_of(exc), hint=self.where_hint)]
        try:
            # One row of the feed: an app user's token reads the form but not the submissions.
            self.api.submissions({"$top": "1"})
        except SourceAuthError as exc:
            return [
                Problem(
                    self.where,
                    f"the account can read the form but not its submissions ({message_of(exc).split(';')[0]})",
                    hint=f"an app user's token cannot read submissions: create a web user with the Project Viewer role on project {self.opts.project_id} and use its email and password",
                )
            ]
        except SourceError as exc:
            return [Problem(self.where, message_of(exc), hint="the submissions feed could not be read")]
        return []

    # -- records --------------------------------------------------------------------------------------

    def pages(self, cursor: str | None) -> Iterator[Page]:
        state = _load_cursor(cursor, self.where)
        marks: dict[str, Mark] = state["marks"]
        trash: set[str] = state["trash"]
        first_run = cursor is None
        # On the first run pass 1 reads everything; what it saw of updatedAt (and the newest of all
        # timestamps, for deletions) is where passes 2 and 3 start: a later change has a later time.
        seen = {"updatedAt": Mark(), "newest": Mark()}
        # Ids pass 1 delivered in this run, with their updatedAt: pass 2 need not deliver them again.
        self._delivered = None if first_run else {}
        self._ordered = True
        deleted_now: set[str] = set()
        deletes_supported = True
        number = 0

        def dump() -> str:
            return _dump_cursor(marks, trash)

        for name, field_path in PASSES:
            if first_run and name != "submitted":
                start = seen["updatedAt"] if name == "updated" else Mark(seen["newest"].at, set())
                if start.at is not None:
                    marks[name] = start
                continue
            try:
                for records in self._pass(name, field_path, marks, seen):
                    if name == "deleted":
                        deleted_now.update(r.record_id for r in records)
                    number += 1
                    yield Page(records, dump(), number)
            except SourceHttpError as exc:
                if exc.status != 501 or name != "deleted":
                    raise
                deletes_supported = False
                self.stats.extra["deleted_pass_skipped"] = 1
                log.warning("%s: the server cannot filter on deletedAt (ODK Central before v2024.3): deleted and restored submissions are not seen", self.where)
        if deletes_supported:
            try:
                records, trash_now = self._restored(trash | deleted_now)
            except SourceHttpError as exc:
                if exc.status != 501:
                    raise
                deletes_supported = False
                self.stats.extra["deleted_pass_skipped"] = 1
                log.warning("%s: the server cannot filter on deletedAt (ODK Central before v2024.3): deleted and restored submissions are not seen", self.where)
            else:
                trash.clear()
                trash.update(trash_now)
                number += 1
                yield Page(records, dump(), number)
        if not deletes_supported and first_run and number:
            number += 1
            yield Page([], dump(), number)

    def _pass(self, name: str, field_path: str, marks: dict[str, Mark], seen: dict[str, Mark]) -> Iterator[list[RawRecord]]:
        mark = marks[name]
        top = self.opts.page_size
        expand = self.opts.repeats == "expand" and name != "deleted"
        stamp = field_path.split("/", 1)[1]

        def fetch(skip: int) -> tuple[list[Any], bool]:
            params = incremental_query(field_path, mark, top=top, skip=skip, expand=expand, ids_only=name == "deleted")
            page = self.api.submissions(params, what=f"submissions ({name})")
            # Central adds a next link while rows remain (lib/util/odata.js `nextUrlFor`); it is not
            # followed (its `$skiptoken` cannot go with `$orderby`), only read as "more".
            return page.rows, page.next_link is not None

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

        if self._ordered:
            try:
                for rows in keyset_pass(fetch, mark=mark, locate=locate, keep=keep, where=self.where):
                    yield [self._record(row) for row in rows]
                return
            except SourceHttpError as exc:
                if exc.status != 501 or "orderby" not in str(exc).lower():
                    raise
                self._ordered = False
                self.stats.extra["unordered"] = 1
                log.warning("%s: the server cannot order the feed (ODK Central before v2024.1); reading each pass newest first", self.where)
        yield from self._unordered_pass(name, field_path, marks, locate, keep, expand)

    def _unordered_pass(self, name: str, field_path: str, marks: dict[str, Mark], locate: Any, keep: Any, expand: bool) -> Iterator[list[RawRecord]]:
        """A pass without `$orderby` (servers before v2024.1): Central's default order, newest first,
        paged by the `$skiptoken` next links, which later inserts do not shift. The mark moves only
        after the last page (an empty page carries it): a crash mid-pass re-reads the window."""
        old = marks[name]
        new = Mark(old.at, set(old.ids))
        what = f"submissions ({name}, unordered)"
        page = self.api.submissions(incremental_query(field_path, old, top=self.opts.page_size, expand=expand, ids_only=name == "deleted", ordered=False), what=what)
        while True:
            kept = []
            for row in page.rows:
                located = locate(row)
                if located is None or old.seen(*located):
                    continue
                new.advance(*located)
                if keep(row, *located):
                    kept.append(row)
            if kept:
                yield [self._record(row) for row in kept]
            if page.next_link is None:
                break
            if "skiptoken" not in page.next_link:
                raise SourceError(self.where, "the server pages without $skiptoken (ODK Central before v2023.4): upgrade Central; reading on could lose records")
            page = self.api.follow(page.next_link, what=what)
        marks[name] = new
        yield []

    def _restored(self, candidates: set[str]) -> tuple[list[RawRecord], set[str]]:
        """The submissions restored since they were deleted, and the ids now in the trash (module docstring)."""
        trash: set[str] = set()
        page = self.api.submissions({"$filter": "__system/deletedAt ne null", "$select": "__id", "$top": str(self.opts.page_size)}, what="trash")
        while True:
            trash.update(str(r["__id"]) for r in page.rows if "__id" in r)
            if page.next_link is None:
                break
            page = self.api.follow(page.next_link, what="trash")
        records = []
        for instance_id in sorted(candidates - trash):
            row = self.api.submission(instance_id, expand=self.opts.repeats == "expand")
            if row is None:
                continue  # purged from the trash (404): it stays deleted
            records.append(self._record(row))
            self.stats.extra["restored"] = self.stats.extra.get("restored", 0) + 1
        return records, trash

    def _record(self, row: dict[str, Any]) -> RawRecord:
        system = row.get("__system") or {}
        record_id = str(row["__id"])
        changed = system.get("deletedAt") or system.get("updatedAt") or system.get("submissionDate")
        updated_at = _instant(changed) if changed else None
        if system.get("deletedAt") or system.get("reviewState") in self.opts.skip_review_states:
            return RawRecord(record_id, {}, updated_at, deleted=True)
        if system.get("status") in ENCRYPTED:
            reason = f"encrypted submission that ODK Central did not decrypt ({system['status']}): the OData feed has none of its answers; decrypt and export it in Central, or use a form without encryption"
            return RawRecord(record_id, {}, updated_at, unreadable=("__system/status", reason))
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

    def _join_repeats(self, record_id: str, node: dict[str, Any], parent_id: str | None = None) -> dict[str, Any]:
        """Replace each `rep@odata.navigationLink` by the rows of that repeat's table, checked against their parent."""
        parent_id = record_id if parent_id is None else parent_id
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.endswith("@odata.navigationLink") and isinstance(value, str):
                out[key[: -len("@odata.navigationLink")]] = self._repeat_rows(record_id, value, parent_id)
            elif isinstance(value, dict):
                out[key] = self._join_repeats(record_id, value, parent_id)
            elif not PARENT_KEY.match(key):
                out[key] = value
        return out

    def _repeat_rows(self, record_id: str, link: str, parent_id: str) -> list[dict[str, Any]]:
        what = f"record {record_id} repeat {link.rsplit('/', 1)[-1]}"
        page = self.api.repeat(link, what=what)
        rows: list[dict[str, Any]] = []
        while True:
            for row in page.rows:
                parents = [row[k] for k in row if PARENT_KEY.match(k)]
                if any(parent != parent_id for parent in parents):
                    # A repeat row whose parent is another submission or repeat row: never join it here.
                    self.stats.extra["orphan_repeat_rows"] = self.stats.extra.get("orphan_repeat_rows", 0) + 1
                    log.warning("%s: record %s: repeat row %s has parent %s; dropped", self.where, record_id, row.get("__id"), parents[0])
                    continue
                rows.append(self._join_repeats(record_id, row, str(row.get("__id")) if row.get("__id") is not None else parent_id))
            if page.next_link is None:
                return rows
            page = self.api.follow(page.next_link, what=what)


def _load_cursor(cursor: str | None, where: str) -> dict[str, Any]:
    """Read a stored cursor (version 1 had no trash list: restores are seen from the next run on)."""
    marks = {name: Mark() for name, _ in PASSES}
    if cursor is None:
        return {"marks": marks, "trash": set()}
    data = load_versioned(cursor, where, (1, CURSOR_VERSION))
    try:
        for name, _ in PASSES:
            item = data.get(name)
            if item is not None and not isinstance(item, dict):
                raise TypeError(name)
            marks[name] = Mark.from_json(item)
        trash = {str(i) for i in data.get("trash") or ()}
    except (TypeError, ValueError) as exc:
        raise unreadable(where, f"{type(exc).__name__} in its content") from None
    return {"marks": marks, "trash": trash}


def _dump_cursor(marks: dict[str, Mark], trash: set[str]) -> str:
    return json.dumps({"v": CURSOR_VERSION, **{name: mark.to_json() for name, mark in marks.items()}, "trash": sorted(trash)}, separators=(",", ":"))
