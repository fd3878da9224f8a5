"""The CLI speaks plainly: --version, global options anywhere, config errors in words, once, at the key's line."""

import json

import pytest

from connector.cli import main
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases

BAD = """\
partner: {id: "NGO Athens"}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {path: cases.xlsx}
release:
  k: ten
  method: kanon
  suppression_limit: 2
  quasi_identifiers: gender
destination: {type: s3, bucket: "My_Bucket"}
schedule: {cron: 5}
notify:
  webhook: "http://example.org/hook"
run: {release_requires_all_sources: maybe}
"""


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("htcds-connector ")


def test_config_errors_are_plain_words_one_per_key_in_line_order(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("config error")]
    for jargon in ("Input should", "String should", "pattern", "^", "{0,62}", "instance of", "unable to"):
        assert jargon not in err, jargon
    expected = [
        (1, "partner.id: must be lower-case letters"),
        (8, "release.k: must be a whole number"),
        (9, "release.method: must be one of: k_anonymity or synthetic"),
        (10, "release.suppression_limit: must be at most 1"),
        (11, "release.quasi_identifiers: must be a list"),
        (12, "destination.bucket: must be an S3 bucket name"),
        (13, "schedule.cron: must be text"),
        (15, "notify.webhook: must be a group of keys"),
        (16, "run.release_requires_all_sources: must be true or false"),
    ]
    assert len(lines) == len(expected), lines
    for line, (number, words) in zip(lines, expected):
        assert f"bad.yaml:{number}: {words}" in line, line


def test_an_unknown_destination_type_is_named(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("partner: {id: ok}\nsources: [{id: a, type: excel, mapping: excel_htcds, options: {path: x.xlsx}}]\ndestination:\n  type: ftp\n")
    assert main(["check", str(path)]) == 2
    assert "bad.yaml:4: destination.type: unknown destination type 'ftp'; use one of folder, s3, central_api" in capsys.readouterr().err


def test_global_options_work_after_the_command(tmp_path, capsys):
    write_workbook(generate_cases(20, seed=4), tmp_path / "cases.xlsx")
    job = tmp_path / "job.yaml"
    job.write_text("partner: {id: opts}\nsources: [{id: w, type: excel, mapping: excel_htcds, options: {path: cases.xlsx}}]\nrelease: {k: 2}\n")
    assert main(["sync", str(job), "--json", "--log-json"]) in (0, 1)
    captured = capsys.readouterr()
    json.loads(captured.out)
    logged = [json.loads(line) for line in captured.err.splitlines() if line.strip()]
    assert any(entry.get("event") == "sync started" for entry in logged)
    assert main(["status", str(job), "-v"]) == 0
    assert main(["--log-json", "status", str(job), "--json"]) == 0  # before the command still works
