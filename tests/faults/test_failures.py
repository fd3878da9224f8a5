"""Failures an unattended run must report, not survive: each ends with its documented exit code, a
JSON report, a notification, the run marked failed, and one line on stderr, never a traceback.

The runs are subprocesses (`htcds-connector run --json` with the tests' scripted source, see
jobs.py). Faults are injected at named points (connector/faults.py): `=ENOSPC` raises the OSError a
full disk raises there; `=SIGSTOP` pauses the process inside the store's page transaction, so the
test can terminate its PostgreSQL connection from outside (pg_terminate_backend, as a server
restart or a failover does) and let it run on.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from connector.errors import EXIT_CONFIG, EXIT_PUBLISH, EXIT_SOURCE
from tests.faults.jobs import REPO, cli_command, run_cli, write_job
from tests.postgres import admin_engine, fresh_schema
from tests.webhook import webhook_receiver


@pytest.fixture
def webhook():
    """A webhook receiver on 127.0.0.1: `.posts` holds the JSON bodies it got."""
    with webhook_receiver(lambda _headers, body: json.loads(body)) as server:
        server.extra = f'notify: {{webhook: {{url: "{server.url}"}}}}\n'
        yield server


def assert_reported(result: subprocess.CompletedProcess, code: int, webhook, words: str) -> dict:
    """Exit `code`, no traceback, the JSON report on stdout with the same code naming `words`, the
    run's own errors on stderr too, and a failure notice with the code."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["exit_code"] == code and words in json.dumps(report), "\n".join(report["errors"])
    for error in report["errors"]:
        assert " ".join(error.split())[:60] in " ".join(result.stderr.split())
    (notice,) = webhook.posts
    assert (notice["event"], notice["exit_code"]) == ("failure", code)
    return report


