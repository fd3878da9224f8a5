"""The release gate: the only way to create a `Release`, and so the only way anything is published.

Why re-check: protection code can have bugs, configs can be wrong, and a table can be changed after
it was protected. So the gate serialises the table to the exact CSV bytes that will be published,
parses THOSE BYTES back (every cell a string, NA as empty), and checks the guarantees on what it
parsed, knowing nothing of how the table was made:

- the table is non-empty and every column has a known disclosure role;
- no column has role `direct_identifier` or `free_text`;
- k-anonymized releases: every row's combination of ALL published values occurs at least
  `privacy["k"]` times (an empty cell and a suppressed `*` cell are values). The attacker we
  protect against knows everything a release could show about a victim, so no column is left out
  of the count; and with the previous release of the series (`previous`), the rows added and the
  rows removed since then each meet the same floor on their own (`privacy.series`);
- l-diversity on meanings, when the record asks for it: within every class of rows sharing their
  quasi-identifiers, each named sensitive fact shows >= l distinct values and none of its flags is
  1 in every row that shows it;
- synthetic releases: every combination of up to `reporting_length` published values, and the
  full quasi-identifier combination, occurs at least `resolution` times; the same for a further
  table (the victim-perpetrator one), whose epsilon must be a recorded part of the release's
  `epsilon` (`epsilon_parts`), so the budget check counts both tables, and whose per-row epsilon
  and delta must keep a victim's rows together within it (group privacy);
- `privacy["records_out"]` equals the number of rows parsed.

A failure raises `GateRefused` with one line per reason. `Release` refuses to be constructed with
anything but the gate's seal, an HMAC of the checked bytes and record under a key made at import,
so neither `Release(...)` nor `dataclasses.replace(release, data_csv=...)` can make one.

    release = admit(protected.table, protected.privacy, roles=schema.view_roles())
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import itertools
import json
import math
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from connector.schema import FORBIDDEN_ROLES, ROLES
from privacy.cells import column_texts
from privacy.series import PART_COLUMN, PART_LABEL, check_series

_KEY = secrets.token_bytes(32)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SUPPRESSED_CELL = "*"


class GateRefused(Exception):
    """The gate refused a release; `reasons` has one line per failed check."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("release refused: " + "; ".join(self.reasons))


def _seal(data_csv: bytes, columns: tuple[str, ...], row_count: int, privacy: Mapping[str, Any], tables: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    message = json.dumps([list(columns), row_count, privacy], sort_keys=True).encode("utf-8") + b"\x00" + data_csv
    digest = hmac.new(_KEY, message, hashlib.sha256)
    for name, data in tables:
        digest.update(b"\x00" + name.encode() + b"\x00" + hashlib.sha256(data).digest())
    return digest.digest()


@dataclass(frozen=True)
class ExtraTable:
    """A second table of the release (CTDC's victim-perpetrator table), checked with the first.

    `owners` (in-process only, never published) names the victim each row of `table` belongs to, for
    the rows the gate can count per victim (a new part's); rows without an owner (parts published
    before, byte for byte as checked then) are counted as rows."""

    table: pd.DataFrame
    roles: Mapping[str, str]
    domains: Mapping[str, frozenset[str]] = field(default_factory=dict)
    previous: bytes | None = None
    owners: tuple[pd.DataFrame, tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Release:
    """Bytes that passed the gate, with their privacy record. Made only by `admit`."""

    data_csv: bytes
    columns: tuple[str, ...]
    row_count: int
    privacy: dict[str, Any]
    _seal: bytes = field(default=b"", repr=False, compare=False)
    tables: tuple[tuple[str, bytes], ...] = ()  # further tables (file name, CSV bytes), checked too

    def __post_init__(self) -> None:
        if not hmac.compare_digest(self._seal, _seal(self.data_csv, self.columns, self.row_count, self.privacy, self.tables)):
            raise TypeError("a Release is made only by privacy.gate.admit, which checks its privacy guarantees")


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as deterministic CSV: columns in the given order, rows sorted by all columns (as
    strings), UTF-8, '\\n' line ends, NA as an empty field."""
    columns = [str(c) for c in table.columns]
    cells = [_strings(table.iloc[:, j]) for j in range(table.shape[1])]
    rows = sorted(zip(*cells)) if cells else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _strings(series: pd.Series) -> list[str]:
    fast = column_texts(series, "")
    if fast is not None:
        return fast.tolist()
    missing = series.isna().to_numpy()
    values = series.astype(object).to_numpy()
    return ["" if gone else str(value) for value, gone in zip(values, missing)]


def parse_csv_bytes(data: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows of CSV bytes, every cell a string (an empty field is the empty string).

    Every byte is read back, as before; the text is decoded as it is read (not copied whole), and
    equal cells of a column share one string, so 100,000 rows of codes cost pointers rather than
    a new string per cell (issue #16: a release within 1 GiB). A ragged row is kept as it is read.
    """
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""))
    header = next(reader, None)
    if header is None:
        return [], []
    shared: list[dict[str, str]] = [{} for _ in header]
    width = len(header)
    rows: list[list[str]] = []
    for row in reader:
        rows.append([seen.setdefault(cell, cell) for seen, cell in zip(shared, row)] if len(row) == width else row)
    return header, rows


