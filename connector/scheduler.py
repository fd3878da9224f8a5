"""Unattended runs: one job exactly as `htcds-connector run` runs it, and the built-in daemon.

`run_job(path)` is the whole of an unattended run: load the config, take the job's lock, sync and
release, work out the exit code, and tell someone if the outcome deserves it (`connector.notify`,
which reads the previous run's outcome from the store). `htcds-connector run` and the daemon both
call it, so a run behaves the same under cron, systemd, Kubernetes or the daemon.

`run_daemon([paths])` schedules every job on its `schedule.cron` in its `schedule.timezone`
(APScheduler 3, a background scheduler): at most one instance per job, missed runs coalesced into
one, a run that is late by less than the misfire grace (a host that slept through 02:00) still
starts. SIGTERM or SIGINT set a stop flag that the pipeline checks after each committed page: the
page in flight finishes and commits, the run records itself, and the daemon exits 0.

    python -m connector.scheduler --log-json jobs/athens.yaml jobs/thessaloniki.yaml

Crontab fields mean what they mean in crontab(5): day of week 0 and 7 are Sunday (APScheduler 3's
own numbering starts at Monday; `cron_trigger` translates).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from connector import logs, notify
from connector.config import Config, ConfigError, load_config
from connector.errors import EXIT_CONFIG, EXIT_INTERNAL, EXIT_LOCKED, EXIT_OK, ConnectorError, InternalError, LockedError
from connector.pipeline import Pipeline, ProgressHook, ReleaseReport, SyncReport

# A run that could not start on time (host asleep, daemon restarting) still starts if it is late
# by less than this; later than that it waits for its next time. Coalescing makes several missed
# times one run.
MISFIRE_GRACE_SECONDS = 3600
HISTORY_FOR_NOTIFY = 50
log = logs.get_logger()


@dataclass
class RunOutcome:
    """What one unattended run did: the exit code, the reports, and which notices went out."""

    config_path: Path
    exit_code: int
    job: str | None = None
    sync: SyncReport | None = None
    release: ReleaseReport | None = None
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    notices: list[str] = field(default_factory=list)
    notify_problems: list[str] = field(default_factory=list)
    exception: BaseException | None = None  # the bug behind an internal error (exit 7), for `run -v`

    def as_dict(self) -> dict[str, Any]:
        """The `run --json` shape: sync and release reports, the exit code, and any run-level errors."""
        return {
            "job": self.job,
            "sync": self.sync.as_dict() if self.sync else None,
            "release": self.release.as_dict() if self.release else None,
            "exit_code": self.exit_code,
            "errors": self.errors,
            "stopped": self.stopped,
            "notifications": self.notices,
        }


def run_exit_code(sync: SyncReport, release: ReleaseReport) -> int:
    """The most serious outcome wins; rejections (1) only when all else went well (as `run` says)."""
    return release.exit_code if release.exit_code != EXIT_OK else sync.exit_code


def run_job(
    config: Path | str | Config,
    *,
    progress: ProgressHook | None = None,
    stop_requested: Callable[[], bool] | None = None,
    fallback_config: Config | None = None,
) -> RunOutcome:
    """Run one job as `htcds-connector run` does: lock, sync + release, exit code, notifications.

    Never raises: every failure becomes the outcome's documented `exit_code` (a bug: 7) with its
    message in `errors` and, if the failure deserves it, a notification; the caller prints
    `as_dict()` or the reports and exits with `exit_code`. An unattended run has nobody to read a
    traceback, so this is where a failure turns into a code and a notice.
    `fallback_config` (the daemon passes the config it started with) is who to notify when the
    file no longer loads.
    """
    stop = stop_requested or (lambda: False)
    path = config.path if isinstance(config, Config) else Path(config)
    if not isinstance(config, Config):
        try:
            config = load_config(path)
        except ConfigError as exc:
            outcome = RunOutcome(path, EXIT_CONFIG, job=fallback_config.job.partner.id if fallback_config else None, errors=list(exc.problems))
            log.error("config error", extra={"config": str(path), "problems": len(exc.problems)})
            if fallback_config is not None:
                _notify(fallback_config, outcome, previous=None)
            return outcome
    job = config.job.partner.id
    pipeline = Pipeline(config, progress=progress, stop_requested=stop)
    outcome = RunOutcome(path, EXIT_OK, job=job)
    previous: str | None = None
    try:
        with pipeline.lock():
            previous = notify.previous_outcome(pipeline.store.runs(limit=HISTORY_FOR_NOTIFY), job)
            log.info("run started", extra={"job": job, "config": str(path), "previous": previous})
            outcome.sync = pipeline.sync()
            outcome.release = pipeline.release_after(outcome.sync)
    except LockedError as exc:
        log.warning("run skipped: locked", extra={"job": job, "error": str(exc)})
        return RunOutcome(path, EXIT_LOCKED, job=job, errors=[exc.one_line()])
    except Exception as exc:  # noqa: BLE001 - every failure becomes its exit code and a notice (above)
        error = exc if isinstance(exc, ConnectorError) else InternalError.wrap(exc, "running the job")
        if error.exit_code == EXIT_INTERNAL:
            # the type and place only: a traceback's text could carry a value from a record
            log.error("run failed: internal error", extra={"job": job, "error": error.message})
            outcome.exception = exc
        outcome.exit_code, outcome.errors = error.exit_code, [error.one_line()]
        if isinstance(error.report, SyncReport):
            outcome.sync = error.report
        elif isinstance(error.report, ReleaseReport):
            outcome.release = error.report
    finally:
        pipeline.close()
    if outcome.sync is not None and outcome.release is not None and not outcome.errors:
        outcome.exit_code = run_exit_code(outcome.sync, outcome.release)
        outcome.stopped = stop() and any(s.status == "interrupted" for s in outcome.sync.sources)
    log.info(
        "run finished",
        extra={
            "job": job,
            "exit_code": outcome.exit_code,
            "sync_run_id": outcome.sync.run_id if outcome.sync else None,
            "release_status": outcome.release.status if outcome.release else None,
            "release_id": outcome.release.release_id if outcome.release else None,
            "stopped": outcome.stopped,
        },
    )
    _notify(config, outcome, previous)
    return outcome


def _notify(config: Config, outcome: RunOutcome, previous: str | None) -> None:
    settings = config.job.notify
    rejected = sum(s.rejected_new for s in outcome.sync.sources) if outcome.sync else 0
    events = notify.events_for(settings, exit_code=outcome.exit_code, rejected=rejected, previous=previous, stopped=outcome.stopped)
    if settings.webhook is None and settings.email is None:
        return
    if outcome.stopped or outcome.exit_code not in notify.FAILURE_CODES | notify.OK_CODES:
        return
    # One message per failure streak (plus a daily reminder), one on recovery: see notify.NoticeState.
    failed = outcome.exit_code in notify.FAILURE_CODES
    state = notify.NoticeState(Pipeline(config).lock_path().with_suffix(".notify.json"))
    events = state.filter(events, failed=failed, on_recovery=settings.on_recovery)
    secrets = notify.job_secrets(config)
    for event in events:
        notice = _notice(event, config.job.partner.id, outcome)
        problems = notify.send(notice, settings, secrets=secrets)
        outcome.notify_problems.extend(problems)
        outcome.notices.append(event)
        channels = (settings.webhook is not None) + (settings.email is not None)
        state.record(event, delivered=len(problems) < channels, failed=failed)
    if not events:
        state.record("", delivered=False, failed=failed)
    state.save()


def _notice(event: str, job: str, outcome: RunOutcome) -> notify.Notice:
    counts: dict[str, int] = {}
    sources: list[dict[str, Any]] = []
    if outcome.sync is not None:
        for report in outcome.sync.sources:
            sources.append({"source": report.source, "status": report.status, "error": report.error})
            for key in ("fetched", "inserted", "updated", "deleted", "rejected"):
                counts[key] = counts.get(key, 0) + getattr(report, key)
    release = None
    if outcome.release is not None:
        release = {"status": outcome.release.status, "release_id": outcome.release.release_id, "reasons": list(outcome.release.reasons)}
    return notify.Notice(
        event=event,
        job=job,
        exit_code=outcome.exit_code,
        run_id=outcome.sync.run_id if outcome.sync else None,
        counts=counts,
        sources=sources,
        release=release,
        errors=list(outcome.errors),
    )


# -- signals ---------------------------------------------------------------------------------


@contextmanager
def stop_on_signals(event: threading.Event | None = None, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set `event` instead of killing the process, for as long as the block runs.

    Pass `event.is_set` as the pipeline's `stop_requested`: the page in flight is committed, the
    run is recorded, and the process exits by itself. The handler only sets the flag (nothing else
    is safe in a signal handler). Outside the main thread, signals cannot be caught: the event is
    returned as is. SIGKILL stays the hard stop, and is safe too: nothing is lost, only redone.
    """
    event = event or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        event.set()

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- the daemon ------------------------------------------------------------------------------


