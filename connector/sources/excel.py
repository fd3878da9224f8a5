"""Excel workbooks and CSV files kept by hand, such as the HTCDS Excel template v2.0.

A spreadsheet has no change times and no deletions, so this source reads the whole file and says so
(`full_snapshot = True`): the pipeline marks records absent from a complete read as deleted. The
cursor is the file's SHA-256 plus the last row a page reached, so an unchanged file costs one hash
and yields nothing, and a read interrupted mid-file resumes after the last committed row.

Config:
    sources:
      - id: shelter-sheet
        type: excel                # or csv
        mapping: excel_htcds
        options: {path: data/cases.xlsx}

Workbooks are read with python-calamine (Rust's calamine): one pass over the sheet's XML, about a
tenth of openpyxl read-only's CPU time (which also parsed the whole sheet a second time to size it
when the file has no `<dimension>`; measured on 100,000 generated cases: 2 s against 26 s). The
price is memory: calamine holds the sheet's cells (about 3 KiB per row of the template, 340 MiB
at 100,000 rows) while rows are converted to Python one at a time. CSV is streamed with `csv`.
The field-name row is found, not assumed: the first of the top rows whose cells look like field
names (`prs_FirstName`), which in the template is the hidden row 1. A column without a field name
is named by its label in the row below (the template's 'Reason for Outgoing Referral'). Rows with
nothing but an id (the template ships with 1000 pre-numbered rows) are skipped.

Perpetrators and events: the template has no columns for them, so the packaged `excel_htcds`
mapping gives none. Extra columns a partner adds (one perpetrator's `per_Gender`, `per_RoleInProcess`
... per row) reach the mapping like every other column; `mappings/excel_htcds.yaml` shows the
`ext_Perpetrators: {from: ., each: ...}` rule that maps them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar

from openpyxl.utils import column_index_from_string, get_column_letter
from pydantic import Field, field_validator
from python_calamine import CalamineError, CalamineWorkbook, PasswordError, XmlError, ZipError

from connector.records import Page, Problem, RawRecord, Rejection
from connector.sources import register
from connector.sources.base import FieldInfo, Source, SourceError, SourceOptions

HEADER_SEARCH_ROWS = 20
FIELD_NAME = re.compile(r"^[a-z]{2,4}_[A-Za-z][A-Za-z0-9_]*$")
COLUMN_LETTERS = re.compile(r"^[A-Z]{1,3}$")
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xltx", ".xltm")
# What reading a damaged workbook raises (a sheet's XML cut short, a bad zip entry): a source
# failure (exit 3) naming the file, never a traceback. ParseError and lxml's are SyntaxErrors.
# Excel's own limit on a cell's text; a longer CSV cell rejects its record, not the file.
MAX_CELL_CHARS = 32_767
# Python's csv module refuses fields over 128 KiB by default and fails the whole file; a field up
# to this size is read so that only its record is rejected.
CSV_FIELD_LIMIT = 64 * 1024 * 1024

# The named columns of "HTCDS Excel Spreadsheet v2.0.xlsx" (row 1), spelt as the template spells
# them, plus the label of its one unnamed column. `check` lists which of these a sheet lacks.
TEMPLATE_FIELDS: tuple[str, ...] = (
    "cas_CaseOwner", "prs_Salutation", "prs_FirstName", "prs_SecondName", "con_Consent", "prs_Birthdate",
    "prs_Gender", "prs_Citizenship", "prs_Title", "prs_Email", "prs_HomePhone", "prs_MobilePhone",
    "prs_MailingCity", "prs_MailingCountry", "prs_MailingState", "prs_MailingStreet", "prs_MailingPostalCode",
    "vic_TraffickingStatus", "vic_TraffickinStatusDecisionMakingOrg", "vic_MethodOfRecruitment",
    "vic_LocationOfRecruitment", "vic_MethodsOfControl", "vic_TypeOfExploitation", "vic_ForcedLabourIndustry",
    "vic_TypeOfSexExploitation", "vic_LocationOfExploitation", "cas_Status", "cas_ReferringOrganisation",
    "cas_IncomingReferralDate", "cas_ReferringPrimaryCaseWorker", "cas_ReasonForIncomingReferral",
    "cas_IncomingReferralDetails", "cas_ReferredOrganisation", "cas_ReferredPrimaryCaseWorker",
    "Reason for Outgoing Referral", "cas_OutgoingReferralDate", "cas_OutgoingReferralDetails",
    "cas_ReasonForCaseClosure",
)  # fmt: skip


class ExcelOptions(SourceOptions):
    path: str = Field(description="the .xlsx or .csv file; relative paths are relative to the config file")
    sheet: str | None = Field(None, description="worksheet name; default: the first sheet with a field-name row")
    page_size: int = Field(500, ge=1, le=100_000, description="records per page (one store transaction each)")
    id_column: str | None = Field(None, description="column letter (`A`) or field name holding the record id; default: the first column")
    required_columns: list[str] | None = Field(
        None, description="columns that must exist; default: the HTCDS template's columns when the sheet uses any of them"
    )
    encoding: str = Field("utf-8-sig", description="CSV only: text encoding")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV only: field separator")

    @field_validator("path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("path must name a file")
        return value


@dataclass(frozen=True)
class Layout:
    """Where the data is in a sheet: header row, column names (None: skipped), id column, first data row."""

    header_row: int
    names: tuple[str | None, ...]
    labels: tuple[str | None, ...]
    id_index: int
    first_data_row: int


def parse_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The cursor JSON {"sha256", "row", "end"}, or None when absent or not ours (then: read all)."""
    if not cursor:
        return None
    try:
        value = json.loads(cursor)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("sha256"), str) or not isinstance(value.get("row"), int):
        return None
    return value