def admit(
    table: pd.DataFrame,
    privacy: Mapping[str, Any],
    *,
    roles: Mapping[str, str],
    domains: Mapping[str, frozenset[str]] | None = None,
    previous: bytes | None = None,
    previous_k: int | None = None,
    extra: Mapping[str, ExtraTable] | None = None,
) -> Release:
    """Serialise, re-parse and check; return the Release or raise GateRefused with every reason.

    `domains` (default: the packaged release view's, `privacy.view.value_domains`) lists the tokens
    each coded column may hold; a cell outside it is refused as possible free text. `previous` is
    the data.csv of the series' last published release, for the difference check, and
    `previous_k` the k it was published under.
    """
    reasons: list[str] = []
    columns = tuple(str(c) for c in table.columns)
    if len(set(columns)) != len(columns):
        raise GateRefused([f"duplicate column names: {sorted(c for c, n in Counter(columns).items() if n > 1)}"])
    try:
        record = json.loads(json.dumps(dict(privacy)))
    except (TypeError, ValueError) as exc:
        raise GateRefused([f"the privacy record is not JSON-serialisable ({exc})"]) from None
    data = to_csv_bytes(table)
    header, rows = parse_csv_bytes(data)
    try:
        parsed = pd.DataFrame(rows, columns=header, dtype=object) if header else pd.DataFrame()
    except (ValueError, AssertionError):
        raise GateRefused(["the CSV does not read back as a table (ragged rows)"]) from None

    if tuple(header) != columns:
        reasons.append(f"the CSV header {header} does not match the table's columns {list(columns)}")
    # The bytes must read back as exactly the table: no ragged row, no line break or control
    # character inside a cell (a reader could split it differently), as many rows as the table.
    ragged = sum(1 for row in rows if len(row) != len(header))
    if ragged:
        reasons.append(f"{ragged} rows of the CSV do not have {len(header)} cells")
    elif header and len(rows) != len(table):
        reasons.append(f"the CSV reads back as {len(rows)} rows, the table has {len(table)}")
    controls = [str(c) for c in table.columns if any(_CONTROL.search(cell) for cell in _strings(table[c]))]
    if controls:
        reasons.append(f"columns {', '.join(controls)} hold line breaks or control characters")
    if not header or not rows:
        reasons.append("the release is empty: no rows to publish")
    reasons += _role_problems(header, roles)

    if domains is None:
        from connector.schema import load_schema
        from privacy.view import value_domains

        domains = value_domains(load_schema())
    # A column the record names as a quasi-identifier holds generalized labels ("*"), and k covers it.
    named_qis = set(record.get("quasi_identifiers") or [])
    reasons += _check_domains(parsed, {c: d for c, d in domains.items() if c not in named_qis})
    if PART_COLUMN in parsed.columns:
        odd = int((~parsed[PART_COLUMN].map(lambda v: v == "" or bool(PART_LABEL.match(v)))).sum())
        if odd:
            reasons.append(f"column {PART_COLUMN}: {odd} cells are not part labels (digits, a dash and 8 hex digits)")

    method = record.get("method")
    if method == "k_anonymity":
        reasons += _check_k_anonymity(parsed, record, roles)
        if previous is not None and not reasons and isinstance(record.get("k"), int):
            previous_header, previous_rows = parse_csv_bytes(previous)
            reasons += check_series(previous_header or None, previous_rows, header, rows, int(record["k"]), previous_k)
    elif method == "synthetic":
        reasons += _check_synthetic(parsed, record, roles)
    else:
        reasons.append(f"privacy method {method!r} is not one the gate knows (k_anonymity, synthetic)")
    if record.get("records_out") != len(rows):
        reasons.append(f"the privacy record says records_out={record.get('records_out')!r} but the release has {len(rows)} rows")

    if reasons:
        raise GateRefused(reasons)
    tables: list[tuple[str, bytes]] = []
    for name, spec in sorted((extra or {}).items()):
        table_bytes, table_reasons = _check_extra(name, spec, record, previous_k)
        reasons += table_reasons
        tables.append((name, table_bytes))
    if reasons:
        raise GateRefused(reasons)
    return Release(data, columns, len(rows), record, _seal(data, columns, len(rows), record, tuple(tables)), tuple(tables))


