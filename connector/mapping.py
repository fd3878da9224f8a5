"""The mapping engine: applies a declarative mapping file to raw records, giving common-schema cases.

Mappings are data (`mappings/*.yaml`), so a partner with a differently named org or form edits a
file, not code. The engine normalises every value by the target field's schema type (codes checked
against their code list, multi-selects split, dates parsed in several formats, numbers and
checkboxes parsed) and turns whatever it cannot read into a `Rejection` naming source, record id,
field and reason. A rejected field is stored as unknown; the rest of the record and the run go on.

File format::

    profile: excel_htcds
    fields:                        # common-schema field -> where its raw value comes from
      prs_Gender:
        from: prs_Gender           # raw name; dots reach into nested dicts; a list = first present
        map: {F: Feminine}         # extra raw -> code map; the code list's codes and labels are always accepted
        split: ";"                 # multi-select separator: ";", " ", "," or "list"
        formats: ["%m/%d/%Y"]      # extra date formats (ISO and common day-first formats are built in)
      ext_CountryOfExploitation:
        from: events               # a list of child records
        where: {hte_Type: Exploitation}  # a child's value equal to it, or holding it (";" or space-separated)
        pick: hte_Country          # field of the first matching child
      ext_PerpetratorRoles:
        from: perpetrators
        collect: per_RoleInProcess # union of the children's values
      ext_Perpetrators:            # a `records` field: one entry per child record
        from: perpetrators
        unless: {Type__c: Victim}  # children left out (the same test as `where`)
        each:                      # entry key (one of the field's `items`) -> rule on the child
          per_Gender: Connected_Contact.Gender__c
          per_AgeAtRegistration: {age_at: {birth: Connected_Contact.Birthdate, on: ext_RegistrationDate}}
    derive:
      ext_AgeAtRegistration: {age_at: {birth: prs_Birthdate, date: ext_RegistrationDate}}
      ext_MajorityStatus: {majority_from: ext_AgeAtRegistration}
      ext_TraffickMonths: {months_from_events: {events: ext_TraffickingEvents, types: [Recruitment, Exploitation], until: ext_RegistrationDate}}
    ignore: [cas_CaseOwner]        # raw fields knowingly left out

A `records` field (`ext_Perpetrators`, `ext_TraffickingEvents`) is a list of dicts, or None when the
record has no such child. `from: .` reads the record itself as its one entry, for a flat sheet with
one perpetrator's columns per row; an entry with every value empty is then no entry. Each entry's
values are normalised by the schema type of its key, and a value that cannot be read is a
rejection naming that key (`per_Gender`) and is None in the entry.
`age_at` inside `each` reads a birth date on the child and stores only the age on a case field's
date (the birth date itself is never stored). Entries are sorted by their values in `items` order,
so the same children in any API order store the same. Records rules run after the plain rules
(their `age_at` may use a plain rule's value), derivations after both.

`months_from_events` gives whole months from the earliest event of `types` to `until`: None when
either is unknown; an event dated after `until` is a rejection of `hte_Date` and the months are None.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigurationError
from connector.records import CaseRecord, MappedPage, Page, RawRecord, Rejection
from connector.schema import FieldSpec, Schema, load_schema

SPLITS = {";": ";", " ": None, ",": ",", "list": "list"}  # None: any whitespace
DEFAULT_DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%Y/%m/%d",
    "%Y.%m.%d",
    "%b %d %Y",
    "%d %b %Y",
    "%B %d %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
)
TRUE_WORDS = {"true", "yes", "y", "1", "x", "checked", "on", "si", "oui"}
FALSE_WORDS = {"false", "no", "n", "0", "unchecked", "off", "non"}
EXCEL_EPOCH = date(1899, 12, 30)
MAX_AGE = 120
MAJORITY_AGE = 18
_FOLD = re.compile(r"[^0-9a-z]+")
NEAR_CODE = 0.8  # similarity (difflib ratio of folded text) above which a value is a misspelt code
MEMO_LIMIT = 50_000  # raw values remembered per coded field (and closest-code answers): bounded memory


class MappingError(ConfigurationError):
    """A mapping file that cannot be used; one message per problem, each naming file and line (exit 2
    when it stops a command; in a sync it fails only its source)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def fold(text: str) -> str:
    """Comparison key for codes and labels: case, spaces and punctuation do not matter."""
    return _FOLD.sub("", text.casefold())


