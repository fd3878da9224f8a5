"""The values that flow between the stages: raw pages from sources, mapped cases, rejections, problems.

They are plain frozen dataclasses so that every stage can be tested on its own with hand-made values,
and so that nothing downstream can mutate what an earlier stage produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RawRecord:
    """One record as the source system gave it, before any mapping.

    `fields` holds the source's own field names (a Salesforce API name, an XLSForm path such as
    `group/field`, an Excel column name); values are what the API returned (strings, numbers, lists,
    nested dicts for joined children). `record_id` is stable across runs for the same record.
    """

    record_id: str
    fields: dict[str, Any]
    updated_at: datetime | None = None
    deleted: bool = False
    # (field, reason) when the source has the record but cannot read its content (an encrypted
    # submission the server did not decrypt): it is stored as a tombstone with a named rejection,
    # never as an empty live case.
    unreadable: tuple[str, str] | None = None
    # Where the record is in the source, for messages about it (`row 17` of a sheet); None: its page
    # and place on the page are used.
    position: str | None = None


@dataclass(frozen=True)
class Page:
    """A batch of raw records and the cursor value reached once this page is stored.

    The pipeline commits the page's records and `cursor` in one transaction; a source never commits
    anything itself. `cursor` is an opaque string owned by the source (usually JSON); None means the
    source has no incremental state (a full re-read every run).
    """

    records: list[RawRecord]
    cursor: str | None = None
    number: int = 0
    # Records the source read but cannot pass on (a spreadsheet cell longer than a cell can be):
    # stored as rejections with the page, so the rest of the page and the cursor go on.
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class CaseRecord:
    """A case mapped to the common schema: `fields` keys are common-schema field names.

    Values are normalised: codes as strings (HTCDS value names), multi-selects as sorted lists of
    codes, dates as ISO `YYYY-MM-DD` strings, numbers as int/float, checkboxes as bool; None when
    unknown. Deleted records carry no fields.
    """

    source: str
    record_id: str
    fields: dict[str, Any]
    updated_at: datetime | None = None
    deleted: bool = False
    # The canonical JSON of the fields (`connector.case_json`), when it was made ahead: the mapping
    # worker sends this text instead of the fields, and the store keeps it as it is.
    data: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A value that could not be mapped. The run goes on; the field is stored as unknown (None).

    `value` is already redacted for direct identifiers and free text (see `mapping.redact`), so a
    rejection can be stored, logged and shown without leaking personal data.
    """

    source: str
    record_id: str
    field: str
    value: str | None
    reason: str


@dataclass(frozen=True)
class Problem:
    """Something `check` found that a user must fix, with where it is and what to do."""

    where: str
    message: str
    severity: str = "error"  # "error" stops a run; "warning" is reported only; "info" is a fact (a server version)
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


@dataclass
class MappedPage:
    """A page after mapping: the cases to upsert, ids to delete, rejections, and the page's cursor."""

    cases: list[CaseRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    cursor: str | None = None
    number: int = 0
