"""The release view: CTDC's column set, derived from mapped cases by the rules in `release_view.yaml`.

The privacy steps (k-anonymity, synthesis, the gate) work on this view, never on the common-schema
cases, so that what can leave the partner is decided by data in one file: a column that is not in
the view cannot be published. This module is the only interpreter of the view's rules; the codebook
describes the same rules in words with `describe_rule`, so the two cannot drift apart silently.

    cases = pandas.DataFrame([case.fields for case in snapshot])
    view = derive_release_view(cases, load_schema(), datasource="ngo-a")

Conventions the privacy module relies on: flags are Int64 1/0 with <NA> for unknown, strings are
pandas "string" dtype with <NA> for unknown, and the frame has exactly the requested view columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from privacy.hierarchies import load_builtin
from privacy.series import PART_COLUMN
from connector.schema import FORBIDDEN_ROLES, Schema, ViewColumn

# The rule kinds privacy.view interprets; a rule is a dict whose first key is its kind.
RULE_KINDS = ("config", "year_of", "copy", "first_of", "map", "flag", "all_flags", "not_specified", "concat", "join", "unavailable", "bands", "region_of")
# Frictionless types a view column may have, with the pandas dtype that holds them.
DTYPES = {"integer": "Int64", "year": "Int64", "number": "Float64", "boolean": "boolean", "string": "string"}
CONFIG_KEYS = ("datasource",)
SEPARATOR = ";"


def rule_kind(rule: dict[str, Any]) -> str:
    """The kind of a rule: the one key of RULE_KINDS it has. Raises ValueError if none or several."""
    kinds = [key for key in rule if key in RULE_KINDS]
    if len(kinds) != 1:
        raise ValueError(f"rule {rule!r} must have exactly one of {', '.join(RULE_KINDS)}")
    return kinds[0]


# ---------------------------------------------------------------------------------------------------
# values as the mapping produces them


def _is_unknown(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _as_codes(value: Any) -> frozenset[str] | None:
    """A single or multi-select value as a set of codes; None when unknown. An empty list is known-empty."""
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return frozenset(str(v).strip() for v in value if not _is_unknown(v))
    if _is_unknown(value):
        return None
    return frozenset([str(value).strip()])


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        known = [v for v in value if not _is_unknown(v)]
        return str(known[0]).strip() if known else pd.NA
    if isinstance(value, (set, frozenset)):
        known = sorted(str(v).strip() for v in value if not _is_unknown(v))
        return known[0] if known else pd.NA
    return pd.NA if _is_unknown(value) else value


def _year(value: Any) -> Any:
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.year
    if _is_unknown(value):
        return pd.NA
    text = str(value).strip()
    if len(text) >= 4 and text[:4].isdigit() and (len(text) == 4 or text[4] == "-"):
        return int(text[:4])
    return pd.NA


def _typed(values: pd.Series, column: ViewColumn) -> pd.Series:
    """Cast derived values to the column's nullable dtype; values that cannot be cast become <NA>."""
    dtype = DTYPES[column.type]
    if dtype == "Int64":
        numbers = pd.to_numeric(values.map(lambda v: pd.NA if _is_unknown(v) else v), errors="coerce")
        return np.floor(numbers.astype("Float64")).astype("Int64")
    if dtype == "Float64":
        return pd.to_numeric(values.map(lambda v: pd.NA if _is_unknown(v) else v), errors="coerce").astype("Float64")
    if dtype == "boolean":
        return values.map(lambda v: pd.NA if _is_unknown(v) else bool(v)).astype("boolean")
    return values.map(lambda v: pd.NA if _is_unknown(v) else str(v)).astype("string")


def band_labels(cuts: Iterable[int]) -> list[str]:
    """Labels of the bands a `bands` rule cuts: [0, 13, 25] -> "0--12", "13--24", "25+" (CTDC's way)."""
    points = list(cuts)
    return [f"{lo}--{hi - 1}" if hi - 1 > lo else str(lo) for lo, hi in zip(points, points[1:])] + [f"{points[-1]}+"]


