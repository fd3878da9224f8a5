"""The ODK sandbox's OData `$filter` / `$orderby` subset, on its own (Central's semantics, SQL nulls)."""

from __future__ import annotations

import pytest

from connector.sandbox.odk_central import FilterError, parse_filter, parse_orderby

ROW = {"__system/submissionDate": "2024-01-02T00:00:00.000Z", "__system/updatedAt": None, "__system/reviewState": "rejected", "__system/submitterId": "5"}


def matches(text: str) -> bool:
    return parse_filter(text)(ROW.get)


def test_comparisons_on_timestamps_strings_and_numbers() -> None:
    assert matches("__system/submissionDate ge 2024-01-02T00:00:00.000Z")
    assert not matches("__system/submissionDate gt 2024-01-02T00:00:00.000Z")
    assert matches("__system/submissionDate lt 2025-01-01")
    assert matches("__system/reviewState eq 'rejected'") and not matches("__system/reviewState ne 'rejected'")
    assert matches("__system/submitterId eq 5")


def test_null_follows_sql_except_eq_and_ne_null() -> None:
    assert not matches("__system/updatedAt ge 2000-01-01T00:00:00.000Z")
    assert not matches("__system/updatedAt lt 2999-01-01T00:00:00.000Z")
    assert matches("__system/updatedAt eq null") and not matches("__system/updatedAt ne null")


def test_and_or_not_and_parentheses() -> None:
    assert matches("not __system/reviewState eq 'approved' and (__system/updatedAt ne null or __system/submissionDate gt 2023-01-01)")
    assert not matches("__system/reviewState eq 'approved' or __system/updatedAt ne null")


def test_unsupported_functions_and_fields_are_refused() -> None:
    with pytest.raises(FilterError):
        parse_filter("year(__system/submissionDate) eq 2024")
    with pytest.raises(FilterError):
        parse_orderby("prs_Gender asc")
    assert parse_orderby("__system/updatedAt desc, __id") == [("__system/updatedAt", True), ("__id", False)]
