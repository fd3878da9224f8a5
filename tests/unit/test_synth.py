"""Differentially private synthesis (pac-synth), its gate checks, the privacy budget ledger, and a
synthetic job end to end. pac-synth has no seed (its noise comes from the OS), so assertions on its
output are properties that hold for any draw; the connector's own steps are checked exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from connector.config import ReleaseConfig, SynthConfig, load_config
from connector.schema import load_schema
from connector.store import BudgetExceeded, Store
from privacy.gate import GateRefused, admit
from privacy.hierarchies import hierarchy_for, load_builtin
from privacy.synth import default_delta, rebase, synthesize

SCHEMA = load_schema()
ROLES = SCHEMA.view_roles()
COLUMNS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation",
           "isForcedLabour", "isSexualExploit", "isSexAndLabour", "Datasource", "RecruiterRelationship"]
QIS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation"]
BUDGET = {"total": 12.0, "spent_before": 0.0}


@pytest.fixture(scope="module")
def view():
    from connector.sandbox.generate import expected_fields, generate_cases
    from privacy.view import derive_release_view

    cases = [c for c in generate_cases(1500, seed=5) if not c.deleted]
    return derive_release_view(pd.DataFrame([expected_fields(c) for c in cases]), SCHEMA, datasource="Case Management", columns=COLUMNS)


@pytest.fixture(scope="module")
def synthesized(view):
    config = SynthConfig(epsilon=6.0, reporting_length=2)
    hierarchies = {q: hierarchy_for(q, None, SCHEMA.view[q].hierarchy) for q in QIS}
    rules = {c.name: c.rule for c in SCHEMA.view.values()}
    return synthesize(view, config, quasi_identifiers=QIS, hierarchies=hierarchies, rules=rules)


def test_synthetic_table_has_the_view_columns_and_passes_the_gate(view, synthesized):
    table, record = synthesized.table, synthesized.record
    assert list(table.columns) == COLUMNS
    assert record["method"] == "synthetic" and record["records_out"] == len(table) > 0.5 * len(view)
    release = admit(table, {**record, "budget": BUDGET}, roles=ROLES)
    assert release.row_count == len(table)


def test_every_quasi_identifier_combination_reaches_the_resolution(synthesized):
    sizes = synthesized.table[QIS].astype(object).fillna("").groupby(QIS).size()
    assert sizes.min() >= synthesized.record["resolution"] == 10


def test_derived_and_constant_columns_agree_with_the_synthetic_flags(synthesized):
    table = synthesized.table.astype(object).fillna("")
    both = (table["isForcedLabour"] == "1") & (table["isSexualExploit"] == "1")
    assert ((table["isSexAndLabour"] == "1") == both).all()
    assert set(table["Datasource"]) == {"Case Management"}
    assert synthesized.record["derived_columns"] == ["isSexAndLabour"]
    assert not table["RecruiterRelationship"].str.contains("<semicolon>").any()


def test_age_is_binned_and_delta_defaults_to_sds_formula(view, synthesized):
    record = synthesized.record
    assert record["binning"]["ageBroad"]["level"] >= 1  # ~70 distinct ages > max_categories
    coarse = 10 ** math.ceil(math.log10(len(view)))  # the count rounded up: delta does not reveal it
    assert record["delta"] == pytest.approx(1 / (math.log(coarse) * coarse)) and record["delta_default"]
    assert record["delta"] <= 1 / (math.log(len(view)) * len(view))  # never weaker than SDS's default
    assert record["synthesizer"]["parameters"]["epsilon"] == 6.0


def test_the_connectors_own_steps_are_reproducible_for_a_seed(view, monkeypatch):
    """With pac-synth replaced by a fixed draw, the whole synthesis is deterministic."""
    monkeypatch.setenv("HTCDS_TESTING", "1")
    config = SynthConfig(epsilon=2.0, seed=7)
    hierarchies = {q: hierarchy_for(q, None, SCHEMA.view[q].hierarchy) for q in QIS}
    echo = lambda prepared, parameters, zeros, multi: (prepared.sample(frac=1.0, random_state=config.seed), len(prepared))  # noqa: E731
    first = synthesize(view, config, quasi_identifiers=QIS, hierarchies=hierarchies, sampler=echo)
    second = synthesize(view, config, quasi_identifiers=QIS, hierarchies=hierarchies, sampler=echo)
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.record == second.record and first.record["seed"] == 7


def test_seed_is_refused_outside_tests(monkeypatch):
    monkeypatch.delenv("HTCDS_TESTING", raising=False)
    with pytest.raises(ValueError, match="only in tests"):
        ReleaseConfig(method="synthetic", synthetic={"seed": 1})


def test_rebase_climbs_the_same_hierarchy_from_the_binned_labels():
    age = rebase(load_builtin("age"), 1)
    assert age.path("18--20") == ("18--20", "18--20", "Adult", "*")
    assert age.path("0--4") == ("0--4", "0--8", "Minor", "*")


# -- the gate -------------------------------------------------------------------------------------

def _passing_table() -> tuple[pd.DataFrame, dict]:
    table = pd.DataFrame({"gender": ["Female"] * 20 + ["Male"] * 20, "isForcedLabour": ["1", "0"] * 20})
    record = {"method": "synthetic", "epsilon": 4.0, "delta": 1e-5, "resolution": 10, "records_out": 40, "reporting_length": 3,
              "quasi_identifiers": ["gender"], "budget": dict(BUDGET)}
    return table, record


def test_gate_admits_a_table_whose_combinations_reach_the_resolution():
    table, record = _passing_table()
    assert admit(table, record, roles=ROLES).row_count == 40


def test_gate_refuses_a_planted_rare_combination():
    table, record = _passing_table()
    table = pd.concat([table, pd.DataFrame({"gender": ["Transgender"], "isForcedLabour": ["1"]})], ignore_index=True)
    record["records_out"] = 41
    with pytest.raises(GateRefused) as refused:
        admit(table, record, roles=ROLES)
    assert any("fewer than resolution=10" in r for r in refused.value.reasons)
    assert not any("Transgender" in r for r in refused.value.reasons)  # counts, never values


def test_gate_refuses_a_rare_value_in_any_column_not_only_the_quasi_identifiers():
    """Synthetic Data Showcase's promise: no combination of up to reporting_length published values
    rarer than the resolution, whatever the column (a rare exploitation type singles out as well)."""
    table, record = _passing_table()
    table["isOrganRemoval"] = ["0"] * 39 + ["1"]
    with pytest.raises(GateRefused) as refused:
        admit(table, record, roles={**ROLES, "isOrganRemoval": "sensitive"})
    assert any("sets of up to 3 columns have a combination of values occurring fewer than resolution=10" in r for r in refused.value.reasons)


def test_gate_checks_the_age_column_of_a_synthetic_release():
    """A rare age band is a rare combination, in the quasi-identifier count and in the short ones."""
    table, record = _passing_table()
    table["ageBroad"] = ["18--20"] * 39 + ["48+"]
    with pytest.raises(GateRefused) as refused:
        admit(table, record, roles={**ROLES, "ageBroad": "quasi_identifier"})
    assert any("combinations of gender, ageBroad occur fewer than resolution=10" in r for r in refused.value.reasons)
    assert any("sets of up to 3 columns" in r for r in refused.value.reasons)
    cells = [(g, a, f) for g in ("Female", "Male") for a in ("18--20", "48+") for f in ("0", "1")] * 10
    table = pd.DataFrame(cells, columns=["gender", "ageBroad", "isForcedLabour"])
    assert admit(table, {**record, "records_out": 80}, roles={**ROLES, "ageBroad": "quasi_identifier"}).row_count == 80


def test_gate_refuses_epsilon_beyond_the_budget_and_missing_parameters():
    table, record = _passing_table()
    record["budget"] = {"total": 12.0, "spent_before": 10.0}
    with pytest.raises(GateRefused, match="exceeds the privacy budget left: 2 of 12"):
        admit(table, record, roles=ROLES)
    del record["budget"], record["delta"]
    with pytest.raises(GateRefused) as refused:
        admit(table, record, roles=ROLES)
    assert any("delta" in r for r in refused.value.reasons) and any("budget" in r for r in refused.value.reasons)


def test_gate_refuses_an_identifier_column_in_a_synthetic_table():
    table, record = _passing_table()
    table["prs_FirstName"] = "Ann"
    with pytest.raises(GateRefused, match="prs_FirstName: role direct_identifier never leaves the partner"):
        admit(table, record, roles=dict(ROLES, prs_FirstName="direct_identifier"))


# -- the ledger -----------------------------------------------------------------------------------

def test_ledger_refuses_an_over_budget_release_and_says_what_is_left(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        run = store.start_run("ngo", "release")
        entry = store.reserve_budget("ngo", 4.0, 1e-5, 10.0, run)
        store.record_release("r-1", run, "synthetic", "folder", {}, budget_entry=entry)
        entry = store.reserve_budget("ngo", 4.0, 1e-5, 10.0, run)  # pending counts as spent
        assert store.spent("ngo") == pytest.approx((8.0, 2e-5))
        with pytest.raises(BudgetExceeded, match="only 2 of 10 is left"):
            store.reserve_budget("ngo", 4.0, 1e-5, 10.0, run)
        store.void_budget(entry)  # the publish failed: nothing left the partner
        assert store.spent("ngo") == pytest.approx((4.0, 1e-5))
        assert store.spent("other-partner") == (0.0, 0.0)
        assert [e["status"] for e in store.budget_ledger("ngo")] == ["spent", "void"]


# -- end to end -----------------------------------------------------------------------------------

def _job(tmp_path: Path, budget: float) -> Path:
    from connector.sandbox.excel_writer import write_workbook
    from connector.sandbox.generate import generate_cases

    write_workbook(generate_cases(900, seed=3), tmp_path / "cases.xlsx")
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
release:
  method: synthetic
  columns: {json.dumps(COLUMNS)}
  synthetic: {{epsilon: 4, reporting_length: 2, budget: {budget}}}
destination: {{type: folder, path: releases}}
"""
    )
    return config