def _band(value: Any, cuts: list[int], labels: list[str]) -> Any:
    if _is_unknown(value):
        return pd.NA
    number = float(value)
    if number < cuts[0]:
        return pd.NA
    index = sum(1 for cut in cuts if number >= cut) - 1
    return labels[index]


def _region(value: Any) -> Any:
    """The UN M49 region of a country code (level 2 of hierarchy `country`); a code without a place raises."""
    code = _first(value)
    if _is_unknown(code):
        return pd.NA
    return load_builtin("country").path(str(code), "region_of")[2]


# ---------------------------------------------------------------------------------------------------
# derivation


class _Encoded:
    """A column as its distinct values and, per row, the position of its value among them.

    Why: a rule runs once per distinct value instead of once per case; a coded field holds a few
    hundred distinct values in 100,000 cases, and 41 of the view's columns are flags of a handful of
    fields (issue #16: view derivation on encoded columns). Values are told apart by type as well
    as by equality (1, 1.0 and True stay three values), so a rule sees exactly what it saw per row;
    a value that cannot be hashed (a list of dicts) is its own distinct value.
    """

    __slots__ = ("codes", "uniques")

    def __init__(self, codes: np.ndarray, uniques: list[Any]) -> None:
        self.codes = codes
        self.uniques = uniques

    @classmethod
    def of(cls, values: pd.Series) -> _Encoded:
        positions: dict[Any, int] = {}
        uniques: list[Any] = []
        codes: list[int] = []
        for value in values.tolist():
            kind = value.__class__
            key = (kind, tuple((v.__class__, v) for v in value)) if kind is list or kind is tuple else (kind, value)
            try:
                code = positions.get(key)
                if code is None:
                    code = positions[key] = len(uniques)
                    uniques.append(value)
            except TypeError:  # unhashable: its own value
                code = len(uniques)
                uniques.append(value)
            codes.append(code)
        return cls(np.asarray(codes, dtype=np.intp), uniques)

    @classmethod
    def constant(cls, value: Any, n: int) -> _Encoded:
        return cls(np.zeros(n, dtype=np.intp), [value])

    def map(self, fn: Any) -> _Encoded:
        return _Encoded(self.codes, [fn(value) for value in self.uniques])

    def objects(self) -> np.ndarray:
        """The distinct values as a 1-D object array (a list value stays one cell)."""
        out = np.empty(len(self.uniques), dtype=object)
        for i, value in enumerate(self.uniques):
            out[i] = value
        return out

    def typed(self, column: ViewColumn, index: pd.Index) -> pd.Series:
        """The column cast like `_typed` casts a row-wise one: cast the distinct values, then expand."""
        typed = _typed(pd.Series(self.objects(), dtype=object), column)
        return pd.Series(typed.array.take(self.codes), index=index)