_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(cron: str, timezone: str) -> CronTrigger:
    """A trigger for a crontab(5) expression in an IANA time zone; ValueError says what is wrong."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r} (use an IANA name such as Europe/Athens or UTC)") from None
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {cron!r} needs 5 fields (minute hour day month day-of-week), got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_days(day_of_week), timezone=zone)


def _crontab_days(spec: str) -> str:
    """crontab day-of-week (0 or 7 = Sunday, names, ranges, steps) -> APScheduler's names list."""
    if spec in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in spec.lower().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step must be positive in {spec!r}")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _day_number(first, spec), _day_number(last, spec)
        else:
            low = high = _day_number(base, spec)
            if step_text:
                high = 6
        if low > high:
            raise ValueError(f"day-of-week range {base!r} runs backwards in {spec!r}")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _day_number(text: str, spec: str) -> int:
    """0-7 (0 and 7 are Sunday; `% 7` folds 7 later, so `5-7` stays a forward range) or a name."""
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text[:3] in _DOW_NAMES:
        return _DOW_NAMES.index(text[:3])
    raise ValueError(f"day of week {text!r} in {spec!r} is not 0-7 or a day name")


def default_scheduler(jobs: int = 1) -> BaseScheduler:
    """A background scheduler with one worker thread per job (jobs never wait for each other)."""
    return BackgroundScheduler(timezone=ZoneInfo("UTC"), executors={"default": ThreadPoolExecutor(max_workers=max(jobs, 1))})


