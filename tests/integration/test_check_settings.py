"""`check` catches what would otherwise fail later (the daemon's schedule, release columns, a silent
webhook), each at its config line; `notify test` sends a real test message."""

import json
import socket

import pytest

from connector.cli import main
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases
from tests.webhook import webhook_receiver

JOB = """\
partner: {{id: check-ngo}}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {{path: cases.xlsx}}
{extra}
"""


@pytest.fixture
def receiver():
    with webhook_receiver(lambda _headers, body: json.loads(body)) as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(tmp_path, capsys, extra: str) -> tuple[int, list[dict]]:
    write_workbook(generate_cases(30, seed=1), tmp_path / "cases.xlsx")
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(extra=extra))
    capsys.readouterr()
    code = main(["check", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)["problems"]


def _errors(problems):
    return [f"{p['where']}: {p['message']}" for p in problems if p["severity"] == "error"]


def test_a_clean_config_has_no_settings_problems(tmp_path, capsys, receiver):
    code, problems = _check(tmp_path, capsys, f'schedule: {{cron: "30 1 * * 1-5", timezone: Europe/Athens}}\nnotify: {{webhook: {{url: "{receiver.url}"}}}}\nrelease: {{levels: {{ageBroad: 1}}}}')
    assert code == 0, _errors(problems)


@pytest.mark.parametrize(
    ("extra", "line", "words"),
    [
        ('schedule: {cron: "0 25 * * *"}', 7, "schedule.cron"),
        ('schedule:\n  cron: "0 2 * *"', 8, "needs 5 fields"),
        ("schedule:\n  timezone: Mars/Olympus", 8, "unknown time zone 'Mars/Olympus'"),
        ("release:\n  quasi_identifiers: [yearOfRegistration, gendre]", 8, "'gendre' is no column of the release view"),
        ("release:\n  levels:\n    ageBroad: 1\n    citizenshp: 2", 10, "level for 'citizenshp'"),
        ("release:\n  columns: [gender, favouriteColour]", 8, "'favouriteColour' is no column"),
    ],
)
def test_check_names_the_line_of_a_setting_that_would_fail_later(tmp_path, capsys, extra, line, words):
    code, problems = _check(tmp_path, capsys, extra)
    errors = _errors(problems)
    assert code == 2
    assert any(f"job.yaml:{line}:" in e and words in e for e in errors), errors


def test_check_reports_a_webhook_that_does_not_answer(tmp_path, capsys):
    code, problems = _check(tmp_path, capsys, f'notify:\n  webhook: {{url: "http://127.0.0.1:{_closed_port()}/hook"}}')
    errors = _errors(problems)
    assert code == 2 and any("job.yaml:8: notify.webhook.url" in e and "does not answer" in e for e in errors), errors


def test_notify_test_sends_a_test_message(tmp_path, capsys, receiver):
    write_workbook(generate_cases(5, seed=1), tmp_path / "cases.xlsx")
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(extra=f'notify: {{webhook: {{url: "{receiver.url}"}}}}'))
    assert main(["notify", "test", str(path)]) == 0
    (body,) = receiver.posts
    assert body["event"] == "test" and body["job"] == "check-ngo" and "test notification" in body["summary"]
    assert "sent" in capsys.readouterr().out


def test_notify_test_fails_with_2_when_nothing_answers_or_nothing_is_configured(tmp_path, capsys):
    write_workbook(generate_cases(5, seed=1), tmp_path / "cases.xlsx")
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(extra=f'notify: {{webhook: {{url: "http://127.0.0.1:{_closed_port()}/hook", timeout_seconds: 2}}}}'))
    assert main(["notify", "test", str(path)]) == 2
    assert "webhook notification failed" in capsys.readouterr().err
    path.write_text(JOB.format(extra=""))
    assert main(["notify", "test", str(path)]) == 2
    assert "no notification channel configured" in capsys.readouterr().err


def test_check_refuses_what_the_release_step_would_refuse(tmp_path, capsys):
    code, problems = _check(tmp_path, capsys, "release: {method: synthetic}")
    assert code == 2
    assert any("synthesizes" in p["message"] and "columns: [yearOfRegistration" in p["message"] for p in problems)
    code, problems = _check(tmp_path, capsys, "release: {k: 10, levels: {ageBroad: 9}}")
    assert code == 2 and any("ageBroad" in p["message"] and "level 9" in p["message"] for p in problems)
    code, problems = _check(tmp_path, capsys, "release: {k: 10, importance: [nameOfVictim], l_diversity: {facts: [gender]}}")
    messages = [p["message"] for p in problems]
    assert any("'nameOfVictim' is no column" in m for m in messages) and any("'gender' is no sensitive column" in m for m in messages)
