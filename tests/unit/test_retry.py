from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from connector.retry import backoff_delay, parse_retry_after


@pytest.mark.parametrize("header, expected", [(None, None), ("", None), ("12", 12.0), ("1.5", 1.5), ("soon", None)])
def test_retry_after_seconds(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after(format_datetime(when, usegmt=True)) <= 30


def test_server_wait_wins_but_is_capped():
    assert backoff_delay(1, base=1, cap=60, retry_after=7) == 7
    assert backoff_delay(1, base=1, cap=60, retry_after=600) == 60


def test_exponential_window_with_equal_jitter():
    for attempt, window in [(1, 1), (2, 2), (3, 4), (10, 60)]:
        delays = [backoff_delay(attempt, base=1, cap=60) for _ in range(200)]
        assert all(window / 2 <= d <= window for d in delays)
        assert len(set(delays)) > 100  # jittered, not a fixed sleep
