"""The central receiver's HTTP API, in process (FastAPI TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from connector.central.app import CentralSettings, create_app
from connector.central.auth import add_admin, add_partner
from connector.release import Bundle
from tests.unit.test_central_fixtures import make_bundle, rehash, tampered

PG_URL = os.environ.get("HTCDS_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _pg_unreachable() -> str | None:
    parts = urlsplit(PG_URL.replace("postgresql+psycopg2", "postgresql"))
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1).close()
    except OSError as exc:
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432} unreachable ({exc.strerror})"
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.sqlite'}"
        return
    reason = _pg_unreachable()
    if reason:
        pytest.skip(reason)
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"central_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


class Central:
    """A receiver with two partners and an admin, and helpers to upload."""

    def __init__(self, tmp_path: Path, database_url: str, **settings):
        self.data_dir = tmp_path / "central"
        self.app = create_app(CentralSettings(database_url=database_url, data_dir=self.data_dir, **settings))
        engine = self.app.state.engine
        self.tokens = {"ngo-a": add_partner(engine, "ngo-a", "NGO A"), "ngo-b": add_partner(engine, "ngo-b", "NGO B"), "admin": add_admin(engine)}
        self.client = TestClient(self.app)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def upload(self, files: dict[str, bytes] | Bundle, who: str = "ngo-a", key: str | None = None):
        if isinstance(files, Bundle):
            key = key or files.release_id
            files = files.files
        headers = {**self.auth(who), **({"Idempotency-Key": key} if key else {})}
        return self.client.post("/releases", files=[("files", (name, content, "application/octet-stream")) for name, content in files.items()], headers=headers)

    def stored(self) -> tuple[int, list[str]]:
        """Releases in the DB and files anywhere under the data dir (objects and staging)."""
        releases = self.client.get("/releases", headers=self.auth("admin")).json()
        files = sorted(str(p.relative_to(self.data_dir)) for p in self.data_dir.rglob("*") if p.is_file() and p.suffix != ".sqlite")
        return len(releases), files


@pytest.fixture
def central(tmp_path, database_url):
    c = Central(tmp_path, database_url)
    yield c
    c.client.close()
    c.app.state.engine.dispose()


def test_upload_is_stored_once_and_a_repeat_is_a_no_op(central):
    bundle = make_bundle("ngo-a")
    first = central.upload(bundle)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["created"] is True
    again = central.upload(bundle)
    assert again.status_code == 200 and again.json()["created"] is False
    assert central.stored()[0] == 1
    detail = central.client.get(f"/releases/{bundle.release_id}", headers=central.auth("ngo-a")).json()
    assert {f["name"] for f in detail["files"]} == set(bundle.files)
    assert detail["privacy"]["k"] == 3 and "privacy gate" in detail["report"]["checks"]
    data = central.client.get(f"/releases/{bundle.release_id}/files/data.csv", headers=central.auth("ngo-a"))
    assert data.content == bundle.files["data.csv"] and data.headers["content-type"].startswith("text/csv")


def test_releases_are_versioned_per_partner(central):
    assert central.upload(make_bundle("ngo-a", k=3)).json()["version"] == 1
    assert central.upload(make_bundle("ngo-a", k=4, part="2")).json()["version"] == 2  # the next part of its series
    assert central.upload(make_bundle("ngo-b", k=3), who="ngo-b").json()["version"] == 1


def test_direct_identifier_column_is_refused_with_422_and_leaves_nothing_behind(central):
    names = ["Anna"] * 12  # one value: the smuggled column does not break k, only its role is wrong
    bundle = make_bundle("ngo-a", roles_extra={"prs_FirstName": "process"}, extra_columns={"prs_FirstName": names})
    response = central.upload(bundle)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any("prs_FirstName" in r and "direct_identifier" in r for r in detail["reasons"]), detail
    assert central.stored() == (0, [])


def test_checksum_mismatch_is_refused_with_the_file_named(central):
    bundle = make_bundle("ngo-a")
    files = tampered(bundle, "data.csv", bundle.files["data.csv"].replace(b"30--34", b"30--35"), fix_manifest=False)
    response = central.upload(files, key=bundle.release_id)
    assert response.status_code == 422
    assert any(r.startswith("data.csv: SHA-256") for r in response.json()["detail"]["reasons"])
    assert central.stored() == (0, [])


def test_a_forged_release_that_breaks_k_is_refused_by_the_gate(central):
    bundle = make_bundle("ngo-a")
    lines = bundle.files["data.csv"].split(b"\n")
    lines[1] = lines[1].replace(b"30--34", b"24--26")  # one person alone in a class
    header, body = lines[0], sorted(line for line in lines[1:] if line)
    files = rehash(tampered(bundle, "data.csv", b"\n".join([header, *body]) + b"\n"))
    response = central.upload(files, key=json.loads(files["manifest.json"])["release_id"])
    assert response.status_code == 422
    assert any("fewer than k=3" in r for r in response.json()["detail"]["reasons"])


def test_privacy_record_must_match_the_rows(central):
    bundle = make_bundle("ngo-a")
    privacy = json.loads(bundle.files["privacy.json"])
    privacy["records_out"] = 99
    files = rehash(tampered(bundle, "privacy.json", json.dumps(privacy).encode()))
    response = central.upload(files, key=json.loads(files["manifest.json"])["release_id"])
    assert response.status_code == 422
    assert any("records_out=99" in r for r in response.json()["detail"]["reasons"])


def test_schema_version_mismatch_is_refused_with_a_hint(central):
    bundle = make_bundle("ngo-a")
    package = json.loads(bundle.files["datapackage.json"])
    package["version"] = "0.9.0"
    files = rehash(tampered(bundle, "datapackage.json", json.dumps(package).encode()))
    response = central.upload(files)
    assert response.status_code == 422
    assert "upgrade the connector" in response.json()["detail"]["hint"]


def test_a_partner_writes_only_under_its_own_id(central):
    response = central.upload(make_bundle("ngo-a"), who="ngo-b")
    assert response.status_code == 403 and "ngo-b" in response.json()["detail"]["reasons"][0]
    assert central.upload(make_bundle("ngo-a"), who="admin").status_code == 403
    assert central.stored() == (0, [])


def test_partners_see_only_their_own_releases(central):
    bundle = make_bundle("ngo-a")
    central.upload(bundle)
    assert central.client.get("/releases", headers=central.auth("ngo-b")).json() == []
    assert central.client.get(f"/releases/{bundle.release_id}", headers=central.auth("ngo-b")).status_code == 404
    assert central.client.get("/harmonized.csv", headers=central.auth("ngo-a")).status_code == 403


def test_tokens_are_required_and_checked(central):
    assert central.client.get("/releases").status_code == 401
    wrong = central.tokens["ngo-a"][:-4] + "AAAA"
    assert central.client.get("/releases", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert central.client.get("/whoami", headers=central.auth("ngo-a")).json() == {"role": "partner", "partner": "ngo-a"}


def test_only_hashes_of_tokens_are_stored(central):
    from sqlalchemy import select

    from connector.central.db import tokens

    with central.app.state.engine.connect() as conn:
        stored = [tuple(str(v) for v in row) for row in conn.execute(select(tokens)).all()]
    secrets = [t.split(".", 1)[1] for t in central.tokens.values()]
    assert stored and not any(secret in cell for row in stored for cell in row for secret in secrets)


def test_wrong_content_type_and_oversized_bodies_are_refused(tmp_path, database_url):
    central = Central(tmp_path, database_url, max_upload_bytes=20_000)
    try:
        response = central.client.post("/releases", content=b"{}", headers={**central.auth("ngo-a"), "Content-Type": "application/json"})
        assert response.status_code == 415
        big = central.upload(make_bundle("ngo-a"))  # the codebook alone is larger than 20 kB
        assert big.status_code == 413
        assert central.stored() == (0, [])
    finally:
        central.client.close()


def test_tokens_never_reach_the_logs(central, caplog):
    caplog.set_level(logging.DEBUG)
    central.upload(make_bundle("ngo-a"))
    central.client.get("/releases", headers={"Authorization": "Bearer 0123456789abcdef.not-a-real-secret-at-all"})
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "accepted" in caplog.text
    assert not any(t.split(".", 1)[1] in text for t in central.tokens.values()) and "not-a-real-secret" not in text


def test_harmonized_puts_partners_side_by_side_and_passes_the_gate(central):
    a, b = make_bundle("ngo-a"), make_bundle("ngo-b")
    assert central.upload(a).status_code == 201 and central.upload(b, who="ngo-b").status_code == 201
    response = central.client.get("/harmonized.csv", headers=central.auth("admin"))
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0].startswith("partner,yearOfRegistration")
    assert len(lines) == 1 + 24
    for bundle in (a, b):  # each partner's rows as it published them: nothing lifted to another's level
        own = sorted(line.split(",", 1)[1] for line in lines[1:] if line.startswith(bundle.partner + ","))
        assert own == sorted(bundle.files["data.csv"].decode().splitlines()[1:])
    manifest = central.client.get("/harmonized/manifest.json", headers=central.auth("admin")).json()
    assert manifest["privacy"]["k"] == 3 and manifest["excluded"] == [] and "detail" in manifest
    table = pq.read_table(io.BytesIO(central.client.get("/harmonized.parquet", headers=central.auth("admin")).content))
    assert table.num_rows == 24 and table.column_names[:2] == ["partner", "yearOfRegistration"]


def test_the_page_lists_partners_releases_and_privacy(central):
    bundle = make_bundle("ngo-a")
    central.upload(bundle)
    page = central.client.get("/", headers=central.auth("admin"))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert bundle.release_id in page.text and "ngo-b" in page.text and "none yet" in page.text and "5-year bands" in page.text
    import base64

    basic = base64.b64encode(f"central:{central.tokens['admin']}".encode()).decode()
    assert central.client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert "Basic" in central.client.get("/").headers["www-authenticate"]


def test_a_browser_without_a_token_gets_a_login_page_saying_to_use_the_admin_token_as_password(central):
    page = central.client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert page.headers["www-authenticate"].startswith("Basic")
    assert "admin token as the password" in page.text and "central add-partner --admin" in page.text
    partner = base64.b64encode(f"x:{central.tokens['ngo-a']}".encode()).decode()
    wrong = central.client.get("/", headers={"Accept": "text/html", "Authorization": f"Basic {partner}"})
    assert wrong.status_code == 401 and "not accepted" in wrong.text and central.tokens["ngo-a"] not in wrong.text
    assert central.client.get("/", headers={"Accept": "application/json"}).json()["detail"]["error"] == "a valid token is required"


def test_refused_uploads_are_counted_per_partner_without_their_content(central):
    bundle = make_bundle("ngo-a")
    forged = tampered(bundle, "data.csv", bundle.files["data.csv"] + b"SECRET-VALUE\n")
    assert central.upload(forged).status_code in (400, 422) and central.upload(forged).status_code in (400, 422)
    rows = {p["id"]: p for p in central.client.get("/partners", headers=central.auth("admin")).json()}
    assert rows["ngo-a"]["refused_uploads"] == 2 and rows["ngo-a"]["last_refused_at"] and rows["ngo-b"]["refused_uploads"] == 0
    page = central.client.get("/", headers=central.auth("admin")).text
    assert "SECRET-VALUE" not in page and "refused uploads" in page
    assert not any(b"SECRET-VALUE" in p.read_bytes() for p in central.data_dir.rglob("*") if p.is_file())


def test_the_page_explains_the_harmonized_table_and_each_partners_freshness(central):
    central.upload(make_bundle("ngo-a"))
    central.upload(make_bundle("ngo-b"), who="ngo-b")
    page = central.client.get("/", headers=central.auth("admin")).text
    assert "No column was coarsened for the merge" in page and "No partner's latest release was left out" in page
    assert "Age at registration" in page and "as recorded" in page  # codebook labels, shares in words
    assert "less than an hour ago" in page and "does not know the partners' schedules" in page
    assert "finest level differs by partner, compare at the coarsest: ngo-a: at best a two-year band" in page


def test_path_parameters_are_validated_before_any_lookup(central):
    bundle = make_bundle("ngo-a")
    central.upload(bundle)
    for path in (f"/releases/{bundle.release_id}/files/..%2F..%2Fcentral.sqlite", "/releases/..%2Fetc", f"/releases/{bundle.release_id}/files/.hidden"):
        assert central.client.get(path, headers=central.auth("admin")).status_code in (404, 422)
    assert central.client.get(f"/releases/{bundle.release_id}/files/notes.txt", headers=central.auth("admin")).status_code == 404


def test_a_partners_report_is_served_without_script_rights(central):
    bundle = make_bundle("ngo-a")
    central.upload(bundle)
    response = central.client.get(f"/releases/{bundle.release_id}/files/report.html", headers=central.auth("admin"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_openapi_describes_the_upload(central):
    spec = central.client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/releases"]["post"]["requestBody"]["content"]


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(tmp_path):
    central = Central(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite'}", max_upload_bytes=50_000)
    boundary = "xyz"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="data.csv"\r\n\r\n'.encode()
        for _ in range(100):
            yield b"a" * 1000
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        response = central.client.post("/releases", content=body(), headers={**central.auth("ngo-a"), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413
        assert central.stored() == (0, [])
    finally:
        central.client.close()


def test_a_release_with_k_below_the_receivers_minimum_is_refused(tmp_path, database_url):
    """The receiver's own floor on k: a partner cannot lower it by configuring a small k."""
    central = Central(tmp_path, database_url, min_k=5)
    try:
        response = central.upload(make_bundle("ngo-a", k=3))
        assert response.status_code == 422, response.text
        assert any("k=3 is below this receiver's minimum k=5" in r for r in response.json()["detail"]["reasons"])
        assert central.stored() == (0, [])
        assert central.upload(make_bundle("ngo-a", k=5)).status_code == 201
    finally:
        central.client.close()
        central.app.state.engine.dispose()


