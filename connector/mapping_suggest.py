"""`mapping suggest`: a first draft of a partner's mapping, from their XLSForm.

A partner whose form is not the HTCDS XLSForm should not write a mapping from nothing. This reads
the form (an XLSForm workbook, or the form definition an ODK Central or Kobo source fetches),
matches each question to a common-schema field by name and then by label, matches each choice of
a matched select question to a code of the field's code list by name and then by label, and
writes a draft mapping YAML that loads as it is. Everything it could not match is marked
`# REVIEW` (unmatched questions are listed under `ignore:`, unmatched choices as commented `map:`
entries), so a person reviews exactly those lines.

    text = suggest_from_xlsform("partner_form.xlsx", profile="partner_form")
    text = suggest_for_source(source)            # a source with a `form()` method
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connector.schema import FieldSpec, Schema, load_schema
from connector.sources.xlsform import FormDefinition, FormField, read_xlsform

REVIEW = "# REVIEW"
_FOLD = re.compile(r"[^0-9a-z]+")
_PREFIX = re.compile(r"^(prs|vic|cas|per|hte|spl|con|org|cco|ext)_", re.IGNORECASE)
# Questions every XLSForm has that carry no case data.
FORM_METADATA = {"start", "end", "today", "deviceid", "phonenumber", "username", "email", "audit", "__version__", "instanceID"}
SELECT_TYPES = {"select_one", "select_multiple", "select_one_from_file", "select_multiple_from_file", "rank"}


def fold(text: str | None) -> str:
    return _FOLD.sub("", str(text or "").replace("\xa0", " ").lower())


@dataclass
class Match:
    """A question matched to a common-schema field, with how it matched and its choices' fate."""

    question: FormField
    target: FieldSpec
    how: str  # "name" | "label"
    choices: dict[str, str] = field(default_factory=dict)  # choice name -> code (matched)
    unmatched: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class Suggestion:
    """The matching result: what `render_yaml` writes."""

    profile: str
    form: FormDefinition
    matches: list[Match] = field(default_factory=list)
    repeats: dict[str, dict[str, Any]] = field(default_factory=dict)  # ext_ target -> rule
    unmatched: list[FormField] = field(default_factory=list)


def match_form(form: FormDefinition, schema: Schema | None = None, *, profile: str = "partner_form") -> Suggestion:
    """Match questions and choices of `form` to the common schema (names first, then labels)."""
    schema = schema or load_schema()
    by_name: dict[str, FieldSpec] = {}
    by_bare: dict[str, list[FieldSpec]] = {}
    by_label: dict[str, list[FieldSpec]] = {}
    for spec in schema.fields.values():
        by_name[fold(spec.name)] = spec
        by_bare.setdefault(fold(_PREFIX.sub("", spec.name)), []).append(spec)
        by_label.setdefault(fold(spec.label), []).append(spec)
    suggestion = Suggestion(profile=profile, form=form)
    taken: set[str] = set()
    for question in form.fields:
        if question.repeat is not None or question.name in FORM_METADATA or question.type in ("calculate", "note"):
            if question.repeat is None and question.name not in FORM_METADATA and question.type != "note":
                suggestion.unmatched.append(question)
            continue
        spec, how = _find(question, by_name, by_bare, by_label, taken)
        if spec is None:
            suggestion.unmatched.append(question)
            continue
        taken.add(spec.name)
        match = Match(question, spec, how)
        if spec.codelist and question.list_name:
            codes = schema.codelists[spec.codelist]
            lookup = {fold(code): code for code in codes} | {fold(label): code for code, label in codes.items()}
            for name, label in form.choices.get(question.list_name, []):
                code = lookup.get(fold(name)) or lookup.get(fold(label))
                if code is not None:
                    if fold(name) != fold(code):
                        match.choices[name] = code
                else:
                    match.unmatched.append((name, label))
        suggestion.matches.append(match)
    _suggest_repeats(form, suggestion)
    return suggestion


def _find(question: FormField, by_name: dict, by_bare: dict, by_label: dict, taken: set[str]) -> tuple[FieldSpec | None, str]:
    key = fold(question.name)
    spec = by_name.get(key)
    if spec is not None and spec.name not in taken:
        return spec, "name"
    prefix = _PREFIX.match(question.name)
    candidates = [s for s in by_bare.get(fold(_PREFIX.sub("", question.name)), []) if s.name not in taken]
    if prefix:
        candidates = [s for s in candidates if s.name.lower().startswith(prefix.group(1).lower() + "_")] or []
    if len(candidates) == 1:
        return candidates[0], "name"
    labelled = [s for s in by_label.get(fold(question.label), []) if s.name not in taken]
    if prefix:
        labelled = [s for s in labelled if s.name.lower().startswith(prefix.group(1).lower() + "_")]
    if len(labelled) == 1:
        return labelled[0], "label"
    return None, ""


