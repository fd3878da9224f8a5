"""One job with an ODK Central and a Kobo source, through the real pipeline and store: the store equals
the generator's truth after mapping, and a second run stores only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
            for source, cases, key in (("odk", odk_now, xlsform_render.instance_id), ("kobo", kobo_now, lambda c: str(submission_id(c)))):
                stored = _store_rows(pipeline, source)
                live = [c for c in cases if not c.deleted]
                assert set(stored) == {key(c) for c in live}, source
                for case in live:
                    expected = xlsform_render.expected_for_form(case)
                    row = stored[key(case)]
                    assert {t: row.get(t) for t in targets} == {t: expected.get(t) for t in targets}, (source, case.case_id)

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
