"""One run per job across hosts: with a PostgreSQL store the job's lock is in the store itself.

Two processes (as two hosts or two Kubernetes pods would be) run the same partner's job against one
PostgreSQL store: the second exits 6 naming the holder, the first is not disturbed, and a holder
killed with SIGKILL leaves no stale lock (the server ends its session and the lock with it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import text

from connector.errors import EXIT_LOCKED, EXIT_OK
from tests.faults.jobs import REPO, cli_command, run_cli, write_job
from tests.postgres import admin_engine, fresh_schema

pytestmark = pytest.mark.postgres


def start_slow_run(config) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HTCDS_FAULT"}
    return subprocess.Popen(cli_command("run", str(config)), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_advisory_lock(process: subprocess.Popen, timeout: float = 60) -> None:
    """Until a session named after `process` holds an advisory lock."""
    engine = admin_engine()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            with engine.connect() as conn:
                held = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE :name"
                    ),
                    {"name": f"htcds-connector % pid {process.pid}"},
                ).scalar_one()
            if held:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("the first run never took the lock")


def test_a_second_process_on_the_same_postgres_store_exits_6(tmp_path):
    with fresh_schema() as (url, _schema):
        first_dir, second_dir = tmp_path / "host-a", tmp_path / "host-b"  # separate folders: no shared lock file
        first_dir.mkdir(), second_dir.mkdir()
        first = start_slow_run(write_job(first_dir, store_url=url, source={"sleep_per_page": 1.0}))
        try:
            wait_for_advisory_lock(first)
            second = run_cli("run", str(write_job(second_dir, store_url=url)))
            assert second.returncode == EXIT_LOCKED, second.stderr[-3000:]
            assert f"pid {first.pid}" in " ".join(second.stderr.split()) and "advisory lock" in second.stderr
            assert first.wait(timeout=120) == EXIT_OK
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            first.stderr.close()
        # once the first run is over, the lock is free again
        assert run_cli("run", str(write_job(second_dir, store_url=url))).returncode == EXIT_OK


def test_a_killed_holder_leaves_no_stale_lock_in_the_store(tmp_path):
    with fresh_schema() as (url, _schema):
        config = write_job(tmp_path, store_url=url, source={"sleep_per_page": 0.5})
        first = start_slow_run(config)
        try:
            wait_for_advisory_lock(first)
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(timeout=30) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            first.stderr.close()
        rerun = run_cli("run", str(write_job(tmp_path, store_url=url)))
        assert rerun.returncode == EXIT_OK, rerun.stderr[-3000:]


def test_different_jobs_on_one_postgres_store_do_not_block_each_other(tmp_path):
    with fresh_schema() as (url, _schema):
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        first = start_slow_run(write_job(tmp_path / "a", store_url=url, source={"sleep_per_page": 0.5}))
        try:
            wait_for_advisory_lock(first)
            other = run_cli("sync", str(write_job(tmp_path / "b", store_url=url, partner="other-ngo")))
            assert other.returncode == EXIT_OK, other.stderr[-3000:]
            assert first.wait(timeout=120) == EXIT_OK
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
            first.stderr.close()


def test_a_run_whose_store_lock_is_lost_stops_after_the_page(tmp_path):
    """A failover mid-run drops the lock's session; the pool's connections would reconnect and the
    run go on unlocked, while another host may start the job. It stops after the page instead."""
    from connector.config import load_config
    from connector.pipeline import Pipeline
    from tests.conftest import FakeSource  # noqa: F401 - registers `fake`

    with fresh_schema() as (url, _schema):
        pipeline = Pipeline(load_config(write_job(tmp_path, store_url=url)))
        terminated: list[int] = []

        def drop_the_lock_session(source: str, pages: int, records: int) -> None:
            if pages == 2 and not terminated:
                engine = admin_engine()
                with engine.begin() as conn:
                    terminated.append(conn.execute(
                        text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE :name"),
                        {"name": f"htcds-connector % pid {os.getpid()}"},
                    ).scalar_one())
                engine.dispose()
                time.sleep(0.2)  # the server ends the session

        pipeline.progress = drop_the_lock_session
        with pipeline.lock():
            report = pipeline.sync()
        pipeline.close()
        (source,) = report.sources
        assert terminated == [1] and source.status == "interrupted" and source.pages == 2
        assert "lock in the store was lost" in source.error
