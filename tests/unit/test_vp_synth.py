"""The victim-perpetrator table of a synthetic release: synthesized with the link to the victims kept,
its epsilon a recorded part of the release's (the ledger and the gate count both parts), checked by
the gate like the victim table and accepted by the receiver. pac-synth has no seed: assertions are
properties that hold for any draw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from connector.config import load_config
from connector.pipeline import Pipeline
from connector.sandbox.generate import expected_fields, generate_cases
from connector.schema import load_schema
from connector.store import BudgetExceeded, Store
from privacy.gate import ExtraTable, GateRefused, admit
from privacy.hierarchies import hierarchy_for, lift, load_builtin
from privacy.vp_release import VP_FILE
from tests.store_job import store_cases, write_job

SCHEMA = load_schema()
POOL = [expected_fields(case) for case in generate_cases(1500, seed=6)]
COLUMNS = ["yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation", "isForcedLabour", "isSexualExploit",
           "isSexAndLabour", "Datasource"]
VP_ROLES = {c: col.role for c, col in SCHEMA.vp_view.items()}
BUDGET = {"total": 12.0, "spent_before": 0.0}


def job(tmp_path: Path, *, columns: list[str] = COLUMNS, budget: float = 7.0) -> Path:
    return write_job(tmp_path, "synth-ngo", f"""\
release:
  method: synthetic
  tables: [victims, victim_perpetrator]
  columns: {json.dumps(columns)}
  synthetic: {{epsilon: 4, vp_share: 0.25, reporting_length: 2, budget: {budget}}}
""")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vp-synth")
    pipeline = Pipeline(load_config(job(tmp_path)))
    try:
        store_cases(pipeline.store, "synth-ngo", {f"c{i}": fields for i, fields in enumerate(POOL)})
        report = pipeline.release()
        assert report.status == "published", report.reasons
        yield Path(report.location), pipeline
    finally:
        pipeline.close()


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_a_synthetic_release_carries_both_tables_each_described_as_published(published):
    folder, _ = published
    victims, vp = _table(folder / "data.csv"), _table(folder / VP_FILE)
    privacy = json.loads((folder / "privacy.json").read_text())
    assert privacy["method"] == "synthetic" and len(vp) > 0
    assert privacy["victim_perpetrator"]["records_out"] == len(vp) and privacy["records_out"] == len(victims)
    package = json.loads((folder / "datapackage.json").read_text())
    assert [r["path"] for r in package["resources"]] == ["data.csv", VP_FILE]
    assert [f["name"] for f in package["resources"][1]["schema"]["fields"]] == list(vp.columns)  # exactly the published columns
    assert "releasePart" not in vp.columns and "_case" not in vp.columns
    assert {"perpetratorRole", "perpetratorRelationship", "citizenshipRegion"} <= set(vp.columns)
    assert "records_in" not in privacy["victim_perpetrator"]  # no count of the real cases


def test_the_epsilon_is_split_and_the_ledger_records_both_parts(published):
    folder, pipeline = published
    privacy = json.loads((folder / "privacy.json").read_text())
    assert privacy["epsilon_parts"] == {"victims": 3.0, "victim_perpetrator": 1.0} and privacy["epsilon"] == 4.0
    vp = privacy["victim_perpetrator"]
    # counted per victim: m rows of a victim, each with epsilon_p / m (group privacy)
    assert vp["max_perpetrators_per_victim"] == 2 and vp["epsilon_per_row"] == pytest.approx(0.5)
    assert vp["synthesizer"]["parameters"]["epsilon"] == pytest.approx(0.5)
    [entry] = pipeline.store.budget_ledger("synth-ngo")
    assert entry["status"] == "spent" and entry["epsilon"] == 4.0
    assert entry["parts"] == {"victims": 3.0, "victim_perpetrator": 1.0}
    assert entry["delta"] == pytest.approx(privacy["delta_parts"]["victims"] + privacy["delta_parts"]["victim_perpetrator"])


def test_every_perpetrator_row_is_linked_to_a_synthetic_victim(published):
    """Independent of privacy.vp_synth: each victim row's shared columns, brought to the level the
    perpetrator table shows them at (its region for a country), must be those of some perpetrator
    row's victim side."""
    folder, _ = published
    privacy = json.loads((folder / "privacy.json").read_text())
    victims, vp = _table(folder / "data.csv"), _table(folder / VP_FILE)
    levels = {c: b["level"] for c, b in privacy["binning"].items()}
    vp_levels = {c: b["level"] for c, b in privacy["victim_perpetrator"]["binning"].items()}
    country = load_builtin("country")
    sides = {}
    for column in vp.columns:
        if column in victims.columns:
            values = victims[column]
            if column in vp_levels and vp_levels[column] > levels[column]:
                hierarchy = hierarchy_for(column, None, SCHEMA.view[column].hierarchy)
                values = values.map(lambda v, h=hierarchy, c=column: lift(h, v, levels[c], vp_levels[c]))
            sides[column] = values
        elif column in ("citizenshipRegion", "CountryOfExploitationRegion"):
            source = {"citizenshipRegion": "citizenship", "CountryOfExploitationRegion": "CountryOfExploitation"}[column]
            values = victims[source].map(lambda v, s=source: lift(country, v, levels[s], 2) if levels[s] <= 2 else v)
            if vp_levels.get(column):
                values = values.map(lambda v: lift(load_builtin("region"), v, 0, vp_levels[column]))
            sides[column] = values
    assert set(sides) >= {"gender", "ageBroad", "isForcedLabour", "citizenshipRegion"}
    known = set(zip(*(sides[c] for c in sides)))
    linked = [key in known for key in zip(*(vp[c] for c in sides))]
    assert all(linked), f"{linked.count(False)} perpetrator rows match no victim row"


