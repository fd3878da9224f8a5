"""The codebook: the common schema and the release views, documented from the schema data alone.

Why generated: the central team reads the codebook to interpret every partner's release; if it were
written by hand it would drift from `mappings/schema/*.yaml`, which is what the connector actually
does. Every release carries the same text, and the committed `mappings/schema/codebook.md` and
`codebook.json` are checked by a test to equal this module's output.

    .venv/bin/python -m connector.codebook          # rewrite mappings/schema/codebook.{md,json}
    .venv/bin/python -m connector.codebook --check  # exit 1 if they are stale

Two release views are documented: the victim view (`release_view.yaml`, one row per case) and the
victim-perpetrator view (`release_view_vp.yaml`, one row per case and perpetrator), with what was
followed of CTDC's public description of that dataset and what was assumed (VP_SOURCES).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from connector.schema import ROLES, Schema, ViewColumn, load_schema
from privacy.view import describe_rule

ROLE_MEANINGS = {
    "direct_identifier": "identifies a person on its own; never leaves the partner's store",
    "quasi_identifier": "identifies in combination; generalized until k-anonymous before release",
    "sensitive": "what a release is about; published as it is once the quasi-identifiers are k-anonymous",
    "free_text": "may contain anything, names included; never leaves the partner's store",
    "process": "about the case's handling, not the person; no personal information",
}
assert set(ROLE_MEANINGS) == set(ROLES), "every role needs a meaning in the codebook"

# What the victim-perpetrator view follows of CTDC's public material, and what it assumes.
VP_SOURCES = {
    "followed": [
        "CTDC's Global Victim-Perpetrator dataset links each victim to the people who exploited them: one row per "
        "victim and perpetrator, the victim's columns repeated on each of their rows.",
        "Perpetrator characteristics as CTDC describes them: role in the trafficking process (several per person), "
        "region (not country) of citizenship, relationship to the victim, whether money was paid or received for the victim.",
        "Victim columns next to them: type of exploitation and the regions of citizenship and of exploitation; columns "
        "the two datasets share keep the names, codes and rules of the victim view (CTDC's k-anonymized victim dataset).",
        "Trafficking duration in CTDC's traffickMonths bands 0--12, 13--24, 25+ (in both views).",
    ],
    "assumed": [
        "The names of the perpetrator columns (perpetratorRole, perpetratorGender, perpetratorAge, "
        "perpetratorCitizenshipRegion, perpetratorRelationship, perpetratorMoneyPaid) and of the victim region "
        "columns (citizenshipRegion, CountryOfExploitationRegion): CTDC's codebook for this dataset was not found in "
        "public material.",
        "Regions are UN M49 regions (Africa, Americas, Antarctica, Asia, Europe, Oceania).",
        "Perpetrator age bands 0--17, 18--24, 25--34, 35--44, 45--54, 55+ at the case's registration (hierarchy "
        "perpetrator_age).",
        "Relationship to the victim uses CTDC's recruiter-relation categories (IntimatePartner, Friend, Family, Other, Unknown).",
        "Duration runs to the registration date: HTCDS 2.0 events have no exit type.",
    ],
}


def _sections(schema: Schema) -> list[str]:
    """Sections in the order their first field appears, as the standard lists them."""
    return list(dict.fromkeys(spec.section for spec in schema.fields.values()))


def codebook_json(schema: Schema) -> dict[str, Any]:
    """The codebook as plain data (for codebook.json and for tools that check releases)."""
    return {
        "schema_version": schema.version,
        "roles": dict(ROLE_MEANINGS),
        "fields": [
            {
                "name": spec.name,
                "section": spec.section,
                "label": spec.label,
                "type": spec.type,
                "role": spec.role,
                "codelist": spec.codelist,
                "core": spec.core,
                "origin": spec.origin,
                "description": spec.description,
                **({"items": list(spec.items)} if spec.items else {}),
            }
            for spec in schema.fields.values()
        ],
        "codelists": {
            name: [{"code": code, "label": label} for code, label in codes.items()] for name, codes in schema.codelists.items()
        },
        "release_view": [_column_json(column) for column in schema.view.values()],
        "victim_perpetrator_view": {
            "row": "one per case and perpetrator; the victim's columns repeat on each of their rows",
            "sources": VP_SOURCES,
            "columns": [{**_column_json(column), "shared_with_victim_view": column.name in schema.view} for column in schema.vp_view.values()],
        },
    }


def _column_json(column: ViewColumn) -> dict[str, Any]:
    return {
        "name": column.name,
        "type": column.type,
        "role": column.role,
        "hierarchy": column.hierarchy,
        "values": list(column.values),
        "rule": column.rule,
        "derivation": describe_rule(column.rule),
        "description": column.description,
    }


def _view_rows(view: dict[str, ViewColumn]) -> list[list[Any]]:
    return [
        [
            f"`{column.name}`",
            column.type,
            column.role,
            column.hierarchy or "",
            ", ".join(str(v) for v in column.values),
            describe_rule(column.rule),
            column.description,
        ]
        for column in view.values()
    ]


def _cell(text: Any) -> str:
    """Text fit for one Markdown table cell."""
    if text is None or text == "":
        return ""
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), "| " + " | ".join("---" for _ in header) + " |", *(_row(r) for r in rows)]


def render_codebook_markdown(schema: Schema) -> str:
    """The codebook as Markdown: roles, every field by section, every code list, every view column."""
    lines = [
        f"# Codebook: HTCDS common schema {schema.version} and release views",
        "",
        "Generated by `python -m connector.codebook` from `mappings/schema/` (HTCDS 2.0 by IOM, CC BY 4.0). "
        "Do not edit by hand.",
        "",
        "## Disclosure roles",
        "",
        *_table(["Role", "Meaning"], [[f"`{role}`", meaning] for role, meaning in ROLE_MEANINGS.items()]),
        "",
        "## Common-schema fields",
        "",
        "Fields named `ext_` are not in HTCDS 2.0: the connector derives them. Core marks HTCDS core fields. "
        "A `records` field is a list of entries, one per perpetrator or event; its entry keys are listed with it "
        "and documented as fields of their own.",
    ]
    for section in _sections(schema):
        specs = [spec for spec in schema.fields.values() if spec.section == section]
        rows = [
            [
                f"`{spec.name}`",
                spec.label,
                spec.type,
                spec.role,
                f"[{spec.codelist}](#code-list-{spec.codelist})" if spec.codelist else "",
                "yes" if spec.core else "",
                spec.description + (f" Entry keys: {', '.join(f'`{item}`' for item in spec.items)}." if spec.items else ""),
            ]
            for spec in specs
        ]
        lines += ["", f"### {section}", "", *_table(["Field", "Label", "Type", "Role", "Code list", "Core", "Description"], rows)]
    lines += ["", "## Code lists"]
    for name, codes in schema.codelists.items():
        lines += ["", f"### Code list: {name}", "", *_table(["Code", "Label"], [[f"`{c}`", label] for c, label in codes.items()])]
    lines += [
        "",
        "## Release view",
        "",
        "The columns of a release, in order (CTDC's k-anonymized column set). Flags are 1, 0 or blank "
        "(unknown). Quasi-identifiers are generalized through the named hierarchy before release, so a "
        "published column may hold bands or regions instead of the values below.",
        "",
    ]
    header = ["Column", "Type", "Role", "Hierarchy", "Values", "Derivation", "Description"]
    lines += _table(header, _view_rows(schema.view))
    shared = [name for name in schema.vp_view if name in schema.view]
    lines += [
        "",
        "## Victim-perpetrator view",
        "",
        "The columns of the victim-perpetrator table (CTDC's Global Victim-Perpetrator dataset): one row per case and "
        "perpetrator, so a victim with three perpetrators has three rows, each repeating the victim's columns. "
        f"Shared with the victim view, with the same rule, values and hierarchy: {', '.join(f'`{n}`' for n in shared)}. "
        "Perpetrator columns are read from the perpetrator's own entry of `ext_Perpetrators`; a perpetrator's "
        "citizenship is published only as a region and their age only as a band. Privacy is counted per victim, not per row.",
        "",
        "What was followed of CTDC's public description:",
        "",
        *(f"- {text}" for text in VP_SOURCES["followed"]),
        "",
        "What was assumed:",
        "",
        *(f"- {text}" for text in VP_SOURCES["assumed"]),
        "",
        *_table(header, _view_rows(schema.vp_view)),
    ]
    return "\n".join(lines) + "\n"


def codebook_files(schema: Schema) -> dict[str, str]:
    """File name -> text of the committed codebook files."""
    return {
        "codebook.md": render_codebook_markdown(schema),
        "codebook.json": json.dumps(codebook_json(schema), indent=2, ensure_ascii=False) + "\n",
    }


def schema_dir() -> Path:
    """The source tree's mappings/schema folder (the codebook files are committed next to the YAML)."""
    import mappings

    return Path(mappings.__file__).resolve().parent / "schema"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.codebook", description="Write the codebook from the schema.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args(argv)
    files = codebook_files(load_schema())
    folder = schema_dir()
    if args.check:
        stale = [name for name, text in files.items() if not (folder / name).exists() or (folder / name).read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m connector.codebook", file=sys.stderr)
            return 1
        return 0
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
