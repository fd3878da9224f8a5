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

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from importlib import resources
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
class ChoiceMatch:
    """One choice of a matched select question and the code proposed for it (None: no code found)."""

    name: str
    label: str | None
    code: str | None
    sure: bool  # True: the name or label is the code, its label or one of its listed words
    how: str = ""


@dataclass
class Match:
    """A question matched to a common-schema field, with how it matched and its choices' fate."""

    question: FormField
    target: FieldSpec
    how: str  # "name" | "label" | "word '...'" | "choices"
    sure: bool = True
    options: list[ChoiceMatch] = field(default_factory=list)

    @property
    def choices(self) -> dict[str, str]:
        """Choice name -> code, for every choice a code was found for."""
        return {c.name: c.code for c in self.options if c.code is not None}

    @property
    def unmatched(self) -> list[tuple[str, str | None]]:
        return [(c.name, c.label) for c in self.options if c.code is None]


@dataclass
class Suggestion:
    """The matching result: what `render_yaml` writes."""

    profile: str
    form: FormDefinition
    matches: list[Match] = field(default_factory=list)
    repeats: dict[str, dict[str, Any]] = field(default_factory=dict)  # ext_ target -> rule
    unmatched: list[FormField] = field(default_factory=list)


# -- words ---------------------------------------------------------------------------------------


def words(text: str | None) -> tuple[str, ...]:
    """Lower-case, accent-free words of a name or label: `dateNaissance_1` -> ('date', 'naissance', '1')."""
    text = unicodedata.normalize("NFKD", str(text or "")).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("'", " ").lower()
    return tuple(w for w in re.split(r"[^0-9a-z]+", text) if w)


def _key(text: str | None) -> str:
    return "".join(words(text))


@dataclass(frozen=True)
class Vocabulary:
    """Field and code words (`mappings/schema/suggest_words.yaml`), folded for matching."""

    fields: dict[str, list[tuple[str, ...]]]
    codes: dict[str, dict[str, str]]  # code list -> folded word -> code


def load_vocabulary() -> Vocabulary:
    doc = yaml.safe_load(resources.files("mappings").joinpath("schema", "suggest_words.yaml").read_text(encoding="utf-8")) or {}
    fields = {name: [words(w) for w in items] for name, items in (doc.get("fields") or {}).items()}
    codes: dict[str, dict[str, str]] = {}
    for codelist, entries in (doc.get("codes") or {}).items():
        for code, items in entries.items():
            for word in items:
                codes.setdefault(codelist, {}).setdefault(_key(str(word)), str(code))
    return Vocabulary(fields, codes)