class _Deriver:
    """Derives view columns on demand, so a rule may use another column whether or not it is requested."""

    def __init__(self, cases: pd.DataFrame, schema: Schema, datasource: str, view: dict[str, ViewColumn] | None = None) -> None:
        self.cases = cases
        self.schema = schema
        self.view = schema.view if view is None else view
        self.datasource = datasource
        self.columns: dict[str, pd.Series] = {}
        self.encoded: dict[str, _Encoded] = {}
        self.codes: dict[str, _Encoded] = {}
        self.pending: set[str] = set()

    def field(self, name: str) -> _Encoded:
        """A common-schema field of the cases, encoded; a field the cases lack is unknown for every case."""
        if name not in self.encoded:
            if name in self.cases.columns:
                self.encoded[name] = _Encoded.of(self.cases[name])
            else:
                self.encoded[name] = _Encoded.constant(None, len(self.cases))
        return self.encoded[name]

    def field_codes(self, name: str) -> _Encoded:
        if name not in self.codes:
            self.codes[name] = self.field(name).map(_as_codes)
        return self.codes[name]

    def column(self, name: str) -> pd.Series:
        if name not in self.columns:
            if name in self.pending:
                raise ValueError(f"release_view.yaml: column {name}: its rule depends on itself")
            self.pending.add(name)
            column = self.view[name]
            derived = self.derive(column)
            if isinstance(derived, _Encoded):
                self.columns[name] = derived.typed(column, self.cases.index)
            else:
                self.columns[name] = _typed(derived, column)
            self.pending.discard(name)
        return self.columns[name]

    def derive(self, column: ViewColumn) -> pd.Series | _Encoded:
        rule = column.rule
        kind = rule_kind(rule)
        index = self.cases.index
        if kind == "config":
            return _Encoded.constant(self.datasource, len(index))
        if kind == "unavailable":
            return _Encoded.constant(pd.NA, len(index))
        if kind == "year_of":
            return self.field(rule["year_of"]).map(_year)
        if kind == "bands":
            cuts = [int(c) for c in rule["cuts"]]
            labels = band_labels(cuts)
            return self.field(rule["bands"]).map(lambda v: _band(v, cuts, labels))
        if kind == "region_of":
            return self.field(rule["region_of"]).map(_region)
        if kind == "copy":
            return self.field(rule["copy"]).map(lambda v: pd.NA if _is_unknown(v) else v)
        if kind == "first_of":
            return self.field(rule["first_of"]).map(_first)
        if kind == "map":
            values = rule.get("values", {})
            return self.field(rule["map"]).map(lambda v: pd.NA if not isinstance(v, str) else values.get(v.strip()))
        if kind == "flag":
            wanted = frozenset(rule["any_of"])
            return self.field_codes(rule["flag"]).map(lambda codes: pd.NA if codes is None else int(bool(codes & wanted)))
        if kind == "all_flags":
            flags = pd.concat([self.column(name) for name in rule["all_flags"]], axis=1)
            result = pd.Series(pd.NA, index=index, dtype="Int64")
            result[flags.eq(1).fillna(False).all(axis=1)] = 1
            result[flags.eq(0).fillna(False).any(axis=1)] = 0  # Kleene "and": one known 0 decides
            return result
        if kind == "not_specified":
            codes = self.field_codes(rule["not_specified"])
            specified = np.asarray([c is not None and len(c) > 0 for c in codes.uniques], dtype=bool)[codes.codes]
            result = pd.Series(1, index=index, dtype="Int64")
            if "only_if" in rule:
                result[~self.column(rule["only_if"]).eq(1).fillna(False).astype(bool)] = pd.NA
            result[specified] = 0
            return result
        if kind == "concat":
            joined = pd.Series("", index=index, dtype=object)
            for name in rule["concat"]:
                is_set = self.column(name).eq(1).fillna(False).astype(bool)
                joined = joined + np.where(is_set, name + SEPARATOR, "")
            return joined.str.rstrip(SEPARATOR).replace("", pd.NA)
        if kind == "join":
            name = rule["join"]
            order = {code: i for i, code in enumerate(self.schema.codelists[self.schema.fields[name].codelist])}
            return self.field_codes(name).map(
                lambda codes: pd.NA if not codes else SEPARATOR.join(sorted(codes, key=lambda c: (order.get(c, len(order)), c)))
            )
        raise AssertionError(kind)  # rule_kind admits only RULE_KINDS


def value_domains(schema: Schema, view: dict[str, ViewColumn] | None = None) -> dict[str, frozenset[str]]:
    """Per release-view column, the tokens its cells may hold (a cell is ';'-joined tokens, or empty).

    The gate checks every published cell against this, so a column that should hold codes cannot
    carry free text (a name typed into a note that became a "relation", say). Quasi-identifiers are
    left out: their cells are hierarchy labels, and k (or the synthetic resolution) covers them.
    Columns fed from the partner's config (Datasource) carry no record value and are left out too.
    """
    domains: dict[str, frozenset[str]] = {}
    for name, column in (schema.view if view is None else view).items():
        kind = rule_kind(column.rule)
        if column.role == "quasi_identifier" or kind == "config" or name == PART_COLUMN:
            continue  # the part label has a pattern of its own, checked by the gate
        if kind == "concat":
            domains[name] = frozenset(column.rule["concat"])
        elif kind == "join":
            domains[name] = frozenset(schema.codelists[schema.fields[column.rule["join"]].codelist])
        elif column.values:
            domains[name] = frozenset(str(v) for v in column.values)
        elif kind == "unavailable":
            domains[name] = frozenset()
    return domains