def load_jobs(config_paths: list[Path]) -> list[tuple[Config, CronTrigger]]:
    """Every job config with its trigger; ConfigError lists every problem of every file."""
    problems: list[str] = []
    jobs: list[tuple[Config, CronTrigger]] = []
    seen: dict[str, Path] = {}
    for path in config_paths:
        try:
            config = load_config(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        schedule = config.job.schedule
        try:
            trigger = cron_trigger(schedule.cron, schedule.timezone)
        except ValueError as exc:
            problems.append(f"{config.where('schedule')}: {exc}")
            continue
        job = config.job.partner.id
        if job in seen:
            problems.append(f"{config.where('partner', 'id')}: job {job!r} is also defined in {seen[job]}; partner ids of a daemon's jobs must differ")
            continue
        seen[job] = path
        jobs.append((config, trigger))
    if problems:
        raise ConfigError(problems)
    return jobs


def run_daemon(
    config_paths: list[Path],
    *,
    scheduler_factory: Callable[[], BaseScheduler] | None = None,
    stop_event: threading.Event | None = None,
    misfire_grace_seconds: int = MISFIRE_GRACE_SECONDS,
) -> int:
    """Run every job on its schedule until SIGTERM/SIGINT (or `stop_event`); returns the exit code.

    Exit 2 if a config or schedule is wrong (nothing is scheduled then), 0 after a clean stop.
    Each run re-reads its config file, so edits apply from the next run on (a changed schedule
    needs a restart). `scheduler_factory` returns an unstarted, non-blocking scheduler (tests pass
    one with a fast clock).
    """
    try:
        jobs = load_jobs([Path(p) for p in config_paths])
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config error", extra={"problem": problem})
        return EXIT_CONFIG
    stop_event = stop_event or threading.Event()
    scheduler = scheduler_factory() if scheduler_factory else default_scheduler(len(jobs))
    for config, trigger in jobs:
        scheduler.add_job(
            _scheduled_run,
            trigger,
            args=[config.path, stop_event, config],
            id=config.job.partner.id,
            name=config.job.partner.id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=misfire_grace_seconds,
            replace_existing=True,
        )
    with stop_on_signals(stop_event):
        scheduler.start()
        for job in scheduler.get_jobs():
            log.info("job scheduled", extra={"job": job.id, "trigger": str(job.trigger), "next_run": str(job.next_run_time)})
        while not stop_event.wait(timeout=1.0):
            pass
        log.info("daemon stopping: runs in flight finish their current page", extra={"jobs": len(jobs)})
        scheduler.shutdown(wait=True)
    log.info("daemon stopped")
    return EXIT_OK


def _scheduled_run(path: Path, stop_event: threading.Event, fallback: Config) -> int:
    """One scheduled run; never raises into the scheduler (which would only log a traceback)."""
    if stop_event.is_set():
        return EXIT_OK
    try:
        return run_job(path, stop_requested=stop_event.is_set, fallback_config=fallback).exit_code
    except Exception as exc:  # noqa: BLE001 - the daemon keeps the other jobs running
        # Only the type: an unexpected error's text could carry a value from a record.
        log.error("run crashed", extra={"job": fallback.job.partner.id, "error": type(exc).__name__})
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """`python -m connector.scheduler [--log-json] CONFIG...` until the CLI's `daemon` command exists."""
    parser = argparse.ArgumentParser(prog="python -m connector.scheduler", description="run jobs on their schedules until SIGTERM")
    parser.add_argument("--log-json", action="store_true")
    parser.add_argument("configs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logs.configure(json_lines=args.log_json)
    return run_daemon(args.configs)


if __name__ == "__main__":
    sys.exit(main())
