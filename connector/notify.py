"""Tell someone when an unattended run needs a person: a failure, a recovery, many rejections.

Nobody watches a nightly job, so the job reports itself: a webhook (one JSON POST, for chat tools
and incident systems) and/or an email (SMTP). Which runs are worth a message:

- **failure**: the run ended with exit code 2..5 (config, source, gate, publish);
- **recovery**: the run ended well (0 or 1) and the job's previous run, as the store recorded it,
  failed or never finished (a crash leaves its run `running`);
- **rejections**: the run rejected more values than `notify.rejections_above`.

A lock refusal (6) or a run stopped on request (shutdown) is not a failure and sends nothing.

A notification says which job, which run, the exit code and what it means, counts, and each
source's status and error. Errors are the run's own safe messages (they name source, record id and
field, never a value), the same text `status` shows; on top of that every secret the job
references is blanked out of the text before it is sent. No record value is ever passed here.

Example config:

    notify:
      rejections_above: 50
      webhook: {url: "${HTCDS_WEBHOOK_URL}"}
      email: {host: smtp.example.org, username: connector, password_env: SMTP_PASSWORD,
              sender: connector@example.org, to: [it@example.org]}
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel

from connector.config import Config, EmailNotifyConfig, NotifyConfig, WebhookNotifyConfig
from connector.logs import get_logger
from connector.secrets import Secret, SecretMissing

FAILURE, RECOVERY, REJECTIONS, REMINDER, TEST = "failure", "recovery", "rejections", "reminder", "test"
FAILURE_CODES = frozenset({2, 3, 4, 5, 7})
OK_CODES = frozenset({0, 1})
MEANING = {
    0: "ok",
    1: "finished, but some values were rejected",
    2: "config or store error",
    3: "a source was unreachable, refused the credentials, or failed",
    4: "the privacy gate refused the release",
    5: "publishing failed",
    6: "another run of the same job holds the lock",
    7: "internal error (a bug; the next run resumes)",
}
MAX_ERROR_CHARS = 500
log = get_logger()


@dataclass
class Notice:
    """One message about one run; `as_dict()` is the webhook's JSON body."""

    event: str
    job: str
    exit_code: int
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    release: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def meaning(self) -> str:
        return MEANING.get(self.exit_code, "unknown")

    @property
    def summary(self) -> str:
        if self.event == RECOVERY:
            return f"htcds-connector job {self.job} recovered: this run ended with exit {self.exit_code} ({self.meaning}) after a failed run"
        if self.event == TEST:
            return f"htcds-connector job {self.job}: test notification (nothing is wrong; sent by `htcds-connector notify test`)"
        if self.event == REMINDER:
            return f"htcds-connector job {self.job} is still failing: exit {self.exit_code} ({self.meaning}); daily reminder"
        if self.event == REJECTIONS:
            return f"htcds-connector job {self.job}: {self.counts.get('rejected', 0)} values rejected in one run"
        return f"htcds-connector job {self.job} failed: exit {self.exit_code} ({self.meaning})"

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "meaning": self.meaning,
            "summary": self.summary,
            "what_to_do": "run `htcds-connector status CONFIG` on the connector's host for run history and each source's last error",
        }

    def as_text(self) -> str:
        lines = [self.summary, "", f"job: {self.job}", f"host: {self.host}", f"time: {self.time}", f"run: {self.run_id or '-'}", f"exit code: {self.exit_code} ({self.meaning})"]
        if self.counts:
            lines.append("counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()))
        for source in self.sources:
            error = f": {source['error']}" if source.get("error") else ""
            lines.append(f"source {source['source']}: {source['status']}{error}")
        if self.release:
            lines.append(f"release: {self.release.get('status')} {self.release.get('release_id') or ''}".rstrip())
            lines.extend(f"  {reason}" for reason in self.release.get("reasons") or [])
        lines.extend(f"error: {error}" for error in self.errors)
        lines += ["", "What to do: run `htcds-connector status CONFIG` on the connector's host."]
        return "\n".join(lines) + "\n"


def events_for(settings: NotifyConfig, *, exit_code: int, rejected: int, previous: str | None, stopped: bool = False) -> list[str]:
    """Which notices a run with this outcome deserves, given the previous run's outcome ("ok"/"failed"/None)."""
    if stopped or exit_code not in FAILURE_CODES | OK_CODES:
        return []
    events = []
    if exit_code in FAILURE_CODES and settings.on_failure:
        events.append(FAILURE)
    if exit_code in OK_CODES and previous == "failed" and settings.on_recovery:
        events.append(RECOVERY)
    if settings.rejections_above is not None and rejected > settings.rejections_above:
        events.append(REJECTIONS)
    return events


REMIND_AFTER = timedelta(days=1)


class NoticeState:
    """What this job last told people, kept in a small JSON file next to the store's lock.

    A job failing every 15 minutes must not send 96 messages a day: the first failure is sent,
    later failures of the same streak are not, except one reminder a day (`REMIND_AFTER`) while
    it keeps failing; the first good run after a sent failure sends one recovery. A failure is
    recorded as told only when a channel took it, so a mail server that was down is retried on
    the next failed run. An unreadable state file counts as "nothing told yet".
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}

    @property
    def failure_told_at(self) -> datetime | None:
        value = self.data.get("failure_told_at")
        try:
            return datetime.fromisoformat(value) if value else None
        except ValueError:
            return None

    def filter(self, events: list[str], *, failed: bool, on_recovery: bool = True, now: datetime | None = None) -> list[str]:
        """The events worth sending now, given what was already told in this failure streak."""
        now = now or datetime.now(timezone.utc)
        told = self.failure_told_at
        kept = []
        for event in events:
            if event == FAILURE and told is not None:
                if now - told < REMIND_AFTER:
                    continue
                event = REMINDER
            kept.append(event)
        if not failed and told is not None and RECOVERY not in kept and on_recovery:
            kept.append(RECOVERY)  # the streak people were told about is over, whatever the run history says
        return kept

    def record(self, event: str, *, delivered: bool, failed: bool, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        if event in (FAILURE, REMINDER) and delivered:
            self.data["failure_told_at"] = now.isoformat(timespec="seconds")
            self.data.setdefault("failing_since", now.isoformat(timespec="seconds"))
        if not failed:
            self.data.pop("failure_told_at", None)
            self.data.pop("failing_since", None)

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, sort_keys=True), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("notification state not saved", extra={"error": type(exc).__name__})


def test_notice(config: Config) -> Notice:
    """A message that says it is a test, so the receiver can confirm the channel works."""
    return Notice(event=TEST, job=config.job.partner.id, exit_code=0)


def previous_outcome(runs: list[dict[str, Any]], job: str) -> str | None:
    """"failed", "ok" or None (no history) for the job's last run, from the store's run records.

    `runs` is `Store.runs()` (newest first), read BEFORE the current run starts. A `run` is a sync
    record followed by a release record, so the outcome spans the latest sync and every later
    record: any of them `failed`, or left `running` (or marked `crashed`) by a crash, makes it a failure.
    """
    mine = [r for r in runs if r.get("job") == job]
    if not mine:
        return None
    latest_sync = next((i for i, r in enumerate(mine) if r.get("kind") == "sync"), 0)
    group = mine[: latest_sync + 1]
    return "failed" if any(r.get("status") in ("failed", "running", "crashed") for r in group) else "ok"


def send(notice: Notice, settings: NotifyConfig, *, secrets: list[Secret] = ()) -> list[str]:
    """Send `notice` on every configured channel; returns one safe line per channel that failed.

    A failing channel never raises: a broken mail server must not turn a good run into a failed
    one, and the problem is logged (channel and error type only; never a URL or address).
    """
    notice = _redacted(notice, _secret_values([*secrets, *_channel_secrets(settings)]))
    problems = []
    for channel, config, sender in (("webhook", settings.webhook, _post_webhook), ("email", settings.email, _send_email)):
        if config is None:
            continue
        try:
            sender(notice, config)
            log.info("notification sent", extra={"channel": channel, "event": notice.event, "job": notice.job})
        except (requests.RequestException, smtplib.SMTPException, OSError, SecretMissing, NotifyError) as exc:
            problem = f"{channel} notification failed: {_safe_error(exc)}"
            problems.append(problem)
            log.warning("notification failed", extra={"channel": channel, "notice": notice.event, "job": notice.job, "error": _safe_error(exc)})
    return problems


class NotifyError(RuntimeError):
    """The receiver answered, but not with success. The message holds the status code only."""


def job_secrets(config: Config) -> list[Secret]:
    """Every secret reference in the job's config, so their values can be blanked from notices."""
    found: list[Secret] = []

    def walk(node: Any) -> None:
        if isinstance(node, Secret):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name, None))

    walk(config.job)
    for source in config.job.sources:
        walk(source.parsed_options)
    return found