def view_fields(schema: Schema, view: dict[str, ViewColumn] | None = None) -> set[str]:
    """The common-schema fields the view's rules read: all a snapshot must load to derive it."""
    return {name for column in (schema.view if view is None else view).values() for name in _fields_of(column.rule)}


def derive_release_view(
    cases: pd.DataFrame, schema: Schema, *, datasource: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """The release view of `cases` (one row per case, one column per common-schema field).

    Returns exactly `columns` (default: every view column, in release_view.yaml order) with nullable
    dtypes, indexed like `cases`. Raises ValueError for an unknown column or a view that does not
    pass `check_view`, so a bad release_view.yaml fails before any data is derived.
    """
    wanted = view_columns(schema, schema.view, columns, file="release_view.yaml", what="release-view")
    deriver = _Deriver(cases, schema, datasource)
    return pd.DataFrame({name: deriver.column(name) for name in wanted}, index=cases.index)


# ---------------------------------------------------------------------------------------------------
# checks, Table Schema and words


def _fields_of(rule: dict[str, Any]) -> list[str]:
    kind = rule_kind(rule)
    if kind in ("year_of", "copy", "first_of", "map", "flag", "not_specified", "join", "bands", "region_of"):
        return [rule[kind]]
    return []


def _columns_of(rule: dict[str, Any]) -> list[str]:
    kind = rule_kind(rule)
    if kind in ("all_flags", "concat"):
        return list(rule[kind])
    if kind == "not_specified" and "only_if" in rule:
        return [rule["only_if"]]
    return []


def view_columns(schema: Schema, view: dict[str, ViewColumn], columns: list[str] | None, *, file: str, what: str) -> list[str]:
    """The columns to derive (default: every column of `view`, in its order), after checking the view
    itself: a bad view file fails before any data is derived. Raises ValueError naming the file or
    the unknown columns."""
    problems = check_view(schema, view)
    if problems:
        raise ValueError(f"{file}: " + "; ".join(problems))
    wanted = list(view) if columns is None else list(columns)
    unknown = [name for name in wanted if name not in view]
    if unknown:
        raise ValueError(f"not {what} columns: {', '.join(unknown)}")
    return wanted


def check_view(schema: Schema, view: dict[str, ViewColumn] | None = None) -> list[str]:
    """Every problem of the release view, each naming its column; empty when the view is sound.

    Why: the view decides what may leave the partner, so it must never carry a direct identifier or
    free text, and a code a rule names must exist in the field's code list (a typo would silently
    make a flag 0 for every case).
    """
    problems: list[str] = []
    view = schema.view if view is None else view
    for name, column in view.items():
        where = f"column {name}"
        try:
            kind = rule_kind(column.rule)
        except ValueError as error:
            problems.append(f"{where}: {error}")
            continue
        if column.role in FORBIDDEN_ROLES:
            problems.append(f"{where}: role {column.role} may not be in the release view")
        if column.type not in DTYPES:
            problems.append(f"{where}: type {column.type!r} is not one of {', '.join(DTYPES)}")
        if (column.role == "quasi_identifier") != (column.hierarchy is not None):
            problems.append(f"{where}: a quasi-identifier needs a hierarchy, and only a quasi-identifier has one")
        if kind == "config" and column.rule["config"] not in CONFIG_KEYS:
            problems.append(f"{where}: config key {column.rule['config']!r} is not one of {', '.join(CONFIG_KEYS)}")
        if kind == "bands":
            cuts = column.rule.get("cuts")
            if not isinstance(cuts, list) or len(cuts) < 2 or any(not isinstance(c, int) for c in cuts) or cuts != sorted(set(cuts)):
                problems.append(f"{where}: bands needs `cuts`, two or more whole numbers in increasing order")
            elif list(column.values) != band_labels(cuts):
                problems.append(f"{where}: values must be the band labels {band_labels(cuts)}")
        for other in _columns_of(column.rule):
            if other not in view:
                problems.append(f"{where}: uses unknown column {other}")
        for field_name in _fields_of(column.rule):
            spec = schema.fields.get(field_name)
            if spec is None:
                problems.append(f"{where}: uses unknown field {field_name}")
                continue
            if spec.role in FORBIDDEN_ROLES:
                problems.append(f"{where}: derived from {field_name}, a {spec.role} field")
            codes = schema.codelists.get(spec.codelist or "", {})
            named = list(column.rule.get("any_of", [])) + list(column.rule.get("values", {}) if kind == "map" else [])
            if kind in ("flag", "map", "join") and not codes:
                problems.append(f"{where}: {kind} needs a coded field, {field_name} has no code list")
            if kind == "bands" and spec.type not in ("integer", "number"):
                problems.append(f"{where}: bands needs a number field, {field_name} is {spec.type}")
            if kind == "region_of" and spec.codelist != "countries":
                problems.append(f"{where}: region_of needs a country field, {field_name} is not one")
            for code in named:
                if codes and code not in codes:
                    problems.append(f"{where}: code {code!r} is not in {field_name}'s code list {spec.codelist}")
    return problems


def _enum(column: ViewColumn, schema: Schema) -> list[Any]:
    """Allowed values: the column's own, else the code list of a field it copies unchanged."""
    if column.values:
        return list(column.values)
    kind = rule_kind(column.rule)
    if column.type == "string" and kind in ("copy", "first_of"):
        spec = schema.fields.get(column.rule[kind])
        if spec is not None and spec.codelist:
            return list(schema.codelists[spec.codelist])
    return []


def view_table_schema(schema: Schema, columns: Iterable[str] | None = None, view: dict[str, ViewColumn] | None = None) -> dict[str, Any]:
    """The Frictionless Table Schema of the (un-generalized) view, for datapackage.json.

    Each field carries a custom `role` property so the release gate can check roles from the
    package alone. Generalized columns change type (e.g. ageBroad becomes a band): the privacy step
    that generalizes a column must rewrite its entry.
    """
    view = schema.view if view is None else view
    names = list(view) if columns is None else list(columns)
    fields = []
    for name in names:
        column = view[name]
        entry: dict[str, Any] = {"name": name, "type": column.type, "description": column.description, "role": column.role}
        enum = _enum(column, schema)
        if enum:
            entry["constraints"] = {"enum": enum}
        fields.append(entry)
    return {"fields": fields, "missingValues": [""]}


def _codes_in_words(codes: Iterable[str]) -> str:
    return ", ".join(str(code) for code in codes)


def describe_rule(rule: dict[str, Any]) -> str:
    """The rule in plain words, for the codebook."""
    kind = rule_kind(rule)
    arg = rule[kind]
    if kind == "config":
        return f"The `{arg}` of the partner's job configuration, the same for every case."
    if kind == "year_of":
        return f"The year of `{arg}`; blank if that date is unknown."
    if kind == "copy":
        return f"`{arg}` as it is; blank if unknown."
    if kind == "first_of":
        return f"The first code of `{arg}` (when several are recorded); blank if none."
    if kind == "map":
        pairs = [f"{code} -> {value if value is not None else 'blank'}" for code, value in rule.get("values", {}).items()]
        return f"`{arg}` translated: {'; '.join(pairs)}; any other value or unknown -> blank."
    if kind == "flag":
        return f"1 if `{arg}` includes any of {_codes_in_words(rule['any_of'])}; 0 if it is recorded without them; blank if unknown."
    if kind == "all_flags":
        return f"1 if all of {_codes_in_words(arg)} are 1; 0 if any of them is 0; blank otherwise."
    if kind == "not_specified":
        if "only_if" in rule:
            return f"0 if `{arg}` is recorded; otherwise 1 where {rule['only_if']} is 1 and blank elsewhere."
        return f"0 if `{arg}` is recorded; 1 if it is unknown or empty."
    if kind == "concat":
        return f"The names of those of {_codes_in_words(arg)} that are 1, joined with '{SEPARATOR}'; blank if none is 1."
    if kind == "join":
        return f"The codes of `{arg}` in code-list order, joined with '{SEPARATOR}'; blank if none."
    if kind == "unavailable":
        return f"Always blank: {arg}"
    if kind == "bands":
        return f"`{arg}` in bands {', '.join(band_labels(rule['cuts']))}; blank if unknown."
    if kind == "region_of":
        return f"The UN M49 region of `{arg}` (its first country when several), never the country; blank if unknown."
    raise AssertionError(kind)