def _holds(haystack: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return n > 0 and any(haystack[i : i + n] == phrase for i in range(len(haystack) - n + 1))


# -- matching ------------------------------------------------------------------------------------

_TYPE_KINDS = {
    "date": {"date"}, "datetime": {"date", "datetime"}, "today": {"date"}, "integer": {"integer", "number"},
    "decimal": {"number", "integer"}, "select_one": {"code", "boolean"}, "select_multiple": {"codes"},
}  # fmt: skip


def match_form(form: FormDefinition, schema: Schema | None = None, *, profile: str = "partner_form") -> Suggestion:
    """Match questions and choices of `form` to the common schema.

    Every (question, field) pair gets a score: the field's name (100) or label (90) exactly, a
    listed word for the field in the question's name or label (10 + its length in words), the
    share of the question's choices that are codes of the field's list (up to +8), and the
    question's type against the field's (a date question is not a gender). Pairs are taken best
    first, each question and field once, so "date of birth" goes to the birth date even though
    "date" also fits other fields. Only a name match is sure; the rest are marked REVIEW with
    what matched.
    """
    schema = schema or load_schema()
    vocabulary = load_vocabulary()
    suggestion = Suggestion(profile=profile, form=form)
    candidates: list[tuple[float, int, str, str, bool]] = []  # (score, question index, field, how, sure)
    questions: list[FormField] = []
    for question in form.fields:
        if question.repeat is not None or question.name in FORM_METADATA or question.type in ("calculate", "note"):
            if question.repeat is None and question.name not in FORM_METADATA and question.type != "note":
                suggestion.unmatched.append(question)
            continue
        questions.append(question)
    for index, question in enumerate(questions):
        for spec in schema.fields.values():
            scored = _score(question, spec, form, schema, vocabulary)
            if scored is not None:
                candidates.append((scored[0], -index, spec.name, scored[1], scored[2]))
    taken_fields: set[str] = set()
    chosen: dict[int, tuple[str, str, bool]] = {}
    for score, neg_index, name, how, sure in sorted(candidates, reverse=True):
        if -neg_index in chosen or name in taken_fields:
            continue
        chosen[-neg_index] = (name, how, sure)
        taken_fields.add(name)
    for index, question in enumerate(questions):
        if index not in chosen:
            suggestion.unmatched.append(question)
            continue
        name, how, sure = chosen[index]
        spec = schema.fields[name]
        match = Match(question, spec, how, sure)
        if spec.codelist and question.list_name:
            match.options = [_match_choice(n, label, spec.codelist, schema, vocabulary) for n, label in form.choices.get(question.list_name, [])]
        suggestion.matches.append(match)
    _suggest_repeats(form, suggestion)
    return suggestion


def _score(question: FormField, spec: FieldSpec, form: FormDefinition, schema: Schema, vocabulary: Vocabulary) -> tuple[float, str, bool] | None:
    name_key, bare_key = _key(question.name), _key(_PREFIX.sub("", question.name))
    prefix = _PREFIX.match(question.name)
    if prefix and not spec.name.lower().startswith(prefix.group(1).lower() + "_"):
        return None  # `vic_...` is a victim field, not a perpetrator's
    if name_key == _key(spec.name):
        return 100.0, "name", True
    if bare_key and bare_key == _key(_PREFIX.sub("", spec.name)):
        if spec.name.lower().startswith(_CASE_PREFIXES):
            return 100.0, "name", True
        # "phone" on a case form is the person's phone, not the organisation's `org_Phone`.
        return 9.0, "name without its prefix", False
    base = question.type.split()[0] if question.type else ""
    kinds = _TYPE_KINDS.get(base)
    if kinds is not None and spec.type not in kinds and not (spec.type == "codes" and base == "select_one"):
        return None
    choice_list = form.choices.get(question.list_name or "") if base in SELECT_TYPES else None
    if choice_list and _yes_no(choice_list) and spec.type != "boolean":
        return None  # a yes/no list is a boolean, whatever its codes look like (`no` is Norway's code)
    label_words = words(question.label)
    if label_words and label_words == words(spec.label):
        return 90.0, "label", False  # labels repeat across the schema ("Type", "Country"): a person confirms
    score, how = 0.0, ""
    name_words = words(_PREFIX.sub("", question.name))
    for phrase in vocabulary.fields.get(spec.name, []):
        if _holds(label_words, phrase) or _holds(name_words, phrase) or _key(question.name) == "".join(phrase):
            if 10 + len(phrase) > score:
                score, how = 10.0 + len(phrase), f"word {' '.join(phrase)!r}"
    if spec.codelist and question.list_name and len(form.choices.get(question.list_name) or []) >= 3:
        options = [_match_choice(n, lb, spec.codelist, schema, vocabulary) for n, lb in form.choices[question.list_name]]
        share = sum(1 for o in options if o.code is not None and o.sure) / len(options)
        if share >= 0.5:
            score = max(score, 6.0) + 8 * share
            how = how or "choices"
    if score <= 0:
        return None
    return score, how, False


_CASE_PREFIXES = ("prs_", "vic_", "cas_", "ext_", "con_")


def _yes_no(choices: list[tuple[str, str | None]]) -> bool:
    from connector.mapping import FALSE_WORDS, TRUE_WORDS

    known = TRUE_WORDS | FALSE_WORDS | {"sim", "nao", "ja", "nein"}
    return all(_key(name) in known or _key(label) in known for name, label in choices)


def _match_choice(name: str, label: str | None, codelist: str, schema: Schema, vocabulary: Vocabulary) -> ChoiceMatch:
    codes = schema.codelists[codelist]
    exact = {_key(code): code for code in codes} | {_key(text): code for code, text in codes.items()}
    listed = vocabulary.codes.get(codelist, {})
    for key in (_key(name), _key(label)):
        if key and key in exact:
            return ChoiceMatch(name, label, exact[key], True, "code")
    for key in (_key(label), _key(name)):
        if key and key in listed:
            return ChoiceMatch(name, label, listed[key], True, "word")
    pool = {**{k: v for k, v in listed.items() if len(k) > 3}, **exact}
    for key in (_key(label), _key(name)):
        close = difflib.get_close_matches(key, list(pool), n=1, cutoff=0.8) if len(key) > 3 else []
        if close:
            return ChoiceMatch(name, label, pool[close[0]], False, f"close to {close[0]!r}")
    return ChoiceMatch(name, label, None, False)


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
        "# Questions matched by name, label, listed words (mappings/schema/suggest_words.yaml) and choices;",
        "# every choice is listed: `# confirmed` (its name or label is the code or a listed word) or marked.",
        "# Every line marked REVIEW needs a decision before use.",
        f"profile: {suggestion.profile}",
        f"description: {_scalar(form.title or form.form_id or suggestion.profile)}",
        "fields:",
    ]
    for match in suggestion.matches:
        spec, question = match.target, match.question
        split = spec.type == "codes" or question.type == "select_multiple"
        note = "" if match.sure else f"  # matched by {match.how} in {question.label or question.name!r}; {REVIEW}"
        if not split and not match.options:
            lines.append(f"  {spec.name}: {_scalar(question.name)}{note}")
            continue
        lines.append(f"  {spec.name}:{note}")
        lines.append(f"    from: {_scalar(question.name)}")
        if split:
            lines.append('    split: " "')
        if match.options:
            lines.append("    map:" if match.choices else f"    # map:  {REVIEW}: add the codes of the choices below")
            width = max(len(f"      {_scalar(c.name)}: {_scalar(c.code)}") for c in match.options) + 2
            for c in match.options:
                if c.code is not None:
                    entry = f"      {_scalar(c.name)}: {_scalar(c.code)}"
                    why = "confirmed" if c.sure else f"{REVIEW}: {c.how}"
                    lines.append(f"{entry.ljust(width)}# {why}" if c.sure else f"{entry.ljust(width)}{why}")
                else:
                    lines.append(f"      # {_scalar(c.name)}: ?   {REVIEW}: choice {c.name!r} ({c.label!r}) is no code of list {spec.codelist!r}")
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
