"""One job with an ODK Central and a Kobo source, through the real pipeline and store: the store equals
the generator's truth after mapping (perpetrators, trafficking events and months trafficked from the
partner form's repeats included), and a second run stores only what changed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from connector.config import load_config
from connector.mapping import load_mapping
from connector.pipeline import Pipeline
from connector.sandbox import generate as gen
from connector.sandbox import xlsform_render
from connector.sandbox.kobo import start_kobo_sandbox, submission_id
from connector.sandbox.odk_central import start_odk_sandbox


def _job(tmp_path: Path, odk: Any, kobo: Any) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        f"""\
partner: {{id: ngo-test}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: odk
    type: odk_central
    mapping: xlsform_htcds
    options: {{url: "{odk.url}", project_id: 1, form_id: {odk.form_id}, email: "{odk.email}", password_env: JOB_ODK_PASSWORD, page_size: 5}}
  - id: kobo
    type: kobo
    mapping: xlsform_htcds
    options: {{url: "{kobo.url}", asset_uid: {kobo.asset_uid}, token_env: JOB_KOBO_TOKEN, page_size: 5, reconcile_every_runs: 1}}
""",
        encoding="utf-8",
    )
    return path


def _store_rows(pipeline: Pipeline, source: str) -> dict[str, dict[str, Any]]:
    frame = pipeline.store.snapshot([source])
    return {row["record_id"]: row for row in frame.to_dict("records")}


def _assert_store_equals_truth(pipeline: Pipeline, targets: list[str], odk_now: list, kobo_now: list) -> None:
    """Every live case stored, every mapped field equal to the truth: the perpetrators (one entry per
    repeat entry, with gender, age, citizenship, relationship, money paid), the events and the
    months trafficked included, from both servers."""
    assert {"ext_Perpetrators", "ext_TraffickingEvents", "ext_TraffickMonths"} <= set(targets)
    for source, cases, key in (("odk", odk_now, xlsform_render.instance_id), ("kobo", kobo_now, lambda c: str(submission_id(c)))):
        stored = _store_rows(pipeline, source)
        live = [c for c in cases if not c.deleted]
        assert set(stored) == {key(c) for c in live}, source
        for case in live:
            expected = xlsform_render.expected_for_form(case)
            row = stored[key(case)]
            assert {t: row.get(t) for t in targets} == {t: expected.get(t) for t in targets}, (source, case.case_id)
        # The comparison has something to compare: several perpetrators for some cases, each item known for some.
        entries = [e for row in stored.values() for e in row["ext_Perpetrators"] or []]
        assert len(entries) == sum(len(c.perpetrators) for c in live) and any(len(c.perpetrators) >= 2 for c in live), source
        for item in gen.PERPETRATOR_ITEMS:
            assert any(e[item] is not None for e in entries), (source, item)
        assert any(e["per_MoneyPaid"] is False for e in entries) and any(e["per_AgeAtRegistration"] is None for e in entries), source
        events = [e for row in stored.values() for e in row["ext_TraffickingEvents"] or []]
        assert len(events) == sum(len(c.events) for c in live), source
        assert any(row["ext_TraffickMonths"] is not None for row in stored.values()), source


@pytest.mark.parametrize("n, odk_seed, kobo_seed, evolve_seeds", [(50, 31, 32, (33, 34)), (30, 2, 3, (2, 3))])
def test_one_job_pulls_maps_and_stores_both_servers_and_then_only_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, odk_seed: int, kobo_seed: int, evolve_seeds: tuple[int, int]
) -> None:
    # The second set (many edits across small pages) once made both sources skip edited
    # submissions: a page of rows already delivered moved the mark but kept the paging offset.
    odk_cases = gen.generate_cases(n, seed=odk_seed)
    kobo_cases = gen.generate_cases(n, seed=kobo_seed)
    odk, kobo = start_odk_sandbox(odk_cases), start_kobo_sandbox(kobo_cases)
    try:
        monkeypatch.setenv("JOB_ODK_PASSWORD", odk.password)
        monkeypatch.setenv("JOB_KOBO_TOKEN", kobo.token)
        config = load_config(_job(tmp_path, odk, kobo))
        targets = load_mapping("xlsform_htcds").targets()

        def check_store(pipeline: Pipeline, odk_now: list, kobo_now: list) -> None:
            _assert_store_equals_truth(pipeline, targets, odk_now, kobo_now)

        pipeline = Pipeline(config)
        first = pipeline.sync()
        assert {s.source: s.status for s in first.sources} == {"odk": "ok", "kobo": "ok"}
        check_store(pipeline, odk_cases, kobo_cases)

        odk_later = gen.evolve(odk_cases, seed=evolve_seeds[0], edit_share=0.3, new=12)
        kobo_later = gen.evolve(kobo_cases, seed=evolve_seeds[1], edit_share=0.3, new=12)
        odk.set_cases(odk_later)
        kobo.set_cases(kobo_later)
        second = Pipeline(load_config(tmp_path / "connector.yaml")).sync()
        fetched = {s.source: s.fetched for s in second.sources}
        assert fetched["odk"] == sum(1 for c in odk_later if not any(c is o for o in odk_cases))
        assert fetched["kobo"] == sum(1 for c in kobo_later if not any(c is o for o in kobo_cases))
        check_store(Pipeline(load_config(tmp_path / "connector.yaml")), odk_later, kobo_later)
    finally:
        odk.stop()
        kobo.stop()


KOBO_N = int(os.environ.get("ODK_KOBO_JOB_KOBO_N", "1200"))  # above kpi's 1000-per-request cap


def test_store_equals_the_truth_through_edits_deletes_restores_and_more_kobo_rows_than_kpi_sends_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odk_cases = gen.generate_cases(60, seed=41)
    kobo_cases = gen.generate_cases(KOBO_N, seed=42)
    odk, kobo = start_odk_sandbox(odk_cases), start_kobo_sandbox(kobo_cases)
    try:
        monkeypatch.setenv("JOB_ODK_PASSWORD", odk.password)
        monkeypatch.setenv("JOB_KOBO_TOKEN", kobo.token)
        path = _job(tmp_path, odk, kobo)
        # Kobo asks for more than kpi sends: the run must still read every submission.
        path.write_text(path.read_text().replace("page_size: 5, reconcile_every_runs: 1", "page_size: 5000, reconcile_every_runs: 1"))
        targets = load_mapping("xlsform_htcds").targets()

        def check_store(odk_now: list, kobo_now: list) -> None:
            pipeline = Pipeline(load_config(path))
            try:
                _assert_store_equals_truth(pipeline, targets, odk_now, kobo_now)
            finally:
                pipeline.close()

        def sync() -> dict[str, Any]:
            pipeline = Pipeline(load_config(path))
            try:
                report = pipeline.sync()
            finally:
                pipeline.close()
            assert {s.source: s.status for s in report.sources} == {"odk": "ok", "kobo": "ok"}
            return {s.source: s for s in report.sources}

        first = sync()
        assert first["kobo"].fetched == KOBO_N
        check_store(odk_cases, kobo_cases)

        odk_later = gen.evolve(odk_cases, seed=43, edit_share=0.3, delete_share=0.1, new=5)
        kobo_later = gen.evolve(kobo_cases, seed=44, edit_share=0.05, delete_share=0.02, new=30)
        odk.set_cases(odk_later)
        kobo.set_cases(kobo_later)
        second = sync()
        assert second["kobo"].deleted == sum(1 for c in kobo_later if c.deleted) and second["odk"].deleted >= sum(1 for c in odk_later if c.deleted)
        check_store(odk_later, kobo_later)

        # A project manager restores two deleted ODK submissions: Central clears deletedAt only.
        restored = [c for c in odk_later if c.deleted][:2]
        central = requests.Session()
        token = central.post(f"{odk.url}/v1/sessions", json={"email": odk.email, "password": odk.password}, timeout=10).json()["token"]
        for case in restored:
            url = f"{odk.url}/v1/projects/{odk.project_id}/forms/{odk.form_id}/submissions/{xlsform_render.instance_id(case)}/restore"
            assert central.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
        odk_now = [dataclasses.replace(c, deleted=False) if any(c is r for r in restored) else c for c in odk_later]
        third = sync()
        assert third["odk"].fetched == len(restored) and third["kobo"].fetched == 0
        check_store(odk_now, kobo_later)
    finally:
        odk.stop()
        kobo.stop()