def test_a_release_relabelled_synthetic_cannot_slip_under_the_minimum_group_size(tmp_path, database_url):
    """The receiver's floor on the smallest group holds whatever the method is called."""
    central = Central(tmp_path, database_url, min_k=10)
    try:
        bundle = make_bundle("ngo-a", k=3)
        privacy = json.loads(bundle.files["privacy.json"])
        privacy.update(method="synthetic", resolution=3, reporting_length=3, epsilon=1.0, delta=1e-6, budget={"total": 12.0, "spent_before": 0.0})
        files = tampered(bundle, "privacy.json", json.dumps(privacy).encode())
        manifest = json.loads(files["manifest.json"])
        manifest["method"] = "synthetic"
        files = rehash({**files, "manifest.json": json.dumps(manifest).encode()})
        response = central.upload(files, key=json.loads(files["manifest.json"])["release_id"])
        assert response.status_code == 422, response.text
        assert any("resolution=3 is below this receiver's minimum group size 10" in r for r in response.json()["detail"]["reasons"])
        assert central.stored() == (0, [])
    finally:
        central.client.close()
        central.app.state.engine.dispose()



def test_partners_show_their_release_count_and_latest_release(central):
    first, second = make_bundle("ngo-a", k=3), make_bundle("ngo-a", k=4, part="2")
    central.upload(first)
    central.upload(second)
    rows = {p["id"]: p for p in central.client.get("/partners", headers=central.auth("admin")).json()}
    assert rows["ngo-a"]["releases"] == 2 and rows["ngo-a"]["latest_release"] == second.release_id and rows["ngo-a"]["latest_received_at"]
    assert rows["ngo-b"] == {"id": "ngo-b", "name": "NGO B", "releases": 0, "latest_release": None, "latest_received_at": None,
                             "refused_uploads": 0, "last_refused_at": None}


