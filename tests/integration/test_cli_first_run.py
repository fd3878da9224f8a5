"""The documented first-run flow, as a new partner follows it: preview before and after the first sync."""

import json

import pandas as pd
import pytest

from connector.cli import main
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases

JOB = """\
partner: {{id: first-run}}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {{path: cases.xlsx}}
release: {release}
"""


def _job(tmp_path, release: str = "{k: 5}", cases: int = 300):
    write_workbook(generate_cases(cases, seed=3), tmp_path / "cases.xlsx")
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(release=release))
    return path


def test_preview_before_the_first_sync_says_the_store_is_empty_and_exits_0(tmp_path, capsys):
    job = _job(tmp_path)
    assert main(["preview", str(job)]) == 0
    captured = capsys.readouterr()
    assert "no cases yet" in captured.out and f"sync {job}" in captured.out
    assert "Traceback" not in captured.err
    assert main(["preview", str(job), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records_in"] == 0 and report["empty"] is True


def test_preview_of_a_sample_with_missing_values_prints_them_empty(tmp_path, capsys):
    # A synthetic release of a few hundred cases has many unknown (pd.NA) cells in its sample.
    job = _job(tmp_path, release="{method: synthetic, columns: [yearOfRegistration, gender, ageBroad, citizenship, CountryOfExploitation, isForcedLabour, isSexualExploit]}")
    assert main(["sync", str(job)]) in (0, 1)
    capsys.readouterr()
    assert main(["preview", str(job)]) == 0
    captured = capsys.readouterr()
    assert "first 10 rows" in captured.out and ("passes the gate" in captured.out or "would refuse" in captured.out)
    assert main(["preview", str(job), "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["sample"]
    assert sample and all("<NA>" not in str(v) and v != "nan" for row in sample for v in row.values())


def test_preview_of_every_view_column_as_synthetic_names_a_column_list_that_works(tmp_path, capsys):
    job = _job(tmp_path, release="{method: synthetic}")
    assert main(["sync", str(job)]) in (0, 1)
    capsys.readouterr()
    assert main(["preview", str(job)]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "the privacy step refuses this release" in err and "columns: [yearOfRegistration, gender," in err


def test_preview_when_protection_gives_up_says_why_instead_of_a_traceback(tmp_path, capsys):
    job = _job(tmp_path, release="{k: 50, suppression_limit: 0.0, levels: {gender: 0}, search: fixed}", cases=30)
    assert main(["sync", str(job)]) in (0, 1)
    capsys.readouterr()
    code = main(["preview", str(job)])
    captured = capsys.readouterr()
    assert code == 4 and "Traceback" not in captured.err  # as `run` would exit: the privacy step refuses
    assert "k=50" in " ".join(captured.err.split())


@pytest.mark.parametrize("value", [pd.NA, None, float("nan"), pd.NaT])
def test_a_missing_cell_prints_empty(value):
    from connector.cli import _cell

    assert _cell(value) == ""
    assert _cell("Female") == "Female" and _cell(0) == "0"
