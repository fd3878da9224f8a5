"""`htcds-connector rejections`: every rejected value, one per line, and the mapping lines that fix them.

`status` counts rejections by reason; the data person needs them one by one (which record, which
field) to fix records in their own system, and, where a partner's code is simply spelt otherwise,
the value-map lines to paste into the source's mapping. Nothing here reads a raw record: the rows
are the store's rejection records, whose `value` was already redacted when the record was mapped
(`connector.mapping.redact`: a value is kept only when it is a misspelt code, anything else is
"[redacted, N chars]"). So a line shows a value only when the mapper judged it a code-like typo.

    rows = list_rejections(config, store, source="odk-cases")
    print(value_map_snippets(config, rows))
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from connector.config import Config
from connector.mapping import NEAR_CODE, SPLITS, FieldRule, Mapping, MappingError, fold, load_mapping
from connector.schema import Schema, load_schema
from connector.store import Store

_CLOSEST = re.compile(r"closest code (.+)$")
_CODE_MISS = "not a code of list"
COLUMNS = ("source", "record_id", "field", "reason", "closest_code", "value")


@dataclass(frozen=True)
class RejectionRow:
    """One rejected value as the data person sees it. `value` is the stored, already-safe text."""

    source: str
    record_id: str
    field: str
    reason: str
    closest_code: str | None
    value: str | None

    @property
    def shown(self) -> bool:
        """The value is a misspelt code (kept by `redact`), not a length placeholder."""
        return bool(self.value) and not str(self.value).startswith("[redacted")


def list_rejections(config: Config, store: Store, *, source: str | None = None, field: str | None = None, schema: Schema | None = None) -> list[RejectionRow]:
    """The store's current rejections, sorted by source, field and record id, with the closest code."""
    schema = schema or load_schema()
    mappings = _mappings(config, schema)
    rows = []
    for row in store.rejections(limit=None, source=source, field=field):
        reason = str(row["reason"])
        match = _CLOSEST.search(reason)
        closest = match.group(1).strip() if match else None
        value = row.get("value")
        if closest is None and value and not str(value).startswith("[redacted"):
            closest = _closest(mappings.get(row["source"]), schema, row["field"], str(value))
        rows.append(RejectionRow(row["source"], row["record_id"], row["field"], reason, closest, value))
    return sorted(rows, key=lambda r: (r.source, r.field, r.record_id))


def to_csv(rows: list[RejectionRow]) -> str:
    """CSV with a header row, for a spreadsheet the data person filters by field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    return buffer.getvalue()


@dataclass
class Snippet:
    """Value-map lines for one (source, field): paste over the field's entry in the source's mapping."""

    source: str
    mapping: str
    field: str
    yaml: str
    mapped: int  # rejected values the snippet maps
    not_shown: int  # rejected values not close to any code: fix those in the source system


def value_map_snippets(config: Config, rows: list[RejectionRow], *, schema: Schema | None = None) -> list[Snippet]:
    """For each field with code-list misses: its mapping entry with the misspelt values mapped to their closest code."""
    schema = schema or load_schema()
    mappings = _mappings(config, schema)
    groups: dict[tuple[str, str], list[RejectionRow]] = defaultdict(list)
    for row in rows:
        if _CODE_MISS in row.reason:
            groups[(row.source, row.field)].append(row)
    snippets = []
    for (source, target), misses in sorted(groups.items()):
        mapping = mappings.get(source)
        rule = next((r for r in mapping.rules if r.target == target), None) if mapping else None
        if mapping is None or rule is None:
            continue
        proposals: Counter[tuple[str, str]] = Counter()
        spelling: dict[str, str] = {}  # folded value -> the first spelling seen (the map folds keys anyway)
        hidden = 0
        for row in misses:
            items = [i.strip() for i in str(row.value).split(";")] if row.shown else []
            found = [(i, _closest(mapping, schema, target, i)) for i in items if i]
            if not found or any(code is None for _, code in found):
                hidden += 1
            for item, code in found:
                if code is not None and fold(item) not in rule.value_map:
                    proposals[(spelling.setdefault(fold(item), item), code)] += 1
        if proposals:
            snippets.append(Snippet(source, mapping.path, target, _rule_yaml(rule, proposals), sum(proposals.values()), hidden))
        elif hidden:
            snippets.append(Snippet(source, mapping.path, target, "", 0, hidden))
    return snippets


def render_snippets(snippets: list[Snippet]) -> str:
    """The snippets as text a person reads and pastes."""
    parts = []
    for s in snippets:
        head = f"# {s.source}: {s.field} in {s.mapping}"
        if s.yaml:
            parts.append(f"{head}\n# replace the field's entry under `fields:` with this (each new line is the closest code; check it):\n{s.yaml}")
        if s.not_shown:
            parts.append(f"# {s.source}: {s.field}: {s.not_shown} value(s) are not close to any code and are not shown; fix those records in the source system (record ids above)\n")
    return "\n".join(parts)


# -- helpers ---------------------------------------------------------------------------------


def _mappings(config: Config, schema: Schema) -> dict[str, Mapping]:
    loaded = {}
    for source in config.job.sources:
        try:
            loaded[source.id] = load_mapping(source.mapping, schema, base_dir=config.base_dir)
        except MappingError:
            continue  # `check` reports a broken mapping; the rejections can still be listed
    return loaded


def _closest(mapping: Mapping | None, schema: Schema, target: str, value: str) -> str | None:
    spec = schema.fields.get(target)
    if mapping is None or spec is None or not spec.codelist:
        return None
    lookup = mapping._lookups[spec.codelist]
    key = fold(value)
    if key in lookup:
        return lookup[key]
    close = difflib.get_close_matches(key, list(lookup), n=1, cutoff=NEAR_CODE)
    return lookup[close[0]] if close else None


def _rule_yaml(rule: FieldRule, proposals: Counter[tuple[str, str]]) -> str:
    """The rule as mapping YAML, its existing map kept and the proposals added with a count each."""
    entry: dict[str, Any] = {"from": list(rule.sources) if len(rule.sources) > 1 else rule.sources[0]}
    split_word = {v: k for k, v in SPLITS.items()}.get(rule.split, ";")
    if split_word != ";":
        entry["split"] = split_word
    for key in ("formats", "where", "pick", "collect"):
        value = getattr(rule, key)
        if value:
            entry[key] = list(value) if isinstance(value, tuple) else value
    lines = ["fields:", f"  {rule.target}:"]
    lines += [f"    {key}: {_scalar(value)}" for key, value in entry.items()]
    lines.append("    map:")
    for raw, code in rule.value_map.items():
        lines.append(f"      {_scalar(raw)}: {_scalar(code)}")
    for (raw, code), count in sorted(proposals.items()):
        lines.append(f"      {_scalar(raw)}: {_scalar(code)}   # new: {count} rejected value(s)")
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix("...").strip()