def _role_problems(header: list[str], roles: Mapping[str, str]) -> list[str]:
    """A column with no known disclosure role, or one whose role never leaves the partner."""
    reasons = []
    for column in header:
        role = roles.get(column)
        if role not in ROLES:
            reasons.append(f"column {column}: no known disclosure role")
        elif role in FORBIDDEN_ROLES:
            reasons.append(f"column {column}: role {role} never leaves the partner")
    return reasons


def _check_extra(name: str, spec: ExtraTable, record: Mapping[str, Any], previous_k: int | None) -> tuple[bytes, list[str]]:
    """A further table, on its bytes: roles, codes, control characters, every whole row >= k times,
    >= k distinct victims behind each row of the rows the caller knows the victims of, and the
    difference from its previous version. An empty table (no perpetrator shown) passes."""
    reasons: list[str] = []
    data = to_csv_bytes(spec.table)
    header, rows = parse_csv_bytes(data)
    parsed = pd.DataFrame(rows, columns=header, dtype=object) if header else pd.DataFrame()
    if len(rows) != len(spec.table) or any(len(r) != len(header) for r in rows):
        reasons.append(f"{name}: the CSV does not read back as the table")
    reasons += [f"{name}: {r}" for r in _role_problems(header, spec.roles)]
    if any(_CONTROL.search(cell) for row in rows for cell in row):
        reasons.append(f"{name}: cells hold line breaks or control characters")
    reasons += [f"{name}: {r}" for r in _check_domains(parsed, spec.domains)]
    if record.get("method") == "synthetic":
        reasons += [f"{name}: {r}" for r in _check_synthetic_extra(name, parsed, record, spec.roles)]
    k = record.get("k")
    if isinstance(k, int) and len(parsed):
        reasons += [f"{name}: {r}" for r in _rare_combinations(parsed, list(parsed.columns), k, "k", what="published columns")]
        if spec.owners is not None:
            frame, owners = spec.owners
            cells = pd.DataFrame({c: _strings(frame[c]) for c in frame.columns})
            keys = cells.agg("\x1f".join, axis=1) if len(cells) else pd.Series([], dtype=object)
            victims = pd.Series(list(owners), index=cells.index, dtype=object).groupby(keys.to_numpy()).nunique() if len(cells) else pd.Series([], dtype=int)
            few = int((victims < k).sum())
            if few:
                reasons.append(f"{name}: {few} published rows come from fewer than k={k} victims (counted per victim, not per row)")
    if spec.previous is not None and isinstance(k, int):
        previous_header, previous_rows = parse_csv_bytes(spec.previous)
        reasons += [f"{name}: {r}" for r in check_series(previous_header or None, previous_rows, header, rows, k, previous_k)]
    return data, reasons


