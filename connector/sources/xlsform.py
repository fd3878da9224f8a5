"""XLSForm form definitions and the one raw record shape that ODK Central and Kobo sources share.

A partner's case form is an XLSForm. ODK Central and KoboToolbox both serve it, each in its own
dialect: an XLSForm workbook, Kobo's asset `content` (the survey and choices sheets as JSON), an
XForm XML document, Central's `/fields?odata=true` list. This module reads all four into one
`FormDefinition` (fields with their group path, type, label and choice list; groups; repeats;
choices), so `check` and `mapping suggest` see the same thing whatever the server.

The raw record shape (what both sources put in `RawRecord.fields`), so that one mapping file serves
both servers:

- every question is keyed by its XLSForm `name` (the last segment of its path); a question inside a
  (non-repeat) group is also kept under its full path (`group/name`), so a mapping may use either;
  if two questions in different groups share a name, the first keeps the short key and the others
  are reachable by full path only;
- a repeat group is keyed by its name and holds a list of child dicts in the same shape;
- select_multiple answers are space-separated choice NAMES (mapping: `split: " "`), select_one
  answers a choice name: both servers store the names, not labels;
- values are what the server returned (ODK's OData turns integers into JSON numbers, Kobo keeps
  strings): the mapping normalises by schema type, so both read the same;
- metadata under fixed keys: `_id` (the record id), `_submission_time` and `_updated_at` (ISO UTC),
  `_submitted_by`, `_review_state` (ODK review state, or Kobo validation status uid), `_form_version`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping as AnyMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.records import Problem
from connector.sources.base import FieldInfo

if TYPE_CHECKING:  # for types only: the mapping engine is imported where it is used
    from connector.mapping import FieldRule, Mapping

GROUP_TYPES = {"begin_group", "begin group"}
REPEAT_TYPES = {"begin_repeat", "begin repeat"}
END_TYPES = {"end_group", "end group", "end_repeat", "end repeat"}
# Question types that never carry case data (layout and metadata).
NON_DATA_TYPES = {"note"}
META_KEYS = ("_id", "_submission_time", "_updated_at", "_submitted_by", "_review_state", "_form_version")


@dataclass(frozen=True)
class FormField:
    """One question. `path` is relative to the form root (`group/name`); `repeat` the innermost repeat path."""

    name: str
    path: str
    type: str  # XLSForm base type: text, integer, decimal, date, select_one, select_multiple, calculate, ...
    label: str | None = None
    list_name: str | None = None
    repeat: str | None = None


@dataclass
class FormDefinition:
    """A form's structure: questions, groups, repeats and choice lists (list name -> [(name, label)])."""

    form_id: str = ""
    version: str | None = None
    title: str | None = None
    fields: list[FormField] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    choices: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)

    def field(self, name_or_path: str) -> FormField | None:
        for item in self.fields:
            if item.path == name_or_path:
                return item
        for item in self.fields:
            if item.name == name_or_path:
                return item
        return None

    def choice_names(self, list_name: str | None) -> tuple[str, ...]:
        return tuple(name for name, _ in self.choices.get(list_name or "", []))

    def raw_names(self) -> set[str]:
        """Every key a record of this form can carry in the shared raw shape (short, full paths, repeats)."""
        names = {f.name for f in self.fields} | {f.path for f in self.fields}
        names |= {p.rsplit("/", 1)[-1] for p in self.repeats}
        return names | set(META_KEYS)

    def field_infos(self) -> list[FieldInfo]:
        """Fields as `Source.fields()` reports them: raw-shape name, label, type and choice names."""
        out = []
        for item in self.fields:
            name = item.name if item.repeat is None else f"{item.repeat.rsplit('/', 1)[-1]}.{item.name}"
            out.append(FieldInfo(name=name, label=item.label, type=item.type, choices=self.choice_names(item.list_name)))
        return out


# -- readers ---------------------------------------------------------------------------------------