def test_the_receiver_accepts_the_synthetic_bundle_with_both_tables(published):
    from connector.central.validate import check_upload

    folder, _ = published
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    checked = check_upload(files, partner="synth-ngo", schema=SCHEMA, datasources=["Case Management"])
    assert checked.method == "synthetic" and VP_FILE in checked.files


def test_the_report_has_a_victim_perpetrator_section_for_a_synthetic_release(published):
    folder, _ = published
    page = (folder / "report.html").read_text()
    assert 'id="victim-perpetrator"' in page and "epsilon" in page and "at most 2 perpetrators" in page


def test_a_second_release_is_refused_when_both_parts_together_exceed_the_budget(published):
    """3 of 7 left: each part of epsilon 4 (3 and 1) would fit, the release (4) does not."""
    _, pipeline = published
    pipeline.config.job.release.synthetic.reporting_length = 3  # new settings: a new release would be made
    try:
        report = pipeline.release()
    finally:
        pipeline.config.job.release.synthetic.reporting_length = 2
    assert report.status == "refused", report.reasons
    assert any("left: 3 of 7" in r or "only 3 of 7 is left" in r for r in report.reasons), report.reasons
    assert pipeline.store.spent("synth-ngo")[0] == 4.0


def test_one_victims_rows_together_cost_the_tables_epsilon_and_delta():
    """Group privacy: m rows of an (e, d) mechanism are (m e, m e^((m-1) e) d)-DP."""
    from privacy.vp_synth import row_level

    for m in (1, 2, 3):
        epsilon_row, delta_row = row_level(1.2, 1e-5, m)
        assert m * epsilon_row == pytest.approx(1.2)
        assert m * math.exp((m - 1) * epsilon_row) * delta_row == pytest.approx(1e-5)
    assert row_level(1.2, 1e-5, 1) == (1.2, 1e-5)


def test_at_most_m_rows_of_a_victim_are_read_the_first_its_case_records():
    from privacy.vp_synth import joined_rows

    view = pd.DataFrame({"_case": [0, 0, 0, 1, 2, 2], "perpetratorRole": ["a", "b", "c", "d", "e", "f"]})
    assert joined_rows(view, 2)["perpetratorRole"].tolist() == ["a", "b", "d", "e", "f"]
    assert "_case" not in joined_rows(view, 1).columns and len(joined_rows(view, 1)) == 3


def test_the_ledger_charges_the_sum_of_the_parts(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.sqlite'}") as store:
        run = store.start_run("ngo", "release")
        store.reserve_budget("ngo", 4.0, 1e-5, 7.0, run, parts={"victims": 3.0, "victim_perpetrator": 1.0})
        with pytest.raises(BudgetExceeded, match="only 3 of 7 is left"):
            store.reserve_budget("ngo", 3.5, 1e-5, 7.0, run, parts={"victims": 2.625, "victim_perpetrator": 0.875})
        with pytest.raises(ValueError, match="not the sum of its parts"):
            store.reserve_budget("ngo", 2.0, 1e-5, 7.0, run, parts={"victims": 2.0, "victim_perpetrator": 1.0})
        assert store.spent("ngo")[0] == 4.0


def test_a_perpetrator_identifier_or_note_is_never_read_for_synthesis():
    from dataclasses import replace

    from connector.schema import ViewColumn
    from privacy.vp_synth import vp_plan

    extra = {"perpetratorName": ViewColumn("perpetratorName", "string", "direct_identifier", {"copy": "per_Name"}),
             "perpetratorNotes": ViewColumn("perpetratorNotes", "string", "free_text", {"copy": "per_Notes"})}
    schema = replace(SCHEMA, vp_view={**SCHEMA.vp_view, **extra})
    plan = vp_plan(COLUMNS, schema)
    assert "perpetratorRole" in plan.perpetrator and not set(extra) & set(plan.columns)


# -- the gate -------------------------------------------------------------------------------------


def _synthetic_pair(rare: bool = False) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    victims = pd.DataFrame({"gender": ["Female"] * 12 + ["Male"] * 12, "Datasource": "Case Management"})
    vp = pd.DataFrame({"gender": ["Female"] * 12 + ["Male"] * 12, "perpetratorRole": ["RecruiterOrIntermediary"] * 24,
                       "perpetratorRelationship": ["Family"] * 12 + ["Friend"] * 12})
    if rare:
        vp.loc[0, "perpetratorRelationship"] = "IntimatePartner"  # one victim-perpetrator pair like no other
    record = {
        "method": "synthetic", "epsilon": 4.0, "delta": 2e-5, "resolution": 10, "reporting_length": 2, "quasi_identifiers": ["gender"],
        "records_out": 24, "budget": BUDGET, "epsilon_parts": {"victims": 3.0, "victim_perpetrator": 1.0},
        "victim_perpetrator": {"file": VP_FILE, "epsilon": 1.0, "delta": 1e-5, "resolution": 10, "reporting_length": 2, "records_out": 24,
                               "quasi_identifiers": [], "max_perpetrators_per_victim": 2, "epsilon_per_row": 0.5,
                               "delta_per_row": 1e-5 / (2 * math.exp(0.5))},
    }
    return victims, record, vp


def test_the_gate_admits_a_synthetic_perpetrator_table_whose_combinations_reach_the_resolution():
    victims, record, vp = _synthetic_pair()
    release = admit(victims, record, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})
    assert dict(release.tables)[VP_FILE].startswith(b"gender,perpetratorRole,perpetratorRelationship\n")


