"""Keyset paging over a feed ordered by a timestamp, shared by the ODK Central and Kobo sources.

Both servers page with an offset (`$skip`, `start`) over a query filtered from a timestamp. An offset
alone misses rows when an edit moves one while a run pages; so each request filters from the last
timestamp read (the `Mark`) and skips only rows already read at exactly that timestamp. One loop for
both servers, because a paging bug here once skipped edited submissions in both copies of it.

The end of a pass is the server's word, never a short page: kpi cuts `limit` to its own maximum
(1000) without an error, so a page shorter than the `page_size` asked for may well have more after
it. `fetch` returns the rows and whether the server says more rows match (kpi's `next`, Central's
`@odata.nextLink`); the pass ends when it says no, or when a request returns no row at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connector.sources.base import SourceError


@dataclass
class Mark:
    """Where a keyset pass stands: the last timestamp read and the ids already read at exactly it."""

    at: Any = None
    ids: set = field(default_factory=set)

    def key(self, at: Any) -> Any:
        """How timestamps compare; a server whose timestamps are strings in several forms overrides it."""
        return at

    def advance(self, at: Any, record_id: Any) -> None:
        if at is None:
            return
        if self.at is None or self.key(at) > self.key(self.at):
            self.at, self.ids = at, {record_id}
        elif self.key(at) == self.key(self.at):
            self.ids.add(record_id)

    def seen(self, at: Any, record_id: Any) -> bool:
        return at is not None and self.at is not None and self.key(at) == self.key(self.at) and record_id in self.ids

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ids": sorted(self.ids)}

    @classmethod
    def from_json(cls, data: Any) -> "Mark":
        if not isinstance(data, dict):
            return cls()
        return cls(data.get("at"), set(data.get("ids") or ()))


def keyset_pass(
    fetch: Callable[[int], tuple[list[Any], bool]],
    *,
    mark: Mark,
    locate: Callable[[Any], tuple[Any, Any] | None],
    keep: Callable[[Any, Any, Any], bool] | None = None,
    where: str,
) -> Iterator[list[Any]]:
    """Yield pages of new rows of one pass, moving `mark` as rows are read.

    `fetch(skip)` returns the rows of one request filtered from `mark` (offset `skip`) and whether
    the server says more rows match after them;
    `locate(row)` gives `(timestamp, id)` or None for a row to ignore; `keep(row, at, id)` may drop
    a row already delivered by another pass of the same run (the mark still moves past it).
    """
    skip = 0
    while True:
        rows, more = fetch(skip)
        start = (mark.at, len(mark.ids))
        kept: list[Any] = []
        for row in rows:
            located = locate(row)
            if located is None:
                continue
            at, record_id = located
            if mark.seen(at, record_id):
                continue
            mark.advance(at, record_id)
            if keep is None or keep(row, at, record_id):
                kept.append(row)
        if kept:
            yield kept
        if not more or not rows:
            return
        if kept or (mark.at, len(mark.ids)) != start:
            skip = 0  # the mark moved (even past rows this run already delivered): start after it
        elif skip >= len(mark.ids) + len(rows):
            # Only rows already read, even past all of them: the server ignores the offset.
            raise SourceError(where, "the server returned the same rows again despite the paging offset; stopping this pass", transient=True)
        else:
            skip += len(rows)
