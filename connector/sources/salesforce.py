"""Salesforce source: cases of an HTCDS org, each joined with its victim, perpetrators, events and plans.

    sources:
      - id: sf-main
        type: salesforce
        mapping: salesforce_htcds
        options:
          login_url: https://ngo.my.salesforce.com      # or domain: test (sandbox org)
          auth: jwt                                      # jwt | client_credentials | password
          client_id: 3MVG9...                            # the connected app's consumer key
          username: integration@ngo.org
          private_key_file: secrets/sf-jwt.key

One raw record per Case (record id = Case Id): the Case's fields, `Contact` (the victim, nested),
`Owner` (`{"Name"}`), and the lists `perpetrators` (Connected Person or Organisation rows),
`events` (Event and Task rows: type, country, city, date; deleted rows left out) and `support_plans`.
A perpetrator row carries its person's gender, birth date and nationality under `Connected_Contact`
(read through the Connected Contact lookup). Field names are the
package's conventional API names whatever the org calls them (`field_names` + describe).

Incremental by `SystemModstamp` (or `LastModifiedDate`), ordered by it then Id, with a lookback; the
window is closed at the org's clock when the run starts so that a cursor never passes a change
made during the run. Changes to a victim Contact or to a child row do not touch the Case's stamp,
so each incremental run first asks every related object what changed and re-reads those cases.
Deleted cases come from `queryAll` (IsDeleted) and become deletes.

Small pulls use REST `queryAll` with child subqueries (one call per batch of up to 2,000 rows,
children counting toward the batch); pulls of `bulk_threshold` cases or more use Bulk API 2.0
query jobs (one job per object, children joined through a temporary SQLite file; no ORDER BY, which
disables PK chunking, so the case rows are put in cursor order in that file). Every HTTP call
is counted in `stats.requests`; the run stops cleanly before `max_api_share` of the org's daily API
allowance is spent. Transient failures (5xx, timeouts, concurrent-request limits, HTML pages) are
retried with exponential back-off and jitter (honouring Retry-After); an expired session is
renewed once; the rest fail with a message naming the object and field.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests
from pydantic import Field, field_validator
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import _Bulk2Client
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connector.records import Page, Problem, RawRecord
from connector.retry import backoff_delay, parse_retry_after
from connector.secrets import Secret
from connector.sources import register
from connector.sources.base import FieldInfo, Source, SourceAuthError, SourceError, SourceOptions
from connector.sources.salesforce_auth import AuthSettings, ConnectorAdapter, Token, login_base, request_token
from connector.sources.salesforce_bulk import CaseSpool, ChildStore, bulk_rows, typed_value
from connector.sources.salesforce_soql import (
    CHILD_ROLES,
    CONNECTED_PERSON_KEY,
    FIELDS,
    VICTIM_TYPE,
    Cursor,
    Layout,
    Window,
    case_query,
    cases_by_id_query,
    changed_children_query,
    changed_contacts_query,
    children_by_case_query,
    children_in_window_query,
    connected_person_relationship,
    count_query,
    orphan_contacts_query,
    parse_sf_datetime,
    soql_string,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
ID_CHUNK = 200  # Ids per `IN (...)`: keeps a GET query URI well under Salesforce's 16 KB


class SalesforceOptions(SourceOptions):
    """Options of a `type: salesforce` source. Secrets are references (`*_env`, `*_file`)."""

    login_url: str = Field("https://login.salesforce.com", description="login.salesforce.com, test.salesforce.com (sandbox orgs) or a My Domain URL")
    domain: str | None = Field(None, description="alternative to login_url: `login`, `test` or a My Domain prefix such as `ngo.my`")
    auth: Literal["jwt", "client_credentials", "password"] = "jwt"
    client_id: str = Field(description="the connected app's consumer key")
    client_secret: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    security_token: Secret | None = None
    private_key: Secret | None = Field(None, description="JWT signing key, usually `private_key_file: path/to/key.pem`")
    jwt_audience: str | None = None
    ca_file: Path | None = Field(None, description="extra CA bundle to trust (a proxy's or the sandbox's certificate)")
    api_version: str = "59.0"
    objects: dict[str, str] = Field(default_factory=dict, description="role -> object API name: case, contact, connected, event, task, support_plan")
    relationships: dict[str, str] = Field(default_factory=dict, description="child role -> relationship name on Case: connected, event, task, support_plan")
    field_names: dict[str, str] = Field(default_factory=dict, description="`Object.ConventionalName: OrgApiName`, e.g. `Contact.Gender__c: Sex__c`")
    cursor_field: Literal["SystemModstamp", "LastModifiedDate"] = "SystemModstamp"
    lookback_seconds: int = Field(300, ge=0, description="re-read this much before the cursor: changes committed late are not missed")
    api: Literal["auto", "rest", "bulk"] = "auto"
    bulk_threshold: int = Field(10_000, ge=1, description="in auto mode, pulls of at least this many cases use Bulk API 2.0")
    children: Literal["subquery", "keyed"] = Field("subquery", description="REST: child subqueries, or one query per child object by Case Id")
    batch_size: int = Field(2000, ge=200, le=2000)
    bulk_max_records: int = Field(100_000, ge=1, description="rows per Bulk results request (streamed: memory does not grow with it)")
    bulk_poll_seconds: float = Field(2.0, ge=0)
    max_api_share: float = Field(0.5, gt=0, le=1, description="stop before this share of the org's daily API requests is used")
    max_retries: int = Field(4, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("objects", "relationships")
    @classmethod
    def _known_roles(cls, value: dict[str, str]) -> dict[str, str]:
        known = {"case", "contact", "connected", "event", "task", "support_plan"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; known: {sorted(known)}")
        return value


class SalesforceApi:
    """One logged-in session: every call goes through `call` (budget, retries, one session renewal)."""

    def __init__(self, where: str, options: SalesforceOptions, ca_file: Path | None, stats: Any, sleep: Callable[[float], None] = time.sleep):
        self.where = where
        self.options = options
        self.stats = stats
        self.sleep = sleep
        self.session = requests.Session()
        self.session.mount("https://", ConnectorAdapter(options.timeout_seconds, str(ca_file) if ca_file else None))
        self.session.hooks["response"].append(self._observe)
        self.settings = AuthSettings(
            where=where,
            login_url=login_base(options.login_url, options.domain),
            flow=options.auth,
            client_id=options.client_id,
            client_secret=options.client_secret,
            username=options.username,
            password=options.password,
            security_token=options.security_token,
            private_key=options.private_key,
            audience=options.jwt_audience,
            timeout=options.timeout_seconds,
        )
        self.token: Token | None = None
        self._sf: Salesforce | None = None
        self.api_used: int | None = None
        self.api_max: int | None = None
        self.server_time: datetime | None = None
        self.last_response: requests.Response | None = None

    # -- session --------------------------------------------------------------------------------------
    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Count every HTTP call and keep the org's API usage and clock from the answer headers."""
        self.stats.requests += 1
        self.last_response = response
        info = response.headers.get("Sforce-Limit-Info", "")
        match = re.search(r"api-usage=(\d+)/(\d+)", info)
        if match:
            self.api_used, self.api_max = int(match.group(1)), int(match.group(2))
        if response.headers.get("Date"):
            try:
                self.server_time = parsedate_to_datetime(response.headers["Date"]).astimezone(timezone.utc)
            except (TypeError, ValueError):
                pass

    def login(self) -> None:
        self.token = request_token(self.session, self.settings)
        self._sf = Salesforce(instance_url=self.token.instance_url, session_id=self.token.access_token, session=self.session, version=self.options.api_version)

    @property
    def sf(self) -> Salesforce:
        if self._sf is None:
            self.login()
        assert self._sf is not None
        return self._sf

    def bulk_client(self, obj: str) -> _Bulk2Client:
        """simple-salesforce's Bulk 2.0 client for `obj`, built fresh so a renewed session is used."""
        sf = self.sf
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + sf.session_id, "X-PrettyPrint": "1"}
        return _Bulk2Client(obj, sf.bulk2_url, headers, self.session)

    def raw_get(self, url: str, *, params: dict[str, Any] | None = None, accept: str = "application/json", stream: bool = False) -> requests.Response:
        """A GET simple-salesforce has no streaming call for (Bulk CSV results); errors raised its way."""
        from simple_salesforce.util import exception_handler

        response = self.session.get(url, params=params, headers={"Authorization": "Bearer " + self.sf.session_id, "Accept": accept}, stream=stream)
        if response.status_code >= 300:
            exception_handler(response)
        return response

    # -- the one way to call the API ------------------------------------------------------------------
    def check_budget(self) -> None:
        if self.api_used is None or not self.api_max:
            return
        allowed = int(self.options.max_api_share * self.api_max)
        if self.api_used + 1 > allowed:
            raise SourceError(
                self.where,
                f"API budget reached: {self.api_used} of the org's {self.api_max} daily API requests used, this connector may use up to "
                f"{self.options.max_api_share:.0%}; stopped after the last stored page, the next run resumes from there",
                transient=True,
            )

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call: budget check, one session renewal on 401, retries of transient failures."""
        renewed = False
        attempt = 0
        while True:
            self.check_budget()
            try:
                return fn()
            except SalesforceExpiredSession:
                if renewed:
                    raise SourceAuthError(self.where, f"{what}: the session was refused again right after renewing it (INVALID_SESSION_ID)") from None
                log.info("%s: session expired during %s; renewing it once", self.where, what)
                renewed = True
                self.login()
                continue
            except SalesforceError as exc:
                code, message = _error_code(exc)
                transient = exc.status >= 500 or (code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" in message.lower())
                if not transient:
                    raise _named_error(self.where, what, exc, code, message) from None
                reason = f"{exc.status} {code or ''}".strip()
            except (requests.Timeout, requests.ConnectionError) as exc:
                reason = type(exc).__name__
            except ValueError as exc:  # 200 with a body that is not JSON: an HTML page, a proxy's answer
                reason = f"not JSON ({type(exc).__name__})"
                if attempt >= self.options.max_retries:
                    kind = self.last_response.headers.get("Content-Type", "?") if self.last_response is not None else "?"
                    raise SourceError(self.where, f"{what}: the server answered {kind} instead of JSON; check login_url / the instance is Salesforce", transient=True) from None
            if attempt >= self.options.max_retries:
                raise SourceError(self.where, f"{what}: still failing after {attempt + 1} attempts ({reason})", transient=True)
            retry_after = parse_retry_after(self.last_response.headers.get("Retry-After")) if self.last_response is not None else None
            delay = backoff_delay(attempt + 1, base=self.options.backoff_seconds, cap=300.0, retry_after=retry_after)
            log.warning("%s: %s failed (%s); retry %d in %.1fs", self.where, what, reason, attempt + 1, delay)
            self.stats.extra["retries"] = self.stats.extra.get("retries", 0) + 1
            self.sleep(delay)
            attempt += 1

    def read_limits(self) -> None:
        limits = self.call("read /limits", lambda: self.sf.limits())
        daily = limits.get("DailyApiRequests") or {}
        if "Max" in daily and "Remaining" in daily:
            self.api_max = int(daily["Max"])
            self.api_used = int(daily["Max"]) - int(daily["Remaining"])

    def close(self) -> None:
        self.session.close()


def _error_code(exc: SalesforceError) -> tuple[str | None, str]:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("errorCode"), str(content[0].get("message", "")).strip()
    if isinstance(content, dict):
        return content.get("errorCode") or content.get("error"), str(content.get("message") or content.get("error_description") or "")
    return None, str(content)[:200]


def _named_error(where: str, what: str, exc: SalesforceError, code: str | None, message: str) -> SourceError:
    """A message that names the object and field when Salesforce says which."""
    column = re.search(r"No such column '([^']+)' on entity '([^']+)'", message)
    if column:
        return SourceError(
            where,
            f"{column.group(2)}.{column.group(1)}: the org has no such field, or this user cannot read it ({code}); "
            "fix the field-level security or map the org's name in options.field_names",
        )
    entity = re.search(r"sObject type '([^']+)' is not supported", message)
    if entity:
        return SourceError(where, f"{entity.group(1)}: the org has no such object or this user cannot read it ({code}); set options.objects")
    relation = re.search(r"Didn't understand relationship '([^']+)'", message)
    if relation:
        return SourceError(where, f"Case.{relation.group(1)}: no such child relationship ({code}); set options.relationships")
    if code == "REQUEST_LIMIT_EXCEEDED":
        return SourceError(where, f"{what}: the org's API request limit is exhausted ({message}); the next run resumes", transient=True)
    if isinstance(exc, SalesforceRefusedRequest):
        return SourceAuthError(where, f"{what}: refused ({code}: {message}); check the integration user's permissions")
    if isinstance(exc, SalesforceResourceNotFound):
        return SourceError(where, f"{what}: not found ({code}); check api_version and the object names")
    if isinstance(exc, SalesforceMalformedRequest):
        return SourceError(where, f"{what}: Salesforce refused the query ({code}: {message.strip()[:300]})")
    return SourceError(where, f"{what}: {exc.status} {code}: {message[:300]}")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _get_ci(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lower = name.lower()
    for key, value in record.items():
        if key.lower() == lower:
            return value
    return None


@register
class SalesforceSource(Source):
    type_name = "salesforce"
    Options = SalesforceOptions
    full_snapshot = False

    def __init__(self, config: Any, job: Any, *, sleep: Callable[[float], None] = time.sleep):
        super().__init__(config, job)
        options: SalesforceOptions = self.options  # type: ignore[assignment]
        ca_file = job.resolve_path(options.ca_file) if options.ca_file is not None and job is not None else options.ca_file
        self.where = f"source {self.id}"
        self.api = SalesforceApi(self.where, options, ca_file, self.stats, sleep)
        self.layout: Layout | None = None
        self.describes: dict[str, dict[str, Any]] = {}

    @property
    def opts(self) -> SalesforceOptions:
        return self.options  # type: ignore[return-value]

    # -- discovery ------------------------------------------------------------------------------------
    def discover(self) -> Layout:
        """Describe every object the package uses and match the wanted fields (once per source)."""
        if self.layout is not None:
            return self.layout
        layout = Layout.conventional()
        layout.objects.update(self.opts.objects)
        layout.relationships.update(self.opts.relationships)
        for role in FIELDS:
            obj = layout.objects[role]
            describe = self.api.call(f"{obj}: describe", lambda: getattr(self.api.sf, obj).describe())
            self.describes[role] = describe
            layout.resolve(role, describe, self.opts.field_names)
            for conventional, how in layout.found_how.get(role, {}).items():
                if how in ("label", "help text"):
                    log.info("%s: %s.%s found by its %s as %s", self.where, obj, conventional, how, layout.actual(role, conventional))
        self.layout = layout
        return layout

    def fields(self) -> list[FieldInfo]:
        """Every readable field of the package's objects, named as raw records carry them (the
        conventional name of a field found under another, `Contact` and the child lists, and each
        lookup as `X__r.Name`), so `check` compares the mapping with what records will hold."""
        layout = self.discover()
        out = [FieldInfo("Contact", "Contact", "object"), FieldInfo("Owner", "Case Owner", "object"), FieldInfo("Owner.Name", "Case Owner Name", "string")]
        out += [FieldInfo(key, rel, "list") for rel, _, key in CHILD_ROLES.values()]
        for role, describe in self.describes.items():
            prefix = "" if role == "case" else {"contact": "Contact."}.get(role, f"{CHILD_ROLES.get(role, ('', '', role))[2]}[].")
            names = layout.conventional_names(role)
            for f in describe.get("fields", []):
                choices = tuple(p["value"] for p in f.get("picklistValues") or [] if p.get("active", True))
                out.append(FieldInfo(prefix + names.get(f["name"].lower(), f["name"]), f.get("label"), f.get("type"), choices))
        for want in FIELDS["case"]:
            if want.lookup and layout.actual("case", want.name):
                out += [FieldInfo(want.relationship, want.labels[0], "object"), FieldInfo(f"{want.relationship}.Name", want.labels[0], "string")]
        return out

    def check(self) -> list[Problem]:
        """Login, describe, every mapped field readable, and the data shapes the mapping cannot take."""
        problems: list[Problem] = []
        try:
            layout = self.discover()
            self.api.read_limits()
        except SourceError as exc:
            return [Problem(self.where, str(exc).split(": ", 1)[-1], hint="see the Salesforce options of this source")]
        for obj, name in layout.required_missing():
            problems.append(
                Problem(
                    f"{self.where}: {obj}.{name}",
                    f"{obj}.{name}: field not found or not readable by the integration user",
                    hint=f"grant field-level read access, or name the org's field in options.field_names ({obj}.{name}: <ApiName>)",
                )
            )
        for role, names in layout.missing.items():
            wants = {w.name: w for w in FIELDS[role]}
            for name in names:
                if not wants[name].required:
                    what = f"{wants[name].htcds} will stay unknown" if wants[name].htcds else "it will be empty"
                    problems.append(
                        Problem(
                            f"{self.where}: {layout.objects[role]}.{name}",
                            f"{layout.objects[role]}.{name}: not found by API name, label or HTCDS name in its help text; {what}",
                            severity="warning",
                            hint=f"if the org has it under another name, set options.field_names ({layout.objects[role]}.{name}: <ApiName>)",
                        )
                    )
        problems.append(Problem(f"{self.where}: field map", "field map (HTCDS field <- org field), please confirm:\n  " + "\n  ".join(layout.field_map()), severity="info"))
        if any(p.severity == "error" for p in problems):
            return problems
        try:
            orphans = self.api.call("count contacts without a case", lambda: self.api.sf.query(orphan_contacts_query(layout)))["totalSize"]
            if orphans:
                problems.append(
                    Problem(f"{self.where}: Contact", f"{orphans} person contact(s) belong to no Case; only cases are pulled, so they are not", severity="warning")
                )
            type_field = layout.actual("connected", "Type__c")
            if type_field:
                soql = f"SELECT COUNT() FROM {layout.objects['connected']} WHERE {type_field} = {soql_string(VICTIM_TYPE)}"
                several = self.api.call("count further victims", lambda: self.api.sf.query(soql))["totalSize"]
                if several:
                    problems.append(
                        Problem(
                            f"{self.where}: {layout.objects['connected']}",
                            f"{several} connected person row(s) of type Victim: a case has one victim (its Contact); these are not pulled as victims",
                            severity="warning",
                        )
                    )
        except SourceError as exc:
            problems.append(Problem(self.where, str(exc).split(": ", 1)[-1]))
        if self.api.api_max:
            share = (self.api.api_used or 0) / self.api.api_max
            if share >= self.opts.max_api_share:
                problems.append(Problem(self.where, f"{share:.0%} of today's API requests already used (limit share {self.opts.max_api_share:.0%})", severity="warning"))
        return problems

    # -- pulling --------------------------------------------------------------------------------------
    def pages(self, cursor: str | None) -> Iterator[Page]:
        after = Cursor.loads(cursor, self.where)  # an unreadable cursor stops the run before any request
        layout = self.discover()
        self.api.read_limits()
        upper = self.api.server_time
        window = Window(self.opts.cursor_field, after, timedelta(seconds=self.opts.lookback_seconds), upper)
        number = 0
        if after is not None:
            changed = self._cases_with_changed_relatives(layout, window)
            self.stats.extra["cases_with_changed_relatives"] = len(changed)
            for chunk in _chunks(sorted(changed), ID_CHUNK):
                soql = cases_by_id_query(layout, chunk, before=window.lower_bound(), cursor_field=self.opts.cursor_field, subqueries=True)
                for batch in self._rest_batches(soql, "Case: re-read cases with changed related records"):
                    records = [self._from_rest(layout, rec, subqueries=True) for rec in batch]
                    if records:
                        number += 1
                        yield Page(records, cursor, number)  # the cursor stays: these are older cases
        api = self._choose_api(layout, window)
        self.stats.extra["bulk"] = int(api == "bulk")
        stream = self._bulk_pages(layout, window) if api == "bulk" else self._rest_pages(layout, window)
        for records in stream:
            if not records:
                continue
            last = records[-1]
            number += 1
            yield Page(records, Cursor(last.updated_at or window.upper or datetime.now(timezone.utc), last.record_id).dumps(), number)
        if upper is not None:
            number += 1
            yield Page([], Cursor(upper, "").dumps(), number)  # everything up to the org's clock at start is stored

    def _choose_api(self, layout: Layout, window: Window) -> str:
        if self.opts.api != "auto":
            return self.opts.api
        total = self.api.call("Case: count the cases to pull", lambda: self.api.sf.query(count_query(layout, window), include_deleted=True))["totalSize"]
        self.stats.extra["cases_counted"] = int(total)
        return "bulk" if total >= self.opts.bulk_threshold else "rest"

    def _cases_with_changed_relatives(self, layout: Layout, window: Window) -> set[str]:
        """Case Ids whose Contact or child rows changed (or were deleted) in the window, not the Case."""
        since = window.lower_bound()
        assert since is not None
        ids: set[str] = set()
        for batch in self._rest_batches(changed_contacts_query(layout, since, window.upper, self.opts.cursor_field, window.related_strict()), "Contact: changed victims"):
            ids.update(rec["Id"] for rec in batch)
        for role, (_, ref, _) in CHILD_ROLES.items():
            actual = layout.actual(role, ref)
            if actual is None:
                continue
            soql = changed_children_query(layout, role, since, window.upper, self.opts.cursor_field, window.related_strict())
            for batch in self._rest_batches(soql, f"{layout.objects[role]}: changed rows", include_deleted=True):
                ids.update(v for rec in batch if (v := _get_ci(rec, actual)))
        return ids

    def _rest_batches(self, soql: str, what: str, include_deleted: bool = True) -> Iterator[list[dict[str, Any]]]:
        """REST query then nextRecordsUrl, one batch per call."""
        headers = {"Sforce-Query-Options": f"batchSize={self.opts.batch_size}"}
        result = self.api.call(what, lambda: self.api.sf.query(soql, include_deleted=include_deleted, headers=headers))
        while True:
            yield result["records"]
            if result.get("done", True) or not result.get("nextRecordsUrl"):
                return
            url = result["nextRecordsUrl"]
            result = self.api.call(what + " (next batch)", lambda: self.api.sf.query_more(url, identifier_is_url=True, headers=headers))

    def _rest_pages(self, layout: Layout, window: Window) -> Iterator[list[RawRecord]]:
        subqueries = self.opts.children == "subquery"
        soql = case_query(layout, window, subqueries=subqueries)
        for batch in self._rest_batches(soql, "Case: read changed cases"):
            if subqueries:
                yield [self._from_rest(layout, rec, subqueries=True) for rec in batch]
                continue
            children = self._children_keyed(layout, [rec["Id"] for rec in batch if not rec.get("IsDeleted")])
            yield [self._from_rest(layout, rec, subqueries=False, children=children.get(rec["Id"], {})) for rec in batch]

    def _children_keyed(self, layout: Layout, case_ids: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for role, (_, ref, _) in CHILD_ROLES.items():
            actual_ref = layout.actual(role, ref) or ref
            for chunk in _chunks(case_ids, ID_CHUNK):
                for batch in self._rest_batches(children_by_case_query(layout, role, chunk), f"{layout.objects[role]}: rows of changed cases", include_deleted=True):
                    for rec in batch:
                        out.setdefault(_get_ci(rec, actual_ref), {}).setdefault(role, []).append(rec)
        return out

    def _bulk_pages(self, layout: Layout, window: Window) -> Iterator[list[RawRecord]]:
        store = ChildStore()
        spool = CaseSpool()
        try:
            for role, (_, ref, _) in CHILD_ROLES.items():
                actual_ref = layout.actual(role, ref) or ref
                types = layout.types.get(role, {})
                # queryAll: archived activities (old Events and Tasks) are only returned by it; the query drops deleted rows
                rows = bulk_rows(self.api, layout.objects[role], children_in_window_query(layout, role, window), operation="queryAll", max_records=self.opts.bulk_max_records)
                store.add_all(role, ((row[actual_ref], {k: typed_value(types.get(k, "string"), v) for k, v in row.items()}) for row in rows))
            store.index()
            # No ORDER BY (it disables PK chunking): rows arrive in chunk order and are put in
            # cursor order here, so that each page's cursor covers every row before it.
            soql = case_query(layout, window, subqueries=False, ordered=False)
            stamp_field = layout.actual("case", self.opts.cursor_field) or self.opts.cursor_field
            for row in bulk_rows(self.api, layout.objects["case"], soql, operation="queryAll", max_records=self.opts.bulk_max_records):
                nested = self._nest_csv(layout, row)
                stamp = _get_ci(nested, stamp_field)
                spool.add(parse_sf_datetime(stamp).strftime("%Y-%m-%dT%H:%M:%S.%f") if stamp else "", nested["Id"], nested)
            for page in spool.pages(self.opts.batch_size):
                yield self._from_bulk_page(layout, page, store)
        finally:
            store.close()
            spool.close()

    def _nest_csv(self, layout: Layout, row: dict[str, str]) -> dict[str, Any]:
        """A Bulk CSV row (`Contact.Gender__c`, `Referring_Organisation__r.Name` columns, strings) as the REST JSON shape."""
        case_types = layout.types.get("case", {})
        contact_types = layout.types.get("contact", {})
        out: dict[str, Any] = {}
        related: dict[str, dict[str, Any]] = {}
        for key, value in row.items():
            relationship, dot, name = key.partition(".")
            if not dot:
                out[key] = typed_value(case_types.get(key, "string"), value)
            elif relationship == "Contact":
                related.setdefault("Contact", {})[name] = typed_value(contact_types.get(name, "string"), value)
            else:  # Owner.Name, a lookup's X__r.Name: an empty cell is a null relationship
                related.setdefault(relationship, {})[name] = value or None
        for relationship, values in related.items():
            out[relationship] = values if any(v is not None for v in values.values()) else None
        out["Contact"] = related.get("Contact") if out.get(layout.actual("case", "ContactId") or "ContactId") else None
        return out

    def _from_bulk_page(self, layout: Layout, page: list[dict[str, Any]], store: ChildStore) -> list[RawRecord]:
        children = store.for_cases([rec["Id"] for rec in page])
        return [self._from_rest(layout, rec, subqueries=False, children=children.get(rec["Id"], {})) for rec in page]

    # -- shaping raw records --------------------------------------------------------------------------
    def _from_rest(self, layout: Layout, rec: dict[str, Any], *, subqueries: bool, children: dict[str, list[dict[str, Any]]] | None = None) -> RawRecord:
        case_id = rec["Id"]
        stamp_text = _get_ci(rec, layout.actual("case", self.opts.cursor_field) or self.opts.cursor_field)
        updated = parse_sf_datetime(stamp_text) if stamp_text else None
        if _get_ci(rec, layout.actual("case", "IsDeleted") or "IsDeleted") in (True, "true"):
            return RawRecord(case_id, {}, updated, deleted=True)
        fields = layout.rename("case", rec)
        for relationship in layout.relationships.values():
            fields.pop(relationship, None)  # an empty child subquery answers null under its name
        fields.update(self._lookup_names(layout, rec, fields))
        contact = _get_ci(rec, "Contact")
        fields["Contact"] = layout.rename("contact", contact) if isinstance(contact, dict) else None
        owner = _get_ci(rec, "Owner")
        fields["Owner"] = {"Name": _get_ci(owner, "Name")} if isinstance(owner, dict) else None
        for role, (_, _, key) in CHILD_ROLES.items():  # Events then Tasks under `events`
            if subqueries:
                rows = self._subquery_rows(_get_ci(rec, layout.relationships[role]))
            else:
                rows = (children or {}).get(role, [])
            fields.setdefault(key, []).extend(self._child(layout, role, row) for row in rows if _get_ci(row, "IsDeleted") not in (True, "true"))
        self._check_victims(case_id, fields)
        return RawRecord(case_id, fields, updated)

    def _lookup_names(self, layout: Layout, rec: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """Each lookup as `{"Name": ...}` under its conventional relationship name, never its Id.

        A lookup field holds the related record's Id, which means nothing outside the org; the
        query selects `X__r.Name` through the relationship. An org that made the field plain text
        has the name itself in it. Either way the raw `X__c` is dropped from the record.
        """
        out: dict[str, Any] = {}
        for want in FIELDS["case"]:
            if not want.lookup:
                continue
            fields.pop(want.name, None)
            actual = layout.actual("case", want.name)
            if actual is None:
                continue
            relationship = layout.lookups.get(want.name)
            if relationship is not None:
                related = _get_ci(rec, relationship)
                name = _get_ci(related, "Name") if isinstance(related, dict) else None
            else:
                name = _get_ci(rec, actual)
            out[want.relationship] = {"Name": name} if name not in (None, "") else None
        return out

    def _subquery_rows(self, result: Any) -> list[dict[str, Any]]:
        if not isinstance(result, dict):
            return []
        rows = list(result.get("records") or [])
        while not result.get("done", True) and result.get("nextRecordsUrl"):
            url = result["nextRecordsUrl"]
            result = self.api.call("Case: more child rows", lambda: self.api.sf.query_more(url, identifier_is_url=True))
            rows.extend(result.get("records") or [])
        return rows

    def _child(self, layout: Layout, role: str, row: dict[str, Any]) -> dict[str, Any]:
        """A child row under conventional names (a mapping `where` matches multi-select members).

        A connected person's Contact fields come nested (REST: `{"Connected_Contact__r": {...}}`) or
        dotted (Bulk CSV: `Connected_Contact__r.Gender__c`); either way they land under
        `Connected_Contact` with the Contact's conventional names, or None without a Contact.
        """
        out = {k: v for k, v in layout.rename(role, row).items() if "." not in k}
        relationship = connected_person_relationship(layout) if role == "connected" else None
        if relationship:
            nested = _get_ci(row, relationship)
            person = {k: v for k, v in nested.items() if k != "attributes"} if isinstance(nested, dict) else {}
            prefix = relationship.lower() + "."
            person.update({k[len(prefix):]: v for k, v in row.items() if k.lower().startswith(prefix)})
            names = layout.conventional_names("contact")
            person = {names.get(k.lower(), k): v for k, v in person.items()}
            out[CONNECTED_PERSON_KEY] = person if any(v not in (None, "") for v in person.values()) else None
        return out

    def _check_victims(self, case_id: str, fields: dict[str, Any]) -> None:
        victims = (1 if fields.get("Contact") else 0) + sum(1 for p in fields["perpetrators"] if str(p.get("Type__c") or "").strip().lower() == VICTIM_TYPE)
        if victims == 0:
            self.stats.extra["cases_without_victim"] = self.stats.extra.get("cases_without_victim", 0) + 1
            log.warning("%s: Case %s has no victim Contact; its person fields stay empty", self.where, case_id)
        elif victims > 1:
            self.stats.extra["cases_with_several_victims"] = self.stats.extra.get("cases_with_several_victims", 0) + 1
            log.warning("%s: Case %s names %d victims; the case's Contact is taken as the victim, the others are not pulled", self.where, case_id, victims)

    def close(self) -> None:
        self.api.close()
