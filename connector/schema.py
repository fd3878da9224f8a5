"""The common schema, loaded from data (`mappings/schema/`), never hard-coded.

Three files define it:
- `htcds.yaml`: every HTCDS 2.0 field (plus a few `ext_` fields the connector derives), with its
  type, code list and disclosure role;
- `codelists.yaml`: the code lists (HTCDS value names and labels; ISO 3166 alpha-2 countries);
- `release_view.yaml`: the columns of the published release (CTDC's k-anonymized column set),
  each with the rule that derives it from common-schema fields, its role and its hierarchy;
- `release_view_vp.yaml`: the columns of the victim-perpetrator table (CTDC's Global
  Victim-Perpetrator dataset), one row per (case, perpetrator) (`Schema.vp_view`, derived by
  `privacy.view_vp`). An entry `{name: X, same_as_victim_view: true}` is column X of the victim view,
  copied whole, so the columns the two tables share cannot drift apart.

A `records` field holds a list of dicts (one per perpetrator, one per event); `items` names the
common-schema fields each dict may hold, and each is typed and checked like a field of its own.

The disclosure role decides what may leave the partner: `direct_identifier` and `free_text` never
do (the gate refuses them), `quasi_identifier` columns are generalized until k-anonymous,
`sensitive` columns are published as they are, `process` columns carry no personal information.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

ROLES = ("direct_identifier", "quasi_identifier", "sensitive", "free_text", "process")
FIELD_TYPES = (
    "text",  # short text
    "long_text",  # free text: always role free_text
    "date",  # ISO date
    "datetime",
    "integer",
    "number",
    "boolean",  # checkbox
    "code",  # one value of `codelist`
    "codes",  # multi-select: a list of values of `codelist`
    "lookup",  # reference to another record (organisation, user, person)
    "geolocation",
    "records",  # a list of dicts whose keys are the fields named in `items` (perpetrators, events)
)
FORBIDDEN_ROLES = ("direct_identifier", "free_text")


@dataclass(frozen=True)
class FieldSpec:
    """One common-schema field."""

    name: str
    section: str
    label: str
    type: str
    role: str
    codelist: str | None = None
    core: bool = False
    description: str = ""
    origin: str = "htcds"  # "htcds" for the standard's fields, "extension" for ones we derive
    items: tuple[str, ...] = ()  # the keys of each entry of a `records` field


@dataclass(frozen=True)
class ViewColumn:
    """One column of the release view, with the rule deriving it from common-schema fields."""

    name: str
    type: str  # Frictionless type: string, integer, number, boolean, year
    role: str
    rule: dict[str, Any]
    description: str = ""
    hierarchy: str | None = None  # name of the generalization hierarchy for quasi-identifiers
    values: tuple[str, ...] = ()  # allowed values when the column is categorical


@dataclass(frozen=True)
class Schema:
    version: str
    fields: dict[str, FieldSpec]
    codelists: dict[str, dict[str, str]]  # list name -> code -> label
    view: dict[str, ViewColumn] = field(default_factory=dict)
    vp_view: dict[str, ViewColumn] = field(default_factory=dict)  # one row per (case, perpetrator)

    def role(self, name: str) -> str | None:
        """Role of a common-schema field or release-view column; None if the name is unknown."""
        if name in self.view:
            return self.view[name].role
        spec = self.fields.get(name)
        return spec.role if spec else None

    def view_roles(self) -> dict[str, str]:
        return {name: column.role for name, column in self.view.items()}


def _read(name: str) -> Any:
    text = resources.files("mappings").joinpath("schema", name).read_text(encoding="utf-8")
    # libyaml's safe loader where PyYAML has it: the same documents, read in a tenth of the time
    # (every run reads the schema; it was a tenth of an unchanged night's CPU).
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@lru_cache(maxsize=1)
def load_schema() -> Schema:
    """Load and cross-check the packaged common schema. Raises ValueError naming the bad entry."""
    fields_doc = _read("htcds.yaml")
    codelists_doc = _read("codelists.yaml")
    view_doc = _read("release_view.yaml")
    vp_doc = _read("release_view_vp.yaml")

    codelists = {name: {str(item["code"]): str(item.get("label", item["code"])) for item in items} for name, items in codelists_doc.items()}
    fields: dict[str, FieldSpec] = {}
    for entry in fields_doc["fields"]:
        spec = FieldSpec(**{**entry, "items": tuple(entry.get("items", ()))})
        if spec.role not in ROLES:
            raise ValueError(f"htcds.yaml: field {spec.name}: unknown role {spec.role!r}")
        if spec.type not in FIELD_TYPES:
            raise ValueError(f"htcds.yaml: field {spec.name}: unknown type {spec.type!r}")
        if spec.type in ("code", "codes") and spec.codelist not in codelists:
            raise ValueError(f"htcds.yaml: field {spec.name}: code list {spec.codelist!r} not in codelists.yaml")
        if spec.type == "long_text" and spec.role != "free_text":
            raise ValueError(f"htcds.yaml: field {spec.name}: long text must have role free_text")
        if spec.name in fields:
            raise ValueError(f"htcds.yaml: field {spec.name} defined twice")
        fields[spec.name] = spec
    for spec in fields.values():
        if (spec.type == "records") != bool(spec.items):
            raise ValueError(f"htcds.yaml: field {spec.name}: a records field, and only one, lists its `items`")
        for item in spec.items:
            if item not in fields or fields[item].type == "records":
                raise ValueError(f"htcds.yaml: field {spec.name}: item {item!r} is not a plain common-schema field")

    view = _view(view_doc, "release_view.yaml", {})
    vp_view = _view(vp_doc, "release_view_vp.yaml", view)
    return Schema(version=str(fields_doc["schema_version"]), fields=fields, codelists=codelists, view=view, vp_view=vp_view)


def _view(doc: Any, where: str, victim_view: dict[str, ViewColumn]) -> dict[str, ViewColumn]:
    view: dict[str, ViewColumn] = {}
    for entry in doc["columns"]:
        if entry.get("same_as_victim_view"):
            if entry["name"] not in victim_view or set(entry) != {"name", "same_as_victim_view"}:
                raise ValueError(f"{where}: column {entry['name']}: same_as_victim_view names a victim-view column and nothing else")
            column = victim_view[entry["name"]]
        else:
            column = ViewColumn(**{**entry, "values": tuple(entry.get("values", ()))})
        if column.role not in ROLES:
            raise ValueError(f"{where}: column {column.name}: unknown role {column.role!r}")
        if column.name in view:
            raise ValueError(f"{where}: column {column.name} defined twice")
        view[column.name] = column
    return view
