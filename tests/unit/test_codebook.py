"""The codebook is generated from the schema data, covers all of it, and the committed copy is current."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from connector.codebook import codebook_files, codebook_json, main, render_codebook_markdown
from connector.schema import Schema, load_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "mappings" / "schema"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def test_committed_codebook_files_equal_the_generator_output(schema: Schema) -> None:
    for name, text in codebook_files(schema).items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, f"{name} is stale: run python -m connector.codebook"


def test_check_mode_reports_current_files() -> None:
    assert main(["--check"]) == 0


def test_markdown_documents_every_field_code_list_and_view_column(schema: Schema) -> None:
    text = render_codebook_markdown(schema)
    for name, spec in schema.fields.items():
        line = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {spec.type} | {spec.role} |" in line, name
    for name in schema.codelists:
        assert f"### Code list: {name}" in text
    assert "| `DebtBondage` | Debt bondage |" in text
    assert "| `NO` | Norway |" in text
    for name in schema.view:
        assert f"| `{name}` |" in text
    gender = next(line for line in text.splitlines() if line.startswith("| `gender` | string |"))
    assert "NonConforming -> Other" in gender and "NonSpecifiedUnknown -> blank" in gender
    uses_children = next(line for line in text.splitlines() if line.startswith("| `meansOfControlUsesChildren` |"))
    assert "Always blank: CTDC's \"uses children\"" in uses_children


def test_multiline_descriptions_stay_in_one_table_row(schema: Schema) -> None:
    text = render_codebook_markdown(schema)
    consent = next(line for line in text.splitlines() if line.startswith("| `con_Consent` |"))
    assert "Guidance on consent: Does the individual consent/assent to the interview?" in consent


def test_json_has_every_field_code_and_column_with_its_derivation(schema: Schema) -> None:
    doc = json.loads(json.dumps(codebook_json(schema)))
    assert doc["schema_version"] == schema.version
    assert [f["name"] for f in doc["fields"]] == list(schema.fields)
    assert {c["code"]: c["label"] for c in doc["codelists"]["gender"]} == schema.codelists["gender"]
    view = {c["name"]: c for c in doc["release_view"]}
    assert list(view) == list(schema.view)
    assert view["citizenship"]["rule"] == {"first_of": "prs_Citizenship"}
    assert view["citizenship"]["derivation"] == "The first code of `prs_Citizenship` (when several are recorded); blank if none."
    assert view["isForcedLabour"]["values"] == [0, 1]


def test_codebook_follows_the_schema_data(schema: Schema) -> None:
    relabelled = dataclasses.replace(schema, codelists={**schema.codelists, "gender": {"Feminine": "Woman"}})
    assert "| `Feminine` | Woman |" in render_codebook_markdown(relabelled)
    assert codebook_json(relabelled)["codelists"]["gender"] == [{"code": "Feminine", "label": "Woman"}]


def test_victim_perpetrator_view_is_documented_with_what_was_followed_and_assumed(schema: Schema) -> None:
    text = render_codebook_markdown(schema)
    section = text[text.index("## Victim-perpetrator view") :]
    assert "What was followed" in section and "What was assumed" in section
    for name in schema.vp_view:
        assert f"| `{name}` |" in section, name
    data = codebook_json(schema)["victim_perpetrator_view"]
    assert [c["name"] for c in data["columns"]] == list(schema.vp_view)
    assert {c["name"] for c in data["columns"] if c["shared_with_victim_view"]} == set(schema.vp_view) & set(schema.view)
    assert data["sources"]["followed"] and data["sources"]["assumed"]
    perpetrators = next(f for f in codebook_json(schema)["fields"] if f["name"] == "ext_Perpetrators")
    assert perpetrators["items"] == list(schema.fields["ext_Perpetrators"].items)
    assert "Entry keys: `per_RoleInProcess`" in text