def test_readers_get_the_previous_merge_while_a_newer_one_is_computed_not_a_queue(central, monkeypatch):
    """Under load every harmonized/page read queued behind each merge (bench/central_load.py: p99
    in seconds). A reader that finds a merge of a newer set under way gets the last merge, whose
    manifest names the releases it holds; the first reader after the merge gets the new one."""
    import threading

    import connector.central.app as app_module

    real = app_module.merge_releases
    started, release = threading.Event(), threading.Event()

    def slow_merge(inputs, schema):
        if len(inputs) == 2:
            started.set()
            assert release.wait(30)
        return real(inputs, schema)

    monkeypatch.setattr(app_module, "merge_releases", slow_merge)
    central.upload(make_bundle("ngo-a"))
    assert len(central.client.get("/harmonized.csv", headers=central.auth("admin")).text.splitlines()) == 1 + 12
    central.upload(make_bundle("ngo-b"), who="ngo-b")
    results = {}
    worker = threading.Thread(target=lambda: results.update(new=central.client.get("/harmonized.csv", headers=central.auth("admin"))))
    worker.start()
    assert started.wait(30)
    during = central.client.get("/harmonized/manifest.json", headers=central.auth("admin")).json()
    assert [r["partner"] for r in during["releases"]] == ["ngo-a"]  # the previous merge, at once
    release.set()
    worker.join(30)
    assert len(results["new"].text.splitlines()) == 1 + 24
    after = central.client.get("/harmonized/manifest.json", headers=central.auth("admin")).json()
    assert [r["partner"] for r in after["releases"]] == ["ngo-a", "ngo-b"]


