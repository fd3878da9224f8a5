"""No personal value and no secret anywhere a run writes outside the case store's case data.

A full job runs in a subprocess (`htcds-connector --log-json run`) over generated cases with fake
names, phones, addresses, identity numbers and free text: an HTCDS Excel workbook (messy values,
so there are rejections) and a second source that fails mid-way on its credentials (so there are
errors), with a webhook notification to a local receiver. Then every place a value could leak is
scanned for every one of `personal_values(cases)` and for the secrets: each log line, stdout,
stderr, `status --json`, the store's run, rejection and source-status text, the notification and
the release files.
"""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from connector.codebook import render_codebook_markdown
from connector.sandbox.excel_writer import write_workbook
from connector.schema import load_schema
from connector.sandbox.generate import generate_cases, personal_values
from tests.faults.jobs import run_cli
from tests.webhook import webhook_receiver

N_CASES = int(os.environ.get("HTCDS_LOG_SCAN_CASES", "400"))
SOURCE_PASSWORD = "scripted-s0urce-passw0rd"
WEBHOOK_TOKEN = "webh00k-bearer-t0ken"
MIN_LENGTH = 4  # shorter values (initials, "Li") match ordinary words and codes


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver(lambda headers, body: body.decode() + json.dumps(headers)) as server:
        yield server, server.posts


@pytest.fixture(scope="module")
def job_run(tmp_path_factory, receiver):
    server, bodies = receiver
    tmp_path = tmp_path_factory.mktemp("log-scan")
    cases = generate_cases(N_CASES, seed=21, mess_rate=0.15)
    write_workbook(cases, tmp_path / "cases.xlsx")
    scripted = generate_cases(60, seed=3, mess_rate=0.0)  # what the second source serves
    config = tmp_path / "job.yaml"
    config.write_text(
        f"""\
partner: {{id: scan-ngo}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {{path: cases.xlsx}}
  - id: remote
    type: scripted
    mapping: excel_htcds
    options: {{cases: 60, seed: 3, page_size: 10, fail: auth, fail_at_page: 2, password_env: SCAN_SOURCE_PASSWORD}}
release: {{method: k_anonymity, k: 5}}
destination: {{type: folder, path: releases}}
run: {{release_requires_all_sources: false}}
notify:
  webhook: {{url: "http://127.0.0.1:{server.server_address[1]}/hook", token_env: SCAN_WEBHOOK_TOKEN}}
"""
    )
    env = {"SCAN_SOURCE_PASSWORD": SOURCE_PASSWORD, "SCAN_WEBHOOK_TOKEN": WEBHOOK_TOKEN}
    run = run_cli("--log-json", "run", str(config), "--json", env=env)
    status = run_cli("status", str(config), "--json", env=env)
    # A value that the schema's own text contains ("Mariana" in "Northern Mariana Islands") is not
    # a leak when the codebook shows it.
    schema_text = render_codebook_markdown(load_schema())
    values = {v for v in personal_values(cases) | personal_values(scripted) if len(v) >= MIN_LENGTH and v not in schema_text}
    return tmp_path, run, status, bodies, values


def leaks(text: str, values: set[str]) -> list[str]:
    return sorted(v for v in values if v in text)


def test_the_job_did_what_the_scan_needs(job_run):
    """The scan means something only if the run stored cases, rejected values and failed a source."""
    tmp_path, run, _, _, values = job_run
    report = json.loads(run.stdout)
    sources = {s["source"]: s for s in report["sync"]["sources"]}
    assert sources["workbook"]["status"] == "ok" and sources["workbook"]["rejected"] > 0
    assert sources["remote"]["status"] == "failed" and sources["remote"]["inserted"] == 20
    assert report["release"]["status"] == "published" and report["exit_code"] == 3
    assert len(values) > 3 * N_CASES
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
        data = "\n".join(row[0] for row in db.execute("select data from cases"))
    assert leaks(data, values), "the store's case data holds the personal values (the scan's control)"


def test_every_log_line_is_json_and_none_holds_a_personal_value_or_secret(job_run):
    _, run, _, _, values = job_run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) >= 5 and all(isinstance(json.loads(line), dict) for line in lines)
    assert any(json.loads(line)["event"] == "sync failed" for line in lines)
    assert leaks(run.stderr, values | {SOURCE_PASSWORD, WEBHOOK_TOKEN}) == []


def test_stdout_and_status_hold_no_personal_value_or_secret(job_run):
    _, run, status, _, values = job_run
    assert status.returncode == 0 and json.loads(status.stdout)["runs"]
    assert leaks(run.stdout + status.stdout + status.stderr, values | {SOURCE_PASSWORD, WEBHOOK_TOKEN}) == []


def store_text(tmp_path: Path, tables: tuple[str, ...]) -> str:
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
        return "\n".join(str(row) for table in tables for row in db.execute(f"select * from {table}"))


def test_the_stores_run_and_source_status_text_hold_no_personal_value(job_run):
    tmp_path, _, _, _, values = job_run
    text = store_text(tmp_path, ("runs", "source_status", "releases", "cursors"))
    assert "remote" in text and "refused the credentials" in text
    assert leaks(text, values | {SOURCE_PASSWORD, WEBHOOK_TOKEN}) == []


def test_the_stores_rejection_text_holds_no_personal_value(job_run):
    tmp_path, _, _, _, values = job_run
    text = store_text(tmp_path, ("rejections",))
    assert text.count("\n") > 10  # many rejections to scan
    assert leaks(text, values | {SOURCE_PASSWORD, WEBHOOK_TOKEN}) == []


def test_the_notification_holds_no_personal_value_or_secret(job_run):
    _, _, _, bodies, values = job_run
    (body,) = bodies
    assert '"event": "failure"' in body and "remote" in body
    assert leaks(body.replace(f"Bearer {WEBHOOK_TOKEN}", ""), values | {SOURCE_PASSWORD, WEBHOOK_TOKEN}) == []


def test_the_release_files_hold_no_personal_value(job_run):
    tmp_path, _, _, _, values = job_run
    files = [p for p in Path(tmp_path / "releases").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"data.csv", "manifest.json", "privacy.json"}
    assert leaks("\n".join(p.read_text(encoding="utf-8") for p in files), values | {SOURCE_PASSWORD}) == []
