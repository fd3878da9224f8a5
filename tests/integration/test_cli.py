"""The CLI as a user meets it: exit codes, one-line errors, --json reports."""

import json
from pathlib import Path

import pytest

from connector.cli import main
from connector.lock import JobLock
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases

JOB = """\
partner: {id: cli-ngo}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {path: cases.xlsx}
release: {k: 5}
"""


@pytest.fixture
def job(tmp_path):
    write_workbook(generate_cases(400, seed=2), tmp_path / "cases.xlsx")
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return path


def run_json(capsys, *argv):
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_init_writes_a_config_that_check_explains(tmp_path, capsys):
    path = tmp_path / "connector.yaml"
    assert main(["init", str(path)]) == 0
    assert main(["init", str(path)]) == 2  # never overwrites without --force
    capsys.readouterr()
    code, report = run_json(capsys, "check", str(path))
    assert code == 2 and not report["ok"]
    messages = [p["message"] for p in report["problems"] if p["severity"] == "error"]
    assert any("cases.xlsx" in m for m in messages)


def test_literal_password_exits_2_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(JOB.replace("options: {path: cases.xlsx}", "options: {path: cases.xlsx}\n    password: letmein12345"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7: sources[0].password" in err and "letmein12345" not in err


def test_run_then_rerun_then_status(job, capsys):
    code, first = run_json(capsys, "run", str(job))
    assert code == 1  # the generated data is messy on purpose: finished with rejections
    assert first["sync"]["sources"][0]["inserted"] == 400
    assert first["release"]["status"] == "published"
    assert Path(first["release"]["location"]).is_dir()
    code, second = run_json(capsys, "run", str(job))
    assert code == 0
    assert second["release"]["status"] == "unchanged"
    assert second["release"]["release_id"] == first["release"]["release_id"]
    code, status = run_json(capsys, "status", str(job))
    assert code == 0
    assert [r["kind"] for r in status["runs"]][:4] == ["release", "sync", "release", "sync"]
    assert status["counts"]["sources"]["workbook"]["live"] == 400
    assert status["rejections_by_reason"] and all("count" in r for r in status["rejections_by_reason"])


def test_a_second_run_while_one_holds_the_lock_exits_6(job, capsys):
    with JobLock(job.parent / "state" / "cases.lock"):
        assert main(["run", str(job)]) == 6
    assert "another run of this job is in progress" in capsys.readouterr().err


def test_corrupt_workbook_exits_3_and_writes_nothing(job, capsys):
    (job.parent / "cases.xlsx").write_bytes(b"PK\x03\x04 this is not a workbook")
    code, report = run_json(capsys, "run", str(job))
    assert code == 3
    (source,) = report["sync"]["sources"]
    assert source["status"] == "failed" and "cases.xlsx" in source["error"]
    assert report["release"]["status"] == "skipped"
    code, status = run_json(capsys, "status", str(job))
    assert status["counts"]["sources"] == {} or status["counts"]["sources"]["workbook"]["live"] == 0
    assert not (job.parent / "releases").exists()


def test_preview_publishes_nothing(job, capsys):
    assert main(["sync", str(job)]) in (0, 1)
    capsys.readouterr()
    code, report = run_json(capsys, "preview", str(job))
    assert code == 0 and report["passes_gate"] and report["records_in"] == 400
    assert not (job.parent / "releases").exists()
