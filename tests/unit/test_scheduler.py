"""The daemon: jobs fire on their cron schedules in their time zones, coalesce, and stop cleanly.

A fake clock drives APScheduler: the scheduler's loop, instead of sleeping until the next fire time,
waits for the runs in flight to finish and then moves the clock there. Hours of schedule take a
second or two, and the runs themselves are real (`run_job`: lock, pipeline, store, release).
"""

import os
import signal
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED
from apscheduler.executors import base as executors_base
from apscheduler.schedulers import base as schedulers_base
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

from connector import scheduler as daemon
from connector.pipeline import EXIT_CONFIG, EXIT_OK
from tests.faults.jobs import write_job

UTC = timezone.utc


class FakeClock:
    def __init__(self, start: datetime):
        self.utc = start

    def now(self, tz=None) -> datetime:
        return self.utc.astimezone(tz) if tz else self.utc.replace(tzinfo=None)


class FastClockScheduler(BackgroundScheduler):
    """Runs due jobs, waits until they finish, then jumps the clock to the next fire time.

    `naps` [(at, length)]: when the clock would pass `at`, it jumps `length` further, as when the
    host sleeps. At `end` the scheduler sets the daemon's stop event.
    """

    def __init__(self, clock, end, stop_event, naps=()):
        super().__init__(timezone=UTC)
        self.clock, self.end, self.stop_event, self.naps = clock, end, stop_event, list(naps)
        self.running_jobs = 0
        self.jobs_seen = {}  # job id -> the Job as the scheduler held it when it fired
        self.add_listener(self._count, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _count(self, event):
        self.running_jobs += 1 if event.code == EVENT_JOB_SUBMITTED else -1
        if event.code == EVENT_JOB_SUBMITTED:
            self.jobs_seen[event.job_id] = self.get_job(event.job_id)

    def _main_loop(self):
        while self.state != STATE_STOPPED:
            wait_seconds = self._process_jobs()
            while self.running_jobs > 0:
                time.sleep(0.005)
            target = None if wait_seconds is None else self.clock.utc + timedelta(seconds=wait_seconds)
            if self.stop_event.is_set() or target is None or target > self.end:
                self.stop_event.set()
                self._event.wait()  # until the daemon calls shutdown()
                return
            for at, length in list(self.naps):
                if self.clock.utc < at <= target:
                    target = at + length
                    self.naps.remove((at, length))
            self.clock.utc = target


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock(datetime(2024, 6, 1, 23, 59, 30, tzinfo=UTC))

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return clock.now(tz)

    monkeypatch.setattr(schedulers_base, "datetime", FakeDatetime)
    monkeypatch.setattr(executors_base, "datetime", FakeDatetime)
    return clock


@pytest.fixture
def fired(monkeypatch, fake_clock):
    """(job, fake UTC time) of every run the daemon started."""
    runs = []
    real_run_job = daemon.run_job

    def recording_run_job(path, **kwargs):
        outcome = real_run_job(path, **kwargs)
        runs.append((outcome.job, fake_clock.utc, outcome.exit_code))
        return outcome

    monkeypatch.setattr(daemon, "run_job", recording_run_job)
    return runs


def schedule(cron: str, tz: str) -> str:
    return f'schedule: {{cron: "{cron}", timezone: {tz}}}\n'


def sync_runs(folder) -> list[str]:
    with sqlite3.connect(folder / "state" / "cases.sqlite") as db:
        return [row[0] for row in db.execute("select status from runs where kind = 'sync' order by started_at")]


def test_two_jobs_run_on_their_own_schedules_and_time_zones(tmp_path, fake_clock, fired):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    job_a = write_job(tmp_path / "a", partner="ngo-a", extra=schedule("*/20 * * * *", "UTC"))
    # Kolkata is UTC+05:30: "at minute 0" there is minute 30 in UTC.
    job_b = write_job(tmp_path / "b", partner="ngo-b", extra=schedule("0 * * * *", "Asia/Kolkata"))
    stop = threading.Event()
    end = datetime(2024, 6, 2, 2, 0, 30, tzinfo=UTC)
    made = []

    def factory():
        made.append(FastClockScheduler(fake_clock, end, stop))
        return made[0]

    assert daemon.run_daemon([job_a, job_b], scheduler_factory=factory, stop_event=stop) == EXIT_OK

    def times(job):
        return [t.strftime("%H:%M") for j, t, _ in fired if j == job]

    assert times("ngo-a") == ["00:00", "00:20", "00:40", "01:00", "01:20", "01:40", "02:00"]
    assert times("ngo-b") == ["00:30", "01:30"]
    assert {code for _, _, code in fired} == {EXIT_OK}
    assert sync_runs(tmp_path / "a") == ["ok"] * 7 and sync_runs(tmp_path / "b") == ["ok"] * 2
    jobs = made[0].jobs_seen
    assert sorted(jobs) == ["ngo-a", "ngo-b"]
    assert {(j.coalesce, j.max_instances, j.misfire_grace_time) for j in jobs.values()} == {(True, 1, daemon.MISFIRE_GRACE_SECONDS)}


def test_missed_runs_after_the_host_slept_coalesce_into_one(tmp_path, fake_clock, fired):
    config = write_job(tmp_path, extra=schedule("*/10 * * * *", "UTC"))
    stop = threading.Event()
    nap = (datetime(2024, 6, 2, 0, 5, tzinfo=UTC), timedelta(hours=2))  # asleep 00:05 -> 02:05
    end = datetime(2024, 6, 2, 2, 20, 30, tzinfo=UTC)
    assert daemon.run_daemon([config], scheduler_factory=lambda: FastClockScheduler(fake_clock, end, stop, [nap]), stop_event=stop) == EXIT_OK
    # twelve fire times were missed; one run makes up for all of them, then the schedule goes on
    assert [t.strftime("%H:%M") for _, t, _ in fired] == ["00:00", "02:05", "02:10", "02:20"]


def test_crontab_day_of_week_zero_is_sunday():
    trigger = daemon.cron_trigger("0 2 * * 0", "Europe/Athens")
    first = trigger.get_next_fire_time(None, datetime(2024, 6, 3, tzinfo=UTC))  # a Monday
    assert first.strftime("%A %H:%M %Z") == "Sunday 02:00 EEST"
    assert daemon._crontab_days("1-5") == "mon,tue,wed,thu,fri" and daemon._crontab_days("5-7") == "sun,fri,sat"


@pytest.mark.parametrize("cron,tz,message", [("0 2 * *", "UTC", "needs 5 fields"), ("0 2 * * *", "Mars/Olympus", "unknown time zone")])
def test_a_bad_schedule_is_a_config_error_and_nothing_runs(tmp_path, cron, tz, message, caplog):
    config = write_job(tmp_path, extra=schedule(cron, tz))
    assert daemon.run_daemon([config], scheduler_factory=lambda: pytest.fail("nothing may be scheduled")) == EXIT_CONFIG
    assert any(message in str(getattr(r, "problem", "")) and "job.yaml:" in str(getattr(r, "problem", "")) for r in caplog.records)


def test_sigterm_finishes_the_page_in_flight_and_the_daemon_exits_cleanly(tmp_path, fake_clock, fired):
    config = write_job(tmp_path, source={"sleep_per_page": 0.25}, extra=schedule("0 0 * * *", "UTC"))
    stop = threading.Event()
    end = datetime(2024, 6, 3, tzinfo=UTC)

    def send_sigterm_after_the_first_page():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
                    if db.execute("select count(*) from cursors").fetchone()[0]:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=send_sigterm_after_the_first_page)
    killer.start()
    started = time.monotonic()
    code = daemon.run_daemon([config], scheduler_factory=lambda: FastClockScheduler(fake_clock, end, stop), stop_event=stop)
    killer.join()
    assert code == EXIT_OK and time.monotonic() - started < 20
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    with sqlite3.connect(tmp_path / "state" / "cases.sqlite") as db:
        cursor = int(db.execute("select value from cursors").fetchone()[0])
        stored = db.execute("select count(*) from cases").fetchone()[0]
        runs = db.execute("select kind, status, error from runs").fetchall()
    assert 0 < cursor < 60 and cursor % 10 == 0 and stored == cursor  # whole pages only
    assert runs == [("sync", "failed", runs[0][2])] and "stopped on request" in runs[0][2]  # recorded, no release
    resumed = daemon.run_job(config)
    assert resumed.exit_code == EXIT_OK and resumed.sync.sources[0].fetched == 60 - cursor