def read_xlsform(path: str | Path) -> FormDefinition:
    """Read an XLSForm workbook (.xlsx): survey, choices and settings sheets."""
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheets = {ws.title.strip().lower(): _sheet_rows(ws) for ws in workbook.worksheets}
    finally:
        workbook.close()
    if "survey" not in sheets:
        raise ValueError(f"{path}: no `survey` sheet; is this an XLSForm?")
    settings_rows = sheets.get("settings", [])
    settings = settings_rows[0] if settings_rows else {}
    form = form_from_rows(sheets["survey"], sheets.get("choices", []), settings)
    if not form.form_id:
        form.form_id = Path(path).stem
    return form


def _sheet_rows(ws: Any) -> list[dict[str, Any]]:
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        return []
    keys = [str(h).strip() if h is not None else "" for h in header]
    out = []
    for row in rows:
        if row is None or all(v is None or str(v).strip() == "" for v in row):
            continue
        out.append({k: v for k, v in zip(keys, row) if k})
    return out


def form_from_kobo_content(content: AnyMapping[str, Any], *, form_id: str = "", version: str | None = None) -> FormDefinition:
    """Read a Kobo asset's `content` (survey/choices/settings as JSON, labels as translation lists)."""
    survey = []
    for row in content.get("survey", []):
        item = dict(row)
        if "name" not in item and "$autoname" in item:
            item["name"] = item["$autoname"]
        if "select_from_list_name" in item and item.get("type") in ("select_one", "select_multiple"):
            item["type"] = f"{item['type']} {item['select_from_list_name']}"
        survey.append(item)
    choices = []
    for row in content.get("choices", []):
        item = dict(row)
        if "name" not in item and "$autovalue" in item:
            item["name"] = item["$autovalue"]
        choices.append(item)
    settings = content.get("settings") or {}
    if isinstance(settings, list):
        settings = settings[0] if settings else {}
    form = form_from_rows(survey, choices, settings)
    form.form_id = form_id or form.form_id
    form.version = version or form.version
    return form


def form_from_rows(survey: Iterable[AnyMapping[str, Any]], choices: Iterable[AnyMapping[str, Any]], settings: AnyMapping[str, Any] | None = None) -> FormDefinition:
    """Build a form from XLSForm rows (dicts keyed by column name), tracking group and repeat nesting."""
    settings = settings or {}
    form = FormDefinition(
        form_id=str(settings.get("form_id") or settings.get("id_string") or ""),
        version=str(settings["version"]) if settings.get("version") not in (None, "") else None,
        title=_text(settings.get("form_title")),
    )
    stack: list[tuple[str, bool]] = []  # (name, is_repeat)
    for row in survey:
        raw_type = str(row.get("type") or "").strip()
        if not raw_type:
            continue
        kind = raw_type.lower()
        name = str(row.get("name") or "").strip()
        if kind in END_TYPES:
            if stack:
                stack.pop()
            continue
        if kind in GROUP_TYPES or kind in REPEAT_TYPES:
            stack.append((name, kind in REPEAT_TYPES))
            path = "/".join(n for n, _ in stack)
            (form.repeats if kind in REPEAT_TYPES else form.groups).append(path)
            continue
        if not name or kind in NON_DATA_TYPES:
            continue
        base, _, list_name = raw_type.partition(" ")
        if base in ("select_one_from_file", "select_multiple_from_file"):
            list_name = ""
        path = "/".join([n for n, _ in stack] + [name])
        repeat = None
        for depth in range(len(stack), 0, -1):
            if stack[depth - 1][1]:
                repeat = "/".join(n for n, _ in stack[:depth])
                break
        label = _label(row)
        form.fields.append(FormField(name=name, path=path, type=base, label=label, list_name=list_name.strip() or None, repeat=repeat))
    for row in choices:
        list_name = str(row.get("list_name") or row.get("list name") or "").strip()
        name = row.get("name")
        if not list_name or name is None:
            continue
        form.choices.setdefault(list_name, []).append((str(name), _label(row)))
    return form


def _label(row: AnyMapping[str, Any]) -> str | None:
    label = row.get("label")
    if label is None:
        for key, value in row.items():
            if key.lower().startswith("label") and value:
                label = value
                break
    return _text(label)


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if v), None)
    if value is None:
        return None
    text = str(value).replace("\xa0", " ").strip()
    return text or None


