"""Mapping in a worker process, one page ahead of the commits (connector/map_pages.py).

The worker is a speed-up only: a sync that maps in it must store exactly what a sync that maps
here stores, commit pages in order with their cursors, keep what was read before a source fails,
stop after the current page, and survive the worker's death by mapping here. The worker must not
outlive a parent killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from connector.case_json import canonical_json
from connector.map_pages import MapAhead, map_page, with_json
from connector.mapping import load_mapping
from connector.pipeline import EXIT_SOURCE, Pipeline
from connector.records import CaseRecord, MappedPage, Page, RawRecord
from connector.schema import load_schema
from connector.store import StoreError, cases
from tests.conftest import FakeSource
from tests.unit.test_pipeline_sync import MAPPING, RECORDS, job

MANY = [*RECORDS, *({"id": i, "name": f"P{i}", "gender": "Feminine" if i % 2 else "Masculin", "types": "ForcedLabour;Other"} for i in range(6, 30))]


def _stored(pipeline: Pipeline) -> tuple[list[tuple], list[tuple], str | None]:
    """Everything a sync leaves in the store that a later run or release reads."""
    with pipeline.store._engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(cases.c.source, cases.c.record_id, cases.c.data, cases.c.content_hash, cases.c.deleted).order_by(cases.c.record_id))]
    rejections = sorted((r["record_id"], r["field"], r["value"], r["reason"]) for r in pipeline.store.rejections())
    return rows, rejections, pipeline.store.cursor("fake1")


@pytest.fixture
def takes(monkeypatch):
    """Whether the worker was still running at each take (False: the page was mapped here)."""
    seen: list[bool] = []
    original = MapAhead.take

    def take(self):
        seen.append(self.running)
        return original(self)

    monkeypatch.setattr(MapAhead, "take", take)
    return seen


def _config(folder: Path, records: list[dict]):
    """A job of the fake source in a folder of its own (its own store)."""
    folder.mkdir()

    def write(text: str, name: str = "connector.yaml") -> Path:
        (folder / name).write_text(text, encoding="utf-8")
        return folder / name

    return job(write, folder, records)


def _sync(config, **kwargs):
    pipeline = Pipeline(config, **kwargs)
    report = pipeline.sync()
    return pipeline, report


def test_a_sync_mapped_in_the_worker_stores_what_a_sync_mapped_here_stores(tmp_path, takes):
    here, here_report = _sync(_config(tmp_path / "a", MANY), map_ahead_after=None)
    assert takes == []  # never started
    ahead, ahead_report = _sync(_config(tmp_path / "b", MANY), map_ahead_after=0)
    assert len(takes) == 14 and all(takes)  # every page of 2 but the first (mapped here while it starts)
    assert _stored(ahead) == _stored(here)
    assert [(s.pages, s.fetched, s.inserted, s.rejected, s.rejected_new) for s in ahead_report.sources] == [
        (s.pages, s.fetched, s.inserted, s.rejected, s.rejected_new) for s in here_report.sources
    ]
    assert ahead.store.cursor("fake1") == str(len(MANY))
    # an unchanged re-run, once more through the worker, finds every case unchanged
    again = ahead.sync()
    assert again.sources[0].fetched == 0
    here.close()
    ahead.close()


def test_the_worker_starts_only_after_enough_records(write_config, tmp_path, takes):
    pipeline, _ = _sync(job(write_config, tmp_path, MANY), map_ahead_after=20)
    # pages of 2: 10 pages (20 records) are mapped here, and the 11th while the worker starts; the other 4 in it
    assert len(takes) == 4 and all(takes)
    assert pipeline.store.cursor("fake1") == str(len(MANY))
    pipeline.close()


def test_pages_read_before_a_source_fails_are_kept_when_mapped_ahead(write_config, tmp_path, monkeypatch, takes):
    config = job(write_config, tmp_path, RECORDS)
    monkeypatch.setattr(FakeSource, "fail_after_pages", 2)
    pipeline, report = _sync(config, map_ahead_after=0)
    assert report.exit_code == EXIT_SOURCE and "injected failure" in report.sources[0].error
    # page 2 was in the worker when page 3 failed: it is committed, with its cursor
    assert pipeline.store.cursor("fake1") == "4"
    assert report.sources[0].pages == 2 and len(pipeline.store.snapshot()) == 4
    pipeline.close()


def test_a_stop_request_ends_the_sync_after_the_committed_page_and_the_worker_with_it(write_config, tmp_path, monkeypatch):
    config = job(write_config, tmp_path, MANY)
    workers: list[MapAhead] = []
    original_init = MapAhead.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        workers.append(self)

    monkeypatch.setattr(MapAhead, "__init__", init)
    stopping = {"on": True}
    pipeline = Pipeline(config, map_ahead_after=0, stop_requested=lambda: stopping["on"] and pipeline.store.cursor("fake1") == "4")
    report = pipeline.sync()
    assert report.sources[0].status == "interrupted"
    assert pipeline.store.cursor("fake1") == "4" and report.sources[0].pages == 2  # page 3 was dropped, not committed
    (worker,) = workers
    assert worker._proc is None and not worker.running  # closed and waited for
    stopping["on"] = False
    resumed = pipeline.sync()  # the next run picks up at page 3
    assert resumed.sources[0].fetched == len(MANY) - 4
    assert len(pipeline.store.snapshot()) == len(MANY)
    pipeline.close()


def test_when_the_worker_dies_the_run_maps_here_and_says_so(tmp_path, monkeypatch, caplog, takes):
    here, _ = _sync(_config(tmp_path / "a", MANY), map_ahead_after=None)
    original_put = MapAhead.put
    puts = []

    def put(self, page):
        puts.append(page.number)
        if len(puts) == 4:  # the worker dies holding nothing; then this page cannot be sent
            self._proc.kill()
            self._proc.wait()
        original_put(self, page)

    monkeypatch.setattr(MapAhead, "put", put)
    caplog.set_level(logging.WARNING, logger="connector")
    ahead, report = _sync(_config(tmp_path / "b", MANY), map_ahead_after=0)
    assert report.sources[0].status == "ok"
    assert takes[:3] == [True, True, True] and not any(takes[3:])  # mapped here from the 4th page on
    assert _stored(ahead) == _stored(here)
    assert any("mapping worker" in r.getMessage() for r in caplog.records)
    here.close()
    ahead.close()


def _mapping(tmp_path: Path):
    (tmp_path / "fake.yaml").write_text(MAPPING)
    return load_mapping(tmp_path / "fake.yaml", load_schema())


def _page(number: int) -> Page:
    return Page([RawRecord(str(r["id"]), {k: v for k, v in r.items() if k != "id"}) for r in RECORDS], cursor=str(number), number=number)


def test_the_worker_ignores_sigterm_which_stops_only_the_parent(tmp_path, takes):
    mapping = _mapping(tmp_path)
    with MapAhead(mapping, "fake1") as ahead:
        ahead.put(_page(0))
        assert ahead.take() == with_json(map_page(mapping, "fake1", _page(0)))
        os.kill(ahead._proc.pid, signal.SIGTERM)  # a service manager signals the whole group
        time.sleep(0.2)
        ahead.put(_page(1))
        assert ahead.take().cursor == "1"
        assert takes == [True, True] and ahead.running


def test_the_worker_exits_when_its_parent_is_killed(tmp_path):
    (tmp_path / "fake.yaml").write_text(MAPPING)
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from connector.map_pages import MapAhead
            from connector.mapping import load_mapping
            from connector.schema import load_schema
            path = {str(tmp_path / "fake.yaml")!r}
            ahead = MapAhead(load_mapping(path, load_schema()), "fake1")
            print(ahead._proc.pid, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # it is running
    parent.kill()
    parent.wait()
    for _ in range(200):
        try:
            with open(f"/proc/{worker}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    break  # exited; only its entry waits for a parent to reap it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the mapping worker outlived its killed parent")


def test_a_case_whose_json_fails_keeps_its_fields_so_the_store_names_the_field(tmp_path):
    from connector.store import Store

    broken = CaseRecord("fake1", "7", {"prs_Gender": {"a", "set"}})
    page = with_json(MappedPage(cases=[broken, CaseRecord("fake1", "8", {"prs_Gender": "Feminine"})], cursor="2"))
    assert page.cases[0] is broken and page.cases[1].data == canonical_json({"prs_Gender": "Feminine"}) and page.cases[1].fields == {}
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    run_id = store.start_run("j", "sync")
    with pytest.raises(StoreError, match="fake1/7 field prs_Gender"):
        store.commit_page("fake1", run_id, page)
    assert store.cursor("fake1") is None
    store.close()


def test_pages_cross_to_the_worker_and_back_exactly_by_marshal_or_else_by_pickle():
    from collections import OrderedDict
    from datetime import date, datetime, timezone
    from zoneinfo import ZoneInfo

    from connector.map_pages import pack, unpack
    from connector.records import Rejection

    plain = Page(
        [
            RawRecord("a1", {"Name": "x", "n": 3, "f": 1.5, "ok": True, "none": None, "kids": [{"Id": "c1", "tags": ["p", "q"]}], "t": (1, 2)},
                      datetime(2024, 5, 1, 12, 30, 15, 250, tzinfo=timezone.utc)),
            RawRecord("a2", {}, datetime(2024, 5, 1, 12, 30), deleted=True),
            RawRecord("a3", {}, None, unreadable=("*", "encrypted"), position="row 7"),
        ],
        cursor='{"stamp": "2024"}', number=4, rejections=[Rejection("s", "a9", "f", None, "too long")],
    )
    assert pack(plain)[:1] == b"M" and unpack(pack(plain)) == plain
    mapped = MappedPage(cases=[CaseRecord("s", "a1", {}, datetime(2024, 1, 1, tzinfo=timezone.utc), False, '{"a":1}'), CaseRecord("s", "a2", {"x": [1]}, None, True)],
                        rejections=[Rejection("s", "a1", "prs_Gender", "Masculin", "not a code")], cursor="9", number=2)
    assert pack(mapped)[:1] == b"M" and unpack(pack(mapped)) == mapped
    # values marshal cannot carry exactly go by pickle, and come back as they were
    for odd in (
        Page([RawRecord("e1", {"Date": date(2024, 1, 2)})]),  # an Excel cell
        Page([RawRecord("e2", {"Extra": OrderedDict(a=1)})]),
        Page([RawRecord("e3", {}, datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Athens")))]),
    ):
        back = unpack(pack(odd))
        assert pack(odd)[:1] == b"P" and back == odd
        assert type(back.records[0].fields.get("Extra", {})) is type(odd.records[0].fields.get("Extra", {}))
        assert back.records[0].updated_at is None or back.records[0].updated_at.tzinfo == odd.records[0].updated_at.tzinfo


def test_the_worker_maps_with_the_rules_the_main_process_read_even_if_the_file_changes(tmp_path, takes):
    mapping = _mapping(tmp_path)
    (tmp_path / "fake.yaml").write_text(MAPPING.replace("prs_FirstName: name", "prs_FirstName: gender"))  # edited mid-run
    with MapAhead(mapping, "fake1") as ahead:
        ahead.put(_page(0))
        assert ahead.take() == with_json(map_page(mapping, "fake1", _page(0)))
        assert takes == [True] and ahead.running


def test_a_worker_that_imported_other_code_stops_and_the_page_is_mapped_here(tmp_path, monkeypatch, caplog, takes):
    import connector.map_pages as map_pages

    mapping = _mapping(tmp_path)
    real = map_pages._this_file()
    monkeypatch.setattr(map_pages, "_this_file", lambda: real.replace("map_pages.py", "elsewhere.py"))
    caplog.set_level(logging.WARNING, logger="connector")
    with MapAhead(mapping, "fake1") as ahead:
        ahead.put(_page(0))
        assert ahead.take() == with_json(map_page(mapping, "fake1", _page(0)))
        assert not ahead.running
    assert any("mapping worker" in r.getMessage() for r in caplog.records)


def test_a_value_marshal_would_turn_into_bytes_goes_by_pickle():
    from connector.map_pages import pack, unpack

    page = Page([RawRecord("n1", {"Age": np.int64(7), "Score": np.float64(1.5), "raw": bytearray(b"x")})])
    assert pack(page)[:1] == b"P"
    back = unpack(pack(page))
    assert [type(v) for v in back.records[0].fields.values()] == [np.int64, np.float64, bytearray]


def test_a_mapping_without_its_text_is_mapped_here(tmp_path, takes):
    mapping = _mapping(tmp_path)
    mapping.text = None  # not made by load_mapping: nothing the worker could load
    with MapAhead(mapping, "fake1") as ahead:
        assert not ahead.running
        ahead.put(_page(0))
        assert ahead.take() == with_json(map_page(mapping, "fake1", _page(0)))
    assert takes == [False]
