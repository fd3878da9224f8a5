"""`htcds-connector rejections`: one line per rejected value, never a personal value, and value-map
lines that, pasted into the mapping, make the misspelt codes map."""

import csv
import json
from importlib import resources

import yaml

from connector.cli import main
from connector.sandbox.excel_writer import write_csv
from connector.sandbox.generate import generate_cases

JOB = """\
partner: {{id: rej-ngo}}
store: {{url: "sqlite:///{store}"}}
sources:
  - id: sheet
    type: csv
    mapping: {mapping}
    options: {{path: cases.csv}}
release: {{k: 5}}
"""
NAME = "Maria Papadopoulou"


def _planted_csv(path):
    """Generated cases (no mess) with planted values: two misspelt genders (Feminine), a name typed into gender,
    a misspelt means of control in a multi-select."""
    write_csv(generate_cases(40, seed=11, mess_rate=0.0), path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    gender, control = header.index("prs_Gender"), header.index("vic_MethodsOfControl")
    data = [i for i, r in enumerate(rows) if r and r[0].startswith("C0")]
    rows[data[0]][gender] = "Feminin"
    rows[data[1]][gender] = "feminin"
    rows[data[2]][gender] = NAME
    rows[data[3]][control] = "Debt bondge;Sexual abuse"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return [rows[i][0] for i in data[:4]]


def test_rejections_lists_each_value_safely_and_the_snippet_fixes_the_typos(tmp_path, capsys):
    ids = _planted_csv(tmp_path / "cases.csv")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(store="state/a.sqlite", mapping="excel_htcds"))
    assert main(["sync", str(job)]) == 1
    capsys.readouterr()

    assert main(["rejections", str(job), "--field", "prs_Gender", "--json", "--csv", str(tmp_path / "r.csv")]) == 0
    text = capsys.readouterr().out
    report = json.loads(text)
    rows = {r["record_id"]: r for r in report["rejections"]}
    assert set(rows) == set(ids[:3])
    assert all(r["source"] == "sheet" and r["field"] == "prs_Gender" and r["reason"] for r in rows.values())
    assert rows[ids[0]]["closest_code"] == "Feminine" and rows[ids[0]]["value"] == "Feminin"
    assert rows[ids[2]]["closest_code"] is None and rows[ids[2]]["value"].startswith("[redacted")
    assert "Papadopoulou" not in text and "Papadopoulou" not in (tmp_path / "r.csv").read_text()
    with (tmp_path / "r.csv").open() as f:
        assert list(csv.DictReader(f))[0].keys() >= {"source", "record_id", "field", "reason", "closest_code"}

    # The table for people, with the snippet; the redacted placeholder survives the terminal renderer.
    assert main(["rejections", str(job)]) == 0
    out = capsys.readouterr().out
    assert "[redacted, 18 chars]" in out and "Papadopoulou" not in out
    assert "# new: 2 rejected value(s)" in out and "Debt bondge: DebtBondage" in out

    # Paste the snippets over the packaged mapping's entries: the typos now map, the name stays rejected.
    assert main(["rejections", str(job), "--json"]) == 0
    snippets = json.loads(capsys.readouterr().out)["value_map_snippets"]
    mapping = yaml.safe_load(resources.files("mappings").joinpath("excel_htcds.yaml").read_text())
    for snippet in snippets:
        if snippet["yaml"]:
            mapping["fields"].update(yaml.safe_load(snippet["yaml"])["fields"])
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mapping, allow_unicode=True))
    job.write_text(JOB.format(store="state/b.sqlite", mapping="mine.yaml"))
    assert main(["sync", str(job)]) == 1
    capsys.readouterr()
    assert main(["rejections", str(job), "--json"]) == 0
    left = json.loads(capsys.readouterr().out)["rejections"]
    assert [(r["record_id"], r["field"]) for r in left] == [(ids[2], "prs_Gender")]


def test_rejections_of_one_source_on_an_empty_store(tmp_path, capsys):
    _planted_csv(tmp_path / "cases.csv")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(store="state/a.sqlite", mapping="excel_htcds"))
    assert main(["rejections", str(job), "--source", "sheet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rejections": [], "value_map_snippets": []}