def _suggest_repeats(form: FormDefinition, suggestion: Suggestion) -> None:
    """Repeats feed the case only through derived `ext_` fields: suggest the usual ones when the children fit."""
    for repeat in form.repeats:
        children = {fold(_PREFIX.sub("", f.name)): f for f in form.fields if f.repeat == repeat}
        name = repeat.rsplit("/", 1)[-1]
        if "country" in children and "type" in children:
            suggestion.repeats["ext_CountryOfExploitation"] = {
                "from": name, "where": {children["type"].name: "Exploitation"}, "pick": children["country"].name,
            }  # fmt: skip
        role = children.get("roleinprocess")
        if role is not None:
            suggestion.repeats["ext_PerpetratorRoles"] = {"from": name, "collect": role.name, "split": " "}
        relation = next((f for k, f in children.items() if "relation" in k), None)
        if relation is not None:
            suggestion.repeats["ext_RecruiterRelation"] = {"from": name, "collect": relation.name, "split": " "}


def render_yaml(suggestion: Suggestion) -> str:
    """The draft mapping as YAML text with `# REVIEW` on every line a person must decide."""
    form = suggestion.form
    lines = [
        f"# Draft mapping suggested from form {form.form_id or '?'}" + (f" version {form.version}" if form.version else "") + ".",
        "# Matched by question name, then label; every line marked REVIEW needs a decision before use.",
        f"profile: {suggestion.profile}",
        f"description: {_scalar(form.title or form.form_id or suggestion.profile)}",
        "fields:",
    ]
    for match in suggestion.matches:
        spec, question = match.target, match.question
        entry: dict[str, Any] = {"from": question.name}
        if spec.type == "codes" or question.type == "select_multiple":
            entry["split"] = " "
        if match.choices:
            entry["map"] = dict(match.choices)
        note = f"  # matched by label {question.label!r}; {REVIEW}" if match.how == "label" else ""
        if len(entry) == 1 and not match.unmatched:
            lines.append(f"  {spec.name}: {_scalar(question.name)}{note}")
            continue
        lines.append(f"  {spec.name}:{note}")
        lines.append(f"    from: {_scalar(question.name)}")
        if "split" in entry:
            lines.append('    split: " "')
        if match.choices or match.unmatched:
            lines.append("    map:" if match.choices else f"    # map:  {REVIEW}: add the codes of the choices below")
            for name, code in match.choices.items():
                lines.append(f"      {_scalar(name)}: {code}")
            for name, label in match.unmatched:
                lines.append(f"      # {_scalar(name)}: ?   {REVIEW}: choice {name!r} ({label!r}) is no code of list {spec.codelist!r}")
    lines.append("  ext_RegistrationDate: _submission_time")
    for target, rule in suggestion.repeats.items():
        lines.append(f"  {target}:  {REVIEW}: derived from a repeat; check `where`/`pick`/`collect`")
        for key, value in rule.items():
            lines.append(f"    {key}: {_flow(value)}")
    lines += [
        "derive:",
        "  ext_AgeAtRegistration: {age_at: {birth: prs_Birthdate, on: ext_RegistrationDate}}",
        "  ext_MajorityStatus: {majority_from: ext_AgeAtRegistration}",
        "ignore:",
    ]
    for question in suggestion.unmatched:
        lines.append(f"  - {_scalar(question.name)}  {REVIEW}: no common-schema field matches {question.path!r} ({question.label!r})")
    used = {r["from"] for r in suggestion.repeats.values()}
    for repeat in form.repeats:
        name = repeat.rsplit("/", 1)[-1]
        if name not in used:
            lines.append(f"  - {_scalar(name)}  {REVIEW}: repeat {repeat!r} is not mapped")
    if not any(line.startswith("  - ") for line in lines[lines.index("ignore:") :]):
        lines[-1] = "ignore: []"
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    """One YAML flow value on one line (quoted where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    return text.removesuffix("...").strip()


_flow = _scalar


def suggest_from_xlsform(path: str | Path, *, profile: str | None = None, schema: Schema | None = None) -> str:
    """Draft mapping YAML for an XLSForm workbook."""
    form = read_xlsform(path)
    return render_yaml(match_form(form, schema, profile=profile or Path(path).stem))


def suggest_for_source(source: Any, *, profile: str | None = None, schema: Schema | None = None) -> str:
    """Draft mapping YAML for the form a configured ODK Central or Kobo source serves (`source.form()`)."""
    if not hasattr(source, "form"):
        raise TypeError(f"source {getattr(source, 'id', source)!r} ({getattr(source, 'type_name', '?')}) has no form definition to suggest from")
    form = source.form()
    return render_yaml(match_form(form, schema, profile=profile or f"{source.id}_mapping"))


def suggest_for_config(config: Any, source_id: str, *, profile: str | None = None) -> str:
    """`htcds-connector mapping suggest CONFIG SOURCE`: draft mapping for one source of a loaded job config.

    A source with `options.xlsform: PATH` is read from that XLSForm workbook; an ODK Central or
    Kobo source from the form definition its server serves.
    """
    from connector.sources import source_class

    source_config = next((s for s in config.job.sources if s.id == source_id), None)
    if source_config is None:
        known = ", ".join(s.id for s in config.job.sources)
        raise KeyError(f"no source {source_id!r} in {config.path}; sources: {known}")
    workbook = source_config.options.get("xlsform")  # a data workbook (`path`) is not a form
    if workbook:
        return suggest_from_xlsform(config.resolve_path(workbook), profile=profile or f"{source_id}_mapping")
    source = source_class(source_config.type)(source_config, config)
    try:
        return suggest_for_source(source, profile=profile)
    finally:
        source.close()