@dataclass(frozen=True)
class FieldRule:
    """How one common-schema field is read from a raw record."""

    target: str
    sources: tuple[str, ...]
    value_map: dict[str, str | None] = field(default_factory=dict)
    split: str | None = ";"
    formats: tuple[str, ...] = ()
    where: dict[str, str] | None = None
    pick: str | None = None
    collect: str | None = None
    each: tuple[FieldRule, ...] = ()  # a `records` field: one rule per entry key, read on each child
    unless: dict[str, str] | None = None  # children left out of `each`
    age_at: tuple[str, str] | None = None  # inside `each`: (birth date on the child, case field with the date)


@dataclass(frozen=True)
class Derivation:
    target: str
    kind: str  # "age_at" | "majority_from" | "months_from_events"
    args: dict[str, Any]


class _Rejected(Exception):
    def __init__(self, reason: str, value: Any = None, partial: Any = None, near_code: bool = False, field: str | None = None):
        self.reason = reason
        self.value = value
        self.partial = partial  # what could still be read (the known items of a multi-select)
        self.near_code = near_code  # the value is a misspelt code: safe and useful to show
        self.field = field  # the field to name in the rejection, when not the rule's own


class Mapping:
    """A loaded, schema-checked mapping. Stateless, so one instance maps any number of pages."""

    def __init__(self, name: str, path: str, rules: list[FieldRule], derivations: list[Derivation], ignore: list[str], schema: Schema):
        self.name = name
        self.path = path
        self.rules = rules
        self.derivations = derivations
        self.ignore = ignore
        self.schema = schema
        self.text: str | None = None  # the YAML it was loaded from (load_mapping)
        self._lookups = {name: _code_lookup(name, codes) for name, codes in schema.codelists.items()}
        self._lookup_keys = {name: list(lookup) for name, lookup in self._lookups.items()}
        # Compiled once: each rule with its field spec, and for coded fields a memo of what each raw
        # value became (codes repeat: a country or a gender is normalised once, not once per record).
        self._compiled = [
            (rule, schema.fields[rule.target], {} if schema.fields[rule.target].type in ("code", "codes") else None, _extractor(rule))
            for rule in rules if not rule.each  # a rule over list entries (`each:`) maps them below, entry by entry
        ]
        self._closest: dict[tuple[str, str], str | None] = {}

    def raw_fields(self) -> set[str]:
        """Top-level raw field names the mapping reads: `check` compares them with the source's fields."""
        names: set[str] = set()
        for rule in self.rules:
            for source in rule.sources:
                if source == SELF:
                    names.update(s.split(".")[0] for sub in rule.each for s in sub.sources)
                else:
                    names.add(source.split(".")[0])
        return names

    def missing_fields(self, offered: set[str], always: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Rules none of whose raw fields the source offers, as `target <- raw names`, for `check`.

        A warning must mean the field will really stay unknown, so a path counts as offered when
        the source lists it in any of the shapes sources use: the path itself (`Contact.Gender__c`),
        a child of a related list or repeat (`perpetrators[].Role_in_Process__c` or
        `perpetrators.role` for `from: perpetrators` + `collect:`), the whole top-level object,
        or a field the source's records always carry though it lists none (`always`: form
        metadata such as `_submission_time`, the Case's `Owner.Name`).
        """
        names = {_plain(name) for name in (*offered, *always)}
        # a whole object or list stands for its fields only when the source lists none of them
        listed = {name.split(".")[0] for name in names if "." in name}
        opaque = names - listed
        missing = []
        for rule in self.rules:
            child = rule.pick or rule.collect
            wanted = [f"{source}.{child}" if child else source for source in rule.sources if source != SELF]
            if SELF in rule.sources:  # `from: .`: the entry keys' own columns
                wanted += [source for sub in rule.each for source in sub.sources]
            if not any(_plain(path) in names or _plain(path).split(".")[0] in opaque for path in wanted):
                missing.append(f"{rule.target} <- {' | '.join(wanted)}")
        return missing

    def targets(self) -> list[str]:
        return [rule.target for rule in self.rules] + [d.target for d in self.derivations]

    def map_page(self, source_id: str, page: Page) -> MappedPage:
        out = MappedPage(cursor=page.cursor, number=page.number)
        for raw in page.records:
            case, rejections = self.map_record(source_id, raw)
            out.cases.append(case)
            out.rejections.extend(rejections)
        return out

    def map_record(self, source_id: str, raw: RawRecord) -> tuple[CaseRecord, list[Rejection]]:
        if raw.unreadable is not None:
            field, reason = raw.unreadable
            return CaseRecord(source_id, raw.record_id, {}, raw.updated_at, deleted=True), [Rejection(source_id, raw.record_id, field, None, reason)]
        if raw.deleted:
            return CaseRecord(source_id, raw.record_id, {}, raw.updated_at, deleted=True), []
        values: dict[str, Any] = {}
        rejections: list[Rejection] = []
        for rule, spec, memo, extract in self._compiled:
            value = extract(raw.fields)
            try:
                values[rule.target] = self._normalise(spec, rule, value) if memo is None else self._normalise_memo(spec, rule, value, memo)
            except _Rejected as rejected:
                values[rule.target] = rejected.partial
                shown = rejected.value if rejected.value is not None else value
                rejections.append(Rejection(source_id, raw.record_id, rule.target, redact(spec, shown, rejected.near_code), rejected.reason))
        for rule in self.rules:
            if rule.each:
                values[rule.target] = self._records(source_id, raw, rule, values, rejections)
        for derivation in self.derivations:
            try:
                values[derivation.target] = _derive(derivation, values)
            except _Rejected as rejected:
                values[derivation.target] = None
                field_name = rejected.field or derivation.args.get("birth", derivation.target)
                spec = self.schema.fields[field_name]
                rejections.append(Rejection(source_id, raw.record_id, field_name, redact(spec, rejected.value), rejected.reason))
        return CaseRecord(source_id, raw.record_id, values, raw.updated_at), rejections

    def _records(self, source_id: str, raw: RawRecord, rule: FieldRule, values: dict[str, Any], rejections: list[Rejection]) -> list[dict[str, Any]] | None:
        """The entries of a `records` field: one per child left after `where` and `unless`."""
        children = _children(raw.fields, rule)
        if not children:
            return None
        entries = []
        for child in children:
            entry: dict[str, Any] = {}
            for sub in rule.each:
                spec = self.schema.fields[sub.target]
                value = _extract(child, sub)
                try:
                    if sub.age_at is not None:
                        born = None if _is_blank(value) else _parse_date(value, sub.formats, self.schema.fields["prs_Birthdate"])
                        entry[sub.target] = _age(born, values.get(sub.age_at[1]))
                    else:
                        entry[sub.target] = self._normalise(spec, sub, value)
                except _Rejected as rejected:
                    entry[sub.target] = rejected.partial
                    shown = rejected.value if rejected.value is not None else value
                    rejections.append(Rejection(source_id, raw.record_id, sub.target, redact(spec, shown, rejected.near_code), rejected.reason))
            if SELF in rule.sources and all(v is None for v in entry.values()):
                continue  # a flat row whose perpetrator columns are all empty has no perpetrator
            entries.append(entry)
        if not entries:
            return None
        order = list(self.schema.fields[rule.target].items)
        return sorted(entries, key=lambda e: [_sort_text(e.get(k)) for k in order])

    # -- normalisation by schema type ------------------------------------------------------------

    def _normalise(self, spec: FieldSpec, rule: FieldRule, value: Any) -> Any:
        if _is_blank(value):
            return None
        kind = spec.type
        if kind == "codes":
            codes: set[str] = set()
            unknown: list[_Rejected] = []
            for item in _split(value, rule.split):
                try:
                    code = self._code(spec, rule, item)
                except _Rejected as rejected:
                    unknown.append(rejected)
                    continue
                if code is not None:
                    codes.add(code)
            if unknown:
                reason = unknown[0].reason if len(unknown) == 1 else f"not a code of list {spec.codelist!r}"
                near = all(r.near_code for r in unknown)
                raise _Rejected(reason, "; ".join(str(r.value) for r in unknown), sorted(codes) or None, near)
            return sorted(codes) or None
        if isinstance(value, list):
            if len(value) > 1:
                raise _Rejected(f"expected one value, got {len(value)}", "; ".join(map(str, value)))
            value = value[0]
        if kind == "code":
            if isinstance(value, str) and rule.split not in (None, "list") and rule.split in value and spec.codelist == "countries":
                value = value.split(rule.split)[0]  # first of several citizenships in a single-value field
            return self._code(spec, rule, value)
        if kind == "date":
            return _parse_date(value, rule.formats, spec).isoformat()
        if kind == "datetime":
            return _parse_datetime(value).isoformat()
        if kind == "integer":
            return _parse_int(value)
        if kind == "number":
            return _parse_number(value)
        if kind == "boolean":
            return _parse_bool(rule, value)
        text = str(value).strip()
        return text or None

    def _normalise_memo(self, spec: FieldSpec, rule: FieldRule, value: Any, memo: dict[Any, tuple[bool, Any]]) -> Any:
        """`_normalise` for a coded field, remembered per raw value (the result depends on nothing else)."""
        try:
            # Typed keys: True, 1 and 1.0 are equal dict keys but read differently ("True" is no code "1").
            key = tuple((type(v), v) for v in value) if isinstance(value, list) else (type(value), value)
            hit = memo.get(key)
        except TypeError:  # unhashable (a dict in a list): no memo
            return self._normalise(spec, rule, value)
        if hit is None:
            try:
                hit = (True, self._normalise(spec, rule, value))
            except _Rejected as rejected:
                hit = (False, (rejected.reason, rejected.value, rejected.partial, rejected.near_code))
            if len(memo) < MEMO_LIMIT:
                memo[key] = hit
        ok, outcome = hit
        if ok:
            return list(outcome) if isinstance(outcome, list) else outcome
        reason, shown, partial, near = outcome
        raise _Rejected(reason, shown, list(partial) if isinstance(partial, list) else partial, near)

    def closest_code(self, codelist: str, key: str) -> str | None:
        """The code whose folded text is nearest to `key` (difflib ratio >= NEAR_CODE), or None.

        Cached per list and key: difflib compares the key with every code and label of the list,
        and the same misspelling comes back on many records."""
        cache_key = (codelist, key)
        if cache_key in self._closest:
            return self._closest[cache_key]
        close = difflib.get_close_matches(key, self._lookup_keys[codelist], n=1, cutoff=NEAR_CODE)
        code = self._lookups[codelist][close[0]] if close else None
        if len(self._closest) < MEMO_LIMIT:
            self._closest[cache_key] = code
        return code

    def _code(self, spec: FieldSpec, rule: FieldRule, value: Any) -> str | None:
        text = str(value).strip()
        if not text:
            return None
        key = fold(text)
        if key in rule.value_map:
            return rule.value_map[key]
        lookup = self._lookups[spec.codelist]  # type: ignore[index]
        code = lookup.get(key)
        if code is None:
            closest = self.closest_code(spec.codelist, key)  # type: ignore[arg-type]
            hint = f"; closest code {closest}" if closest else ""
            raise _Rejected(f"not a code of list {spec.codelist!r}{hint}", text, near_code=closest is not None)
        return code


def redact(spec: FieldSpec | None, value: Any, near_code: bool = False) -> str | None:
    """What a rejection may show of a value: only a misspelt code, never anything else.

    Whatever is typed into a field by mistake can be a name, a phone number or a note about a
    person, even in a coded field; so a rejected value is shown only when it is close to a code of
    the field's list (then it is a typo the partner can fix, and the reason names the code). All
    else is replaced by its length; the reason still says what was wrong.
    """
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, (date, datetime)) else str(value).strip()
    if spec is not None and spec.role not in ("direct_identifier", "free_text") and near_code and len(text) <= 40:
        return text
    return f"[redacted, {len(text)} chars]"


def load_mapping(name_or_path: str | Path, schema: Schema | None = None, *, base_dir: Path | None = None, text: str | None = None) -> Mapping:
    """Load a packaged mapping by name (`excel_htcds`) or a mapping file by path, checked against the schema.

    With `text`, that is the mapping's YAML and nothing is read (the mapping worker gets the text
    the main process read, so both map with the same rules even if the file changes meanwhile)."""
    schema = schema or load_schema()
    path, text = (Path(str(name_or_path)), text) if text is not None else _read_mapping(str(name_or_path), base_dir)
    from connector.config import _load_yaml_with_lines  # one YAML-with-lines reader for all our files

    try:
        doc, lines = _load_yaml_with_lines(text)
    except yaml.YAMLError as exc:
        raise MappingError([f"{path}: not valid YAML ({exc})"]) from None
    problems: list[str] = []

    def where(*loc: object) -> str:
        probe = tuple(loc)
        while probe and probe not in lines:
            probe = probe[:-1]
        return f"{path}:{lines.get(probe, 1)}"

    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
        raise MappingError([f"{path}:1: a mapping needs a `fields:` section"])
    unknown_top = set(doc) - {"profile", "description", "fields", "derive", "ignore", "record_id"}
    for key in sorted(unknown_top):
        problems.append(f"{where(key)}: unknown key {key!r}")

    rules: list[FieldRule] = []
    for target, entry in doc["fields"].items():
        rule = _parse_rule(target, entry, schema, lambda *loc, t=target: where("fields", t, *loc), problems)
        if rule is not None:
            rules.append(rule)

    derivations: list[Derivation] = []
    for target, entry in (doc.get("derive") or {}).items():
        if target not in schema.fields:
            problems.append(f"{where('derive', target)}: {target!r} is not a common-schema field")
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            problems.append(f"{where('derive', target)}: a derivation is one of age_at, majority_from, months_from_events")
            continue
        (kind, args), = entry.items()
        if kind == "age_at" and isinstance(args, dict):
            args = {("on" if key is True else key): value for key, value in args.items()}  # YAML 1.1 reads `on:` as true
            if "date" in args:
                args["on"] = args.pop("date")
        if kind == "age_at" and isinstance(args, dict) and set(args) == {"birth", "on"}:
            derivations.append(Derivation(target, kind, {"birth": args["birth"], "on": args["on"]}))
        elif kind == "majority_from" and isinstance(args, str):
            derivations.append(Derivation(target, kind, {"age": args}))
        elif kind == "months_from_events" and isinstance(args, dict) and set(args) == {"events", "types", "until"}:
            events, until, types = args["events"], args["until"], args["types"]
            if schema.fields.get(events) is None or "hte_Date" not in schema.fields[events].items:
                problems.append(f"{where('derive', target, kind, 'events')}: {events!r} is not a records field of events (with hte_Date)")
            elif until not in schema.fields or schema.fields[until].type != "date":
                problems.append(f"{where('derive', target, kind, 'until')}: {until!r} is not a date field")
            elif not isinstance(types, list) or any(str(t) not in schema.codelists["event_type"] for t in types):
                problems.append(f"{where('derive', target, kind, 'types')}: types must be a list of event_type codes")
            else:
                derivations.append(Derivation(target, kind, {"events": events, "types": tuple(str(t) for t in types), "until": until}))
        else:
            problems.append(f"{where('derive', target)}: unknown derivation {kind!r} or bad arguments")
    if problems:
        raise MappingError(problems)
    mapping = Mapping(str(doc.get("profile") or path.stem), str(path), rules, derivations, list(doc.get("ignore") or []), schema)
    mapping.text = text
    return mapping


def _parse_rule(target: str, entry: Any, schema: Schema, where, problems: list[str]) -> FieldRule | None:
    if target not in schema.fields:
        problems.append(f"{where()}: {target!r} is not a common-schema field")
        return None
    if isinstance(entry, str):
        entry = {"from": entry}
    if not isinstance(entry, dict) or "from" not in entry:
        problems.append(f"{where()}: {target}: needs `from:`")
        return None
    allowed = {"from", "map", "split", "formats", "where", "pick", "collect", "each", "unless"}
    for key in sorted(set(entry) - allowed):
        problems.append(f"{where(key)}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    spec = schema.fields[target]
    each: list[FieldRule] = []
    if (spec.type == "records") != ("each" in entry):
        problems.append(f"{where()}: {target}: `each:` is for a records field, and a records field needs it")
    elif "each" in entry:
        if not isinstance(entry["each"], dict) or not entry["each"]:
            problems.append(f"{where('each')}: `each:` maps entry keys ({', '.join(spec.items)}) to rules")
        else:
            for key, sub in entry["each"].items():
                rule = _parse_item_rule(str(key), sub, spec, schema, lambda *loc, k=key: where("each", k, *loc), problems)
                if rule is not None:
                    each.append(rule)
    sources = entry["from"] if isinstance(entry["from"], list) else [entry["from"]]
    split = entry.get("split", ";")
    if split not in SPLITS:
        problems.append(f"{where('split')}: split must be one of ';', ' ', ',', 'list'")
        split = ";"
    value_map: dict[str, str | None] = {}
    for raw, code in (entry.get("map") or {}).items():
        if code is not None and spec.codelist and str(code) not in schema.codelists[spec.codelist]:
            problems.append(f"{where('map', raw)}: {code!r} is not a code of list {spec.codelist!r}")
        value_map[fold(str(raw))] = None if code is None else str(code)
    return FieldRule(
        target=target,
        sources=tuple(str(s) for s in sources),
        value_map=value_map,
        split=SPLITS[split],
        formats=tuple(entry.get("formats") or ()),
        where=entry.get("where"),
        pick=entry.get("pick"),
        collect=entry.get("collect"),
        each=tuple(each),
        unless=entry.get("unless"),
    )


def _parse_item_rule(key: str, entry: Any, spec: FieldSpec, schema: Schema, where, problems: list[str]) -> FieldRule | None:
    """One key of an `each:` block: a plain rule read on the child, or `{age_at: {birth, on}}`."""
    if key not in spec.items:
        problems.append(f"{where()}: {key!r} is not an entry key of {spec.name} ({', '.join(spec.items)})")
        return None
    if isinstance(entry, dict) and "age_at" in entry:
        args = entry["age_at"]
        if isinstance(args, dict):
            args = {("on" if k is True else k): v for k, v in args.items()}  # YAML 1.1 reads `on:` as true
        item_type = schema.fields[key].type
        if set(entry) != {"age_at"} or not isinstance(args, dict) or set(args) != {"birth", "on"} or item_type != "integer":
            problems.append(f"{where('age_at')}: age_at needs {{birth: RAW, on: FIELD}} and an integer entry key")
            return None
        if args["on"] not in schema.fields or schema.fields[args["on"]].type != "date":
            problems.append(f"{where('age_at', 'on')}: {args['on']!r} is not a date field")
            return None
        return FieldRule(target=key, sources=(str(args["birth"]),), age_at=(str(args["birth"]), str(args["on"])))
    if isinstance(entry, dict) and set(entry) & {"each", "unless", "where", "pick", "collect"}:
        problems.append(f"{where()}: an entry key reads one value of the child (from, map, split, formats)")
        return None
    return _parse_rule(key, entry, schema, where, problems)


def _read_mapping(name: str, base_dir: Path | None) -> tuple[Path, str]:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") or "/" in name:
        path = candidate if candidate.is_absolute() or base_dir is None else base_dir / candidate
        try:
            return path, path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError([f"{path}: cannot read mapping ({exc.strerror})"]) from None
    packaged = resources.files("mappings").joinpath(f"{name}.yaml")
    if not packaged.is_file():
        known = sorted(p.name[:-5] for p in resources.files("mappings").iterdir() if p.name.endswith(".yaml"))
        raise MappingError([f"no packaged mapping named {name!r}; known: {', '.join(known)} (or give a path to a .yaml file)"])
    return Path(f"mappings/{name}.yaml"), packaged.read_text(encoding="utf-8")


def _plain(path: str) -> str:
    """One spelling for a child path: `events[].Country__c`, `events/Country__c` -> `events.Country__c`."""
    return path.replace("[]", "").replace("/", ".")


def _code_lookup(name: str, codes: dict[str, str]) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for code, label in codes.items():
        lookup.setdefault(fold(label), code)
    for code in codes:
        lookup[fold(code)] = code  # codes win over labels
    return lookup


_SORT_TEXTS: dict[Any, str] = {}


def _sort_text(value: Any) -> str:
    """An entry value's JSON text, the key entries of a `records` field are sorted by; remembered per
    value (typed, so 1 and True stay apart), as the same codes recur in every case."""
    try:
        key = (value.__class__, tuple((v.__class__, v) for v in value)) if value.__class__ is list else (value.__class__, value)
        text = _SORT_TEXTS.get(key)
    except TypeError:  # unhashable (a dict inside): not remembered
        return json.dumps(value, sort_keys=True, default=str)
    if text is None:
        text = json.dumps(value, sort_keys=True, default=str)
        if len(_SORT_TEXTS) < MEMO_LIMIT:
            _SORT_TEXTS[key] = text
    return text


def _get(record: Any, dotted: str) -> Any:
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _extractor(rule: FieldRule) -> Any:
    """`_extract` for one rule, with its paths split once; plain top-level names read with one `get`."""
    if rule.pick is not None or rule.collect is not None or any("." in source for source in rule.sources):
        return lambda fields: _extract(fields, rule)
    names = rule.sources
    if len(names) == 1:
        name = names[0]
        return lambda fields: fields.get(name)

    def first_present(fields: dict[str, Any]) -> Any:
        value = None
        for name in names:
            value = fields.get(name)
            if not _is_blank(value):
                break
        return value

    return first_present


def _extract(fields: dict[str, Any], rule: FieldRule) -> Any:
    value = None
    for source in rule.sources:
        value = _get(fields, source)
        if not _is_blank(value):
            break
    if rule.pick is None and rule.collect is None:
        return value
    children = _filtered(value, rule)
    if rule.pick is not None:
        for child in children:
            picked = _get(child, rule.pick)
            if not _is_blank(picked):
                return picked
        return None
    collected: list[Any] = []
    for child in children:
        collected.extend(_split(_get(child, rule.collect), rule.split))  # type: ignore[arg-type]
    return collected


def _filtered(value: Any, rule: FieldRule) -> list[dict[str, Any]]:
    children = [c for c in (value if isinstance(value, list) else []) if isinstance(c, dict)]
    if rule.where:
        children = [c for c in children if all(_matches(_get(c, k), v) for k, v in rule.where.items())]
    if rule.unless:
        children = [c for c in children if not all(_matches(_get(c, k), v) for k, v in rule.unless.items())]
    return children


SELF = "."  # `from: .` in a records rule: the record itself is the one entry (a flat sheet's columns)


def _children(fields: dict[str, Any], rule: FieldRule) -> list[dict[str, Any]]:
    """The child records a `records` rule reads: the first source that has any."""
    for source in rule.sources:
        if source == SELF:
            return _filtered([fields], rule)
        value = _get(fields, source)
        if isinstance(value, list) and value:
            return _filtered(value, rule)
    return []


def _matches(value: Any, wanted: Any) -> bool:
    """A `where` test: equal to the wanted code, or holding it among the items of a multi-select.

    Items are `;`-separated (a Salesforce multi-select picklist) or space-separated (an XLSForm
    select_multiple holds choice names, which have no spaces); a whole value still matches as one,
    so a label with spaces is not taken apart."""
    if isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
    else:
        text = str(value if value is not None else "")
        items = [text, *text.split(";"), *text.split()]
    return fold(str(wanted)) in {fold(item) for item in items}


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, (list, tuple)) and not any(not _is_blank(v) for v in value)


def _split(value: Any, split: str | None) -> list[Any]:
    if _is_blank(value):
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if not _is_blank(v)]
    text = str(value)
    parts = text.split() if split is None else text.split(";" if split == "list" else split)
    return [p.strip() for p in parts if p.strip()]


def _parse_date(value: Any, formats: tuple[str, ...], spec: FieldSpec) -> date:
    if isinstance(value, datetime):
        parsed = value.date()
    elif isinstance(value, date):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and 1 < value < 100000:
        parsed = EXCEL_EPOCH + timedelta(days=int(value))  # an Excel serial date that lost its format
    else:
        text = " ".join(str(value).strip().replace(",", ", ").split()).replace(" ,", ",")
        parsed = None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00")).date()
        except ValueError:
            for fmt in formats + DEFAULT_DATE_FORMATS:
                try:
                    parsed = datetime.strptime(text, fmt).date()
                    break
                except ValueError:
                    continue
        if parsed is None:
            raise _Rejected("not a date in a known format", value)
    if parsed.year < 1900:
        raise _Rejected("date before 1900", value)
    today = datetime.now(timezone.utc).date()
    if parsed > today + timedelta(days=1):
        raise _Rejected("date in the future", value)
    if spec.name.endswith("Birthdate") and parsed.year < today.year - MAX_AGE:
        raise _Rejected(f"birth date more than {MAX_AGE} years ago", value)
    return parsed


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise _Rejected("not an ISO date-time", value) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Rejected("not a whole number", value)
    try:
        number = float(str(value).strip().replace(",", ""))
    except ValueError:
        raise _Rejected("not a whole number", value) from None
    if number != int(number):
        raise _Rejected("not a whole number", value)
    return int(number)


def _parse_number(value: Any) -> float:
    try:
        return float(str(value).strip().replace(",", ""))
    except ValueError:
        raise _Rejected("not a number", value) from None


def _parse_bool(rule: FieldRule, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    key = fold(str(value))
    if key in rule.value_map:
        mapped = rule.value_map[key]
        return None if mapped is None else fold(mapped) in TRUE_WORDS  # type: ignore[return-value]
    if key in TRUE_WORDS:
        return True
    if key in FALSE_WORDS:
        return False
    raise _Rejected("not a yes/no value", value)


def _age(born: date | None, on: str | None) -> int | None:
    """Whole years from `born` to the ISO date `on`; None when either is unknown."""
    if born is None or on is None:
        return None
    seen = date.fromisoformat(on)
    age = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if age < 0:
        raise _Rejected("birth date after the registration date", born)
    if age > MAX_AGE:
        raise _Rejected(f"age at registration over {MAX_AGE}", born)
    return age


def traffick_months(start: date, end: date) -> int:
    """Whole months from `start` to `end` (a month counts once its day of the month is reached)."""
    return (end.year - start.year) * 12 + end.month - start.month - (end.day < start.day)


def _months_from_events(args: dict[str, Any], values: dict[str, Any]) -> int | None:
    """Why a rejection for a late event: a case is registered once the person is out of the
    situation, so an event after it is a typo in a date; guessing which date is wrong would
    publish a made-up duration, so the duration stays unknown and the partner is told."""
    until = values.get(args["until"])
    events = [e for e in values.get(args["events"]) or [] if isinstance(e, dict) and e.get("hte_Date")]
    if until is None:
        return None
    for event in events:
        if event["hte_Date"] > until:
            raise _Rejected(f"a {event.get('hte_Type') or 'trafficking'} event dated after the registration date ({args['until']})", event["hte_Date"], field="hte_Date")
    starts = [e["hte_Date"] for e in events if e.get("hte_Type") in args["types"]]
    if not starts:
        return None
    return traffick_months(date.fromisoformat(min(starts)), date.fromisoformat(until))


def _derive(derivation: Derivation, values: dict[str, Any]) -> Any:
    if derivation.kind == "age_at":
        birth = values.get(derivation.args["birth"])
        return _age(None if birth is None else date.fromisoformat(birth), values.get(derivation.args["on"]))
    if derivation.kind == "months_from_events":
        return _months_from_events(derivation.args, values)
    age = values.get(derivation.args["age"])
    if age is None:
        return None
    return "Minor" if age < MAJORITY_AGE else "Adult"
