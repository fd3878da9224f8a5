"""Structured logging: one JSON object per line for unattended runs, plain lines for people.

Callers log events with fields (`run_id`, `source`, `page`, counts), never values from records:
what a log line may hold is decided where it is written, and no record value is ever passed here.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LOGGER_NAME = "connector"
_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        return json.dumps(payload, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
        fields = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"{record.levelname.lower():7} {record.getMessage()}" + (f" {fields}" if fields else "")


# Libraries whose lines go to our log in our format (under --log-json every line must be JSON,
# or a log shipper drops it): the daemon's scheduler says when a run was missed or skipped.
LIBRARY_LOGGERS = {"apscheduler": logging.WARNING}


def configure(json_lines: bool = False, level: int = logging.INFO) -> None:
    formatter = JsonFormatter() if json_lines else PlainFormatter()
    for name, name_level in ((LOGGER_NAME, level), *LIBRARY_LOGGERS.items()):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.setLevel(max(level, name_level) if name != LOGGER_NAME else level)
        logger.propagate = False


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