_XF = "{http://www.w3.org/2002/xforms}"
_H = "{http://www.w3.org/1999/xhtml}"
_JR = "{http://openrosa.org/javarosa}"
_BIND_TYPES = {
    "string": "text",
    "int": "integer",
    "decimal": "decimal",
    "date": "date",
    "dateTime": "datetime",
    "time": "time",
    "boolean": "acknowledge",
    "geopoint": "geopoint",
    "binary": "image",
}


def form_from_xform(xml_text: str | bytes) -> FormDefinition:
    """Read an XForm (ODK Central's `/forms/{id}.xml`): structure from the instance, labels and choices from the body."""
    root = ET.fromstring(xml_text)
    head = root.find(f"{_H}head")
    model = head.find(f"{_XF}model") if head is not None else None
    if model is None:
        raise ValueError("not an XForm: no h:head/model")
    instance = model.find(f"{_XF}instance")
    data = list(instance)[0] if instance is not None and len(instance) else None
    if data is None:
        raise ValueError("not an XForm: empty primary instance")
    title = head.findtext(f"{_H}title")
    form = FormDefinition(form_id=data.get("id", ""), version=data.get("version"), title=title)
    root_name = _local(data.tag)
    binds: dict[str, str] = {}
    preloads: dict[str, str] = {}
    for bind in model.findall(f"{_XF}bind"):
        binds[bind.get("nodeset", "")] = bind.get("type", "string")
        if bind.get(f"{_JR}preload") == "timestamp" and bind.get(f"{_JR}preloadParams") in ("start", "end"):
            preloads[bind.get("nodeset", "")] = bind.get(f"{_JR}preloadParams", "")
    body = root.find(f"{_H}body")
    labels: dict[str, str | None] = {}
    kinds: dict[str, tuple[str, str | None]] = {}
    repeats: set[str] = set()
    if body is not None:
        _walk_body(body, labels, kinds, repeats, form)
    repeat_paths = {p for p in repeats}

    def visit(node: ET.Element, prefix: str) -> None:
        for child in node:
            tag = _local(child.tag)
            xpath = f"{prefix}/{tag}"
            rel = xpath[len(root_name) + 2 :]
            if tag == "meta" or rel.startswith("meta/"):
                continue
            if len(child):
                if xpath in repeat_paths:
                    if rel not in form.repeats:
                        form.repeats.append(rel)
                elif rel not in form.groups:
                    form.groups.append(rel)
                visit(child, xpath)
                continue
            if xpath in repeat_paths:  # an empty repeat
                form.repeats.append(rel)
                continue
            kind, list_name = kinds.get(xpath, (None, None))
            if kind is None:
                bind_type = binds.get(xpath, "string")
                kind = preloads.get(xpath) or ("calculate" if _calculated(model, xpath) else _BIND_TYPES.get(bind_type, "text"))
            repeat = next((r for r in sorted(form.repeats, key=len, reverse=True) if rel.startswith(r + "/")), None)
            form.fields.append(FormField(name=tag, path=rel, type=kind, label=labels.get(xpath), list_name=list_name, repeat=repeat))

    visit(data, f"/{root_name}")
    # Repeats visited once even when the instance holds several template copies.
    seen: set[str] = set()
    form.fields = [f for f in form.fields if not (f.path in seen or seen.add(f.path))]
    return form


def _calculated(model: ET.Element, xpath: str) -> bool:
    for bind in model.findall(f"{_XF}bind"):
        if bind.get("nodeset") == xpath and bind.get("calculate") is not None:
            return True
    return False


def _walk_body(node: ET.Element, labels: dict, kinds: dict, repeats: set, form: FormDefinition) -> None:
    for child in node:
        tag = _local(child.tag)
        ref = child.get("ref") or child.get("nodeset")
        if tag == "repeat" and ref:
            repeats.add(ref)
        if tag in ("input", "select1", "select", "upload", "trigger", "range", "odk:rank", "rank") and ref:
            labels[ref] = _text(child.findtext(f"{_XF}label"))
            if tag in ("select1", "select"):
                list_name = ref.rsplit("/", 1)[-1]
                items = [(i.findtext(f"{_XF}value") or "", _text(i.findtext(f"{_XF}label"))) for i in child.findall(f"{_XF}item")]
                itemset = child.find(f"{_XF}itemset")
                if itemset is not None:
                    match = re.search(r"instance\('([^']+)'\)", itemset.get("nodeset", ""))
                    list_name = match.group(1) if match else list_name
                if items:
                    form.choices[list_name] = items
                kinds[ref] = ("select_one" if tag == "select1" else "select_multiple", list_name)
        if tag == "group" and ref:
            labels[ref] = _text(child.findtext(f"{_XF}label"))
        _walk_body(child, labels, kinds, repeats, form)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_ODK_FIELD_TYPES = {"string": "text", "int": "integer", "decimal": "decimal", "date": "date", "dateTime": "datetime", "boolean": "acknowledge"}


