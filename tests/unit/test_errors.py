"""One error root: each failure is its documented exit code, caught once in `cli.main`, the run
marked failed; and only the privacy step's own refusal is "refused" (exit 4)."""

from __future__ import annotations

import json

import pytest

from connector import cli
from connector.errors import (
    EXIT_CONFIG,
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_LOCKED,
    EXIT_PUBLISH,
    EXIT_SOURCE,
    ConnectorError,
    InternalError,
    LockedError,
    PublishError,
    ReleaseRefused,
    SourceError,
    StoreError,
)
from connector.pipeline import Pipeline
from tests.faults.jobs import write_job


def test_each_error_carries_its_documented_exit_code_and_a_hint():
    from connector.config import ConfigError
    from connector.mapping import MappingError
    from connector.secrets import SecretMissing
    from connector.sources.base import SourceAuthError
    from connector.store import BudgetExceeded

    assert [e.exit_code for e in (ConfigError(["x"]), StoreError("x"), MappingError(["x"]), SecretMissing("x"))] == [EXIT_CONFIG] * 4
    assert SourceAuthError("source sf", "refused").exit_code == EXIT_SOURCE
    assert BudgetExceeded("ngo", 2.0, 9.0, 10.0).exit_code == EXIT_GATE == ReleaseRefused("x").exit_code
    assert (PublishError("x").exit_code, LockedError("x").exit_code, InternalError("x").exit_code) == (EXIT_PUBLISH, EXIT_LOCKED, EXIT_INTERNAL)
    assert StoreError("x").hint and LockedError("x").hint and InternalError("x").hint


def test_a_source_error_keeps_where_and_what_apart():
    error = SourceError("source sf: object Case", "HTTP 500 after 5 attempts", transient=True)
    assert (error.where, error.what, str(error)) == ("source sf: object Case", "HTTP 500 after 5 attempts", "source sf: object Case: HTTP 500 after 5 attempts")
    assert isinstance(error, ConnectorError) and error.transient


def test_an_internal_error_names_the_type_and_place_never_the_text():
    try:
        {}["Maria Papadopoulou"]
    except KeyError as exc:
        error = InternalError.wrap(exc, "syncing")
    assert "KeyError at test_errors.py:" in error.message and "Maria" not in error.message


def test_a_value_error_in_the_release_step_is_an_internal_error_not_a_refusal(tmp_path, monkeypatch, capsys):
    config = write_job(tmp_path)
    assert cli.main(["sync", str(config)]) == 0

    def pandas_bug(self, *args, **kwargs):
        raise ValueError("Length of values (3) does not match length of index (4)")

    monkeypatch.setattr(Pipeline, "next_k_release", pandas_bug)
    capsys.readouterr()
    code = cli.main(["release", str(config), "--json"])
    captured = capsys.readouterr()
    assert code == EXIT_INTERNAL
    report = json.loads(captured.out)
    assert report["exit_code"] == EXIT_INTERNAL and report["status"] == "failed"
    assert report["error"].startswith("internal error while releasing: ValueError at test_errors.py:")
    assert "Traceback" not in captured.err and "internal error" in captured.err
    runs = Pipeline(__import__("connector.config", fromlist=["load_config"]).load_config(config)).store.runs()
    assert [(r["kind"], r["status"]) for r in runs][:1] == [("release", "failed")]


def test_the_gate_refusing_is_still_exit_4(tmp_path, capsys):
    config = write_job(tmp_path, k=1000)
    assert cli.main(["sync", str(config)]) == 0
    assert cli.main(["release", str(config)]) == EXIT_GATE


def test_any_unexpected_exception_in_a_command_exits_7_with_one_line(tmp_path, monkeypatch, capsys):
    config = write_job(tmp_path)
    monkeypatch.setattr(Pipeline, "sync", lambda self, only=None: 1 / 0)
    assert cli.main(["sync", str(config)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" not in err and "report it" in " ".join(err.split())


def test_status_of_a_store_that_cannot_be_opened_exits_2(tmp_path, capsys):
    config = write_job(tmp_path, store_url="postgresql+psycopg2://nobody:pw@127.0.0.1:9/none?connect_timeout=2")
    assert cli.main(["status", str(config), "--json"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exit_code"] == EXIT_CONFIG
    assert "cannot open the case store" in captured.err and "pw@" not in captured.err + captured.out


@pytest.mark.parametrize("failure", ["store"])
def test_a_store_failure_mid_sync_marks_the_run_failed_and_keeps_the_report(tmp_path, monkeypatch, failure):
    from connector.config import load_config
    from connector.store import Store

    config = load_config(write_job(tmp_path))
    calls = {"n": 0}
    original = Store.commit_page

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("the case store failed while writing: database or disk is full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit_page", flaky)
    pipeline = Pipeline(config)
    with pytest.raises(StoreError) as raised:
        pipeline.sync()
    report = raised.value.report
    assert report.exit_code == EXIT_CONFIG and report.sources[0].pages == 2 and report.sources[0].status == "failed"
    (run,) = pipeline.store.runs()
    assert run["status"] == "failed" and "disk is full" in run["error"] and run["counts"]["fetched"] == 20
    pipeline.close()


def test_the_readme_documents_every_exit_code():
    from pathlib import Path

    from connector.errors import EXIT_MEANINGS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    assert [int(line.split("|")[1]) for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()] == sorted(EXIT_MEANINGS)


def test_a_bug_during_run_exits_7_notifies_and_shows_the_traceback_only_with_v(tmp_path, monkeypatch, capsys):
    config = write_job(tmp_path)
    monkeypatch.setattr(Pipeline, "release_after", lambda self, sync: {}["x"])
    assert cli.main(["run", str(config), "--json"]) == EXIT_INTERNAL
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["exit_code"] == EXIT_INTERNAL and report["sync"]["sources"][0]["status"] == "ok"
    assert "KeyError at test_errors.py:" in report["errors"][0] and "Traceback" not in captured.err
    assert cli.main(["-v", "run", str(config)]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_a_lock_file_that_cannot_be_created_is_a_store_error(tmp_path):
    from connector.lock import JobLock

    (tmp_path / "state").write_text("a file where the folder should be")
    with pytest.raises(StoreError, match="cannot create the job's lock file"):
        JobLock(tmp_path / "state" / "cases.lock").__enter__()


def test_preview_of_a_release_the_privacy_model_refuses_exits_4_with_the_reason(tmp_path, capsys):
    config = write_job(tmp_path, k=1000)
    assert cli.main(["sync", str(config)]) == 0
    capsys.readouterr()
    assert cli.main(["preview", str(config)]) == EXIT_GATE
    err = " ".join(capsys.readouterr().err.split())
    assert "the privacy step refuses this release: nothing to publish" in err and "k=1000" in err and "Traceback" not in err


def test_sync_json_on_a_full_disk_prints_the_report_so_far_with_the_error_and_hint(tmp_path, capsys):
    from connector import faults

    config = write_job(tmp_path)
    faults.configure("store.commit:3=ENOSPC")
    try:
        code = cli.main(["sync", str(config), "--json"])
    finally:
        faults.configure(None)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == EXIT_CONFIG == report["exit_code"]
    assert "failed while writing: disk full" in report["error"] and "disk has room" in report["hint"]
    (source,) = report["sources"]
    assert (source["status"], source["pages"], source["fetched"]) == ("failed", 2, 20)
    assert "disk full" in captured.err and "Traceback" not in captured.err
