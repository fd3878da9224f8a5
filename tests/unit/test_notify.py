"""Notifications on failure, recovery and many rejections: a local SMTP server and HTTP receiver."""

import json
from datetime import datetime, timedelta, timezone
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from connector import notify
from connector.config import NotifyConfig, load_config
from connector.scheduler import run_job
from tests.faults.jobs import write_job
from tests.webhook import webhook_receiver

SMTP_PASSWORD = "smtp-pa55word-xyz"
WEBHOOK_TOKEN = "hook-t0ken-abc"
SOURCE_PASSWORD = "source-s3cret-value"


class _Controller(Controller):
    """aiosmtpd's controller on a free port (port 0) of 127.0.0.1."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Inbox:
    def __init__(self):
        self.messages = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD, handled=False)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp():
    inbox = _Inbox()
    controller = _Controller(inbox, hostname="127.0.0.1", port=0, authenticator=inbox.authenticate, auth_require_tls=False)
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


@pytest.fixture
def receiver():
    with webhook_receiver(lambda headers, body: {"headers": headers, "body": json.loads(body)}) as server:
        yield server


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("TEST_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
    monkeypatch.setenv("TEST_SOURCE_PASSWORD", SOURCE_PASSWORD)


def job_with_notify(tmp_path, smtp, receiver, source=None, rejections_above=None):
    extra = f"""\
notify:
  rejections_above: {json.dumps(rejections_above)}
  webhook: {{url: "{receiver.url}", token_env: TEST_WEBHOOK_TOKEN}}
  email:
    host: 127.0.0.1
    port: {smtp.port}
    security: none
    username: connector
    password_env: TEST_SMTP_PASSWORD
    sender: connector@partner.example
    to: [it@partner.example, oncall@partner.example]