def test_synthetic_job_publishes_data_report_and_privacy_then_runs_out_of_budget(tmp_path):
    from html.parser import HTMLParser

    from connector.pipeline import EXIT_GATE, Pipeline

    config = load_config(_job(tmp_path, budget=6.0))
    pipeline = Pipeline(config)
    try:
        sync, release = pipeline.run()
        assert release.status == "published", release.reasons
        folder = Path(release.location)
        for name in ("data.csv", "report.html", "privacy.json", "manifest.json"):
            assert (folder / name).is_file(), name
        privacy = json.loads((folder / "privacy.json").read_text())
        assert privacy["method"] == "synthetic" and privacy["budget"]["spent_before"] == 0
        assert privacy["metrics"]["risk"]["classes_below_threshold"] == 0
        # statistics of the real cases are not covered by epsilon: they stay out of the published files
        assert privacy["metrics"]["published_subset"] is True and "records_in" not in privacy
        assert set(privacy["metrics"]) == {"records_release", "columns", "risk", "marginals", "published_subset"}
        assert set(privacy["metrics"]["risk"]) <= {"quasi_identifiers", "classes", "smallest_class", "threshold", "classes_below_threshold", "class_size_histogram"}
        assert all(entry["real"] is None for entry in privacy["metrics"]["marginals"].values())
        manifest = json.loads((folder / "manifest.json").read_text())
        assert "report.html" in manifest["files"]
        images = []

        class Images(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "img":
                    images.append(dict(attrs)["src"])

        Images().feed((folder / "report.html").read_text())
        assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)  # release-side charts only
        assert pipeline.store.spent("test-ngo")[0] == 4.0

        # the same data with the same settings is not synthesized (nor paid for) again
        again = pipeline.release()
        assert again.status == "unchanged" and again.release_id == release.release_id
        assert pipeline.store.spent("test-ngo")[0] == 4.0

        pipeline.config.job.release.synthetic.epsilon = 3.0  # a new release: 3 more would pass the total of 6
        second = pipeline.release()
        assert second.status == "refused" and second.exit_code == EXIT_GATE
        assert any("only 2 of 6 is left" in r or "left: 2 of 6" in r for r in second.reasons), second.reasons
        assert pipeline.store.spent("test-ngo")[0] == 4.0  # the refused release spent nothing
    finally:
        pipeline.close()


