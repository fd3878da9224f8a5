"""The victim-perpetrator table, counted per victim and attacked by joining the two tables.

A victim with three perpetrators is three rows, so counting rows would let a victim with a rare
set of perpetrators through. The tests count victims with a counter written here (from the
in-process link between rows and victims, never published), and play the attacker who joins the
victim table with the victim-perpetrator table on the columns they share.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest

from connector.config import load_config
from connector.pipeline import Pipeline
from connector.sandbox.generate import expected_fields, generate_cases
from privacy.gate import ExtraTable, GateRefused, admit
from privacy.vp_release import VP_FILE
from tests.property.test_release_series import rows_of
from tests.store_job import store_cases, write_job

POOL = [expected_fields(case) for case in generate_cases(900, seed=4, mess_rate=0.02)]
K = 5


def job(tmp_path: Path) -> Path:
    return write_job(tmp_path, "vp-ngo", f"""\
release:
  k: {K}
  part_min_records: 40
  tables: [victims, victim_perpetrator]
  importance: [yearOfRegistration, perpetrators]
""")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vp")
    pipeline = Pipeline(load_config(job(tmp_path)))
    try:
        store_cases(pipeline.store, "vp-ngo", {f"c{i}": fields for i, fields in enumerate(POOL)})
        keys, view = pipeline._keyed_view()
        nxt = pipeline.next_k_release(keys, view.copy())
        report = pipeline.release()
        assert report.status == "published", report.reasons
        folder = Path(report.location)
        yield folder, nxt, pipeline
    finally:
        pipeline.close()


def test_a_release_carries_both_tables_each_in_the_datapackage_and_the_manifest(published):
    folder, _, _ = published
    names = {p.name for p in folder.iterdir()}
    assert VP_FILE in names and "data.csv" in names
    package = json.loads((folder / "datapackage.json").read_text())
    assert [r["path"] for r in package["resources"]] == ["data.csv", VP_FILE]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert VP_FILE in manifest["files"]
    privacy = json.loads((folder / "privacy.json").read_text())
    header, rows = rows_of((folder / VP_FILE).read_bytes())
    assert privacy["victim_perpetrator"]["records_out"] == len(rows) > 0
    assert "citizenshipRegion" in header and "perpetratorRole" in header and "_victim" not in header and "_perpetrators" not in header


def test_every_victim_perpetrator_row_comes_from_at_least_k_victims(published):
    _, nxt, _ = published
    table, owners = nxt.vp_new
    by_row: dict[tuple, set] = defaultdict(set)
    for row, owner in zip(table.fillna("").astype(str).itertuples(index=False, name=None), owners):
        by_row[row].add(owner)
    assert by_row and min(len(victims) for victims in by_row.values()) >= K


def test_joining_the_two_tables_singles_out_no_victim(published):
    """The attacker joins each victim row with the perpetrator rows that share its columns; every
    published combination (victim row + its set of perpetrator rows) is shared by >= k victims."""
    folder, nxt, _ = published
    victims = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    vp = pd.read_csv(folder / VP_FILE, dtype=str, keep_default_na=False)
    shared = [c for c in vp.columns if c in victims.columns]
    vp_by_shared = Counter(map(tuple, vp[shared].to_numpy()))
    for key, n in vp_by_shared.items():  # no victim-side combination of the perpetrator table is rarer than k rows
        assert n >= K, key
    # per victim: a victim's row with its perpetrator set (the part's in-process link) is shared by >= k victims
    table, owners = nxt.vp_new
    per_victim: dict[int, list] = defaultdict(list)
    for row, owner in zip(table.fillna("").astype(str).itertuples(index=False, name=None), owners):
        per_victim[owner].append(row)
    profiles = Counter(tuple(sorted(rows)) for rows in per_victim.values())
    assert min(profiles.values()) >= K


def test_the_gate_refuses_a_perpetrator_row_of_fewer_than_k_victims_even_with_enough_rows():
    """Three rows of ONE victim with three alike perpetrators are three rows but one person."""
    victims = pd.DataFrame({"gender": ["Female"] * 6, "Datasource": "Case Management"})
    vp = pd.DataFrame({"gender": ["Female"] * 6, "perpetratorRole": ["Exploiter"] * 6})
    roles = {"gender": "quasi_identifier", "Datasource": "process", "perpetratorRole": "sensitive"}
    record = {"method": "k_anonymity", "k": 3, "records_out": 6}
    two_victims = (vp, (1, 1, 1, 2, 2, 2))
    with pytest.raises(GateRefused) as refused:
        admit(victims, record, roles=roles, extra={VP_FILE: ExtraTable(vp, roles, {}, None, two_victims)})
    assert any("fewer than k=3 victims" in r for r in refused.value.reasons)
    six_victims = (vp, (1, 2, 3, 4, 5, 6))
    release = admit(victims, record, roles=roles, extra={VP_FILE: ExtraTable(vp, roles, {}, None, six_victims)})
    assert dict(release.tables)[VP_FILE].startswith(b"gender,perpetratorRole\n")


def test_the_receiver_accepts_both_tables_and_merges_the_perpetrator_tables(published, tmp_path):
    from fastapi.testclient import TestClient

    from connector.central.app import CentralSettings, create_app
    from connector.central.auth import add_admin, add_partner

    folder, _, _ = published
    app = create_app(CentralSettings(database_url=f"sqlite:///{tmp_path / 'c.sqlite'}", data_dir=tmp_path / "central"))
    token, admin = add_partner(app.state.engine, "vp-ngo", "VP NGO"), add_admin(app.state.engine)
    client = TestClient(app)
    try:
        files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.iterdir())]
        manifest = json.loads((folder / "manifest.json").read_text())
        response = client.post("/releases", files=files, headers={"Authorization": f"Bearer {token}", "Idempotency-Key": manifest["release_id"]})
        assert response.status_code == 201, response.text
        merged = client.get("/harmonized_victim_perpetrator.csv", headers={"Authorization": f"Bearer {admin}"})
        assert merged.status_code == 200, merged.text
        header, rows = rows_of(merged.content)
        assert header[0] == "partner" and len(rows) == len(rows_of((folder / VP_FILE).read_bytes())[1])
        assert min(Counter(rows).values()) >= K
    finally:
        client.close()
        app.state.engine.dispose()