def make_cursor(sha256: str, row: int, end: bool) -> str:
    return json.dumps({"sha256": sha256, "row": row, "end": end}, sort_keys=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text(value: Any) -> Any:
    """Cell value as the mapping expects it: datetime for dates, str otherwise, None for empty."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value if value.strip() else None
    return str(value)


def _looks_like_field_names(cells: list[Any]) -> bool:
    names = [c.strip() for c in cells if isinstance(c, str) and c.strip()]
    return len(names) >= 2 and sum(bool(FIELD_NAME.match(n)) for n in names) >= max(2, 0.6 * len(names))


def find_layout(rows: list[tuple[int, list[Any]]], id_column: str | None, where: str) -> Layout:
    """Find the field-name row among the top `rows` ((row number, cells) pairs) and name the columns.

    The field-name row is the first whose text cells are mostly `prefix_Name` identifiers; without
    one, the first non-empty row is the header. The row after it holds labels when its id cell is
    empty and it is mostly filled (the template's row 2), or when it is text over every column;
    its labels name columns that have no field name.
    """
    nonempty = [(n, cells) for n, cells in rows if any(_text(c) is not None for c in cells)]
    if not nonempty:
        raise SourceError(where, "the sheet is empty: no header row with field names found")
    header_at = next((i for i, (_, cells) in enumerate(nonempty) if _looks_like_field_names(cells)), 0)
    header_row, header = nonempty[header_at]
    width = max((len(cells) for _, cells in rows), default=0)
    header = list(header) + [None] * (width - len(header))
    names = [str(c).strip() if _text(c) is not None else None for c in header]

    id_index = _id_index(names, id_column, where)
    labels: list[str | None] = [None] * width
    first_data_row = header_row + 1
    following = [(n, cells) for n, cells in rows if n == header_row + 1]
    if following:
        cells = list(following[0][1]) + [None] * width
        named = [i for i, name in enumerate(names) if name and i != id_index]
        filled = [i for i in range(width) if i != id_index and isinstance(cells[i], str) and cells[i].strip()]
        texts_only = not any(isinstance(c, (date, datetime, int, float)) for c in cells[:width])
        no_id = _text(cells[id_index]) is None and len(filled) >= max(1, len(named) // 2)
        all_filled = texts_only and set(named) <= set(filled)  # a label over every column, the id's too
        if (no_id or all_filled) and not _looks_like_field_names(cells):
            labels = [c.strip() if isinstance(c, str) and c.strip() else None for c in cells[:width]]
            first_data_row = header_row + 2
    for i in range(width):
        if i != id_index and names[i] is None and labels[i]:
            names[i] = labels[i]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name is None or i == id_index:
            continue
        if name in seen:
            raise SourceError(f"{where}, column {get_column_letter(i + 1)}", f"column name {name!r} appears twice in the header row {header_row}")
        seen.add(name)
    return Layout(header_row, tuple(names), tuple(labels), id_index, first_data_row)


def _id_index(names: list[str | None], id_column: str | None, where: str) -> int:
    if id_column is None:
        return 0
    if id_column in names:
        return names.index(id_column)
    if COLUMN_LETTERS.match(id_column):
        index = column_index_from_string(id_column) - 1
        if index < max(len(names), 1):
            return index
    raise SourceError(where, f"id column {id_column!r} not found (give a column letter such as A, or a name from the header row)")


@register
class ExcelSource(Source):
    """An .xlsx workbook (or, by extension, a .csv file) laid out one record per row under a header."""

    type_name: ClassVar[str] = "excel"
    Options: ClassVar[type[SourceOptions]] = ExcelOptions
    full_snapshot: ClassVar[bool] = True

    options: ExcelOptions

    @property
    def path(self) -> Path:
        return self.job.resolve_path(self.options.path)

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() in (".csv", ".txt", ".tsv")

    def _where(self, sheet: str | None = None) -> str:
        where = f"source {self.id}: {self.path}"
        return f"{where}, sheet {sheet!r}" if sheet else where

    # -- reading ---------------------------------------------------------------------------------

    def _open_rows(self) -> tuple[Iterator[tuple[int, list[Any]]], Any, str | None]:
        """(numbered rows, closer, sheet name) for the configured sheet or the first with a header."""
        path = self.path
        if not path.exists():
            raise SourceError(self._where(), "file not found (check `options.path`; it is relative to the config file)")
        if not path.is_file():
            raise SourceError(self._where(), "not a file")
        if self.is_csv:
            return self._csv_rows(path), None, None
        try:
            workbook = CalamineWorkbook.from_path(str(path))
        except (CalamineError, PasswordError, XmlError, ZipError, OSError, ValueError) as exc:
            raise SourceError(self._where(), f"cannot open as an Excel workbook ({type(exc).__name__}: {exc}); is it a valid .xlsx file?") from None
        try:
            sheets = list(workbook.sheet_names)
            if not sheets:
                raise SourceError(self._where(), "the workbook has no sheets")
            if self.options.sheet is not None:
                if self.options.sheet not in sheets:
                    raise SourceError(self._where(), f"no sheet {self.options.sheet!r}; sheets: {', '.join(sheets)}")
                name, sheet = self.options.sheet, self._load_sheet(workbook, self.options.sheet)
            else:
                name, sheet, first = sheets[0], None, None
                for candidate in sheets:  # each sheet is loaded once: the one chosen is the one read
                    loaded = self._load_sheet(workbook, candidate)
                    first = loaded if first is None else first
                    if _has_field_names(_numbered_rows(loaded, HEADER_SEARCH_ROWS)):
                        name, sheet = candidate, loaded
                        break
                sheet = first if sheet is None else sheet  # no field-name row anywhere: the first sheet
            return _numbered_rows(sheet), workbook, name
        except Exception:
            workbook.close()
            raise

    def _load_sheet(self, workbook: CalamineWorkbook, name: str) -> Any:
        try:
            return workbook.get_sheet_by_name(name)
        except (CalamineError, XmlError, ZipError, ValueError) as exc:
            raise SourceError(self._where(name), f"cannot read the sheet ({type(exc).__name__}); is the file complete? Save it again from Excel") from None

    def _csv_rows(self, path: Path) -> Iterator[tuple[int, list[Any]]]:
        if csv.field_size_limit() < CSV_FIELD_LIMIT:
            csv.field_size_limit(CSV_FIELD_LIMIT)
        try:
            with path.open("r", encoding=self.options.encoding, newline="") as handle:
                for number, cells in enumerate(csv.reader(handle, delimiter=self.options.delimiter), start=1):
                    yield number, [c if c.strip() else None for c in cells]
        except UnicodeDecodeError as exc:
            raise SourceError(self._where(), f"not {self.options.encoding} text at byte {exc.start} (set `options.encoding`)") from None
        except csv.Error as exc:
            raise SourceError(self._where(), f"not a valid CSV file ({exc})") from None

    def _layout(self, rows: Iterator[tuple[int, list[Any]]], sheet: str | None) -> tuple[Layout, list[tuple[int, list[Any]]]]:
        """Read the top rows, find the layout; return it with the rows read so far (to replay)."""
        top: list[tuple[int, list[Any]]] = []
        for item in rows:
            top.append(item)
            if len(top) >= HEADER_SEARCH_ROWS:
                break
        layout = find_layout(top, self.options.id_column, self._where(sheet))
        missing = self._missing_required(layout)
        if missing:
            raise SourceError(self._where(sheet), f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} in header row {layout.header_row}")
        return layout, top

    def _required(self, layout: Layout) -> list[str]:
        if self.options.required_columns is not None:
            return list(self.options.required_columns)
        names = set(layout.names)
        return list(TEMPLATE_FIELDS) if names & set(TEMPLATE_FIELDS) else []

    def _missing_required(self, layout: Layout) -> list[str]:
        names = set(layout.names)
        return [c for c in self._required(layout) if c not in names]

    def pages(self, cursor: str | None) -> Iterator[Page]:
        """Pages of rows after the cursor's row when the file is unchanged; all rows otherwise.

        Nothing is yielded for an unchanged file that was read to the end. Each page's cursor is
        {"sha256", "row": last row of the page, "end": whether the page ends the file}. A file
        without data rows yields one empty page with `end` true, so its emptiness is committed.
        """
        self.complete_read = False
        sha256 = file_sha256(self.path) if self.path.is_file() else ""
        state = parse_cursor(cursor)
        resume_after = 0
        if state is not None and state["sha256"] == sha256:
            if state.get("end"):
                return
            resume_after = state["row"]
        rows, workbook, sheet = self._open_rows()
        try:
            layout, top = self._layout(rows, sheet)
            self.stats.requests += 1
            yield from self._paged(layout, _chain(top, rows), sha256, resume_after, sheet)
            # Only a read of the whole file from its first row may mark absent records as deleted.
            self.complete_read = resume_after == 0
        finally:
            if workbook is not None:
                workbook.close()

    def _paged(self, layout: Layout, rows: Iterator[tuple[int, list[Any]]], sha256: str, resume_after: int, sheet: str | None) -> Iterator[Page]:
        size = self.options.page_size
        pending: list[RawRecord] = []
        rejected: list[Rejection] = []
        pending_row = resume_after
        number = 0
        for row_number, cells in rows:
            if row_number < layout.first_data_row or row_number <= resume_after:
                continue
            record = self._record(layout, row_number, cells)
            if record is None:
                continue
            if len(pending) >= size:
                yield Page(pending, make_cursor(sha256, pending_row, False), number, rejections=rejected)
                number += 1
                pending, rejected = [], []
            if isinstance(record, Rejection):
                rejected.append(record)
            else:
                pending.append(record)
            pending_row = row_number
        yield Page(pending, make_cursor(sha256, pending_row, True), number, rejections=rejected)

    def _record(self, layout: Layout, row_number: int, cells: list[Any]) -> RawRecord | Rejection | None:
        """The row as a record; a Rejection of the row when a cell is longer than a cell can be
        (only a CSV can hold one); None for an empty row."""
        fields: dict[str, Any] = {}
        present = False
        too_long: tuple[str, int] | None = None
        for i, name in enumerate(layout.names):
            if name is None or i == layout.id_index:
                continue
            value = _text(cells[i]) if i < len(cells) else None
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                too_long = too_long or (name, len(value))
            fields[name] = value
            present = present or value is not None
        if not present:
            return None  # empty, or only a pre-printed row number
        record_id = _text(cells[layout.id_index]) if layout.id_index < len(cells) else None
        if isinstance(record_id, datetime):
            record_id = record_id.isoformat()
        record_id = str(record_id).strip() if record_id is not None else f"row-{row_number}"
        if too_long is not None:
            name, length = too_long
            reason = f"a cell longer than the {MAX_CELL_CHARS:,} characters a spreadsheet cell holds; the row is not stored"
            return Rejection(self.id, record_id, name, f"row {row_number}: {length:,} characters", reason)
        return RawRecord(record_id=record_id, fields=fields, position=f"row {row_number}")

    # -- check and fields --------------------------------------------------------------------------

    def _read_layout(self) -> tuple[Layout, str | None]:
        rows, workbook, sheet = self._open_rows()
        try:
            top = [item for _, item in zip(range(HEADER_SEARCH_ROWS), rows)]
            return find_layout(top, self.options.id_column, self._where(sheet)), sheet
        finally:
            if workbook is not None:
                workbook.close()

    def fields(self) -> list[FieldInfo]:
        """The columns found under the header, with the label row's text where there is one."""
        layout, _ = self._read_layout()
        return [
            FieldInfo(name=name, label=layout.labels[i])
            for i, name in enumerate(layout.names)
            if name is not None and i != layout.id_index
        ]

    def check(self) -> list[Problem]:
        """The file opens, a field-name row is found, and the required (template) columns are there."""
        try:
            layout, sheet = self._read_layout()
        except SourceError as exc:
            return [Problem(exc.where, exc.what, hint="fix `options` of this source or the file")]
        problems: list[Problem] = []
        missing = self._missing_required(layout)
        if missing:
            problems.append(
                Problem(
                    self._where(sheet),
                    f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} in header row {layout.header_row}",
                    hint="add the columns, or list the ones this sheet has in `options.required_columns`",
                )
            )
        return problems


def _numbered_rows(sheet: Any, limit: int | None = None) -> Iterator[tuple[int, list[Any]]]:
    """(row number, cells) from a calamine sheet, numbered and aligned as in the file. python-calamine
    yields rows from the sheet's first row but cells from its first used column, so the columns
    before it are put back (the tests pin this); empty cells are None, as openpyxl gave them."""
    lead = [None] * ((sheet.start or (0, 0))[1])
    for number, cells in enumerate(sheet.iter_rows(), start=1):
        if limit is not None and number > limit:
            return
        yield number, lead + [None if c == "" else c for c in cells]


def _has_field_names(rows: Iterator[tuple[int, list[Any]]]) -> bool:
    return any(_looks_like_field_names(cells) for _, cells in rows)


def _chain(first: list[tuple[int, list[Any]]], rest: Iterator[tuple[int, list[Any]]]) -> Iterator[tuple[int, list[Any]]]:
    yield from first
    yield from rest


@register
class CsvSource(ExcelSource):
    """The same, for a CSV export (`type: csv`): the header is the field-name row."""

    type_name: ClassVar[str] = "csv"

    @property
    def is_csv(self) -> bool:
        return True


__all__ = ["CsvSource", "ExcelOptions", "ExcelSource", "TEMPLATE_FIELDS", "find_layout", "parse_cursor"]
