"""End to end on the spine: generated cases -> HTCDS Excel workbook -> store -> k-anonymized release."""

import json
from pathlib import Path

import pandas as pd
import pytest

from connector.config import load_config
from connector.mapping import load_mapping
from connector.pipeline import EXIT_GATE, Pipeline
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import evolve, expected_fields, expected_rejections, generate_cases, personal_values
from privacy.gate import admit
from connector.schema import load_schema

N_CASES = 1200


def make_job(tmp_path: Path, cases, k: int = 10) -> Path:
    write_workbook(cases, tmp_path / "cases.xlsx")
    config = tmp_path / "job.yaml"
    config.write_text(
        f"""\
partner: {{id: test-ngo, datasource: Case Management}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: workbook
    type: excel
    mapping: excel_htcds
    options: {{path: cases.xlsx}}
release: {{method: k_anonymity, k: {k}}}
destination: {{type: folder, path: releases}}
"""
    )
    return config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("excel-job")
    cases = generate_cases(N_CASES, seed=11, mess_rate=0.05)
    config = load_config(make_job(tmp_path, cases))
    pipeline = Pipeline(config)
    sync, release = pipeline.run()
    yield tmp_path, cases, config, pipeline, sync, release
    pipeline.close()


def live(cases):
    return [c for c in cases if not c.deleted]


def test_store_equals_the_generators_truth_after_mapping(first_run):
    _, cases, _, pipeline, sync, _ = first_run
    assert sync.sources[0].status == "ok"
    targets = set(load_mapping("excel_htcds").targets())
    stored = {c.record_id: c.fields for c in pipeline.store.iter_cases("workbook") if not c.deleted}
    expected_ids = {c.case_id for c in live(cases)}
    assert set(stored) == expected_ids
    mismatches = []
    for case in live(cases):
        truth = expected_fields(case)
        for name in sorted(targets & set(truth)):
            if stored[case.case_id].get(name) != truth[name]:
                mismatches.append((case.case_id, name, case.mess.get(name)))
    assert mismatches == []


def test_bad_values_became_named_rejections(first_run):
    _, cases, _, pipeline, _, _ = first_run
    targets = set(load_mapping("excel_htcds").targets())
    rejected = {(r["record_id"], r["field"]) for r in pipeline.store.rejections(limit=100000)}
    expected = {(c.case_id, f) for c in live(cases) for f in expected_rejections(c) if f in targets}
    assert expected and expected <= rejected


def test_release_passes_the_gate_and_validates_with_frictionless(first_run):
    tmp_path, _, _, pipeline, _, release = first_run
    assert release.status == "published", release.reasons
    folder = Path(release.location)
    assert sorted(p.name for p in folder.iterdir()) == ["codebook.md", "data.csv", "datapackage.json", "manifest.json", "privacy.json", "report.html"]
    privacy = json.loads((folder / "privacy.json").read_text())
    table = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    assert privacy["k"] == 10 and len(table) == privacy["records_out"] > 0
    admit(table, privacy, roles=load_schema().view_roles())  # raises if the published bytes fail the gate
    assert table.groupby(list(table.columns)).size().min() >= 10  # every whole row, not only the quasi-identifiers

    # privacy.json and report.html carry only what the release itself shows: nothing about withheld cases
    assert not {"records_in", "records_suppressed", "information_loss", "metrics"} & set(privacy)
    for column, shares in privacy["detail"].items():
        star = (table[column] == "*").mean()
        assert abs(shares["suppressed"] - star) < 1e-3, column
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "unique on those traits" not in report and "combinations in real data" not in report
    assert "Who this protects against" in report and "their trafficker" in report

    from frictionless import validate

    report = validate(str(folder / "datapackage.json"))
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:10]


def test_no_personal_value_appears_in_the_release(first_run):
    _, cases, _, _, _, release = first_run
    from connector.codebook import render_codebook_markdown

    folder = Path(release.location)
    # The codebook is generated from the schema alone (it may name "Northern Mariana Islands"):
    # prove it holds nothing of the data, then scan every other file for every fake personal value.
    assert (folder / "codebook.md").read_text(encoding="utf-8") == render_codebook_markdown(load_schema())
    text = "\n".join(p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name != "codebook.md")
    values = personal_values(cases)
    assert len(values) > 1000
    leaked = sorted(v for v in values if len(v) >= 4 and v in text)
    assert leaked == []


def test_rerun_on_unchanged_data_publishes_nothing_new(first_run):
    _, _, config, _, _, release = first_run
    pipeline = Pipeline(config)
    sync, again = pipeline.run()
    pipeline.close()
    assert sync.sources[0].fetched == 0
    assert again.status == "unchanged" and again.release_id == release.release_id


def test_edits_and_deletions_reach_the_store(first_run):
    tmp_path, cases, config, _, _, _ = first_run
    later = evolve(cases, seed=12)
    write_workbook(later, tmp_path / "cases.xlsx")
    pipeline = Pipeline(config)
    sync, release = pipeline.run()
    stored = {c.record_id: c for c in pipeline.store.iter_cases("workbook")}
    pipeline.close()
    assert sync.sources[0].status == "ok"
    for case in later:
        if case.deleted:
            assert case.case_id not in stored or stored[case.case_id].deleted
        else:
            assert not stored[case.case_id].deleted
    assert release.status == "published"


def test_gate_refuses_when_k_cannot_be_met(tmp_path):
    cases = generate_cases(30, seed=5)
    pipeline = Pipeline(load_config(make_job(tmp_path, cases, k=50)))
    _, release = pipeline.run()
    pipeline.close()
    assert release.status == "refused" and release.exit_code == EXIT_GATE
    assert not (tmp_path / "releases").exists() or not any((tmp_path / "releases").rglob("manifest.json"))