def _grown(bundle: Bundle, extra_rows: int) -> Bundle:
    """The partner's release with `extra_rows` copies of its first row added (a k-anonymous table
    on its own whenever the row's group stays >= k)."""
    from datetime import datetime, timezone

    import pandas as pd

    from connector.release import build_bundle
    from connector.schema import load_schema
    from privacy.gate import admit, parse_csv_bytes

    schema = load_schema()
    header, rows = parse_csv_bytes(bundle.files["data.csv"])
    table = pd.DataFrame(rows + [rows[0]] * extra_rows, columns=header, dtype=object).replace("", None)
    privacy = json.loads(bundle.files["privacy.json"])
    privacy["records_out"] = len(table)
    release = admit(table, privacy, roles=schema.view_roles())
    return build_bundle(release, partner=bundle.partner, schema=schema, run_ids=["run-2"], created_at=datetime(2024, 6, 1, tzinfo=timezone.utc))


def test_an_upload_whose_difference_from_the_previous_release_singles_a_case_out_is_refused(central):
    """Comparing two versions of a partner's release (or two downloads of /harmonized.csv) must not
    show fewer than k rows added or removed: one new case is one new row."""
    first = make_bundle("ngo-a")
    assert central.upload(first).status_code == 201
    one_more = _grown(first, 1)  # the release alone is k-anonymous (a group of 4), the step is one case
    response = central.upload(one_more)
    assert response.status_code == 422, response.text
    assert "previous release would single cases out" in response.json()["detail"]["error"]
    assert any("rows added since the previous release include 1 row(s)" in r for r in response.json()["detail"]["reasons"])
    assert central.stored()[0] == 1
    assert central.upload(_grown(first, 3)).status_code == 201  # a whole group of k added: safe


