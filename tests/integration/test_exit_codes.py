"""Every exit code of `htcds-connector run`, in a subprocess, as cron and systemd see them.

The runs use the tests' `scripted` source (tests/faults/jobs.py: generated cases as HTCDS template
rows, in pages) through `python -m tests.faults.cli`, which is the real CLI with that source added.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.pipeline import EXIT_CONFIG, EXIT_GATE, EXIT_LOCKED, EXIT_OK, EXIT_PUBLISH, EXIT_REJECTIONS, EXIT_SOURCE
from tests.faults.jobs import REPO, cli_command, run_cli, write_job
from tests.faults.state import job_state


def run_json(config: Path) -> tuple[int, dict]:
    result = run_cli("run", str(config), "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def test_0_when_everything_went_well(tmp_path):
    code, report = run_json(write_job(tmp_path))
    assert code == EXIT_OK == report["exit_code"]
    assert report["release"]["status"] == "published"


def test_1_when_values_were_rejected_but_the_release_went_out(tmp_path):
    code, report = run_json(write_job(tmp_path, source={"mess_rate": 0.3}))
    assert code == EXIT_REJECTIONS
    assert report["sync"]["sources"][0]["rejected"] > 0 and report["release"]["status"] == "published"


def test_2_on_a_config_error_naming_the_line(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("partner: {id: ngo}\nsources:\n  - id: s\n    type: excel\n    mapping: excel_htcds\n    optoins: {}\n")
    result = subprocess.run([str(Path(sys.executable).parent / "htcds-connector"), "run", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_CONFIG
    assert f"{config}:6: sources[0].optoins: unknown key" in " ".join(result.stderr.split())


@pytest.mark.parametrize("failure", ["unreachable", "auth"])
def test_3_when_a_source_is_unreachable_or_refuses_the_credentials(tmp_path, failure):
    code, report = run_json(write_job(tmp_path, source={"fail": failure}))
    assert code == EXIT_SOURCE
    assert report["sync"]["sources"][0]["status"] == "failed"
    assert report["release"]["status"] == "skipped"  # the release waits for every source


def test_3_keeps_the_committed_pages_and_the_next_run_resumes(tmp_path):
    config = write_job(tmp_path, source={"fail": "unreachable", "fail_at_page": 2})
    code, report = run_json(config)
    assert code == EXIT_SOURCE and report["sync"]["sources"][0]["fetched"] == 20
    code, report = run_json(write_job(tmp_path))  # the server is back
    assert code == EXIT_OK and report["sync"]["sources"][0]["fetched"] == 40


def test_4_when_the_privacy_gate_refuses(tmp_path):
    code, report = run_json(write_job(tmp_path, k=1000))
    assert code == EXIT_GATE
    assert report["release"]["status"] == "refused" and not (tmp_path / "releases" / "test-ngo").exists()


def test_5_when_publishing_fails(tmp_path):
    config = write_job(tmp_path)
    (tmp_path / "releases").write_text("a file where the release folder should be")
    code, report = run_json(config)
    assert code == EXIT_PUBLISH and report["release"]["status"] == "failed"


def start_slow_run(tmp_path: Path, sleep_per_page: float = 0.4) -> subprocess.Popen:
    """A run that takes a few seconds (a slow source), holding the job's lock meanwhile."""
    config = write_job(tmp_path, source={"sleep_per_page": sleep_per_page})
    env = {k: v for k, v in os.environ.items() if k != "HTCDS_FAULT"}
    return subprocess.Popen(cli_command("run", str(config)), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_locked(lock: Path, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return
            finally:
                os.close(fd)
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def test_6_while_another_run_of_the_job_holds_the_lock(tmp_path):
    first = start_slow_run(tmp_path, sleep_per_page=1.5)  # ~9 s: longer than the second run's start-up on a busy machine
    try:
        wait_until_locked(tmp_path / "state" / "cases.lock", first)
        second = run_cli("run", str(tmp_path / "job.yaml"))
        assert second.returncode == EXIT_LOCKED
        assert f"held by pid {first.pid}" in " ".join(second.stderr.split())
        assert first.wait(timeout=60) == EXIT_OK  # the first run was not disturbed
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    first = start_slow_run(tmp_path)
    lock = tmp_path / "state" / "cases.lock"
    try:
        wait_until_locked(lock, first)
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    assert lock.read_text() == str(first.pid)  # the file is still there, naming the dead run
    code, report = run_json(tmp_path / "job.yaml")
    assert code == EXIT_OK and report["release"]["status"] == "published"
    assert len(job_state(tmp_path)["cases"]) == 60  # the killed run's pages plus the rest
