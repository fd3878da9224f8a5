"""The one JSON text of a mapped case, and its hash: what the store keeps and compares.

A module of its own (no pandas, no SQLAlchemy) because two processes make it: the store, and the
mapping worker (`connector.map_pages`) that serialises a page's cases while the store commits the
page before, so a first sync uses both cores. Both must give the same text for the same fields,
or every case would look changed on the next run.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date, datetime, timezone
from typing import Any

from connector.errors import StoreError


def canonical_json(fields: dict[str, Any], where: str = "") -> str:
    """The one JSON text of a case's fields: sorted keys, no spaces, UTF-8, NaN as null.

    Equal content always gives equal text, so its hash detects unchanged records across runs.
    Dates are written as ISO strings; any other non-JSON value is an error naming the field.
    """
    clean = {name: _json_value(value, f"{where} field {name}") for name, value in fields.items()}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(data: str) -> str:
    """SHA-256 of a record's canonical JSON."""
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def as_utc(value: datetime) -> datetime:
    """A naive time read as UTC; an aware one converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _json_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime):
        return as_utc(value).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_json_value(item, where) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):  # an entry of a `records` field
        return {key: _json_value(item, where) for key, item in value.items()}
    raise StoreError(f"{where}: a value of type {type(value).__name__} cannot be stored")
