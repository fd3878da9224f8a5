"""Connector -> central receiver over real HTTP (uvicorn on 127.0.0.1) -> merged dataset.

Covers: jobs configured with `destination: central_api` publish; a retried upload after a dropped
connection makes exactly one release; the harmonized CSV merges two partners and passes the gate;
schemathesis fuzzes the served OpenAPI (bounded, loopback only).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pandas as pd
import pytest
import requests

from connector.central.app import CentralSettings, create_app
from connector.central.auth import add_admin, add_partner
from connector.central.cli import ServerThread
from connector.config import load_config
from connector.destinations import create_destination
from connector.pipeline import Pipeline
from connector.schema import load_schema
from privacy.gate import admit, parse_csv_bytes
from tests.unit.test_central_fixtures import make_bundle


@pytest.fixture
def receiver(tmp_path):
    app = create_app(CentralSettings(database_url=f"sqlite:///{tmp_path / 'central' / 'central.sqlite'}", data_dir=tmp_path / "central"))
    tokens = {p: add_partner(app.state.engine, p) for p in ("ngo-a", "ngo-b")}
    tokens["admin"] = add_admin(app.state.engine)
    with ServerThread(app) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        server.app = app  # type: ignore[attr-defined]
        yield server
    app.state.engine.dispose()


def admin_get(receiver, path: str) -> requests.Response:
    return requests.get(receiver.url + path, headers={"Authorization": f"Bearer {receiver.tokens['admin']}"}, timeout=30)


class DroppingProxy:
    """A TCP proxy that forwards everything, except that it closes the client's connection instead of
    relaying the response to the first `drops` POST requests: the receiver has done the work, the
    client sees a dropped connection."""

    def __init__(self, upstream_port: int, drops: int = 1):
        self.upstream_port = upstream_port
        self.drops = drops
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.lock = threading.Lock()

    def __enter__(self) -> "DroppingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.listener.close()
        self.thread.join(timeout=5)

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"drop": False}

        def forward() -> None:
            try:
                while data := client.recv(65536):
                    if data.startswith(b"POST "):
                        with self.lock:
                            if self.drops > 0:
                                self.drops -= 1
                                state["drop"] = True
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if state["drop"]:
                    break  # the receiver answered; the client never hears it
                client.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def central_config(write_config, partner: str, url: str, name: str):
    return load_config(write_config(f"""
partner: {{id: {partner}}}
sources: [{{id: s, type: fake, mapping: excel_htcds}}]
destination:
  type: central_api
  url: {url}
  token_env: TOKEN_{partner.replace('-', '_').upper()}
  timeout: 10
  retries: 3
""", name=name))


def test_a_retried_upload_after_a_dropped_connection_makes_exactly_one_release(receiver, write_config, monkeypatch):
    monkeypatch.setenv("TOKEN_NGO_A", receiver.tokens["ngo-a"])
    bundle = make_bundle("ngo-a")
    with DroppingProxy(receiver.port, drops=1) as proxy:
        destination = create_destination(central_config(write_config, "ngo-a", proxy.url, "a.yaml"))
        destination.sleep = lambda seconds: None  # type: ignore[attr-defined]
        result = destination.publish(bundle)
        assert proxy.drops == 0  # the first POST really was dropped
    assert result.published and destination.attempts == 3  # GET, dropped POST, retried POST
    releases = admin_get(receiver, "/releases").json()
    assert [(r["partner"], r["release_id"], r["version"]) for r in releases] == [("ngo-a", bundle.release_id, 1)]
    assert destination.publish(bundle).published is False


def test_two_partners_publish_and_the_harmonized_dataset_passes_the_gate(receiver, write_config, monkeypatch):
    for partner in ("ngo-a", "ngo-b"):
        monkeypatch.setenv(f"TOKEN_{partner.replace('-', '_').upper()}", receiver.tokens[partner])
        destination = create_destination(central_config(write_config, partner, receiver.url, f"{partner}.yaml"))
        assert destination.check() == []
        assert destination.publish(make_bundle(partner)).published

    csv_bytes = admin_get(receiver, "/harmonized.csv").content
    header, rows = parse_csv_bytes(csv_bytes)
    assert header[:2] == ["partner", "yearOfRegistration"] and {r[0] for r in rows} == {"ngo-a", "ngo-b"}
    manifest = admin_get(receiver, "/harmonized/manifest.json").json()
    # the merged bytes pass the gate again here, independently of the receiver
    roles = {**load_schema().view_roles(), "partner": "quasi_identifier", "release": "quasi_identifier"}
    table = pd.DataFrame(rows, columns=header, dtype=object)
    admit(table, manifest["privacy"], roles=roles)
    assert table.groupby(["partner", *[c for c in header if roles.get(c) == "quasi_identifier" and c != "partner"]]).size().min() >= 3
    page = admin_get(receiver, "/")
    assert all(p in page.text for p in ("ngo-a", "ngo-b", "harmonized.csv"))


PIPELINE_MAPPING = """\
profile: fake_central
fields:
  prs_Gender: gender
  prs_Birthdate: birth
  prs_Citizenship: {from: citizenship, split: ","}
  ext_RegistrationDate: registered
