"""ODK Central source against the ODK sandbox over real HTTP: pyodk agrees, full and incremental
pulls, mapping to the generator's truth, faults, expired sessions and bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from connector.config import SourceConfig
from connector.mapping import load_mapping
from connector.sandbox import generate as gen
from connector.sandbox import xlsform_render
from connector.sandbox.odk_central import OdkSandboxHandle, start_odk_sandbox
from connector.secrets import fold_secret_references
from connector.sources.base import SourceAuthError
from connector.sources.odk_central import SKIP_KEYS, OdkCentralSource
from connector.sources.xlsform import META_KEYS, flatten_answers


@pytest.fixture(scope="module")
def cases() -> list[gen.GeneratedCase]:
    return gen.generate_cases(120, seed=11, mess_rate=0.1)


@pytest.fixture
def sandbox(cases: list[gen.GeneratedCase]) -> Iterator[OdkSandboxHandle]:
    handle = start_odk_sandbox(cases)
    yield handle
    handle.stop()


def make_source(handle: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch, mapping: str = "xlsform_htcds", **options: Any) -> OdkCentralSource:
    monkeypatch.setenv("ODK_SANDBOX_PASSWORD", handle.password)
    raw = {**handle.config_options(password_env="ODK_SANDBOX_PASSWORD"), "page_size": 25, **options}
    cfg = SourceConfig(id="odk", type="odk_central", mapping=mapping, options=raw)
    cfg.parsed_options = OdkCentralSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = OdkCentralSource(cfg, None)
    source.client.backoff = 0.01
    return source


def pull(source: OdkCentralSource, cursor: str | None) -> tuple[dict[str, Any], str | None]:
    records: dict[str, Any] = {}
    for page in source.pages(cursor):
        records.update({r.record_id: r for r in page.records})
        cursor = page.cursor
    return records, cursor


def test_pyodk_reads_the_same_rows_as_the_source(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pyodk.client import Client  # a dev dependency: a missing one fails here, never skips


    config = tmp_path / "pyodk_config.toml"
    config.write_text(f'[central]\nbase_url = "{sandbox.url}"\nusername = "{sandbox.email}"\npassword = "{sandbox.password}"\ndefault_project_id = 1\n')
    with Client(config_path=str(config), cache_path=str(tmp_path / "pyodk_cache.toml")) as client:
        table = client.submissions.get_table(form_id=sandbox.form_id, expand="*")
        paged = client.submissions.get_table(form_id=sandbox.form_id, top=50, count=True)
    assert paged["@odata.count"] == len(table["value"]) == 120 and len(paged["value"]) == 50 and "@odata.nextLink" in paged
    source = make_source(sandbox, monkeypatch)
    records, _ = pull(source, None)
    assert set(records) == {row["__id"] for row in table["value"]}
    for row in table["value"]:
        fields = {k: v for k, v in records[row["__id"]].fields.items() if k not in META_KEYS}
        assert flatten_answers(row, skip=SKIP_KEYS) == fields


def test_full_pull_maps_every_case_to_the_generator_truth(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch, repeats="tables")
    records, _ = pull(source, None)
    mapping = load_mapping("xlsform_htcds")
    by_id = {xlsform_render.instance_id(c): c for c in cases}
    assert set(records) == set(by_id)
    for record_id, record in records.items():
        case = by_id[record_id]
        mapped, rejections = mapping.map_record("odk", record)
        expected = xlsform_render.expected_for_form(case)
        assert {t: mapped.fields.get(t) for t in mapping.targets()} == {t: expected.get(t) for t in mapping.targets()}, case.case_id
        assert {r.field for r in rejections} == gen.expected_rejections(case, events=True), case.case_id
    assert source.stats.requests > len(cases)  # tables mode: one request per repeat of each submission


def test_second_run_pulls_only_edits_new_deletions_and_rejections(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch)
    first, cursor = pull(source, None)
    assert len(first) == len(cases)
    unchanged, cursor = pull(source, cursor)
    assert unchanged == {}
    later = gen.evolve(cases, seed=12)
    sandbox.set_cases(later)
    rejected = next(c for c in later if c in cases)  # an untouched case, rejected by a reviewer
    sandbox.set_review_state(rejected.case_id, "rejected", at=max(c.updated_at for c in later) + timedelta(hours=1))
    before = source.stats.requests
    second, cursor = pull(source, cursor)
    changed = {xlsform_render.instance_id(c): c for c in later if not any(c is old for old in cases)}
    assert set(second) == set(changed) | {xlsform_render.instance_id(rejected)}
    assert {rid for rid, r in second.items() if r.deleted} == {xlsform_render.instance_id(c) for c in later if c.deleted} | {xlsform_render.instance_id(rejected)}
    edited = next(c for c in later if c.case_id in {o.case_id for o in cases} and not c.deleted and c is not rejected and any(c.case_id == o.case_id and c is not o for o in cases))
    mapped, _ = load_mapping("xlsform_htcds").map_record("odk", second[xlsform_render.instance_id(edited)])
    assert mapped.fields["cas_Status"] == xlsform_render.expected_for_form(edited)["cas_Status"]
    assert source.stats.requests - before <= 6  # three passes, a page or two each
    third, _ = pull(source, cursor)
    assert third == {}


def test_faults_are_retried_and_the_run_completes(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch)
    sandbox.faults.add(401, path="Submissions")  # the session is refused once: log in again
    sandbox.faults.add(429, retry_after=1, path="Submissions")
    sandbox.faults.add(500, path="Submissions")
    sandbox.faults.add(kind="truncate", path="Submissions")
    sandbox.faults.add(502, kind="html", path="Submissions")
    records, _ = pull(source, None)
    assert len(records) == 120
    assert sandbox.faults.pending() == 0 and sandbox.requests["faults"] == 5
    assert sandbox.requests["sessions"] == 2


def test_a_session_that_expires_mid_run_is_renewed(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch)
    seen: set[str] = set()
    for number, page in enumerate(source.pages(None)):
        seen.update(r.record_id for r in page.records)
        if number == 0:
            sandbox.expire_sessions()
    assert len(seen) == 120 and sandbox.requests["sessions"] == 2 and sandbox.requests["unauthorized"] == 1


def test_persistent_server_errors_stop_the_run_with_a_transient_error_naming_the_form(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    from connector.sources.base import SourceError

    sandbox.faults.add(502, kind="html", path="Submissions", times=10)
    source = make_source(sandbox, monkeypatch, max_retries=2)
    with pytest.raises(SourceError) as err:
        pull(source, None)
    assert err.value.transient and "htcds_xlsform" in str(err.value) and "502 Bad Gateway" in str(err.value)
    assert sandbox.password not in str(err.value)


def _with_question(handle: OdkSandboxHandle, row: dict[str, Any], *, rename_group: str | None = None) -> None:
    survey, choices, settings = copy.deepcopy((handle.app.survey, handle.app.choices, handle.app.settings))
    at = next(i for i, r in enumerate(survey) if r.get("name") == "__version__")
    survey.insert(at, row)
    if rename_group:
        for r in survey:
            if r.get("name") == "outgoing_referral":
                r["name"] = rename_group
    handle.app.set_form(survey, choices, {**settings, "version": "v2"})


def test_bad_input_becomes_named_rejections_and_the_run_goes_on(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    targets = {c.case_id: i for i, c in enumerate(cases[:5])}

    def damage(case: gen.GeneratedCase, answers: dict[str, Any]) -> dict[str, Any]:
        kind = targets.get(case.case_id)
        if kind == 0:  # an older form version: no Gender, no repeats, no version
            return {k: v for k, v in answers.items() if k not in ("prs_Gender", "perpetrators", "events", "support_plans", "__version__")}
        if kind == 1:
            return {**answers, "prs_Gender": "Alien"}  # a choice not in the list
        if kind == 2:
            return {**answers, "cas_IncomingReferralDetails": "x" * 100_000}
        if kind == 3:
            return {**answers, "prs_Number_Of_Children": "three"}  # text in an integer question
        if kind == 4:  # the group renamed in a later form version
            return {k.replace("outgoing_referral/", "referral_out/"): v for k, v in answers.items()}
        return {**answers, "prs_Number_Of_Children": "2"}

    handle = start_odk_sandbox(cases[:20], transform=damage)
    try:
        _with_question(handle, {"type": "integer", "name": "prs_Number_Of_Children", "label": "Number of Children"}, rename_group="referral_out")
        handle.set_cases(cases[:20])
        doc = yaml.safe_load(Path(load_mapping("xlsform_htcds").path).read_text())
        doc["fields"]["prs_NumberOfChildren"] = "prs_Number_Of_Children"
        mapping_path = tmp_path / "xlsform_children.yaml"
        mapping_path.write_text(yaml.safe_dump(doc))
        source = make_source(handle, monkeypatch, mapping=str(mapping_path))
        records, _ = pull(source, None)
        mapping = load_mapping(mapping_path)
        by_case = {c.case_id: records[xlsform_render.instance_id(c)] for c in cases[:5]}
        old, _ = mapping.map_record("odk", by_case[cases[0].case_id])
        assert old.fields["prs_Gender"] is None and old.fields["ext_PerpetratorRoles"] is None
        _, rejections = mapping.map_record("odk", by_case[cases[1].case_id])
        assert [(r.field, r.value) for r in rejections if r.field == "prs_Gender"] == [("prs_Gender", "[redacted, 5 chars]")]  # not a misspelt code
        long, _ = mapping.map_record("odk", by_case[cases[2].case_id])
        assert len(long.fields["cas_IncomingReferralDetails"]) == 100_000
        _, rejections = mapping.map_record("odk", by_case[cases[3].case_id])
        assert any(r.field == "prs_NumberOfChildren" and r.record_id == xlsform_render.instance_id(cases[3]) for r in rejections)
        renamed, _ = mapping.map_record("odk", by_case[cases[4].case_id])
        assert renamed.fields["cas_OutgoingReferralDate"] == xlsform_render.expected_for_form(cases[4])["cas_OutgoingReferralDate"]
        fine, _ = mapping.map_record("odk", records[xlsform_render.instance_id(cases[6])])
        assert fine.fields["prs_NumberOfChildren"] == 2
        assert not [p for p in source.check() if p.severity == "error"]  # the renamed group changes no short name
    finally:
        handle.stop()


def test_check_reports_a_question_removed_from_the_published_form(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [(p.severity, p.message) for p in make_source(sandbox, monkeypatch).check()] == [("info", "ODK Central v2026.2.2")]
    survey, choices, settings = copy.deepcopy((sandbox.app.survey, sandbox.app.choices, sandbox.app.settings))
    sandbox.app.set_form([r for r in survey if r.get("name") != "prs_Gender"], choices, {**settings, "version": "v3"})
    problems = [p for p in make_source(sandbox, monkeypatch).check() if p.severity != "info"]
    assert len(problems) == 1 and problems[0].severity == "warning"
    assert "prs_Gender" in problems[0].message and "version v3" in problems[0].where and "rename" in (problems[0].hint or "")


def test_check_reports_a_question_removed_from_the_perpetrators_repeat(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    survey, choices, settings = copy.deepcopy((sandbox.app.survey, sandbox.app.choices, sandbox.app.settings))
    sandbox.app.set_form([r for r in survey if r.get("name") != "per_Age"], choices, {**settings, "version": "v4"})
    problems = [p for p in make_source(sandbox, monkeypatch).check() if p.severity != "info"]
    assert [p.severity for p in problems] == ["warning"]
    assert "repeat perpetrators has no question per_Age" in problems[0].message and "per_AgeAtRegistration" in problems[0].message


def test_the_published_htcds_form_without_repeats_also_maps(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    handle = start_odk_sandbox(cases[:10], variant="htcds")
    try:
        records, cursor = pull(make_source(handle, monkeypatch), None)
        mapping = load_mapping("xlsform_htcds")
        for case in cases[:10]:
            mapped, _ = mapping.map_record("odk", records[xlsform_render.instance_id(case)])
            expected = xlsform_render.expected_for_form(case, "htcds")  # the partner variant's fields unknown
            assert {t: mapped.fields.get(t) for t in mapping.targets()} == {t: expected.get(t) for t in mapping.targets()}, case.case_id
            assert mapped.fields["prs_FirstName"] == expected["prs_FirstName"] is not None
            assert mapped.fields["ext_Perpetrators"] is mapped.fields["ext_TraffickingEvents"] is mapped.fields["ext_TraffickMonths"] is None
        problems = [p for p in make_source(handle, monkeypatch).check() if p.severity != "info"]
        assert problems and all(p.severity == "warning" for p in problems)  # the partner variant's questions are absent
        assert any("cas_OutgoingReferralDate" in p.message for p in problems)
        assert json.loads(cursor)["submitted"]["at"]
    finally:
        handle.stop()


def test_a_run_resumed_from_any_committed_page_misses_nothing(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    pages = list(make_source(sandbox, monkeypatch).pages(None))
    for crash_after in (0, len(pages) // 2):
        delivered = {r.record_id for p in pages[: crash_after + 1] for r in p.records}
        resumed, _ = pull(make_source(sandbox, monkeypatch), pages[crash_after].cursor)
        assert delivered | set(resumed) == {xlsform_render.instance_id(c) for c in cases}


def _central(handle: OdkSandboxHandle) -> Any:
    """A requests session logged in to the sandbox as its web user (a project manager's actions)."""
    import requests

    session = requests.Session()
    token = session.post(f"{handle.url}/v1/sessions", json={"email": handle.email, "password": handle.password}, timeout=10).json()["token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def test_a_restored_submission_comes_back_to_the_store(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch)
    first, cursor = pull(source, None)
    central = _central(sandbox)
    iid = xlsform_render.instance_id(cases[5])
    base = f"{sandbox.url}/v1/projects/{sandbox.project_id}/forms/{sandbox.form_id}/submissions/{iid}"
    before = sandbox.app.state.submissions[iid].updated_at
    assert central.delete(base, timeout=10).status_code == 200
    deleted, cursor = pull(source, cursor)
    assert deleted[iid].deleted
    assert central.post(f"{base}/restore", timeout=10).json() == {"success": True}
    assert sandbox.app.state.submissions[iid].updated_at == before and sandbox.app.state.submissions[iid].deleted_at is None  # as Central: updatedAt untouched
    assert central.post(f"{base}/restore", timeout=10).status_code == 404  # only a deleted one can be restored
    restored, cursor = pull(source, cursor)
    assert set(restored) == {iid} and not restored[iid].deleted
    assert restored[iid].fields == first[iid].fields
    quiet, _ = pull(source, cursor)
    assert quiet == {}


def test_the_next_link_carries_a_skiptoken_that_central_refuses_with_orderby(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase]) -> None:
    central = _central(sandbox)
    url = f"{sandbox.url}/v1/projects/{sandbox.project_id}/forms/{sandbox.form_id}.svc/Submissions"
    ordered = central.get(url, params={"$top": 50, "$orderby": "__system/submissionDate asc"}, timeout=10).json()
    link = ordered["@odata.nextLink"]
    assert "%24skiptoken=01" in link and "%24skip=" not in link and "%24orderby" in link
    refused = central.get(link, timeout=10)
    assert refused.status_code == 501 and refused.json()["code"] == 501.1
    # Without $orderby the next links page newest first, and a submission added meanwhile shifts nothing.
    page = central.get(url, params={"$top": 50, "$select": "__id"}, timeout=10).json()
    seen = [r["__id"] for r in page["value"]]
    newest = max(c.created_at for c in cases) + timedelta(days=1)
    sandbox.set_cases([*cases, dataclasses.replace(cases[0], case_id="C900001", created_at=newest, updated_at=newest)])
    while "@odata.nextLink" in page:
        page = central.get(page["@odata.nextLink"], timeout=10).json()
        seen += [r["__id"] for r in page["value"]]
    assert len(seen) == len(set(seen)) == 120


def test_an_encrypted_submission_becomes_a_named_rejection_not_an_empty_case(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.set_encrypted(cases[3].case_id, "notDecrypted")
    sandbox.set_encrypted(cases[4].case_id, "missingEncryptedFormData")
    records, _ = pull(make_source(sandbox, monkeypatch), None)
    mapping = load_mapping("xlsform_htcds")
    for case, status in ((cases[3], "notDecrypted"), (cases[4], "missingEncryptedFormData")):
        raw = records[xlsform_render.instance_id(case)]
        assert raw.fields == {} and raw.unreadable is not None
        mapped, rejections = mapping.map_record("odk", raw)
        assert mapped.deleted and mapped.fields == {}
        assert [(r.field, r.record_id) for r in rejections] == [("__system/status", raw.record_id)]
        assert "encrypted" in rejections[0].reason and status in rejections[0].reason
    assert records[xlsform_render.instance_id(cases[5])].unreadable is None


def test_an_app_user_token_fails_check_before_the_first_sync(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODK_APP_TOKEN", sandbox.app_user_token)
    raw = {"url": sandbox.url, "project_id": sandbox.project_id, "form_id": sandbox.form_id, "token_env": "ODK_APP_TOKEN"}
    cfg = SourceConfig(id="odk", type="odk_central", mapping="xlsform_htcds", options=raw)
    cfg.parsed_options = OdkCentralSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = OdkCentralSource(cfg, None)
    errors = [p for p in source.check() if p.severity == "error"]
    assert len(errors) == 1 and "not its submissions" in errors[0].message and "403" in errors[0].message
    assert "Project Viewer" in (errors[0].hint or "") and sandbox.app_user_token not in str(errors[0])
    with pytest.raises(SourceAuthError):
        list(source.pages(None))


def test_fields_offer_the_submission_time_and_the_repeats_the_mapping_reads(sandbox: OdkSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    offered = {f.name for f in make_source(sandbox, monkeypatch).fields()}
    assert {"_submission_time", "perpetrators", "events"} <= offered
    missing = load_mapping("xlsform_htcds").missing_fields(offered)
    assert not [m for m in missing if "_submission_time" in m or "perpetrators" in m or "events" in m]


@pytest.mark.parametrize("version", ["v2024.2.1", "v2023.5.0"])
def test_an_older_central_is_degraded_to_not_failed(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    handle = start_odk_sandbox(cases, server_version=version)
    try:
        source = make_source(handle, monkeypatch)
        problems = source.check()
        assert ("info", f"ODK Central {version}") in [(p.severity, p.message) for p in problems]
        assert any(p.severity == "warning" and "deletedAt" in p.message for p in problems)
        assert any(p.severity == "warning" and "$orderby" in p.message for p in problems) == (version < "v2024.1")
        first, cursor = pull(source, None)
        assert set(first) == {xlsform_render.instance_id(c) for c in cases}
        later = gen.evolve(cases, seed=12, edit_share=0.2, delete_share=0.0, new=7)
        handle.set_cases(later)
        second, cursor = pull(make_source(handle, monkeypatch), cursor)
        assert set(second) == {xlsform_render.instance_id(c) for c in later if not any(c is o for o in cases)}
        assert source.stats.extra.get("unordered", 0) == (1 if version < "v2024.1" else 0)
        quiet, _ = pull(make_source(handle, monkeypatch), cursor)
        assert quiet == {}
    finally:
        handle.stop()


def test_a_default_order_page_reads_one_page_of_rows_and_agrees_with_a_full_read(sandbox: OdkSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    """A page in the default order walks the sorted submissions and stops after the page (plus one
    row, to know whether a next link is due), as Central's indexed query does; `$count=true` makes the
    sandbox read every match, and both give the same rows and next links."""
    central = _central(sandbox)
    url = f"{sandbox.url}/v1/projects/{sandbox.project_id}/forms/{sandbox.form_id}.svc/Submissions"
    central.delete(f"{sandbox.url}/v1/projects/{sandbox.project_id}/forms/{sandbox.form_id}/submissions/{xlsform_render.instance_id(cases[5])}", timeout=10)
    looked_at: list[str] = []
    real = sandbox.app._system_value
    monkeypatch.setattr(sandbox.app, "_system_value", lambda sub, name: looked_at.append(sub.instance_id) or real(sub, name))
    for params in ({"$top": 25}, {"$top": 25, "$filter": "__system/submissionDate gt 2000-01-01"}, {"$top": 7, "$skip": 3, "$filter": "__system/deletedAt eq null or __system/deletedAt ne null"}):
        paged, counted = [], []
        for pages, extra in ((paged, {}), (counted, {"$count": "true"})):
            body = central.get(url, params={**params, **extra, "$select": "__id"}, timeout=10).json()
            pages.append(body)
            while "@odata.nextLink" in body:
                body = central.get(body["@odata.nextLink"], timeout=10).json()
                pages.append(body)
        assert [[r["__id"] for r in p["value"]] for p in paged] == [[r["__id"] for r in p["value"]] for p in counted]
        assert [p.get("@odata.nextLink", "").replace("%24count=true&", "") for p in paged] == [p.get("@odata.nextLink", "").replace("%24count=true&", "") for p in counted]
    looked_at.clear()
    central.get(url, params={"$top": 10, "$filter": "__system/submissionDate gt 2000-01-01"}, timeout=10)
    assert len(looked_at) == 11  # the page and one more
    looked_at.clear()
    central.get(url, params={"$top": 10, "$filter": "__system/submissionDate gt 2000-01-01", "$count": "true"}, timeout=10)
    assert len(looked_at) == len(cases) - 1  # a full read: every submission but the deleted one
