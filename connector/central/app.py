"""The receiver's HTTP API (FastAPI). `create_app(settings)` builds it; `cli.serve` runs it.

    POST /releases                    partner token; multipart `files` (one part per bundle file)
    GET  /releases, /releases/{id}    partner: its own; admin: all
    GET  /releases/{id}/files/{name}  one file of a release, by its DB row
    GET  /harmonized.csv|.parquet     admin: every partner's latest release, merged and re-gated
    GET  /harmonized/manifest.json    what the merge did
    GET  /partners, /whoami, /healthz
    GET  /                            the central team's page (admin; browsers may use Basic auth
                                      with the token as password, for GETs only)
    GET  /openapi.json, /docs

Security: bodies above `max_upload_bytes` get 413 (checked on Content-Length and while reading);
uploads are streamed to disk (uploads.py), and bodies in flight beyond `max_inflight_upload_bytes`
get 503 with Retry-After; uploads must be multipart/form-data (415 otherwise) and hold exactly a
release's files; every response carries security headers (security.py); Basic auth only for an
admin's GET; ids in paths are validated by pattern and files are found through DB rows, never by a
path a request names; tokens are compared in constant
time and never logged (log lines carry the partner and release id only). TLS is terminated by a
reverse proxy (deploy/central/).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path as PathParam, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from connector.central.auth import Principal, authenticate, partner_datasource_values
from connector.central.cells import escape_csv
from connector.central.db import make_engine, now, partners, release_files, releases, upload_refusals
from connector.central.merge import VP_FILE, MergeInput, MergeRefused, Merged, merge_releases, merge_vp_tables, parquet_bytes
from connector.central.objects import ObjectStore
from connector.central.security import SecurityHeaders
from connector.central.uploads import BodyLimits, Staging, UploadBudget, precheck, receive_parts
from connector.central.validate import series_step_problems, FILE_NAME, MAX_FILES, CheckedRelease, UploadRefused, check_upload, unknown_files
from connector.destinations.s3 import content_type
from connector.schema import Schema, load_schema

log = logging.getLogger("connector.central")
RELEASE_ID_PATTERN = r"^r-[0-9a-f]{20}$"
FILE_NAME_PATTERN = FILE_NAME.pattern
MB = 1024 * 1024


class _BrowserLogin(Exception):
    """A browser asked for a page without valid credentials: answered with a login page (401)."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@dataclass(frozen=True)
class _MergeEntry:
    key: str  # the release ids merged, in partner order
    merged: Merged | None
    refused: list[str] | None
    csv: bytes  # harmonized.csv as served (formula cells escaped)


@dataclass
class CentralSettings:
    """Where the receiver keeps its state, and its limits."""

    database_url: str = "sqlite:///central-data/central.sqlite"
    data_dir: Path = Path("central-data")
    max_upload_bytes: int = 64 * MB
    max_inflight_upload_bytes: int = 256 * MB  # all uploads together; beyond it: 503 + Retry-After
    check_slots: int = 2  # releases read into memory and checked at once (the rest wait)
    min_k: int = 2
    schema: Schema | None = field(default=None, repr=False)


# -- response models (they make the OpenAPI precise enough to fuzz) ---------------------------


class ErrorDetail(BaseModel):
    error: str
    reasons: list[str] = []
    hint: str | None = None


class ErrorBody(BaseModel):
    detail: ErrorDetail | str | list[Any]


class ReleaseSummary(BaseModel):
    release_id: str
    partner: str
    version: int
    received_at: str
    schema_version: str
    method: str
    rows: int
    k: int | None
    status: str
    url: str


class FileEntry(BaseModel):
    name: str
    sha256: str
    bytes: int
    content_type: str
    url: str


class ReleaseDetail(ReleaseSummary):
    files: list[FileEntry]
    manifest: dict[str, Any]
    privacy: dict[str, Any]
    report: dict[str, Any]