def form_from_odk_fields(fields: Iterable[AnyMapping[str, Any]], *, definition: FormDefinition | None = None) -> FormDefinition:
    """Read Central's `/fields?odata=true` list (path, name, type, selectMultiple), with labels and choices from the XForm."""
    form = FormDefinition(
        form_id=definition.form_id if definition else "",
        version=definition.version if definition else None,
        title=definition.title if definition else None,
        choices=dict(definition.choices) if definition else {},
    )
    for item in fields:
        rel = str(item.get("path", "")).strip("/")
        kind = str(item.get("type", "string"))
        if not rel or rel == "meta" or rel.startswith("meta/"):
            continue
        if kind == "repeat":
            form.repeats.append(rel)
            continue
        if kind == "structure":
            form.groups.append(rel)
            continue
        known = definition.field(rel) if definition else None
        base = known.type if known else _ODK_FIELD_TYPES.get(kind, "text")
        if item.get("selectMultiple"):
            base = "select_multiple"
        repeat = next((r for r in sorted(form.repeats, key=len, reverse=True) if rel.startswith(r + "/")), None)
        form.fields.append(
            FormField(
                name=str(item.get("name") or rel.rsplit("/", 1)[-1]),
                path=rel,
                type=base,
                label=known.label if known else None,
                list_name=known.list_name if known else None,
                repeat=repeat,
            )
        )
    return form


# -- the shared raw shape --------------------------------------------------------------------------


@dataclass
class FlattenStats:
    """What flattening met that a person may need to know (name collisions), counted, not raised."""

    collisions: int = 0


def flatten_answers(answers: AnyMapping[str, Any], *, skip: frozenset[str] = frozenset(), stats: FlattenStats | None = None, strip: str = "") -> dict[str, Any]:
    """Turn one submission's answers (ODK nested groups or Kobo `group/name` keys) into the shared raw shape.

    Lists of dicts are repeats: each child is flattened the same way, its keys made relative to the
    repeat (Kobo repeats children by full path `rep/x`, ODK by `x`: both become `x`). Keys in `skip`
    (server metadata) and OData annotations (`...@odata.navigationLink`) are dropped.
    """
    out: dict[str, Any] = {}
    owners: dict[str, str] = {}  # short name -> the full path that owns it
    _flatten_into(out, owners, answers, "", skip, stats, strip)
    return out


def _flatten_into(
    out: dict[str, Any], owners: dict[str, str], node: AnyMapping[str, Any], prefix: str, skip: frozenset[str], stats: FlattenStats | None, strip: str
) -> None:
    for key, value in node.items():
        if key in skip or "@odata." in key or key.startswith("@"):
            continue
        path = f"{prefix}{key}"
        if strip and path.startswith(strip):
            path = path[len(strip) :]
        if isinstance(value, dict):
            _flatten_into(out, owners, value, f"{path}/", skip, stats, "")
            continue
        if isinstance(value, list) and value and all(isinstance(child, dict) for child in value):
            value = [flatten_answers(child, skip=skip, stats=stats, strip=f"{prefix}{key}/") for child in value]
        short = path.rsplit("/", 1)[-1]
        owner = owners.get(short)
        if owner is None:
            owners[short] = path
            out[short] = value
        elif owner != path and stats is not None:
            stats.collisions += 1
        if "/" in path:
            out[path] = value


# -- renames and checks shared by both sources -------------------------------------------------------