def test_failed_publish_gives_the_budget_back(tmp_path, monkeypatch):
    from connector.destinations import PublishError
    from connector.destinations.folder import FolderDestination
    from connector.pipeline import Pipeline

    def fail(self, bundle):
        raise PublishError("disk full", sent=False)  # the destination knows no byte left

    config = load_config(_job(tmp_path, budget=6.0))
    pipeline = Pipeline(config)
    try:
        pipeline.sync()
        monkeypatch.setattr(FolderDestination, "publish", fail)
        report = pipeline.release()
        assert report.status == "failed"
        assert pipeline.store.spent("test-ngo") == (0.0, 0.0)
        assert [e["status"] for e in pipeline.store.budget_ledger("test-ngo")] == ["void"]
    finally:
        pipeline.close()


@pytest.mark.parametrize("failure", ["sent", "interrupted"])
def test_a_publish_that_failed_after_bytes_may_have_left_keeps_the_budget_spent(tmp_path, monkeypatch, failure):
    """Files put before the manifest (S3), an upload the receiver read before it answered, a signal
    mid-upload: the noisy counts left the partner, and the next run draws new noise from the same
    cases. So the entry stays pending (counted), and the retry is charged again."""
    from connector.destinations import PublishError
    from connector.destinations.folder import FolderDestination
    from connector.pipeline import Pipeline

    def fail(self, bundle):
        if failure == "sent":
            raise PublishError("the receiver did not answer in time")  # default: bytes may have left
        raise KeyboardInterrupt

    config = load_config(_job(tmp_path, budget=12.0))
    pipeline = Pipeline(config)
    try:
        pipeline.sync()
        with monkeypatch.context() as patch:
            patch.setattr(FolderDestination, "publish", fail)
            if failure == "sent":
                assert pipeline.release().status == "failed"
            else:
                with pytest.raises(KeyboardInterrupt):
                    pipeline.release()
        assert pipeline.store.spent("test-ngo")[0] == 4.0
        assert [e["status"] for e in pipeline.store.budget_ledger("test-ngo")] == ["pending"]
        assert pipeline.release().status == "published"  # new noise from the same cases: charged again
        assert pipeline.store.spent("test-ngo")[0] == 8.0
    finally:
        pipeline.close()


def test_a_synthetic_release_of_every_view_column_is_refused_with_a_column_list_that_works():
    """The whole view took 924 s and 5.85 GiB for 10,000 cases; the refusal names a list that runs."""
    from privacy.protect import ProtectionError, SUGGESTED_SYNTHETIC_COLUMNS, protect

    from connector.sandbox.generate import expected_fields, generate_cases
    from privacy.view import derive_release_view

    view = derive_release_view(pd.DataFrame([expected_fields(c) for c in generate_cases(60, seed=2)]), SCHEMA, datasource="Case Management")
    rules = {c.name: c.rule for c in SCHEMA.view.values()}
    with pytest.raises(ProtectionError, match=r"synthesizes \d+ columns; at most 16") as refused:
        protect(view, ReleaseConfig(method="synthetic"), ROLES, rules=rules)
    assert "columns: [yearOfRegistration, gender" in str(refused.value)
    assert set(SUGGESTED_SYNTHETIC_COLUMNS) <= set(view.columns)