class UploadResult(BaseModel):
    release_id: str
    partner: str
    version: int
    created: bool
    url: str


class PartnerSummary(BaseModel):
    id: str
    name: str
    releases: int
    latest_release: str | None
    latest_received_at: str | None
    refused_uploads: int = 0  # uploads refused since registration (counted; nothing of them is kept)
    last_refused_at: str | None = None


class WhoAmI(BaseModel):
    role: str
    partner: str | None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "malformed request", 401: "no valid token", 403: "not allowed for this token", 404: "not found",
            409: "conflict", 413: "body too large", 415: "wrong content type", 422: "refused: see reasons"}
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


# -- middleware --------------------------------------------------------------------------------


# -- the app -----------------------------------------------------------------------------------


def create_app(settings: CentralSettings | None = None) -> FastAPI:
    settings = settings or CentralSettings()
    schema = settings.schema or load_schema()
    engine = make_engine(settings.database_url)
    # Reads of one statement each (a token, a release, its files, the lists) run in autocommit:
    # no BEGIN and ROLLBACK around them, a third of the database round trips a read made, which
    # on PostgreSQL sharing two cores with the receiver showed in the slowest reads. Releases and
    # their files never change once stored, so no read needs a snapshot across statements.
    reads = engine.execution_options(isolation_level="AUTOCOMMIT")
    objects = ObjectStore(Path(settings.data_dir))
    merge_cache: dict[str, Any] = {}
    merge_lock = threading.Lock()

    app = FastAPI(
        title="HTCDS central receiver",
        version="1",
        description="Receives partners' privacy-protected releases, re-checks them and merges them. "
        "Authenticate with `Authorization: Bearer <token>` (tokens from `htcds-connector central add-partner`).",
    )
    app.state.engine = engine
    app.state.objects = objects
    app.state.settings = settings
    app.state.upload_budget = budget = UploadBudget(settings.max_inflight_upload_bytes)
    check_slots = threading.BoundedSemaphore(max(1, settings.check_slots))
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes, budget=budget)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(UploadRefused)
    async def _refused(_request: Request, exc: UploadRefused) -> JSONResponse:
        return JSONResponse({"detail": exc.as_detail()}, status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(DBAPIError)
    async def _database_lost(_request: Request, exc: DBAPIError) -> JSONResponse:
        """A connection the database dropped (a restart, a failover): the pool is renewed, so the
        client's retry works. Anything else stays a plain 500; no SQL or driver text is returned."""
        if not exc.connection_invalidated:
            raise exc
        log.warning("the database connection was lost (%s); the pool is renewed", type(exc.orig).__name__)
        detail = {"error": "the database connection was lost; it is being re-established", "reasons": [], "hint": "retry in a second"}
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(_BrowserLogin)
    async def _login(_request: Request, exc: _BrowserLogin) -> HTMLResponse:
        from connector.central.page import render_login

        return HTMLResponse(render_login(exc.hint), status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="htcds-central", charset="UTF-8"',
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    # -- auth --------------------------------------------------------------------------------

    def principal(request: Request) -> Principal:
        """Bearer tokens everywhere. Basic auth (a browser's cached credentials) only for the
        admin's page views: GET/HEAD by an admin token, so no other site can make a browser upload
        or write with credentials it remembers."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token: str | None = None
        basic = scheme.lower() == "basic"
        page_view = request.method in ("GET", "HEAD")
        if scheme.lower() == "bearer":
            token = value.strip()
        elif basic and page_view:  # browsers: any user name, the token as password
            try:
                token = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                token = None
        found = authenticate(reads, token)
        if found is not None and basic and not found.is_admin:
            found = None
        if found is None:
            hint = "send Authorization: Bearer <token>" + ("; Basic auth is accepted only for the central team's page views" if basic else "")
            if page_view and "text/html" in request.headers.get("accept", ""):  # a browser: a page saying how to log in
                raise _BrowserLogin("the token was not accepted (Basic auth takes only the central team's admin token)" if header else "")
            raise HTTPException(401, detail={"error": "a valid token is required", "reasons": [], "hint": hint},
                                headers={"WWW-Authenticate": 'Bearer, Basic realm="htcds-central"' if page_view else "Bearer"})
        return found

    def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.is_admin:
            raise HTTPException(403, detail={"error": "the central team's admin token is required", "reasons": [], "hint": None})
        return who

    def partner(who: Principal = Depends(principal)) -> Principal:
        if who.is_admin or not who.partner:
            raise HTTPException(403, detail={"error": "uploads need a partner token", "reasons": [], "hint": "admin tokens read; partners upload"})
        return who

    # -- helpers -----------------------------------------------------------------------------

    def count_refusal(partner_id: str, status: int) -> None:
        """One more refused upload for the partner (the page's freshness column); nothing of the
        refused content is kept."""
        for _ in range(3):
            try:
                with engine.begin() as conn:
                    values = {"refused": upload_refusals.c.refused + 1, "last_refused_at": now(), "last_status": status}
                    if conn.execute(update(upload_refusals).where(upload_refusals.c.partner_id == partner_id).values(**values)).rowcount:
                        return
                    conn.execute(insert(upload_refusals).values(partner_id=partner_id, refused=1, last_refused_at=now(), last_status=status))
                    return
            except IntegrityError:  # a concurrent first refusal of the same partner: update it
                continue

    def summary(row: Any) -> dict[str, Any]:
        return {
            "release_id": row.release_id,
            "partner": row.partner_id,
            "version": row.version,
            "received_at": _iso(row.received_at),
            "schema_version": row.schema_version,
            "method": row.method,
            "rows": row.rows,
            "k": row.k,
            "status": row.status,
            "url": f"/releases/{row.release_id}",
        }

    def visible(who: Principal) -> Any:
        query = select(releases).order_by(releases.c.partner_id, releases.c.version)
        return query if who.is_admin else query.where(releases.c.partner_id == who.partner)

    def find(release_id: str, who: Principal) -> Any:
        with reads.connect() as conn:
            row = conn.execute(visible(who).where(releases.c.release_id == release_id)).first()
        if row is None:  # another partner's release is "not found" too: ids are not disclosed
            raise HTTPException(404, detail={"error": f"no release {release_id}", "reasons": [], "hint": None})
        return row

    def store(checked: CheckedRelease) -> tuple[Any, bool]:
        """Insert the checked release (objects first, then one transaction); idempotent on the id."""
        for attempt in range(5):
            with engine.connect() as conn:
                existing = conn.execute(select(releases).where(releases.c.release_id == checked.release_id)).first()
                if existing is None:  # checked before anything is written: a refusal leaves nothing behind
                    seen = conn.execute(select(func.max(releases.c.version)).where(releases.c.partner_id == checked.partner)).scalar()
                    if seen is not None:
                        refuse_unsafe_step(conn, checked, seen)
            if existing is not None:
                if existing.partner_id != checked.partner:
                    raise UploadRefused(409, "this release id belongs to another partner")
                return existing, False
            digests = {name: objects.put(content) for name, content in checked.files.items()}
            try:
                with engine.begin() as conn:
                    if conn.execute(select(partners.c.id).where(partners.c.id == checked.partner)).first() is None:
                        raise UploadRefused(403, f"partner {checked.partner} is not registered")
                    latest = conn.execute(select(func.max(releases.c.version)).where(releases.c.partner_id == checked.partner)).scalar()
                    if latest != seen:
                        raise IntegrityError("another version arrived meanwhile", None, Exception())  # compare with it: look again
                    pk = conn.execute(
                        insert(releases).values(
                            release_id=checked.release_id,
                            partner_id=checked.partner,
                            version=(latest or 0) + 1,
                            received_at=now(),
                            schema_version=checked.schema_version,
                            method=checked.method,
                            rows=checked.rows,
                            k=checked.k,
                            status="accepted",
                            manifest=json.dumps(checked.manifest, sort_keys=True),
                            privacy=json.dumps(checked.privacy, sort_keys=True),
                            report=json.dumps(checked.report, sort_keys=True),
                        )
                    ).inserted_primary_key[0]
                    conn.execute(insert(release_files), [
                        {"release_pk": pk, "name": name, "sha256": digests[name], "bytes": len(content), "content_type": content_type(name)}
                        for name, content in checked.files.items()
                    ])
            except IntegrityError:
                continue  # a concurrent upload of the same release, or of another version: look again
            with engine.connect() as conn:
                return conn.execute(select(releases).where(releases.c.pk == pk)).first(), True
        raise UploadRefused(409, "could not store the release after concurrent updates; retry")

    def already_stored(partner_id: str, parts: dict[str, Any]) -> Any:
        """The stored release whose files are exactly these (names and SHA-256), if any: a retried
        upload of an accepted release is answered from the database, not checked again (the checks
        ran on these very bytes; rendering a report per retry would starve every reader)."""
        manifest = parts.get("manifest.json")
        if manifest is None:
            return None
        try:
            release_id = json.loads(manifest.read()).get("release_id")
        except (ValueError, AttributeError):
            return None
        if not isinstance(release_id, str):
            return None
        with engine.connect() as conn:
            row = conn.execute(select(releases).where(releases.c.release_id == release_id, releases.c.partner_id == partner_id)).first()
            if row is None:
                return None
            stored = {f.name: f.sha256 for f in conn.execute(select(release_files.c.name, release_files.c.sha256).where(release_files.c.release_pk == row.pk))}
        return row if stored == {name: part.sha256 for name, part in parts.items()} else None

    def refuse_unsafe_step(conn: Any, checked: CheckedRelease, version: int) -> None:
        """The partner's previous accepted release and this one may differ only by rows that each
        occur >= k times among the rows added (and among those removed): else comparing the two, or
        two downloads of /harmonized.csv, would single a case out."""
        before = conn.execute(select(releases.c.pk, releases.c.privacy).where(releases.c.partner_id == checked.partner, releases.c.version == version)).first()
        sha = conn.execute(select(release_files.c.sha256).where((release_files.c.release_pk == before.pk) & (release_files.c.name == "data.csv"))).scalar_one()
        vp_sha = conn.execute(select(release_files.c.sha256).where((release_files.c.release_pk == before.pk) & (release_files.c.name == VP_FILE))).scalar_one_or_none()
        reasons = series_step_problems(json.loads(before.privacy), objects.get(sha), checked, objects.get(vp_sha) if vp_sha else None)
        if reasons:
            raise UploadRefused(422, "the difference from this partner's previous release would single cases out", reasons,
                                hint="publish with the connector's release series (release parts) instead of replacing rows; nothing was stored")

    def latest_rows() -> list[Any]:
        """Each partner's latest release with its data.csv's object: one query, no file read."""
        newest = select(releases.c.partner_id, func.max(releases.c.version).label("version")).group_by(releases.c.partner_id).subquery()
        query = (
            select(releases.c.partner_id, releases.c.release_id, releases.c.version, releases.c.privacy, release_files.c.sha256)
            .join(newest, (releases.c.partner_id == newest.c.partner_id) & (releases.c.version == newest.c.version))
            .join(release_files, (release_files.c.release_pk == releases.c.pk) & (release_files.c.name == "data.csv"))
            .order_by(releases.c.partner_id)
        )
        with reads.connect() as conn:
            return list(conn.execute(query).all())

    def merge_entry() -> _MergeEntry:
        """The merge of the latest releases, computed once per set of release ids (a refusal too).
        While one thread merges a newer set, other readers get the previous merge (its manifest
        names the releases it holds) instead of queueing behind the merge; a reader with no
        previous merge waits for it."""
        rows = latest_rows()
        if not rows:
            raise HTTPException(404, detail={"error": "no releases received yet", "reasons": [], "hint": None})
        key = ",".join(row.release_id for row in rows)
        cached = merge_cache.get("entry")
        if cached is not None and cached.key == key:
            return cached
        if cached is not None and not merge_lock.acquire(blocking=False):
            return cached
        if cached is None:
            merge_lock.acquire()
        try:
            cached = merge_cache.get("entry")
            if cached is not None and cached.key == key:
                return cached
            inputs = [MergeInput(row.partner_id, row.release_id, row.version, objects.get(row.sha256), json.loads(row.privacy)) for row in rows]
            try:
                merged = merge_releases(inputs, schema)
                entry = _MergeEntry(key, merged, None, escape_csv(merged.release.data_csv))
            except MergeRefused as exc:
                entry = _MergeEntry(key, None, exc.reasons, b"")
            merge_cache["entry"] = entry
            return entry
        finally:
            merge_lock.release()

    def passed(entry: _MergeEntry) -> Merged:
        if entry.merged is None:
            raise HTTPException(409, detail={"error": "the merged dataset does not pass the gate", "reasons": entry.refused or [], "hint": None})
        return entry.merged

    def harmonized() -> Merged:
        return passed(merge_entry())

    def harmonized_csv_bytes() -> bytes:
        """harmonized.csv as served: formula cells escaped (cached with the merge)."""
        entry = merge_entry()
        passed(entry)
        return entry.csv

    # -- routes ------------------------------------------------------------------------------

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/whoami", response_model=WhoAmI, responses=_errors(401), tags=["service"])
    def whoami(who: Principal = Depends(principal)) -> dict[str, Any]:
        return {"role": who.role, "partner": who.partner}

    @app.post(
        "/releases",
        status_code=201,
        response_model=UploadResult,
        responses={200: {"model": UploadResult, "description": "the same release was already stored (no change)"}, **_errors(400, 401, 403, 409, 413, 415, 422)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 5, "maxItems": MAX_FILES,
                                             "description": "every file of the release folder, manifest.json included; the part's filename is the file name"}},
                }}},
            }
        },
        tags=["releases"],
    )
    async def upload(
        request: Request,
        who: Principal = Depends(partner),
        idempotency_key: str | None = Header(None, alias="Idempotency-Key", pattern=RELEASE_ID_PATTERN),
    ) -> JSONResponse:
        """Upload a release. It is stored only if every check passes; the same release again is a no-op (200)."""
        try:
            with Staging(Path(settings.data_dir) / "staging") as staging:
                parts = await receive_parts(request, staging, known=lambda name: unknown_files([name]))
                await run_in_threadpool(precheck, parts)
                datasources = await run_in_threadpool(partner_datasource_values, engine, who.partner or "")

                def check_and_store() -> tuple[Any, bool]:
                    again = already_stored(who.partner or "", parts)
                    if again is not None:  # the same bytes as a release it accepted: a retry, nothing to check
                        return again, False
                    with check_slots:  # the files are read into memory only here, a few releases at a time
                        files = {name: part.read() for name, part in parts.items()}
                        checked = check_upload(files, partner=who.partner or "", schema=schema, idempotency_key=idempotency_key,
                                               min_k=settings.min_k, datasources=datasources)
                        return store(checked)

                row, created = await run_in_threadpool(check_and_store)
        except (UploadRefused, HTTPException) as exc:
            status = exc.status if isinstance(exc, UploadRefused) else exc.status_code
            if 400 <= status < 500:
                await run_in_threadpool(count_refusal, who.partner or "", status)
            raise
        log.info("release %s", "accepted" if created else "already stored", extra={"partner": row.partner_id, "release_id": row.release_id, "version": row.version})
        body = {"release_id": row.release_id, "partner": row.partner_id, "version": row.version, "created": created, "url": f"/releases/{row.release_id}"}
        return JSONResponse(body, status_code=201 if created else 200, headers={"Location": f"/releases/{row.release_id}"})

    @app.get("/releases", response_model=list[ReleaseSummary], responses=_errors(401), tags=["releases"])
    def list_releases(who: Principal = Depends(principal)) -> list[dict[str, Any]]:
        with reads.connect() as conn:
            return [summary(row) for row in conn.execute(visible(who)).all()]

    @app.get("/releases/{release_id}", response_model=ReleaseDetail, responses=_errors(401, 404), tags=["releases"])
    def get_release(release_id: str = PathParam(pattern=RELEASE_ID_PATTERN), who: Principal = Depends(principal)) -> dict[str, Any]:
        row = find(release_id, who)
        with reads.connect() as conn:
            file_rows = conn.execute(select(release_files).where(release_files.c.release_pk == row.pk).order_by(release_files.c.name)).all()
        return {
            **summary(row),
            "files": [{"name": f.name, "sha256": f.sha256, "bytes": f.bytes, "content_type": f.content_type, "url": f"/releases/{row.release_id}/files/{f.name}"} for f in file_rows],
            "manifest": json.loads(row.manifest),
            "privacy": json.loads(row.privacy),
            "report": json.loads(row.report),
        }

    @app.get("/releases/{release_id}/files/{name}", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}, **_errors(401, 404)}, tags=["releases"])
    def get_file(release_id: str = PathParam(pattern=RELEASE_ID_PATTERN), name: str = PathParam(pattern=FILE_NAME_PATTERN, max_length=100),
                 who: Principal = Depends(principal)) -> Response:
        row = find(release_id, who)
        with reads.connect() as conn:
            entry = conn.execute(select(release_files).where((release_files.c.release_pk == row.pk) & (release_files.c.name == name))).first()
        if entry is None:
            raise HTTPException(404, detail={"error": f"release {release_id} has no file {name}", "reasons": [], "hint": None})
        # A partner's report.html is shown to the central team: no script, no outside request, no
        # form may run (`sandbox` also gives it an origin of its own, away from the receiver's).
        headers = {"X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; sandbox"}
        content = objects.get(entry.sha256)
        if entry.name.endswith(".csv"):  # uploads with formula cells are refused; this guards older data
            content = escape_csv(content)
        return Response(content, media_type=entry.content_type, headers=headers)

    @app.get("/partners", response_model=list[PartnerSummary], responses=_errors(401, 403), tags=["central"])
    def list_partners(_who: Principal = Depends(admin)) -> list[dict[str, Any]]:
        return partner_rows(reads)

    def harmonized_vp_bytes() -> bytes:
        rows = latest_rows()
        inputs = []
        with engine.connect() as conn:
            for row in rows:
                pk = conn.execute(select(releases.c.pk).where(releases.c.release_id == row.release_id)).scalar_one()
                sha = conn.execute(select(release_files.c.sha256).where((release_files.c.release_pk == pk) & (release_files.c.name == VP_FILE))).scalar_one_or_none()
                if sha is not None:
                    inputs.append((MergeInput(row.partner_id, row.release_id, row.version, b"", json.loads(row.privacy)), objects.get(sha)))
        try:
            return escape_csv(merge_vp_tables(inputs, schema).data_csv)
        except ValueError as exc:
            raise HTTPException(404, detail={"error": str(exc), "reasons": [], "hint": None}) from None
        except MergeRefused as exc:
            raise HTTPException(409, detail={"error": "the merged victim-perpetrator table does not pass the gate", "reasons": exc.reasons, "hint": None}) from None

    @app.get("/harmonized_victim_perpetrator.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}, **_errors(401, 403, 404, 409)}, tags=["central"])
    async def harmonized_vp_csv(_who: Principal = Depends(admin)) -> Response:
        """Every partner's latest victim-perpetrator table side by side (counted per victim at the partner)."""
        data = await run_in_threadpool(harmonized_vp_bytes)
        return Response(data, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": 'attachment; filename="harmonized_victim_perpetrator.csv"'})

    @app.get("/harmonized.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}, **_errors(401, 403, 404, 409)}, tags=["central"])
    async def harmonized_csv(_who: Principal = Depends(admin)) -> Response:
        data = await run_in_threadpool(harmonized_csv_bytes)
        return Response(data, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": 'attachment; filename="harmonized.csv"'})

    @app.get("/harmonized.parquet", response_class=Response, responses={200: {"content": {"application/vnd.apache.parquet": {}}}, **_errors(401, 403, 404, 409)}, tags=["central"])
    async def harmonized_parquet(_who: Principal = Depends(admin)) -> Response:
        merged = await run_in_threadpool(harmonized)
        data = await run_in_threadpool(parquet_bytes, merged.release)
        return Response(data, media_type="application/vnd.apache.parquet", headers={"Content-Disposition": 'attachment; filename="harmonized.parquet"'})

    @app.get("/harmonized/manifest.json", responses=_errors(401, 403, 404, 409), tags=["central"])
    async def harmonized_manifest(_who: Principal = Depends(admin)) -> dict[str, Any]:
        merged = await run_in_threadpool(harmonized)
        return merged.manifest

    @app.get("/", response_class=HTMLResponse, responses=_errors(401, 403), tags=["central"])
    async def page(_who: Principal = Depends(admin)) -> HTMLResponse:
        from connector.central.page import render_page

        def build() -> str:
            with reads.connect() as conn:
                rows = conn.execute(select(releases).order_by(releases.c.partner_id, releases.c.version.desc())).all()
            try:
                merged: Merged | None = harmonized()
                merge_error = None
            except HTTPException as exc:
                merged, merge_error = None, exc.detail
            return render_page(partner_rows(reads), [{**summary(r), "privacy": json.loads(r.privacy), "report": json.loads(r.report)} for r in rows],
                               merged, merge_error, labels=column_labels(schema), now=now())

        return HTMLResponse(await run_in_threadpool(build), headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    return app


def partner_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every partner with its release count and latest release: two queries, not two per partner
    (the page is read often; bench/central_load.py)."""
    counts = select(releases.c.partner_id, func.count().label("n"), func.max(releases.c.version).label("version")).group_by(releases.c.partner_id).subquery()
    query = (
        select(partners.c.id, partners.c.name, counts.c.n, releases.c.release_id, releases.c.received_at,
               upload_refusals.c.refused, upload_refusals.c.last_refused_at)
        .outerjoin(counts, counts.c.partner_id == partners.c.id)
        .outerjoin(releases, (releases.c.partner_id == partners.c.id) & (releases.c.version == counts.c.version))
        .outerjoin(upload_refusals, upload_refusals.c.partner_id == partners.c.id)
        .order_by(partners.c.id)
    )
    with engine.connect() as conn:
        return [{"id": row.id, "name": row.name, "releases": row.n or 0, "latest_release": row.release_id,
                 "latest_received_at": _iso(row.received_at) if row.release_id else None,
                 "refused_uploads": row.refused or 0, "last_refused_at": _iso(row.last_refused_at) if row.refused else None}
                for row in conn.execute(query).all()]


def column_labels(schema: Schema) -> dict[str, str]:
    """Short names for the release view's columns, from the codebook's descriptions (the page
    says "Age at registration", not `ageBroad`)."""
    from privacy.labels import column_label

    return {name: column_label(name, column.description) for name, column in schema.view.items()}


def _iso(value: Any) -> str:
    if value is None:
        return ""
    if getattr(value, "tzinfo", None) is None:
        return value.isoformat(timespec="seconds") + "+00:00"
    return value.isoformat(timespec="seconds")


__all__ = ["CentralSettings", "create_app"]