def test_the_gate_refuses_a_synthetic_perpetrator_table_with_a_rare_combination():
    victims, record, vp = _synthetic_pair(rare=True)
    with pytest.raises(GateRefused) as refused:
        admit(victims, record, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})
    assert any(r.startswith(f"{VP_FILE}: ") and "fewer than resolution=10" in r for r in refused.value.reasons), refused.value.reasons


def test_the_gate_refuses_a_perpetrator_table_whose_epsilon_the_release_does_not_count():
    victims, record, vp = _synthetic_pair()
    with pytest.raises(GateRefused, match="is not the sum of its parts"):  # epsilon says the victims' part only
        admit(victims, {**record, "epsilon": 3.0}, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})
    with pytest.raises(GateRefused, match="not recorded as a part of the release's epsilon"):
        admit(victims, {**record, "epsilon_parts": {"victims": 4.0}}, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})
    with pytest.raises(GateRefused, match="no entry with file"):
        admit(victims, {k: v for k, v in record.items() if k != "victim_perpetrator"}, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})


def test_the_gate_refuses_a_perpetrator_table_not_counted_per_victim():
    victims, record, vp = _synthetic_pair()
    table = record["victim_perpetrator"]

    def refused(**change) -> list[str]:
        with pytest.raises(GateRefused) as caught:
            admit(victims, {**record, "victim_perpetrator": {**table, **change}}, roles=SCHEMA.view_roles(), extra={VP_FILE: ExtraTable(vp, VP_ROLES)})
        return caught.value.reasons

    assert any("cost more than its epsilon 1" in r for r in refused(epsilon_per_row=1.0))  # each row given the whole epsilon
    assert any("cost more than its delta" in r for r in refused(delta_per_row=1e-5 / 2))  # e^((m-1) epsilon_row) forgotten
    assert any("does not say how it counts per victim" in r for r in refused(max_perpetrators_per_victim=None))
    assert any("synthesizer ran with epsilon 1" in r for r in refused(synthesizer={"parameters": {"epsilon": 1.0}}))


def test_preview_checks_the_perpetrator_table_too(tmp_path, monkeypatch, capsys):
    """`preview` says whether the release would pass the gate: with every table it would publish,
    not the victims alone (a rare victim-perpetrator pair is refused at release time)."""
    from connector import cli

    config = job(tmp_path)
    pipeline = Pipeline(load_config(config))
    try:
        store_cases(pipeline.store, "synth-ngo", {f"c{i}": fields for i, fields in enumerate(POOL[:30])})
    finally:
        pipeline.close()
    victims, record, vp = _synthetic_pair(rare=True)
    monkeypatch.setattr(Pipeline, "synthesized", lambda self, view, vp_view: (view, victims, record, vp))
    assert cli.main(["preview", str(config), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passes_gate"] is False
    assert any(r.startswith(f"{VP_FILE}: ") and "fewer than resolution=10" in r for r in verdict["reasons"]), verdict["reasons"]


# -- check ----------------------------------------------------------------------------------------


def test_check_refuses_a_synthetic_perpetrator_table_too_wide_to_finish(tmp_path):
    from connector.checks import release_problems

    wide = ["yearOfRegistration", "gender", "ageBroad", "majorityStatus", "citizenship", "CountryOfExploitation", "isForcedLabour",
            "isSexualExploit", "isOtherExploit", "isForcedMarriage", "isForcedMilitary", "isOrganRemoval", "Datasource"]
    problems = release_problems(load_config(job(tmp_path, columns=wide)), SCHEMA)
    assert len(problems) == 1 and "tables" in str(problems[0].where)
    assert any("victim-perpetrator table would synthesize 18 columns" in p.message and "at most 16" in p.message for p in problems), problems
    assert release_problems(load_config(job(tmp_path)), SCHEMA) == []
