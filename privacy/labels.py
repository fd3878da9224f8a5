"""Words for columns and levels, from packaged data only (the codebook's descriptions and the
hierarchies), for the pages people read: report.html and the central page.

Why derived from the codebook rather than written again: the release view's descriptions
(`mappings/schema/release_view.yaml`) are what the codebook shows, so the report and the codebook
say the same thing. A handful of columns whose description starts with a rule rather than a name
(the concatenations, the "not specified" flags, ISO codes) get a name here. Packaged data only, so a
report rebuilt at the receiver from privacy.json is byte for byte the partner's.

    column_label("ageBroad", "Age in whole years at registration. The view ...")  -> "Age in whole years at registration"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

# Columns whose codebook description does not start with a name a reader would use.
NAMES = {
    "yearOfRegistration": "Year of registration",
    "gender": "Gender",
    "ageBroad": "Age at registration",
    "perpetratorMoneyPaid": "Money paid or received for the victim",
    "citizenship": "Citizenship",
    "CountryOfExploitation": "Country of exploitation",
    "meansOfControlConcatenated": "Means of control (all recorded, combined)",
    "typeOfExploitConcatenated": "Type of exploitation (all recorded, combined)",
    "typeOfLabourConcatenated": "Industry of labour exploitation (all recorded, combined)",
    "typeOfSexConcatenated": "Type of sexual exploitation (all recorded, combined)",
    "meansOfControlNotSpecified": "No means of control recorded",
    "typeOfLabourNotSpecified": "No industry recorded",
    "traffickMonths": "How long the person was trafficked (months)",
    "Datasource": "Data source",
    "releasePart": "Part of the release series",
    "partner": "Partner",
}

# Each level of the packaged hierarchies in words: (hierarchy, level name) -> what a value shows.
LEVEL_WORDS = {
    ("age", "years"): "the exact age in years",
    ("age", "5-year bands"): "an age band of about five years (for example 5--8, 27--29, 44--47)",
    ("age", "CTDC bands"): "CTDC's age bands (0--8, 9--17, 18--20, 21--23, 24--26, 27--29, 30--38, 39--47, 48+)",
    ("age", "Minor/Adult"): "only whether the person was a minor (under 18) or an adult",
    ("country", "ISO 3166-1 alpha-2"): "the country itself (two-letter ISO code, for example UA for Ukraine)",
    ("country", "UN M49 sub-region"): "the UN sub-region of the country (for example Eastern Europe)",
    ("country", "UN M49 region"): "the UN region of the country (for example Europe, Africa)",
    ("region", "UN M49 region"): "the UN region (for example Europe, Africa)",
    ("gender", "value"): "the gender as recorded (Female, Male, Transgender, Other)",
    ("majority", "value"): "Minor or Adult, as recorded",
    ("year", "year"): "the exact year",
    ("year", "2-year bands"): "a two-year band (for example 2018-2019)",
    ("year", "5-year bands"): "a five-year band (for example 2015-2019)",
    ("perpetrator_age", "value"): "the perpetrator's age band as recorded",
}
HIDDEN_WORDS = "hidden (shown as *)"


def column_label(name: str, description: str = "") -> str:
    """A short name for a column: the first clause of its codebook description."""
    if name in NAMES:
        return NAMES[name]
    text = " ".join(description.split())
    if not text:
        return name
    text = re.sub(r" \([^()]*\)", "", text)  # "Construction (ISIC F)" -> "Construction"
    text = re.split(r"(?<=[a-z)0-9])[.;:] |(?<=[a-z)0-9])\.$| \(|, which|, including|, several", text)[0]
    text = text.rstrip(". ")
    return text[:1].upper() + text[1:]


@lru_cache(maxsize=1)
def view_labels() -> dict[str, str]:
    """Every column of both packaged release views -> its short name."""
    from connector.schema import load_schema

    schema = load_schema()
    labels = {name: column_label(name, column.description) for name, column in schema.vp_view.items()}
    labels.update({name: column_label(name, column.description) for name, column in schema.view.items()})
    return labels


def label(column: str, labels: Mapping[str, str] | None = None) -> str:
    return (labels if labels is not None else view_labels()).get(column, column)


def value_words(value: str, labels: Mapping[str, str] | None = None) -> str:
    """A value as a reader should see it: a concatenation of flag names becomes their names in words
    ("meansOfControlThreats;meansOfControlOther" -> "Threats of harm ... + Another means of control")."""
    known = labels if labels is not None else view_labels()
    parts = str(value).split(";")
    if len(parts) > 1 or parts[0] in known:
        return " + ".join(known.get(p, p) for p in parts)
    return str(value)


def level_words(hierarchy: str, level_name: str) -> str:
    """One level of a hierarchy in words."""
    if level_name == "*":
        return HIDDEN_WORDS
    return LEVEL_WORDS.get((hierarchy, level_name), level_name)


@lru_cache(maxsize=None)
def hierarchy_levels(hierarchy: str) -> tuple[str, ...]:
    """The level names of a packaged hierarchy, finest first ("*" last); () when it is not packaged."""
    from privacy.hierarchies import HierarchyError, load_builtin

    try:
        return tuple(load_builtin(hierarchy).level_names)
    except (HierarchyError, FileNotFoundError, KeyError, ValueError):
        return ()


__all__ = ["column_label", "hierarchy_levels", "label", "level_words", "value_words", "view_labels"]
