"""Kobo source against the Kobo sandbox over real HTTP: full and incremental pulls, deletions found by
id reconciliation, mapping to the generator's truth, faults and bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from connector.config import SourceConfig
from connector.mapping import load_mapping
from connector.sandbox import generate as gen
from connector.sandbox import xlsform_render
from connector.sandbox.kobo import KoboSandboxHandle, start_kobo_sandbox, submission_id
from connector.secrets import fold_secret_references
from connector.sources.base import SourceAuthError
from connector.sources.kobo import KoboSource, decode_ids


@pytest.fixture(scope="module")
def cases() -> list[gen.GeneratedCase]:
    return gen.generate_cases(120, seed=21, mess_rate=0.1)


@pytest.fixture
def sandbox(cases: list[gen.GeneratedCase]) -> Iterator[KoboSandboxHandle]:
    handle = start_kobo_sandbox(cases)
    yield handle
    handle.stop()


def make_source(handle: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch, **options: Any) -> KoboSource:
    monkeypatch.setenv("KOBO_SANDBOX_TOKEN", handle.token)
    raw = {**handle.config_options(token_env="KOBO_SANDBOX_TOKEN"), "page_size": 25, **options}
    cfg = SourceConfig(id="kobo", type="kobo", mapping="xlsform_htcds", options=raw)
    cfg.parsed_options = KoboSource.Options.model_validate(fold_secret_references(raw, Path(".")))
    source = KoboSource(cfg, None)
    source.client.backoff = 0.01
    return source


def pull(source: KoboSource, cursor: str | None) -> tuple[dict[str, Any], str | None]:
    records: dict[str, Any] = {}
    for page in source.pages(cursor):
        records.update({r.record_id: r for r in page.records})
        cursor = page.cursor
    return records, cursor


def test_sandbox_speaks_kpi_shapes(sandbox: KoboSandboxHandle) -> None:
    headers = {"Authorization": f"Token {sandbox.token}"}
    assets = requests.get(f"{sandbox.url}/api/v2/assets/", headers=headers, timeout=10).json()
    assert assets["count"] == 1 and assets["results"][0]["uid"] == sandbox.asset_uid
    page = requests.get(f"{sandbox.url}/api/v2/assets/{sandbox.asset_uid}/data/", params={"format": "json", "limit": 30, "start": 30}, headers=headers, timeout=10).json()
    assert page["count"] == 120 and len(page["results"]) == 30 and "start=60" in page["next"] and "start=0" in page["previous"]
    row = page["results"][0]
    assert {"_id", "_uuid", "_submission_time", "_validation_status", "meta/instanceID"} <= set(row)
    assert "T" in row["_submission_time"] and not row["_submission_time"].endswith("Z")
    assert requests.get(f"{sandbox.url}/api/v2/assets/", timeout=10).status_code == 401


def test_full_pull_maps_every_case_to_the_generator_truth(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    records, cursor = pull(make_source(sandbox, monkeypatch), None)
    mapping = load_mapping("xlsform_htcds")
    by_id = {str(submission_id(c)): c for c in cases}
    assert set(records) == set(by_id)
    for record_id, record in records.items():
        case = by_id[record_id]
        mapped, rejections = mapping.map_record("kobo", record)
        expected = xlsform_render.expected_for_form(case)
        assert {t: mapped.fields.get(t) for t in mapping.targets()} == {t: expected.get(t) for t in mapping.targets()}, case.case_id
        assert {r.field for r in rejections} == gen.expected_rejections(case), case.case_id
    assert decode_ids(json.loads(cursor)["known"]) == {int(i) for i in by_id}


def test_second_run_pulls_edits_new_not_approved_and_reconciled_deletions(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sandbox, monkeypatch, reconcile_every_runs=2)
    first, cursor = pull(source, None)
    quiet, cursor = pull(source, cursor)  # run 1 of 2: no reconciliation yet
    assert quiet == {}
    later = gen.evolve(cases, seed=22)
    sandbox.set_cases(later)
    rejected = next(c for c in later if c in cases)
    sandbox.set_validation_status(rejected.case_id, "validation_status_not_approved", at=max(c.updated_at for c in later) + timedelta(hours=1))
    before = source.stats.requests
    second, cursor = pull(source, cursor)  # run 2 of 2: reconciles
    gone = {str(submission_id(c)) for c in later if c.deleted}
    changed = {str(submission_id(c)) for c in later if not any(c is old for old in cases)}
    assert set(second) == changed | {str(submission_id(rejected))}
    assert {rid for rid, r in second.items() if r.deleted} == gone | {str(submission_id(rejected))}
    reconcile_requests = sandbox.requests["data"]
    assert source.stats.requests - before <= 7 and reconcile_requests > 0
    third, _ = pull(source, cursor)
    assert third == {}


def test_faults_are_retried_and_the_run_completes(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.faults.add(429, retry_after=1, path="/data")
    sandbox.faults.add(500, path="/data")
    sandbox.faults.add(kind="truncate", path="/data")
    sandbox.faults.add(502, kind="html", path="/data")
    records, _ = pull(make_source(sandbox, monkeypatch), None)
    assert len(records) == 120 and sandbox.faults.pending() == 0 and sandbox.requests["faults"] == 4


def test_a_refused_token_stops_the_run_with_an_auth_error(sandbox: KoboSandboxHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.faults.add(401, path="/data")
    with pytest.raises(SourceAuthError) as err:
        pull(make_source(sandbox, monkeypatch), None)
    assert "Invalid token." in str(err.value) and sandbox.token not in str(err.value)


def test_bad_input_becomes_named_rejections_and_the_run_goes_on(cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    targets = {c.case_id: i for i, c in enumerate(cases[:4])}

    def damage(case: gen.GeneratedCase, answers: dict[str, Any]) -> dict[str, Any]:
        kind = targets.get(case.case_id)
        if kind == 0:  # submitted with an older form version: fewer questions
            return {k: v for k, v in answers.items() if k not in ("vic_Methods_of_Control", "events")}
        if kind == 1:
            return {**answers, "vic_Methods_of_Control": "DebtBondage Curse"}  # a choice not in the list
        if kind == 2:
            return {**answers, "prs_First_Name": "é" * 100_000}
        if kind == 3:
            return {**answers, "cas_IncomingReferralDate": "last Tuesday"}
        return answers

    handle = start_kobo_sandbox(cases[:10], transform=damage)
    try:
        records, _ = pull(make_source(handle, monkeypatch), None)
        mapping = load_mapping("xlsform_htcds")
        mapped = {c.case_id: mapping.map_record("kobo", records[str(submission_id(c))]) for c in cases[:10]}
        assert len(records) == 10
        old, _ = mapped[cases[0].case_id]
        assert old.fields["vic_MethodsOfControl"] is None and old.fields["ext_CountryOfExploitation"] is None
        case1, rejections = mapped[cases[1].case_id]
        assert [r.value for r in rejections if r.field == "vic_MethodsOfControl"] == ["[redacted, 5 chars]"]  # not a misspelt code: shown only by its length
        long, _ = mapped[cases[2].case_id]
        assert len(long.fields["prs_FirstName"]) == 100_000
        _, rejections = mapped[cases[3].case_id]
        assert any(r.field == "cas_IncomingReferralDate" for r in rejections)
    finally:
        handle.stop()


def test_a_run_resumed_from_any_committed_page_misses_nothing(sandbox: KoboSandboxHandle, cases: list[gen.GeneratedCase], monkeypatch: pytest.MonkeyPatch) -> None:
    pages = list(make_source(sandbox, monkeypatch).pages(None))
    for crash_after in (0, len(pages) // 2):
        delivered = {r.record_id for p in pages[: crash_after + 1] for r in p.records}
        resumed, cursor = pull(make_source(sandbox, monkeypatch), pages[crash_after].cursor)
        assert delivered | set(resumed) == {str(submission_id(c)) for c in cases}
        assert not any(r.deleted for r in resumed.values())  # the reconciliation finds nothing gone
