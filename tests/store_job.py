"""A job for tests of the release step: its cases are written straight into its store, as a sync
would, so the source in the config is never read (`unused.xlsx` need not exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.records import CaseRecord, MappedPage
from connector.store import Store

SOURCE = "gen"


def write_job(tmp_path: Path, partner: str, release: str) -> Path:
    """`job.yaml` in `tmp_path`: SQLite store, one Excel source named `gen`, a folder destination,
    and `release` (the YAML of the `release:` key, block or flow style) as given."""
    config = tmp_path / "job.yaml"
    config.write_text(
        f"""\
partner: {{id: {partner}, datasource: Case Management}}
store: {{url: "sqlite:///state/cases.sqlite"}}
sources:
  - id: {SOURCE}
    type: excel
    mapping: excel_htcds
    options: {{path: unused.xlsx}}
{release.rstrip()}
destination: {{type: folder, path: releases}}
"""
    )
    return config


def store_cases(store: Store, partner: str, upserts: dict[str, dict[str, Any]], deletes: set[str] | frozenset[str] = frozenset()) -> None:
    """One committed sync run of source `gen` that writes `upserts` (record id -> mapped fields) and
    deletes `deletes`."""
    run = store.start_run(partner, "sync")
    cases = [CaseRecord(SOURCE, rid, fields) for rid, fields in upserts.items()]
    cases += [CaseRecord(SOURCE, rid, {}, deleted=True) for rid in deletes]
    store.commit_page(SOURCE, run, MappedPage(cases=cases, cursor=None, number=0))
    store.finish_run(run, "ok", {})
