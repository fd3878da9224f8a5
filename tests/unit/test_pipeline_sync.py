"""Sync behaviour of the pipeline with an in-memory source (tests/conftest.py: FakeSource)."""

import json

import pytest

from connector.config import load_config
from connector.pipeline import EXIT_OK, EXIT_REJECTIONS, EXIT_SOURCE, Pipeline
from tests.conftest import FakeSource

MAPPING = """\
profile: fake
fields:
  prs_FirstName: name
  prs_Gender: gender
  vic_TypeOfExploitation: {from: types, split: ";"}
"""


def job(write_config, tmp_path, records, extra_source=""):
    (tmp_path / "fake.yaml").write_text(MAPPING)
    return load_config(
        write_config(
            f"""\
partner: {{id: ngo}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: fake1
    type: fake
    mapping: fake.yaml
    options:
      page_size: 2
      records: {json.dumps(records)}
{extra_source}"""
        )
    )


RECORDS = [
    {"id": 1, "name": "Ana", "gender": "Feminine", "types": "Forced labour"},
    {"id": 2, "name": "Bo", "gender": "masculine ", "types": "SexualExploitation;ForcedLabour"},
    {"id": 3, "name": "Cy", "gender": "Masculin", "types": ""},
    {"id": 4, "name": "Di", "gender": "Feminine", "types": "ForcedMarriage"},
    {"id": 5, "name": "Ed", "gender": "Masculine", "types": "ForcedLabour"},
]


def test_sync_stores_every_page_and_moves_the_cursor(write_config, tmp_path):
    pipeline = Pipeline(job(write_config, tmp_path, RECORDS))
    report = pipeline.sync()
    (source,) = report.sources
    assert (source.status, source.pages, source.fetched, source.inserted, source.rejected) == ("ok", 3, 5, 5, 1)
    assert report.exit_code == EXIT_REJECTIONS  # record 3's gender was rejected
    assert pipeline.store.cursor("fake1") == "5"
    snapshot = pipeline.store.snapshot()
    assert list(snapshot["record_id"]) == ["1", "2", "3", "4", "5"]
    assert snapshot.set_index("record_id").loc["2", "vic_TypeOfExploitation"] == ["ForcedLabour", "SexualExploitation"]
    assert snapshot.set_index("record_id").loc["3", "prs_Gender"] is None
    (rejection,) = pipeline.store.rejections()
    assert (rejection["source"], rejection["record_id"], rejection["field"], rejection["value"]) == ("fake1", "3", "prs_Gender", "Masculin")
    # a second run starts from the committed cursor and finds nothing
    again = pipeline.sync()
    assert again.sources[0].fetched == 0 and again.exit_code == EXIT_OK
    pipeline.close()


def test_failing_source_keeps_committed_pages_and_the_next_run_resumes(write_config, tmp_path, monkeypatch):
    config = job(write_config, tmp_path, RECORDS)
    monkeypatch.setattr(FakeSource, "fail_after_pages", 1)
    pipeline = Pipeline(config)
    report = pipeline.sync()
    assert report.exit_code == EXIT_SOURCE
    assert report.sources[0].status == "failed" and "injected failure" in report.sources[0].error
    assert pipeline.store.cursor("fake1") == "2"  # only the first page was committed
    assert len(pipeline.store.snapshot()) == 2
    assert pipeline.store.source_status()[0]["last_error"]
    monkeypatch.setattr(FakeSource, "fail_after_pages", None)
    resumed = pipeline.sync()
    assert resumed.sources[0].fetched == 3  # records 3..5, not the whole source again
    assert len(pipeline.store.snapshot()) == 5
    pipeline.close()


def test_store_failure_inside_a_page_leaves_store_and_cursor_unchanged(write_config, tmp_path, monkeypatch):
    config = job(write_config, tmp_path, RECORDS)
    pipeline = Pipeline(config)
    store = pipeline.store
    real = store._set_cursor
    calls = {"n": 0}

    def failing_set_cursor(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second page's cursor write fails after its cases were upserted
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_set_cursor", failing_set_cursor)
    report = pipeline.sync()
    assert report.sources[0].status == "failed"
    assert store.cursor("fake1") == "2"
    assert sorted(store.snapshot()["record_id"]) == ["1", "2"]  # page 2's upserts were rolled back
    monkeypatch.setattr(store, "_set_cursor", real)
    pipeline.sync()
    assert store.cursor("fake1") == "5" and len(store.snapshot()) == 5
    pipeline.close()


def test_one_failing_source_does_not_stop_the_others(write_config, tmp_path):
    extra = """\
  - id: broken
    type: fake
    mapping: no-such-mapping.yaml
"""
    pipeline = Pipeline(job(write_config, tmp_path, RECORDS, extra))
    report = pipeline.sync()
    by_id = {s.source: s for s in report.sources}
    assert by_id["fake1"].status == "ok" and by_id["fake1"].inserted == 5
    assert by_id["broken"].status == "failed" and "no-such-mapping.yaml" in by_id["broken"].error
    assert report.exit_code == EXIT_SOURCE
    sync, release = pipeline.run()
    assert release.status == "skipped" and "broken" in release.reasons[0]
    pipeline.close()


def test_deleted_records_are_cleared_from_the_store(write_config, tmp_path):
    records = RECORDS + [{"id": 2, "deleted": True}]
    pipeline = Pipeline(job(write_config, tmp_path, records))
    pipeline.sync()
    assert sorted(pipeline.store.snapshot()["record_id"]) == ["1", "3", "4", "5"]
    pipeline.close()