"""
    return write_job(tmp_path, source={"password_env": "TEST_SOURCE_PASSWORD", **(source or {})}, extra=extra)


def everything_sent(smtp, receiver) -> str:
    texts = [json.dumps(p) for p in receiver.posts]
    texts += [str(m.get_payload()) + str(m["Subject"]) for _, _, m in smtp.messages]
    return "\n".join(texts)


def test_a_failed_run_is_reported_by_webhook_and_email(tmp_path, smtp, receiver, secrets_env):
    outcome = run_job(job_with_notify(tmp_path, smtp, receiver, source={"fail": "unreachable"}))
    assert outcome.exit_code == 3 and outcome.notices == ["failure"] and outcome.notify_problems == []
    (post,) = receiver.posts
    body = post["body"]
    assert (body["event"], body["job"], body["exit_code"]) == ("failure", "test-ngo", 3)
    assert body["sources"] == [{"source": "cases", "status": "failed", "error": "source cases: cannot connect to 127.0.0.1:9 (connection refused)"}]
    assert post["headers"]["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    ((sender, recipients, message),) = smtp.messages
    assert sender == "connector@partner.example" and recipients == ["it@partner.example", "oncall@partner.example"]
    assert message["Subject"] == "[htcds-connector] test-ngo: failure (exit 3)"
    assert "a source was unreachable" in message.get_payload()
    assert smtp.logins == [("connector", SMTP_PASSWORD)]
    sent = everything_sent(smtp, receiver)
    assert WEBHOOK_TOKEN not in json.dumps(body) and SMTP_PASSWORD not in sent and SOURCE_PASSWORD not in sent


def test_the_first_good_run_after_a_failure_is_a_recovery_and_the_next_one_is_silent(tmp_path, smtp, receiver, secrets_env):
    assert run_job(job_with_notify(tmp_path, smtp, receiver, source={"fail": "unreachable"})).notices == ["failure"]
    recovered = run_job(job_with_notify(tmp_path, smtp, receiver))
    assert recovered.exit_code == 0 and recovered.notices == ["recovery"]
    assert receiver.posts[-1]["body"]["event"] == "recovery" and "recovered" in receiver.posts[-1]["body"]["summary"]
    quiet = run_job(job_with_notify(tmp_path, smtp, receiver))
    assert quiet.exit_code == 0 and quiet.notices == []
    assert [p["body"]["event"] for p in receiver.posts] == ["failure", "recovery"] and len(smtp.messages) == 2


def test_a_run_crashed_by_kill_counts_as_failed_for_the_recovery_notice(tmp_path, smtp, receiver, secrets_env):
    from tests.faults.jobs import run_cli

    config = job_with_notify(tmp_path, smtp, receiver)
    assert run_cli("run", str(config), fault="sync.page_committed:2", env={"TEST_SOURCE_PASSWORD": SOURCE_PASSWORD}).returncode == -9
    assert run_job(config).notices == ["recovery"]


def test_rejections_above_the_threshold_are_reported(tmp_path, smtp, receiver, secrets_env):
    outcome = run_job(job_with_notify(tmp_path, smtp, receiver, source={"mess_rate": 0.3}, rejections_above=10))
    assert outcome.exit_code == 1 and outcome.notices == ["rejections"]
    body = receiver.posts[0]["body"]
    assert body["counts"]["rejected"] > 10 and body["exit_code"] == 1


def test_rejections_at_or_below_the_threshold_are_not(tmp_path, smtp, receiver, secrets_env):
    outcome = run_job(job_with_notify(tmp_path, smtp, receiver, source={"mess_rate": 0.3}, rejections_above=100000))
    assert outcome.exit_code == 1 and outcome.notices == [] and receiver.posts == [] and smtp.messages == []


def test_a_broken_channel_does_not_change_the_exit_code_or_stop_the_other(tmp_path, smtp, receiver, secrets_env):
    receiver.statuses.extend([503, 503])  # the webhook fails twice (first try and the retry)
    outcome = run_job(job_with_notify(tmp_path, smtp, receiver, source={"fail": "auth"}))
    assert outcome.exit_code == 3
    assert outcome.notify_problems == ["webhook notification failed: the webhook answered HTTP 503"]
    assert len(receiver.posts) == 2 and len(smtp.messages) == 1


def test_wrong_smtp_password_is_reported_without_the_password(tmp_path, smtp, receiver, monkeypatch, secrets_env):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "not-the-password")
    outcome = run_job(job_with_notify(tmp_path, smtp, receiver, source={"fail": "auth"}))
    (problem,) = outcome.notify_problems
    assert problem.startswith("email notification failed: SMTP") and "not-the-password" not in problem
    assert len(receiver.posts) == 1  # the webhook still went out


def test_a_secret_in_an_error_text_is_blanked_before_sending(tmp_path, smtp, receiver, secrets_env):
    config = load_config(job_with_notify(tmp_path, smtp, receiver))
    notice = notify.Notice(event="failure", job="test-ngo", exit_code=3, sources=[{"source": "cases", "status": "failed", "error": f"login with {SOURCE_PASSWORD} refused"}], errors=[f"smtp {SMTP_PASSWORD}"])
    assert notify.send(notice, config.job.notify, secrets=notify.job_secrets(config)) == []
    sent = everything_sent(smtp, receiver)
    assert "login with [secret] refused" in sent and SOURCE_PASSWORD not in sent and SMTP_PASSWORD not in sent


def test_previous_outcome_reads_the_last_sync_and_the_records_after_it():
    def run(kind, status):
        return {"job": "j", "kind": kind, "status": status}

    assert notify.previous_outcome([], "j") is None
    assert notify.previous_outcome([run("release", "ok"), run("sync", "ok"), run("sync", "failed")], "j") == "ok"
    assert notify.previous_outcome([run("release", "failed"), run("sync", "ok")], "j") == "failed"
    assert notify.previous_outcome([run("sync", "running"), run("release", "ok")], "j") == "failed"  # crashed
    assert notify.previous_outcome([{"job": "other", "kind": "sync", "status": "failed"}], "j") is None


def test_locked_and_stopped_runs_notify_nobody():
    settings = NotifyConfig(rejections_above=0)
    assert notify.events_for(settings, exit_code=6, rejected=0, previous="failed") == []
    assert notify.events_for(settings, exit_code=3, rejected=5, previous=None, stopped=True) == []
    assert notify.events_for(settings, exit_code=3, rejected=0, previous=None) == ["failure"]
    assert notify.events_for(NotifyConfig(on_failure=False), exit_code=4, rejected=0, previous=None) == []


def _notify_state(tmp_path):
    (path,) = tmp_path.rglob("*.notify.json")
    return path


def test_a_job_failing_every_run_sends_one_failure_a_daily_reminder_and_one_recovery(tmp_path, smtp, receiver, secrets_env):
    failing = job_with_notify(tmp_path, smtp, receiver, source={"fail": "unreachable"})
    for _ in range(4):  # every 15 minutes, say
        assert run_job(failing).exit_code == 3
    assert [p["body"]["event"] for p in receiver.posts] == ["failure"] and len(smtp.messages) == 1

    # A day later it still fails: one reminder, then quiet again.
    state = _notify_state(tmp_path)
    data = json.loads(state.read_text())
    data["failure_told_at"] = (datetime.now(timezone.utc) - timedelta(hours=25)).isoformat()
    state.write_text(json.dumps(data))
    assert run_job(failing).notices == ["reminder"]
    assert run_job(failing).notices == []
    assert receiver.posts[-1]["body"]["event"] == "reminder" and "still failing" in receiver.posts[-1]["body"]["summary"]

    healed = job_with_notify(tmp_path, smtp, receiver)
    assert run_job(healed).notices == ["recovery"]
    assert run_job(healed).notices == []
    assert [p["body"]["event"] for p in receiver.posts] == ["failure", "reminder", "recovery"]
    assert len(smtp.messages) == 3


def test_a_failure_no_channel_took_is_told_on_the_next_failed_run(tmp_path, smtp, receiver, secrets_env):
    receiver.statuses.extend([500, 500, 400])  # webhook down for the first run (one retry), then refuses
    smtp_port = smtp.port
    failing = job_with_notify(tmp_path, smtp, receiver, source={"fail": "unreachable"})
    failing.write_text(failing.read_text().replace(f"port: {smtp_port}", "port: 9"))  # and no mail server
    first = run_job(failing)
    assert first.notices == ["failure"] and len(first.notify_problems) == 2
    failing.write_text(failing.read_text().replace("port: 9", f"port: {smtp_port}"))
    assert run_job(failing).notices == ["failure"]  # nobody was told: tell now
    assert run_job(failing).notices == []