def sqlite_runs(folder: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(folder / "state" / "cases.sqlite") as db:
        return list(db.execute("select kind, status, error from runs order by started_at"))


def test_disk_full_while_committing_a_page_exits_2_and_marks_the_run_failed(tmp_path, webhook):
    config = write_job(tmp_path, extra=webhook.extra)
    result = run_cli("run", str(config), "--json", fault="store.commit:2=ENOSPC")
    report = assert_reported(result, EXIT_CONFIG, webhook, "disk full")
    assert report["sync"]["sources"][0]["status"] == "failed" and report["sync"]["exit_code"] == EXIT_CONFIG
    (run,) = sqlite_runs(tmp_path)
    assert run[:2] == ("sync", "failed") and "disk full" in run[2]
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:  # the first page stayed, whole
        assert db.execute("select count(*) from cases").fetchone() == (10,)
        assert db.execute("select value from cursors").fetchone() == ("10",)
    assert run_cli("run", str(config)).returncode == 0  # room again: the next run resumes


def test_disk_full_while_writing_the_release_exits_5(tmp_path, webhook):
    config = write_job(tmp_path, extra=webhook.extra)
    result = run_cli("run", str(config), "--json", fault="release.write:2=ENOSPC")
    report = assert_reported(result, EXIT_PUBLISH, webhook, "No space left on device")
    assert report["release"]["status"] == "failed"
    assert [r[:2] for r in sqlite_runs(tmp_path)] == [("sync", "ok"), ("release", "failed")]
    assert not (tmp_path / "releases" / "test-ngo").exists() or not any((tmp_path / "releases" / "test-ngo").iterdir())


@contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """`path` cannot be written, even by root (who ignores file modes): chattr +i then."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"running as root and `chattr +i` is refused here ({made.stderr.strip()}): cannot make a file read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_sqlite_store_exits_2_with_one_line(tmp_path, webhook):
    config = write_job(tmp_path, extra=webhook.extra, source={"cases": 20})
    assert run_cli("run", str(config)).returncode == 0
    with read_only_file(tmp_path / "state" / "cases.sqlite"):
        result = run_cli("run", str(write_job(tmp_path, extra=webhook.extra)), "--json")
    assert_reported(result, EXIT_CONFIG, webhook, "readonly database")


def test_status_against_an_unreachable_store_exits_2_with_one_line(tmp_path):
    config = write_job(tmp_path, store_url="postgresql+psycopg2://nobody@127.0.0.1:9/none?connect_timeout=2")
    result = run_cli("status", str(config))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error cannot open the case store at postgresql+psycopg2://nobody@127.0.0.1:9/none")


def test_a_workbook_whose_sheet_xml_is_cut_short_exits_3(tmp_path, webhook):
    import zipfile

    from connector.sandbox.excel_writer import write_workbook
    from connector.sandbox.generate import generate_cases

    whole = tmp_path / "whole.xlsx"
    write_workbook(generate_cases(200, seed=1), whole)
    cut = tmp_path / "cases.xlsx"
    with zipfile.ZipFile(whole) as zin, zipfile.ZipFile(cut, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[: len(data) // 2] if item.filename.startswith("xl/worksheets/sheet") else data)
    config = tmp_path / "job.yaml"
    config.write_text(
        "partner: {id: test-ngo, datasource: Case Management}\n"
        'store: {url: "sqlite:///state/cases.sqlite"}\n'
        "sources:\n  - {id: sheet, type: excel, mapping: excel_htcds, options: {path: cases.xlsx}}\n"
        "release: {method: k_anonymity, k: 3, suppression_limit: 0.5}\n"
        "destination: {type: folder, path: releases}\n" + webhook.extra
    )
    result = run_cli("run", str(config), "--json")
    report = assert_reported(result, EXIT_SOURCE, webhook, "is the file complete?")
    assert report["sync"]["sources"][0]["status"] == "failed" and "cases.xlsx" in report["sync"]["sources"][0]["error"]
    assert sqlite_runs(tmp_path)[0][:2] == ("sync", "failed")


@pytest.mark.parametrize("bad", ["long_id_at", "nul_id_at"])
def test_an_id_the_store_cannot_hold_is_a_rejection_and_the_run_goes_on(tmp_path, bad):
    config = write_job(tmp_path, source={bad: [13]})
    result = run_cli("run", str(config), "--json")
    assert result.returncode == 1, result.stderr[-3000:]  # finished, with a rejection
    report = json.loads(result.stdout)
    assert report["sync"]["sources"][0]["fetched"] == 60 and report["release"]["status"] == "published"
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
        assert db.execute("select count(*) from cases").fetchone() == (59,)
        assert db.execute("select value from cursors").fetchone() == ("60",)
        (shown, field, reason), = db.execute("select record_id, field, reason from rejections where field = 'record_id'")
    assert field == "record_id" and "\x00" not in shown and len(shown) < 100
    assert ("300 characters" in shown and "longer than the 255" in reason) if bad == "long_id_at" else (shown == "nul\\x0013" and "NUL" in reason)


# -- PostgreSQL -------------------------------------------------------------------------------


def wait_stopped(process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the process is stopped by SIGSTOP (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the fault point")


@pytest.mark.postgres
def test_postgres_connection_dropped_mid_page_exits_2_and_the_next_run_resumes(tmp_path, webhook):
    app = f"htcds-fault-{uuid.uuid4().hex[:8]}"
    with fresh_schema(application_name=app) as (url, schema):
        config = write_job(tmp_path, extra=webhook.extra, store_url=url)
        env = {k: v for k, v in os.environ.items() if k != "HTCDS_FAULT"}
        env["HTCDS_FAULT"] = "store.commit:2=SIGSTOP"
        process = subprocess.Popen(cli_command("run", str(config), "--json"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_stopped(process)
            admin = admin_engine()
            with admin.begin() as conn:
                killed = conn.execute(
                    text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app AND state <> 'idle'"), {"app": app}
                ).scalar_one()
            admin.dispose()
            assert killed >= 1
            os.kill(process.pid, signal.SIGCONT)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        assert_reported(result, EXIT_CONFIG, webhook, "server closed the connection unexpectedly")
        store = create_engine(url)
        with store.connect() as conn:
            assert conn.execute(text("SELECT kind, status FROM runs")).all() == [("sync", "failed")]
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar_one() == 10  # page 1 only, whole
            assert conn.execute(text("SELECT value FROM cursors")).scalar_one() == "10"
        store.dispose()
        rerun = run_cli("run", str(config), "--json")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert json.loads(rerun.stdout)["sync"]["sources"][0]["fetched"] == 50


@pytest.mark.postgres
def test_a_read_only_postgres_store_exits_2_with_one_line(tmp_path, webhook):
    with fresh_schema() as (url, schema):
        config = write_job(tmp_path, extra=webhook.extra, store_url=url)
        assert run_cli("run", str(config)).returncode == 0
        read_only = make_url(url).update_query_dict({"options": f"-cdefault_transaction_read_only=on -csearch_path={schema}"}).render_as_string(hide_password=False)
        config = write_job(tmp_path, name="ro.yaml", extra=webhook.extra, store_url=read_only)
        result = run_cli("run", str(config), "--json")
        assert_reported(result, EXIT_CONFIG, webhook, "read-only transaction")


@pytest.mark.postgres
@pytest.mark.parametrize("bad", ["long_id_at", "nul_id_at"])
def test_an_id_postgres_cannot_hold_is_a_rejection_and_the_run_goes_on(tmp_path, bad):
    with fresh_schema() as (url, schema):
        config = write_job(tmp_path, source={bad: [13]}, store_url=url)
        result = run_cli("run", str(config), "--json")
        assert result.returncode == 1, result.stderr[-3000:]
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM cases")).scalar_one() == 59
            assert conn.execute(text("SELECT value FROM cursors")).scalar_one() == "60"
            assert conn.execute(text("SELECT count(*) FROM rejections WHERE field = 'record_id'")).scalar_one() == 1
        engine.dispose()
        # and the next run is not stuck on that page
        again = run_cli("run", str(config), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["sync"]["sources"][0]["fetched"] == 0
