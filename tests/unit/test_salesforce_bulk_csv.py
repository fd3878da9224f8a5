"""Bulk API 2.0 results are read with csv.reader, not csv.DictReader (issue #16: the sync at the
speed of the parser); the rows must be exactly DictReader's, odd rows included."""

from __future__ import annotations

import csv
import io

from connector.sources.salesforce_bulk import csv_rows

CSV = (
    'Id,Name,Contact.Gender__c,Note__c\r\n'
    '500A,"Smith, J",Female,"two\r\nlines"\r\n'
    '\r\n'
    '500B,,,\r\n'
    '500C,short\r\n'
    '500D,long,x,y,extra1,extra2\r\n'
    '500E,"quote "" inside",Male,\r\n'
)


def test_rows_are_those_dictreader_gives() -> None:
    expected = list(csv.DictReader(io.StringIO(CSV, newline="")))
    got = list(csv_rows(io.StringIO(CSV, newline="")))
    assert got == expected
    assert len(got) == 5 and got[2]["Note__c"] is None and got[3][None] == ["extra1", "extra2"]


def test_an_empty_result_has_no_rows() -> None:
    assert list(csv_rows(io.StringIO("", newline=""))) == []
    assert list(csv_rows(io.StringIO("Id,Name\r\n", newline=""))) == []