derive:
  ext_AgeAtRegistration: {age_at: {birth: prs_Birthdate, date: ext_RegistrationDate}}
  ext_MajorityStatus: {majority_from: ext_AgeAtRegistration}
"""


def test_a_job_with_destination_central_api_publishes_and_the_page_lists_it(receiver, write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN_NGO_A", receiver.tokens["ngo-a"])
    (tmp_path / "fake_central.yaml").write_text(PIPELINE_MAPPING)
    people = [("Feminine", "1990-03-01", "UA", "2021-05-02"), ("Masculine", "1985-07-09", "MD", "2022-01-15"), ("Feminine", "2001-11-30", "RO", "2023-08-20")]
    records = [{"id": i, "gender": g, "birth": b, "citizenship": c, "registered": r} for i, (g, b, c, r) in enumerate(people * 6)]
    config = load_config(write_config(f"""
partner: {{id: ngo-a}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: fake1
    type: fake
    mapping: fake_central.yaml
    options: {{page_size: 10, records: {json.dumps(records)}}}
release: {{k: 3}}
destination: {{type: central_api, url: "{receiver.url}", token_env: TOKEN_NGO_A, retries: 1}}
""", name="job.yaml"))
    pipeline = Pipeline(config)
    try:
        _sync, report = pipeline.run()
    finally:
        pipeline.close()
    assert report.status == "published", report.reasons
    listed = admin_get(receiver, "/releases").json()
    assert [r["release_id"] for r in listed] == [report.release_id]
    assert report.release_id in admin_get(receiver, "/").text


def test_schemathesis_finds_no_server_errors_or_schema_violations(receiver):
    import schemathesis  # a dev dependency: missing is a failure, not a skip
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    requests.post(receiver.url + "/releases", headers={"Authorization": f"Bearer {receiver.tokens['ngo-a']}", "Idempotency-Key": make_bundle("ngo-a").release_id},
                  files=[("files", (n, c)) for n, c in make_bundle("ngo-a").files.items()], timeout=30).raise_for_status()
    schema = schemathesis.openapi.from_url(receiver.url + "/openapi.json")
    started = time.monotonic()
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        who = "ngo-a" if operation.method.upper() == "POST" else "admin"

        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            # A schema-valid upload is still refused (422) unless it is a real, gate-passing release:
            # that semantic refusal is the point, so the "positive data accepted" check is off for it.
            excluded = [positive_data_acceptance] if operation.method.upper() == "POST" else []
            case.call_and_validate(headers={"Authorization": f"Bearer {receiver.tokens[who]}"}, excluded_checks=excluded, timeout=20)

        run()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /releases" in tested and "GET /harmonized.csv" in tested
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("sqlite", 2), pytest.param("postgresql", 1, marks=pytest.mark.postgres)])
def test_the_load_bench_runs_mixed_publishes_and_reads_without_errors(backend, workers, capsys):
    """bench/central_load.py at a small size: a real receiver process on loopback (or `central serve
    --workers 2`), every operation exercised, no errors (the full run is `python bench/central_load.py`)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import central_load

    if backend == "postgresql":
        from tests.unit.test_central_app import _pg_unreachable

        assert _pg_unreachable() is None, _pg_unreachable()  # CI has PostgreSQL: no silent skip
    code = central_load.main(["--backend", backend, "--clients", "12", "--duration", "2", "--think", "0.05", "--partners", "2",
                              "--releases", "2", "--rows", "120", "--workers", str(workers), "--json"])
    rows = {row["operation"]: row for row in json.loads(capsys.readouterr().out)}
    assert code == 0 and all(row["errors"] == 0 for row in rows.values()), rows
    assert set(rows) == {"publish", "list", "detail", "file", "harmonized", "page", "read (all)"}
    assert rows["publish"]["requests"] > 0 and rows["read (all)"]["requests"] > 0 and rows["read (all)"]["p99_ms"] >= rows["read (all)"]["p50_ms"]
