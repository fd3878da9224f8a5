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


def test_an_ordered_feed_walked_from_its_index_pages_as_the_full_scan_does() -> None:
    """The connector's incremental feed (`ge` bound, `$orderby` that date) is answered by walking a
    date index; `$count=true` makes the sandbox scan and sort every row, so both must agree page by page."""
    import json
    from datetime import datetime, timezone
    from types import SimpleNamespace
    from urllib.parse import urlencode

    from connector.sandbox.generate import generate_cases
    from connector.sandbox.odk_central import OdkCentralApp

    cases = generate_cases(60, seed=3)
    app = OdkCentralApp(cases, page_size=None, variant="partner", transform=None)
    dates = sorted(s.submission_date for s in app.state.submissions.values())

    def page(query: dict[str, str]) -> dict:
        reply = app._submissions_table(SimpleNamespace(query=query, raw_query=urlencode(query)), "/root")
        assert reply.status == 200, reply.body
        return json.loads(reply.body)

    page({"$filter": "__system/updatedAt ge 2000-01-01", "$orderby": "__system/updatedAt asc", "$top": "7"})  # index built...
    app.set_review_state(cases[5].case_id, "approved", at=datetime(2030, 1, 1, tzinfo=timezone.utc))  # ...then a date moves

    for path, bound, op, extra in (
        ("__system/submissionDate", dates[0], "ge", ""),
        ("__system/submissionDate", dates[20], "gt", ""),
        ("__system/submissionDate", dates[20], "ge", " and __system/reviewState eq null"),
        ("__system/updatedAt", "2000-01-01T00:00:00.000Z", "ge", ""),
    ):
        for skip in ("0", "3"):
            query = {"$filter": f"{path} {op} {bound}{extra}", "$orderby": f"{path} asc", "$top": "7", "$skip": skip, "$expand": "*"}
            walked, scanned = page(query), page({**query, "$count": "true"})
            assert [r["__id"] for r in walked["value"]] == [r["__id"] for r in scanned["value"]], query
            assert walked["value"] == scanned["value"]
            assert ("@odata.nextLink" in walked) == ("@odata.nextLink" in scanned)
            assert walked["value"], query
