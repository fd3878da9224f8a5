"""kill -9 at every stage of a run, then run again: nothing lost, nothing published twice.

Each crash is real: the run is a subprocess (`htcds-connector run`) that SIGKILLs itself at a named
fault point (connector/faults.py), so no `finally`, flush or rollback runs. The next run must leave
the store, the cursors, the rejections, the release ledger and the published files exactly as one
uninterrupted run does.
"""

import json
import signal
import sqlite3

import pytest

from tests.faults.jobs import run_cli, write_job
from tests.faults.state import job_state

# (stage, HTCDS_FAULT, pages committed when the process dies (None: all), release already visible)
STAGES = [
    ("mid-fetch, inside the source", "source.fetch:3", 2, False),
    ("mid-fetch, page fetched but not stored", "sync.page_fetched:3", 2, False),
    ("between pages", "sync.page_committed:2", 2, False),
    ("inside the store commit", "store.commit:4", 3, False),
    ("while writing the release", "release.write:3", None, False),
    ("mid-publish, before the ledger", "publish.before_ledger", None, True),
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from tests.faults.conftest import SIZE

    folder = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("run", str(write_job(folder, source=SIZE)), "--json")
    assert result.returncode == 0, result.stderr
    state = job_state(folder)
    assert len(state["published"]) == 1 and state["ledger"] == sorted(state["published"])
    return state


# The same kills with pages mapped in the worker process from the second page on
# (connector/map_pages.py): the main process holds one page in the worker while it fetches the
# next, so a kill while fetching page 3 finds one page committed, not two.
WORKER_STAGES = [
    ("mid-fetch, inside the source", "source.fetch:3", 1),
    ("mid-fetch, page fetched but not stored", "sync.page_fetched:3", 1),
    ("between pages", "sync.page_committed:2", 2),
    ("inside the store commit", "store.commit:4", 3),
]


@pytest.mark.parametrize("stage,fault,pages_committed,release_visible", STAGES, ids=[s[0] for s in STAGES])
def test_run_killed_at_a_stage_then_rerun_equals_an_uninterrupted_run(tmp_path, size, uninterrupted, stage, fault, pages_committed, release_visible):
    _killed_then_rerun(tmp_path, write_job(tmp_path, source=size), size, uninterrupted, fault, pages_committed, release_visible)


@pytest.mark.parametrize("stage,fault,pages_committed", WORKER_STAGES, ids=[s[0] for s in WORKER_STAGES])
def test_run_killed_while_pages_are_mapped_in_the_worker_then_rerun_equals_an_uninterrupted_run(tmp_path, size, uninterrupted, stage, fault, pages_committed):
    config = write_job(tmp_path, source=size, extra="run: {map_worker_after_records: 0}\n")
    _killed_then_rerun(tmp_path, config, size, uninterrupted, fault, pages_committed, False)


def _killed_then_rerun(tmp_path, config, size, uninterrupted, fault, pages_committed, release_visible):
    killed = run_cli("run", str(config), "--json", fault=fault)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert f"fault injected: SIGKILL at {fault.split(':')[0]}" in killed.stderr

    crashed = job_state(tmp_path)
    if pages_committed is not None:  # only whole pages, and the cursor exactly at the last one
        assert len(crashed["cases"]) == pages_committed * size["page_size"]
        assert crashed["cursors"] == {"cases": str(pages_committed * size["page_size"])}
    assert bool(crashed["published"]) == release_visible
    assert crashed["ledger"] == []

    rerun = run_cli("run", str(config), "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads(rerun.stdout)
    # a release the crashed run already made visible is recognised, not published again
    assert report["release"]["status"] == ("unchanged" if release_visible else "published")
    assert job_state(tmp_path) == uninterrupted

    # the crashed run stays visible in the run history, marked crashed by the next start, and the
    # next run was not blocked by its lock
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
        statuses = [row[0] for row in db.execute("select status from runs order by started_at")]
    assert statuses.count("crashed") == 1 and "running" not in statuses and statuses[-1] == "ok"


def test_a_third_run_after_recovery_changes_nothing(tmp_path, size, uninterrupted):
    config = write_job(tmp_path, source=size)
    assert run_cli("run", str(config), fault="sync.page_committed:1").returncode == -signal.SIGKILL
    assert run_cli("run", str(config)).returncode == 0
    again = run_cli("run", str(config), "--json")
    report = json.loads(again.stdout)
    assert report["sync"]["sources"][0]["fetched"] == 0 and report["release"]["status"] == "unchanged"
    assert job_state(tmp_path) == uninterrupted


def test_no_staging_folder_is_left_after_a_crash_while_writing(tmp_path, size):
    config = write_job(tmp_path, source=size)
    assert run_cli("run", str(config), fault="release.write:2").returncode == -signal.SIGKILL
    assert run_cli("run", str(config)).returncode == 0
    assert [p.name for p in (tmp_path / "releases" / "test-ngo").iterdir() if p.name.startswith(".")] == []


def test_status_shows_a_killed_run_as_crashed_after_the_next_start(tmp_path, size):
    config = write_job(tmp_path, source=size)
    assert run_cli("run", str(config), fault="sync.page_committed:1").returncode == -signal.SIGKILL
    assert run_cli("sync", str(config)).returncode == 0
    status = json.loads(run_cli("status", str(config), "--json").stdout)
    assert [(r["kind"], r["status"]) for r in reversed(status["runs"])] == [("sync", "crashed"), ("sync", "ok")]
    table = run_cli("status", str(config)).stdout
    assert "crashed" in table and "ended without finishing" in " ".join(table.split())
