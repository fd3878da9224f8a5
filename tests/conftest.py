import pytest

from connector.sources import register
from connector.sources.base import Source, SourceOptions
from connector.records import Page, RawRecord
from connector.secrets import Secret


class FakeOptions(SourceOptions):
    records: list[dict] = []
    page_size: int = 2
    password: Secret | None = None


@register
class FakeSource(Source):
    """An in-memory source for pipeline tests: options.records are the raw records, cursor = index."""

    type_name = "fake"
    Options = FakeOptions
    fail_after_pages: int | None = None

    def pages(self, cursor):
        start = int(cursor) if cursor else 0
        records = self.options.records
        for number, i in enumerate(range(start, len(records), self.options.page_size)):
            if self.fail_after_pages is not None and number >= self.fail_after_pages:
                from connector.sources.base import SourceError

                raise SourceError(f"source {self.id}", "injected failure")
            chunk = records[i : i + self.options.page_size]
            self.stats.requests += 1
            yield Page(
                [RawRecord(str(r["id"]), {k: v for k, v in r.items() if k not in ("id", "deleted")}, deleted=bool(r.get("deleted"))) for r in chunk],
                cursor=str(i + len(chunk)),
                number=number,
            )


@pytest.fixture
def write_config(tmp_path):
    def write(text: str, name: str = "connector.yaml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _restore_connector_logger():
    """`connector.cli.main` configures the `connector` logger for a process; tests run many in one."""
    import logging

    logger = logging.getLogger("connector")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = state[0], state[1], state[2]