# -- channels --------------------------------------------------------------------------------


def _post_webhook(notice: Notice, config: WebhookNotifyConfig) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "htcds-connector"}
    if config.token is not None:
        headers["Authorization"] = f"Bearer {config.token.get()}"
    last: Exception | None = None
    for attempt in range(2):  # one retry: a receiver restarting should not lose the message
        try:
            response = requests.post(config.url, json=notice.as_dict(), headers=headers, timeout=config.timeout_seconds)
        except requests.ConnectionError as exc:
            last = exc
        else:
            if response.status_code < 300:
                return
            last = NotifyError(f"the webhook answered HTTP {response.status_code}")
            if response.status_code < 500:
                break
        if attempt == 0:
            time.sleep(1.0)
    assert last is not None
    raise last


def _send_email(notice: Notice, config: EmailNotifyConfig) -> None:
    message = EmailMessage()
    message["Subject"] = f"[htcds-connector] {notice.job}: {notice.event} (exit {notice.exit_code})"
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message.set_content(notice.as_text())
    if config.security == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_seconds, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
    with client:
        if config.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if config.username and config.password is not None:
            client.login(config.username, config.password.get())
        client.send_message(message)


# -- safety ----------------------------------------------------------------------------------


def _channel_secrets(settings: NotifyConfig) -> list[Secret]:
    found = []
    if settings.webhook is not None and settings.webhook.token is not None:
        found.append(settings.webhook.token)
    if settings.email is not None and settings.email.password is not None:
        found.append(settings.email.password)
    return found


def _secret_values(secrets: list[Secret]) -> list[str]:
    values = []
    for secret in secrets:
        try:
            value = secret.get()
        except SecretMissing:
            continue
        if len(value) >= 4:
            values.append(value)
    return sorted(set(values), key=len, reverse=True)


def _redacted(notice: Notice, values: list[str]) -> Notice:
    def clean(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for value in values:
            text = text.replace(value, "[secret]")
        return text[:MAX_ERROR_CHARS]

    return Notice(
        event=notice.event,
        job=notice.job,
        exit_code=notice.exit_code,
        run_id=notice.run_id,
        counts=dict(notice.counts),
        sources=[{k: clean(v) for k, v in s.items()} for s in notice.sources],
        release=None if notice.release is None else {**notice.release, "reasons": [clean(r) for r in notice.release.get("reasons") or []]},
        errors=[clean(e) for e in notice.errors],
        host=notice.host,
        time=notice.time,
    )


def _safe_error(exc: BaseException) -> str:
    """The error's type and, for our own errors and SMTP replies, its short text; never a URL."""
    if isinstance(exc, (NotifyError, SecretMissing)):
        return str(exc)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} (SMTP {exc.smtp_code})"
    return type(exc).__name__
