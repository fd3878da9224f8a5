"""What a cell of a published column may hold: a closed set or a strict pattern, per column.

Why: a column without a list of allowed values is a channel for anything (names, phone numbers,
`=HYPERLINK(...)` formulas that a spreadsheet runs when the central team opens the CSV). So every
release-view column gets a rule, derived from the common schema and never from the upload:

- a column with `values` (flags, coded columns): those values;
- a quasi-identifier: every label at every level of its hierarchy (a release may mix levels in one
  column, after local suppression), exact strings only (`31`, not `31.0` or ` 31`);
- a `concat` column: the names of its member flags joined with `;`, each at most once;
- a `join` column: codes of its field's code list joined with `;`, each at most once;
- an `unavailable` column: always blank;
- `Datasource` (rule `{config: datasource}`): the values the receiver's partner registry holds for
  the uploading partner, not whatever the upload says;
- any other column: nothing but blank and `*` (a column the receiver has no rule for is closed).

Every column also allows blank (NA) and `*` (a suppressed cell). Refusals name the column and a
count, never a value: a refused value may be exactly the personal data the check exists to stop.

Separately, `formula_cells` and `escape_csv` guard spreadsheet formula injection: no served cell
may begin with `=`, `+`, `-`, `@`, tab or carriage return unless it is a number (OWASP, "CSV
Injection"); the receiver refuses such cells at upload and escapes them again when serving.

    rules = column_rules(load_schema(), datasources={"Case Management"})
    cell_problems(header, rows, rules)     # ["column Datasource: 3 cells are not allowed values"]
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Mapping, Sequence

from connector.schema import Schema, ViewColumn
from privacy.hierarchies import BUILTIN, DEFAULT_COLUMN_HIERARCHIES, TOP, Hierarchy, HierarchyError, load_builtin
from privacy.series import PART_COLUMN, PART_LABEL

SUPPRESSED = TOP
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^(0|[1-9][0-9]{0,17})$")
_ENUMERABLE = 100_000  # interval domains up to this size are listed label by label
# A quick pre-filter on raw CSV bytes: a field starting with a formula character (after an
# optional opening quote). Only when it matches are the bytes parsed and rewritten.
_FORMULA_BYTES = re.compile(rb'(?:^|[,\n])"?[=+\-@\t\r]')


@dataclass(frozen=True)
class ColumnRule:
    """The allowed cells of one column: `allows(cell)`, and a few words for the refusal."""

    column: str
    describe: str
    allows: Callable[[str], bool]


def is_formula(cell: str) -> bool:
    """Whether a spreadsheet would read the cell as a formula: it begins with = + - @ tab or CR and
    is not a plain number."""
    return cell.startswith(FORMULA_START) and not _NUMBER.match(cell)


def escape_cell(cell: str) -> str:
    """The cell with a leading `'` when it would run as a formula (OWASP's escape)."""
    return "'" + cell if is_formula(cell) else cell


def escape_csv(data: bytes) -> bytes:
    """CSV bytes with every formula cell escaped; the same bytes when there is none (the normal
    case: the upload checks refuse such cells, so this only guards data stored before them)."""
    if not _FORMULA_BYTES.search(data):
        return data
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in reader:
        writer.writerow([escape_cell(cell) for cell in row])
    return buffer.getvalue().encode("utf-8")


def formula_cells(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """One reason per column holding formula cells: the column and how many, never the cells."""
    counts = [0] * len(header)
    for row in rows:
        for j, cell in enumerate(row[: len(header)]):
            if cell and is_formula(cell):
                counts[j] += 1
    return [f"column {name}: {n} cell(s) begin with =, +, -, @, tab or carriage return and are not numbers (spreadsheet formulas)"
            for name, n in zip(header, counts) if n]


# -- allowed values per column ------------------------------------------------------------------


@lru_cache(maxsize=None)
def hierarchy_labels(name: str) -> frozenset[str]:
    """Every label of a packaged hierarchy at every level (level 0 included, `*` included), for a
    column that may mix levels. Interval hierarchies are enumerated over their whole domain."""
    hierarchy = load_builtin(name)
    labels = {TOP}
    if hierarchy.paths is not None:
        for value, path in hierarchy.paths.items():
            labels.update((value, *path))
        return frozenset(labels)
    if hierarchy.upper - hierarchy.lower <= _ENUMERABLE:
        for number in range(hierarchy.lower, hierarchy.upper + 1):
            labels.update(hierarchy.path(str(number)))
        return frozenset(labels)
    for cuts in hierarchy.cuts:  # open domain: one representative per band gives every band label
        for cut in cuts:
            labels.update(hierarchy.path(str(max(cut, hierarchy.lower)))[1:])
    return frozenset(labels)


def _hierarchy_allows(hierarchy: Hierarchy, labels: frozenset[str]) -> Callable[[str], bool]:
    if hierarchy.paths is not None or hierarchy.upper - hierarchy.lower <= _ENUMERABLE:
        return labels.__contains__

    def allows(cell: str) -> bool:  # an open interval domain: a canonical integer with a place, or a band
        if cell in labels:
            return True
        if not _INTEGER.match(cell):
            return False
        try:
            hierarchy.path(cell)
        except HierarchyError:
            return False
        return True

    return allows


def _members(allowed: frozenset[str]) -> Callable[[str], bool]:
    """`a;b;c` with each part allowed and none twice."""

    def allows(cell: str) -> bool:
        parts = cell.split(";")
        return len(set(parts)) == len(parts) and all(part in allowed for part in parts)

    return allows


def _rule(column: ViewColumn, schema: Schema, datasources: frozenset[str]) -> ColumnRule:
    rule = column.rule if isinstance(column.rule, dict) else {}
    if column.role == "quasi_identifier":  # before `values`: a release may publish any level of it
        name = column.hierarchy or DEFAULT_COLUMN_HIERARCHIES.get(column.name)
        if name in BUILTIN:
            hierarchy = load_builtin(name)
            return ColumnRule(column.name, f"a label of hierarchy {name} at one of its levels", _hierarchy_allows(hierarchy, hierarchy_labels(name)))
        return ColumnRule(column.name, "nothing but blank or * (no packaged hierarchy)", lambda _cell: False)
    if column.values:
        allowed = frozenset(str(v) for v in column.values)
        return ColumnRule(column.name, f"one of its {len(allowed)} codes", allowed.__contains__)
    if "concat" in rule:
        return ColumnRule(column.name, "names of its flag columns joined with ';'", _members(frozenset(map(str, rule["concat"]))))
    if "join" in rule:
        spec = schema.fields.get(str(rule["join"]))
        codes = frozenset(schema.codelists.get(spec.codelist or "", {})) if spec else frozenset()
        return ColumnRule(column.name, f"codes of {rule['join']} joined with ';'", _members(codes))
    if column.name == PART_COLUMN:  # the release series' part label: digits, a dash, 8 hex digits
        return ColumnRule(column.name, "a release part label", lambda cell: bool(PART_LABEL.match(cell)))
    if rule.get("config") == "datasource":
        return ColumnRule(column.name, "a Datasource the receiver registered for this partner", datasources.__contains__)
    return ColumnRule(column.name, "nothing but blank or * (no closed set of values)", lambda _cell: False)


def column_rules(schema: Schema, datasources: Iterable[str]) -> dict[str, ColumnRule]:
    """A rule for every release-view column; `datasources` come from the partner registry."""
    allowed = frozenset(datasources)
    return {name: _rule(column, schema, allowed) for name, column in schema.view.items()}


def vp_column_rules(schema: Schema, datasources: Iterable[str]) -> dict[str, ColumnRule]:
    """A rule for every column of the victim-perpetrator table (its view, and the part label)."""
    allowed = frozenset(datasources)
    rules = {name: _rule(column, schema, allowed) for name, column in schema.vp_view.items()}
    rules[PART_COLUMN] = _rule(schema.view[PART_COLUMN], schema, allowed)
    return rules


def cell_problems(header: Sequence[str], rows: Sequence[Sequence[str]], rules: dict[str, ColumnRule], roles: Mapping[str, str] | None = None) -> list[str]:
    """One reason per column with cells outside its rule (column, count, what it allows), plus the
    formula cells; a column without a rule is refused whole (with its schema role, if it has one:
    `direct_identifier` says more to the partner than "unknown")."""
    reasons: list[str] = []
    for j, name in enumerate(header):
        rule = rules.get(name)
        if rule is None:
            role = (roles or {}).get(name)
            reasons.append(f"column {name}: {f'role {role}, ' if role else ''}not a column of the common release schema, so no value of it is allowed")
            continue
        bad = sum(1 for row in rows if j < len(row) and row[j] not in ("", SUPPRESSED) and not rule.allows(row[j]))
        if bad:
            reasons.append(f"column {name}: {bad} cell(s) are not allowed values (it holds {rule.describe}, blank or *)")
    return reasons + formula_cells(header, rows)


__all__ = ["vp_column_rules", "ColumnRule", "FORMULA_START", "cell_problems", "column_rules", "escape_cell", "escape_csv", "formula_cells", "hierarchy_labels", "is_formula"]
