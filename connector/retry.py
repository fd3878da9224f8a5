"""How long to wait before retrying an HTTP call: one rule for every source and destination.

Servers say how long to wait with `Retry-After` (seconds or an HTTP date); when they do not, the
wait doubles per attempt up to a cap, with jitter so that many partners' connectors retrying after
the same outage do not arrive together.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt` (1-based).

    The server's Retry-After wins (capped); otherwise "equal jitter" over an exponential window:
    at least half the window, so a retry never comes at once, and at most the whole window.
    """
    if retry_after is not None:
        return min(retry_after, cap)
    window = min(cap, base * 2 ** (attempt - 1))
    return window / 2 + random.uniform(0, window / 2)
