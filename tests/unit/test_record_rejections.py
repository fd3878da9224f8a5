"""A record the run cannot take is a named rejection, and the rest of the page and the run go on:
a cell too long for a spreadsheet, and duplicate ids within one read of a spreadsheet."""

from __future__ import annotations

import csv
from pathlib import Path

from connector.config import load_config
from connector.pipeline import DUPLICATE_ID, EXIT_REJECTIONS, Pipeline
from connector.sandbox.excel_writer import write_csv
from connector.sandbox.generate import generate_cases


def csv_job(tmp_path: Path, rows: list[list[str]], page_size: int = 10) -> Pipeline:
    path = tmp_path / "cases.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    config = tmp_path / "job.yaml"
    config.write_text(
        "partner: {id: ngo}\n"
        'store: {url: "sqlite:///state/cases.sqlite"}\n'
        f"sources:\n  - {{id: sheet, type: csv, mapping: excel_htcds, options: {{path: cases.csv, page_size: {page_size}}}}}\n"
    )
    return Pipeline(load_config(config))


def generated_rows(tmp_path: Path, n: int = 30) -> list[list[str]]:
    path = write_csv(generate_cases(n, seed=5, mess_rate=0.0), tmp_path / "generated.csv", mess=False)
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_a_megabyte_cell_rejects_its_record_and_the_run_goes_on(tmp_path):
    rows = generated_rows(tmp_path)
    column = rows[0].index("cas_IncomingReferralDetails")
    rows[12][column] = "x" * 1_000_000
    pipeline = csv_job(tmp_path, rows)
    report = pipeline.sync()
    (source,) = report.sources
    assert source.status == "ok" and report.exit_code == EXIT_REJECTIONS and source.fetched == 30
    assert set(pipeline.store.snapshot()["record_id"]) == {r[0] for r in rows[1:]} - {rows[12][0]}
    (rejection,) = [r for r in pipeline.store.rejections(limit=100) if r["record_id"] == rows[12][0]]
    assert rejection["field"] == "cas_IncomingReferralDetails" and rejection["value"] == "row 13: 1,000,000 characters"
    pipeline.close()


def test_duplicate_ids_are_rejections_naming_both_rows_and_the_first_copy_is_kept(tmp_path):
    rows = generated_rows(tmp_path)
    rows[25][0] = rows[4][0]  # row 26 repeats row 5's id, on a later page
    rows[26][0] = rows[25][0]  # and row 27 once more
    gender = rows[0].index("prs_Gender")
    rows[4][gender], rows[25][gender], rows[26][gender] = "Feminine", "Masculine", "Masculine"
    pipeline = csv_job(tmp_path, rows)
    report = pipeline.sync()
    assert report.sources[0].fetched == 30 and report.sources[0].rejected >= 2  # every row read is counted
    stored = pipeline.store.snapshot()
    assert len(stored) == 28 and list(stored["record_id"]).count(rows[4][0]) == 1
    duplicates = sorted(
        (r["value"], r["reason"]) for r in pipeline.store.rejections(limit=100) if r["record_id"] == rows[4][0] and r["field"] == "record_id"
    )
    assert duplicates == [("row 5 and row 26", DUPLICATE_ID), ("row 5 and row 27", DUPLICATE_ID)]
    # the stored copy is the first one, and a complete read did not delete it as missing
    assert stored.set_index("record_id").loc[rows[4][0], "prs_Gender"] == "Feminine"
    assert pipeline.store.counts()["sources"]["sheet"]["deleted"] == 0
    pipeline.close()


def test_without_duplicates_nothing_is_rejected_for_the_id(tmp_path):
    pipeline = csv_job(tmp_path, generated_rows(tmp_path))
    pipeline.sync()
    assert not [r for r in pipeline.store.rejections(limit=100) if r["field"] == "record_id"]
    pipeline.close()
