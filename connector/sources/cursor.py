"""The one rule for a stored cursor that cannot be read: a clear error that says how to reset it.

A cursor is the source's own JSON document (with a `"v"` version), written by the pipeline in the
same transaction as the page it covers. If it cannot be read (a hand edit, a downgrade, a cursor
from a newer connector), the run must stop with a message naming the source and the way out, not
crash with a `KeyError` or pull from a wrong place.
"""

from __future__ import annotations

import json
from typing import Any

from connector.sources.base import SourceError

RESET_HINT = (
    "reset it and the next sync pulls everything again (records are kept): "
    "delete the source's row from the store's `cursors` table, e.g. "
    "`DELETE FROM cursors WHERE source = '<source id>'`"
)


def unreadable(where: str, why: str) -> SourceError:
    """The error for a stored cursor this version cannot read."""
    return SourceError(where, f"stored cursor cannot be read ({why}); {RESET_HINT}")


def load_versioned(cursor: str, where: str, versions: tuple[int, ...]) -> dict[str, Any]:
    """The cursor's JSON object if its version (`"v"`, 1 when absent) is one of `versions`."""
    try:
        data = json.loads(cursor)
    except ValueError:
        raise unreadable(where, "not JSON") from None
    if not isinstance(data, dict):
        raise unreadable(where, "not a JSON object")
    version = data.get("v", 1)
    if version not in versions:
        raise unreadable(where, f"version {version!r}; this connector reads versions {', '.join(map(str, versions))}")
    return data