@pytest.mark.postgres
def test_a_connection_the_database_dropped_is_a_503_with_retry_after_and_the_next_request_works(tmp_path):
    """The receiver does not ping before every request (bench/central_load.py: it tripled the read
    p99): a dropped connection must then fail one request legibly, not as a 500, and heal."""
    assert _pg_unreachable() is None, _pg_unreachable()  # CI has PostgreSQL: no silent skip
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema, name = f"central_{uuid.uuid4().hex[:10]}", f"htcds_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}", "application_name": name})
    central = Central(tmp_path, url.render_as_string(hide_password=False))
    try:
        assert central.upload(make_bundle("ngo-a")).status_code == 201
        assert central.client.get("/releases", headers=central.auth("admin")).status_code == 200
        with admin.begin() as conn:  # only this receiver's connections: other tests run beside it
            killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"), {"n": name}).scalar()
        assert killed >= 1
        lost = central.client.get("/releases", headers=central.auth("admin"))
        assert lost.status_code == 503 and lost.headers["Retry-After"] == "1", lost.text
        assert "database connection was lost" in lost.json()["detail"]["error"]
        assert "terminat" not in lost.text.lower() and "SELECT" not in lost.text  # no driver text, no SQL
        healed = central.client.get("/releases", headers=central.auth("admin"))
        assert healed.status_code == 200 and len(healed.json()) == 1
    finally:
        central.client.close()
        central.app.state.engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_reads_run_in_autocommit_without_begin_and_rollback_round_trips(central):
    """A read's statements (its token, the release, its files) each run outside a transaction:
    no BEGIN and ROLLBACK around them, which cost PostgreSQL round trips under load
    (bench/central_load.py). An upload still runs in transactions."""
    from sqlalchemy import event

    bundle = make_bundle("ngo-a")
    assert central.upload(bundle).status_code == 201
    engine = central.app.state.engine
    seen: list[tuple[str, bool]] = []

    def autocommit(dbapi_connection) -> bool:
        if hasattr(dbapi_connection, "autocommit"):  # psycopg2
            return bool(dbapi_connection.autocommit)
        return dbapi_connection.isolation_level is None  # sqlite3: no implicit BEGIN

    def before(conn, _cursor, statement, *_args) -> None:
        seen.append((statement.split()[0].upper(), autocommit(conn.connection.dbapi_connection)))

    event.listen(engine, "before_cursor_execute", before)
    try:
        for path in ("/releases", f"/releases/{bundle.release_id}", f"/releases/{bundle.release_id}/files/data.csv", "/partners", "/"):
            who = "admin" if path in ("/partners", "/") else "ngo-a"
            assert central.client.get(path, headers=central.auth(who)).status_code == 200, path
        reads = list(seen)
        seen.clear()
        assert central.upload(make_bundle("ngo-a", part="2")).status_code == 201
        writes = list(seen)
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert reads and all(kind == "SELECT" for kind, _ in reads)
    assert all(auto for _, auto in reads), reads
    assert any(kind == "INSERT" and not auto for kind, auto in writes), writes