def apply_renames(fields: dict[str, Any], renames: AnyMapping[str, str]) -> dict[str, Any]:
    """Rename a form's own names to the conventional ones (per-partner override), in repeats too."""
    if not renames:
        return fields
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [apply_renames(child, renames) for child in value]
        out[renames.get(key, key)] = value
    return out


def check_mapping_against_form(form: FormDefinition, mapping_ref: str, *, where: str, renames: AnyMapping[str, str], base_dir: Path | None) -> list[Problem]:
    """Problems a form version causes for a mapping: mapped questions renamed or removed, choices
    that are no code of the target list (each would become a rejection), repeats gone."""
    from connector.mapping import MappingError, load_mapping

    try:
        mapping = load_mapping(mapping_ref, base_dir=base_dir)
    except MappingError as exc:
        return [Problem(where, f"mapping {mapping_ref!r} cannot be loaded: {exc}")]
    problems: list[Problem] = []
    reverse = {new: old for old, new in renames.items()}
    offered = {renames.get(n, n) for n in form.raw_names()}
    version = f" version {form.version}" if form.version else ""
    missing = [rule for rule in mapping.rules if not any(s.split(".")[0] in offered for s in rule.sources)]
    # A form may lawfully lack some mapped questions (the published HTCDS form lacks the partner
    # variant's), so each is a warning; most of them missing means the wrong form: an error.
    severity = "error" if len(missing) * 2 > len(mapping.rules) else "warning"
    for rule in mapping.rules:
        if rule in missing:
            names = ", ".join(reverse.get(s, s) for s in rule.sources)
            problems.append(
                Problem(
                    f"{where}: form {form.form_id}{version}",
                    f"{rule.target} is mapped from {names}, which the form does not have (renamed or removed?); it will stay unknown",
                    severity=severity,
                    hint="fix the mapping's `from:` or add `rename: {new_name: old_name}` to the source options",
                )
            )
            continue
        present = [s for s in rule.sources if s.split(".")[0] in offered]
        child_name = rule.pick or rule.collect
        name = reverse.get(present[0], present[0])
        question = form.field(name) if child_name is None else form.field(f"{name}/{reverse.get(child_name, child_name)}")
        if child_name is not None and question is None:
            problems.append(Problem(f"{where}: form {form.form_id}{version}", f"{rule.target}: repeat {name} has no question {child_name}", hint="fix `pick:`/`collect:` in the mapping"))
            continue
        # A records rule (`each:`) reads one question of the repeat per entry key: each one gone is an unknown key.
        for sub in rule.each:
            child = next((q for q in (form.field(f"{name}/{reverse.get(s, s)}") for s in sub.sources) if q is not None), None)
            if child is None:
                problems.append(
                    Problem(
                        f"{where}: form {form.form_id}{version}",
                        f"{rule.target}: repeat {name} has no question {' or '.join(sub.sources)}; {sub.target} will stay unknown",
                        severity="warning",
                        hint=f"fix `each: {sub.target}:` in the mapping or add `rename:` to the source options",
                    )
                )
            else:
                problems.extend(_choices_not_codes(form, mapping, child, sub, f"{where}: form {form.form_id}{version}"))
        problems.extend(_choices_not_codes(form, mapping, question, rule, f"{where}: form {form.form_id}{version}"))
    return problems


def _choices_not_codes(form: FormDefinition, mapping: Mapping, question: FormField | None, rule: FieldRule, where: str) -> list[Problem]:
    """A warning for the choices of `question` that are no code of the rule target's list (each would be a rejection)."""
    from connector.mapping import fold

    spec = mapping.schema.fields[rule.target]
    if question is None or not question.list_name or not spec.codelist:
        return []
    codes = mapping.schema.codelists[spec.codelist]
    known = {fold(c) for c in codes} | {fold(label) for label in codes.values()} | set(rule.value_map)
    unknown = [n for n in form.choice_names(question.list_name) if fold(n) not in known]
    if not unknown:
        return []
    shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
    return [
        Problem(
            f"{where}: {question.path}",
            f"{len(unknown)} choice(s) are not codes of {spec.codelist!r} and will be rejected: {shown}",
            severity="warning",
            hint=f"add them under `map:` of {rule.target} in the mapping",
        )
    ]