def _table_record(name: str, record: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """(key, record) of a further table in the privacy record: the entry whose `file` is `name`."""
    for key, value in record.items():
        if isinstance(value, Mapping) and value.get("file") == name:
            return str(key), value
    return None, {}


def _check_synthetic_extra(name: str, parsed: pd.DataFrame, record: Mapping[str, Any], roles: Mapping[str, str]) -> list[str]:
    """A further table of a synthetic release, as the first is checked: its own epsilon is a part of
    the release's (so the budget check counts it), it is counted per victim (`_per_victim_problems`),
    its row count is recorded, and every combination of its quasi-identifiers and of up to
    `reporting_length` of its values occurs >= `resolution` times."""
    key, table = _table_record(name, record)
    if key is None:
        return [f"the privacy record has no entry with file {name!r} (its epsilon, resolution and rows)"]
    reasons: list[str] = []
    epsilon = table.get("epsilon")
    parts = record.get("epsilon_parts") if isinstance(record.get("epsilon_parts"), Mapping) else {}
    if not _positive_number(epsilon) or not _number(parts.get(key)) or abs(parts[key] - epsilon) > 1e-9:
        reasons.append(f"its epsilon {epsilon!r} is not recorded as a part of the release's epsilon (epsilon_parts.{key})")
    if table.get("records_out") != len(parsed):
        reasons.append(f"the privacy record says records_out={table.get('records_out')!r} but the table has {len(parsed)} rows")
    reasons += _per_victim_problems(table)
    resolution, length = table.get("resolution"), table.get("reporting_length")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 2:
        return reasons + [f"the privacy record has no valid resolution (an integer >= 2): {resolution!r}"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        return reasons + [f"the privacy record has no valid reporting_length (an integer >= 1): {length!r}"]
    if len(parsed):
        named = [q for q in table.get("quasi_identifiers") or [] if q in parsed.columns]
        qis = [c for c in parsed.columns if roles.get(c) == "quasi_identifier" or c in named]
        reasons += _rare_combinations(parsed, qis, resolution, "resolution")
        reasons += rare_short_combinations(parsed, length, resolution)
    return reasons


def _per_victim_problems(table: Mapping[str, Any]) -> list[str]:
    """A further synthetic table has several rows per victim, and pac-synth's epsilon is per row: its
    record must say it read at most m rows of a victim, each with epsilon_row and delta_row such
    that a victim's m rows together stay within the table's (epsilon, delta) (group privacy:
    m * epsilon_row, m * e^((m-1) * epsilon_row) * delta_row), and the synthesizer's recorded
    epsilon, when recorded, must be epsilon_row. Checked here, from the record alone, so a wrong
    split (epsilon_row = epsilon) cannot be published under the table's epsilon."""
    m, epsilon, delta = table.get("max_perpetrators_per_victim"), table.get("epsilon"), table.get("delta")
    row_epsilon, row_delta = table.get("epsilon_per_row"), table.get("delta_per_row")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1 or not all(_positive_number(v) for v in (epsilon, delta, row_epsilon, row_delta)):
        return ["the privacy record does not say how it counts per victim (max_perpetrators_per_victim, epsilon and delta per row and in all)"]
    reasons = []
    if m * row_epsilon > epsilon * (1 + 1e-9):
        reasons.append(f"{m} rows of a victim with epsilon {row_epsilon:g} each cost more than its epsilon {epsilon:g}")
    if m * math.exp((m - 1) * row_epsilon) * row_delta > delta * (1 + 1e-9):
        reasons.append(f"{m} rows of a victim with delta {row_delta:g} each cost more than its delta {delta:g}")
    parameters = (table.get("synthesizer") or {}).get("parameters") if isinstance(table.get("synthesizer"), Mapping) else None
    if isinstance(parameters, Mapping) and "epsilon" in parameters and (not _number(parameters["epsilon"]) or abs(parameters["epsilon"] - row_epsilon) > 1e-9):
        reasons.append(f"the synthesizer ran with epsilon {parameters['epsilon']!r}, not the recorded {row_epsilon:g} per row")
    return reasons


def _check_k_anonymity(parsed: pd.DataFrame, record: Mapping[str, Any], roles: Mapping[str, str]) -> list[str]:
    reasons: list[str] = []
    k = record.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        return [f"the privacy record has no valid k (an integer >= 2): {k!r}"]
    if len(parsed) == 0:
        return reasons
    reasons += _rare_combinations(parsed, list(parsed.columns), k, "k", what="published columns")
    rule = record.get("l_diversity")
    if rule:
        qis = [c for c in parsed.columns if roles.get(c) == "quasi_identifier"]
        reasons += _check_l_diversity(parsed, qis, rule)
    return reasons


def _check_l_diversity(parsed: pd.DataFrame, qis: list[str], rule: Mapping[str, Any]) -> list[str]:
    """Each named fact (its columns) in each class of equal quasi-identifiers: >= l distinct shown
    values, and no flag that is 1 in every row showing the fact. Re-implemented here on purpose
    (plain Python over the parsed strings), independent of `privacy.kanon_full`."""
    facts, l = rule.get("facts"), rule.get("l")
    if not isinstance(facts, Mapping) or not facts or not isinstance(l, int) or isinstance(l, bool) or l < 2:
        return [f"l-diversity rule is not valid (facts: {{name: [columns]}}, l >= 2): {dict(rule)}"]
    reasons = []
    for name, columns in facts.items():
        columns = list(columns) if isinstance(columns, (list, tuple)) else []
        if not columns or any(c not in parsed.columns for c in columns):
            reasons.append(f"l-diversity fact {name!r}: its columns are not all in the release")
            continue
        seen: dict[tuple, list[tuple]] = {}
        qi_values = parsed[qis].itertuples(index=False, name=None) if qis else ((),) * len(parsed)
        for key, value in zip(qi_values, parsed[columns].itertuples(index=False, name=None)):
            if value[0] != SUPPRESSED_CELL:
                seen.setdefault(key, []).append(value)
        failing = 0
        for values in seen.values():
            certain = any(all(v[j] == "1" for v in values) for j in range(len(columns)))
            failing += len(set(values)) < l or certain
        if failing:
            reasons.append(f"{failing} quasi-identifier classes are not l-diverse (l={l}) in the meaning of {name}")
    return reasons


def _check_synthetic(parsed: pd.DataFrame, record: Mapping[str, Any], roles: Mapping[str, str]) -> list[str]:
    """A differentially private synthetic table, checked on the parsed bytes:

    - epsilon > 0 and 0 < delta < 1 are recorded, and the privacy budget the record carries
      (`budget.total`, `budget.spent_before`, read from the store's ledger) still holds this epsilon;
    - every combination of the quasi-identifiers (every `quasi_identifier` column plus any the record
      names; an empty cell is a value) occurs at least `resolution` times: synthetic rows can still
      single out a real person when they copy a rare combination, so the same floor as k applies.
    Identifier and free-text columns are refused for every method by `admit` itself.
    """
    reasons: list[str] = []
    epsilon, delta = record.get("epsilon"), record.get("delta")
    if not _positive_number(epsilon):
        reasons.append(f"the privacy record has no valid epsilon (a number > 0): {epsilon!r}")
    if not _positive_number(delta) or not delta < 1:
        reasons.append(f"the privacy record has no valid delta (0 < delta < 1): {delta!r}")
    parts = record.get("epsilon_parts")
    if parts is not None and (not isinstance(parts, Mapping) or not all(_positive_number(v) for v in parts.values())
                              or not _positive_number(epsilon) or abs(sum(parts.values()) - epsilon) > 1e-9):
        # the ledger and the budget check below charge `epsilon`: it must be every table's part
        reasons.append(f"the privacy record's epsilon {epsilon!r} is not the sum of its parts {parts!r}")
    budget = record.get("budget")
    if not isinstance(budget, Mapping) or not _positive_number(budget.get("total")) or not _number(budget.get("spent_before")):
        reasons.append("the privacy record has no privacy budget (budget.total and budget.spent_before from the store's ledger)")
    elif _positive_number(epsilon) and budget["spent_before"] + epsilon > budget["total"] + 1e-9:
        left = max(budget["total"] - budget["spent_before"], 0.0)
        reasons.append(f"epsilon {epsilon} exceeds the privacy budget left: {left:g} of {budget['total']:g} (spent {budget['spent_before']:g})")
    resolution = record.get("resolution")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 2:
        return reasons + [f"the privacy record has no valid resolution (an integer >= 2): {resolution!r}"]
    named = [q for q in record.get("quasi_identifiers", []) if q in parsed.columns]
    qis = [c for c in parsed.columns if roles.get(c) == "quasi_identifier" or c in named]
    if len(parsed) == 0:
        return reasons
    length = record.get("reporting_length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        return reasons + [f"the privacy record has no valid reporting_length (an integer >= 1): {length!r}"]
    reasons += _rare_combinations(parsed, qis, resolution, "resolution")
    return reasons + rare_short_combinations(parsed, length, resolution)


def rare_short_combinations(parsed: pd.DataFrame, length: int, floor: int) -> list[str]:
    """One reason if any combination of up to `length` published values (any columns; a blank is a
    value) occurs fewer than `floor` times: Synthetic Data Showcase's promise that rare attributes
    are never published, checked on every column, not only the quasi-identifiers."""
    codes, cards = _column_codes(parsed)
    varying = [j for j, card in enumerate(cards) if card > 1]  # a constant column adds nothing to a count
    rare_sets = 0
    smallest = None
    for size in range(1, min(length, len(varying)) + 1):
        for subset in itertools.combinations(varying, size):
            counts = _combination_counts(codes, cards, subset)
            low = counts[(counts > 0) & (counts < floor)]
            if len(low):
                rare_sets += 1
                smallest = int(low.min()) if smallest is None else min(smallest, int(low.min()))
    if not rare_sets:
        return []
    return [f"{rare_sets} sets of up to {length} columns have a combination of values occurring fewer than resolution={floor} times "
            f"(the rarest occurs {smallest} time(s)): a rare trait would be published"]


def _column_codes(parsed: pd.DataFrame) -> tuple[list[np.ndarray], list[int]]:
    codes, cards = [], []
    for column in parsed.columns:
        c, uniques = pd.factorize(parsed[column], use_na_sentinel=False)
        codes.append(c.astype(np.int64))
        cards.append(max(len(uniques), 1))
    return codes, cards


def _combination_counts(codes: list[np.ndarray], cards: list[int], subset: tuple[int, ...]) -> np.ndarray:
    key = np.zeros(len(codes[0]), dtype=np.int64)
    domain = 1
    for j in subset:
        key = key * cards[j] + codes[j]
        domain *= cards[j]
    if domain <= 4_000_000:
        return np.bincount(key, minlength=domain)
    return np.unique(key, return_counts=True)[1]


def _check_domains(parsed: pd.DataFrame, domains: Mapping[str, frozenset[str]]) -> list[str]:
    """Coded columns hold only their codes: anything else may be free text about a person."""
    reasons = []
    for column in parsed.columns:
        allowed = domains.get(column)
        if allowed is None:
            continue
        bad = sum(1 for cell in parsed[column] if cell and cell != SUPPRESSED_CELL and not set(str(cell).split(";")) <= allowed)
        if bad:
            reasons.append(f"column {column}: {bad} cells hold something other than its codes (free text is never published)")
    return reasons


def _rare_combinations(parsed: pd.DataFrame, qis: list[str], floor: int, name: str, what: str = "") -> list[str]:
    """One reason if any quasi-identifier combination occurs fewer than `floor` times.

    The reason names the columns and counts, never the values: a refusal travels to logs, the run
    record, notifications and the central receiver's answer, and the values of a rare combination
    are exactly what could single a person out.
    """
    sizes = parsed.groupby(qis, sort=True, dropna=False).size() if qis else pd.Series([len(parsed)])
    rare = sizes[sizes < floor]
    if not len(rare):
        return []
    return [
        f"{len(rare)} combinations of {what or ', '.join(qis) or '(no quasi-identifier)'} occur fewer than {name}={floor} times "
        f"({int(rare.sum())} records; the rarest occurs {int(rare.min())} time(s)); `preview` locally shows the levels and counts"
    ]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: Any) -> bool:
    return _number(value) and value > 0


__all__ = ["ExtraTable", "GateRefused", "Release", "admit", "parse_csv_bytes", "to_csv_bytes"]
