"""What every source is: a thing that yields pages of raw records and the cursor each page reaches.

A source knows its system's API (auth, paging, incremental filters, deletions, rate limits) and
nothing about HTCDS: mapping happens downstream. It never commits a cursor; the pipeline stores a
page's records and its cursor in one transaction, so a crash between pages loses nothing and a
re-run resumes from the last committed page (Singer's rule: state after records).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

# SourceError and SourceAuthError live under the error root; sources import them from here as before.
from connector.errors import SourceAuthError, SourceError  # noqa: F401
from connector.records import Page, Problem

if TYPE_CHECKING:
    from connector.config import Config, SourceConfig


class SourceOptions(BaseModel):
    """Base of each source type's `options:` model; unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class FieldInfo:
    """A field the source offers: its raw name, label, type and, for selects, its choice codes."""

    name: str
    label: str | None = None
    type: str | None = None
    choices: tuple[str, ...] = ()


@dataclass
class SourceStats:
    """Counters a source keeps for the run record (API calls, bytes), reported in `status`."""

    requests: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Source(ABC):
    """Base class of all sources. Subclasses set `type_name` and `Options` and register themselves."""

    type_name: ClassVar[str]
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    # A full-snapshot source re-reads everything each run (a spreadsheet). After `pages()` is
    # exhausted with `complete_read` true (the whole dataset, from its start, in this call), the
    # pipeline deletes the source's stored records that the read did not contain.
    full_snapshot: ClassVar[bool] = False
    complete_read: bool = False

    def __init__(self, config: "SourceConfig", job: "Config"):
        self.config = config
        self.job = job
        self.options = config.parsed_options if config.parsed_options is not None else self.Options.model_validate(config.options)
        self.stats = SourceStats()

    @property
    def id(self) -> str:
        return self.config.id

    @abstractmethod
    def pages(self, cursor: str | None) -> Iterator[Page]:
        """Yield pages of records changed after `cursor` (None: from the beginning), oldest first."""

    def fields(self) -> list[FieldInfo]:
        """The fields this source offers, for `check` and `mapping suggest`. Default: not known."""
        return []

    def check(self) -> list[Problem]:
        """Reachability, credentials and anything else a user should fix before the first sync."""
        return []

    def close(self) -> None:
        """Release connections. Called once after the source is used."""
