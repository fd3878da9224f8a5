"""Jobs for the unattended-operation tests: a scripted source over generated cases, configs, a CLI.

The `scripted` source serves generated cases as the HTCDS Excel template's rows (so the packaged
`excel_htcds` mapping applies), in pages, with a cursor per page, and can be told to be slow or to
fail: enough to drive every exit code and every crash point without a network. `python -m
tests.faults.cli ...` is `htcds-connector ...` with this source registered, for subprocess tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from connector.faults import fault_point
from connector.records import Page, RawRecord
from connector.sandbox.excel_writer import TEMPLATE_COLUMNS, row_values
from connector.sandbox.generate import generate_cases
from connector.secrets import Secret
from connector.sources import register
from connector.sources.base import Source, SourceAuthError, SourceError, SourceOptions

REPO = Path(__file__).resolve().parents[2]
RAW_NAMES = [name or label for name, label in TEMPLATE_COLUMNS]


class ScriptedOptions(SourceOptions):
    cases: int = 60
    seed: int = 3
    mess_rate: float = 0.0
    page_size: int = 10
    sleep_per_page: float = 0.0
    fail: Literal["none", "unreachable", "auth"] = "none"
    fail_at_page: int = 0
    password: Secret | None = None
    # Records (by index) whose id the store cannot hold: 300 characters long, or with a NUL in it.
    long_id_at: list[int] = []
    nul_id_at: list[int] = []


def raw_records(cases: int, seed: int, mess_rate: float) -> list[RawRecord]:
    """The generated cases as template rows keyed by the template's raw names, in case-id order."""
    records = []
    for case in sorted(generate_cases(cases, seed=seed, mess_rate=mess_rate), key=lambda c: c.case_id):
        if case.deleted:
            continue
        values = row_values(case, mess=mess_rate > 0)
        fields = {name: value for name, value in zip(RAW_NAMES[1:], values[1:]) if value is not None}
        records.append(RawRecord(case.case_id, fields, case.updated_at))
    return records


@register
class ScriptedSource(Source):
    type_name = "scripted"
    Options = ScriptedOptions

    def pages(self, cursor: str | None) -> Iterator[Page]:
        options = self.options
        if options.password is not None:
            options.password.get()  # as a real source would, at connect time
        records = raw_records(options.cases, options.seed, options.mess_rate)
        for i in options.long_id_at:
            records[i] = RawRecord("L" * 300, records[i].fields, records[i].updated_at)
        for i in options.nul_id_at:
            records[i] = RawRecord(f"nul\x00{i}", records[i].fields, records[i].updated_at)
        start = int(cursor) if cursor else 0
        for number, i in enumerate(range(start, len(records), options.page_size)):
            if options.fail != "none" and number >= options.fail_at_page:
                if options.fail == "auth":
                    raise SourceAuthError(f"source {self.id}", "the server refused the credentials (HTTP 401)")
                raise SourceError(f"source {self.id}", "cannot connect to 127.0.0.1:9 (connection refused)")
            self.stats.requests += 1
            if options.sleep_per_page:
                time.sleep(options.sleep_per_page)
            fault_point("source.fetch")
            chunk = records[i : i + options.page_size]
            yield Page(chunk, cursor=str(i + len(chunk)), number=number)


def write_job(
    folder: Path, *, name: str = "job.yaml", partner: str = "test-ngo", k: int = 3, source: dict[str, Any] | None = None, extra: str = "",
    store_url: str = "sqlite:///state/cases.sqlite",
) -> Path:
    """A job config in `folder`: scripted source -> SQLite store in state/ (or `store_url`) -> folder releases/."""
    options = {"cases": 60, "seed": 3, "page_size": 10, **(source or {})}
    config = folder / name
    config.write_text(
        f"""\
partner: {{id: {partner}, datasource: Case Management}}
store: {{url: {json.dumps(store_url)}}}
sources:
  - id: cases
    type: scripted
    mapping: excel_htcds
    options: {json.dumps(options)}
release: {{method: k_anonymity, k: {k}, suppression_limit: 0.5}}
destination: {{type: folder, path: releases}}
{extra}""",
        encoding="utf-8",
    )
    return config


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.faults.cli", *args]


def run_cli(*args: str, fault: str | None = None, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`htcds-connector ARGS` (with the scripted source) in a subprocess; `fault` sets HTCDS_FAULT."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HTCDS_FAULT", None)
    if fault:
        full_env["HTCDS_FAULT"] = fault
    return subprocess.run(cli_command(*args), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
