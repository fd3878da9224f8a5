"""`mapping suggest`: a draft mapping from a partner's XLSForm, loadable, with REVIEW on what is unsure."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import openpyxl

from connector.mapping import load_mapping
from connector.mapping_suggest import match_form, render_yaml, suggest_from_xlsform
from connector.sandbox import xlsform_render
from connector.schema import load_schema


def _write_xlsform(path: Path, survey: list[tuple], choices: list[tuple]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "survey"
    sheet.append(("type", "name", "label"))
    for row in survey:
        sheet.append(row)
    choice_sheet = workbook.create_sheet("choices")
    choice_sheet.append(("list_name", "name", "label"))
    for row in choices:
        choice_sheet.append(row)
    settings = workbook.create_sheet("settings")
    settings.append(("form_id", "version"))
    settings.append(("partner_cases", "2024-05"))
    workbook.save(path)
    return path


def test_the_htcds_xlsform_is_matched_completely_by_name(tmp_path: Path) -> None:
    path = resources.files("mappings").joinpath("forms", "htcds_xlsform.xlsx")
    text = suggest_from_xlsform(str(path), profile="htcds_draft")
    assert "REVIEW" not in text.replace("every line marked REVIEW", "")
    assert "prs_FirstName: prs_First_Name" in text
    draft = tmp_path / "draft.yaml"
    draft.write_text(text)
    mapping = load_mapping(draft)
    by_target = {rule.target: rule for rule in mapping.rules}
    assert by_target["vic_MethodsOfControl"].sources == ("vic_Methods_of_Control",) and by_target["vic_MethodsOfControl"].split is None
    assert by_target["ext_RegistrationDate"].sources == ("_submission_time",)


def test_a_partner_form_is_matched_by_label_and_unmatched_items_are_marked_for_review(tmp_path: Path) -> None:
    path = _write_xlsform(
        tmp_path / "partner_cases.xlsx",
        survey=[
            ("start", "start", None),
            ("begin_group", "victim", "Victim"),
            ("select_one sex", "sexe", "Gender"),
            ("select_multiple control", "controle", "Methods of Control"),
            ("text", "favourite_colour", "Favourite colour"),
            ("end_group", None, None),
            ("begin_repeat", "auteurs", "Perpetrators"),
            ("select_multiple roles", "per_role_in_process", "Role"),
            ("end_repeat", None, None),
        ],
        choices=[
            ("sex", "f", "Feminine"),
            ("sex", "m", "Masculine"),
            ("sex", "x", "Martian"),
            ("control", "DebtBondage", "Debt bondage"),
            ("control", "juju", "Juju oath"),
            ("roles", "Exploiter", "Exploiter"),
        ],
    )
    text = suggest_from_xlsform(path)
    lines = text.splitlines()
    assert any(line.startswith("  prs_Gender:") and "matched by label" in line and "REVIEW" in line for line in lines)
    assert "      f: Feminine" in lines and "      m: Masculine" in lines
    assert any("'x'" in line and "REVIEW" in line and line.lstrip().startswith("#") for line in lines)
    assert any("juju" in line and "REVIEW" in line for line in lines)
    assert any("favourite_colour" in line and "REVIEW" in line for line in lines)
    assert any(line.startswith("  ext_PerpetratorRoles:") and "REVIEW" in line for line in lines)
    draft = tmp_path / "draft.yaml"
    draft.write_text(text)
    mapping = load_mapping(draft)  # the draft loads as it is
    gender = next(rule for rule in mapping.rules if rule.target == "prs_Gender")
    assert gender.sources == ("sexe",) and gender.value_map == {"f": "Feminine", "m": "Masculine"}
    assert "favourite_colour" in mapping.ignore


def test_the_partner_variant_suggests_the_repeat_derived_fields() -> None:
    suggestion = match_form(xlsform_render.form_definition("partner"), load_schema(), profile="partner")
    assert suggestion.repeats["ext_CountryOfExploitation"] == {"from": "events", "where": {"hte_Type": "Exploitation"}, "pick": "hte_Country"}
    assert suggestion.repeats["ext_PerpetratorRoles"]["collect"] == "per_Role_in_Process"
    assert {m.target.name for m in suggestion.matches} >= {"cas_CaseOwner", "cas_OutgoingReferralDate", "vic_RelationshipToTrafficker"}
    assert "support_plans" in render_yaml(suggestion)


def test_suggest_for_a_configured_kobo_source_reads_the_server_form(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import responses

    from connector.config import load_config
    from connector.mapping_suggest import suggest_for_config

    monkeypatch.setenv("SUGGEST_KOBO_TOKEN", "t0ken")
    config_path = tmp_path / "connector.yaml"
    config_path.write_text(
        "partner: {id: ngo}\nsources:\n  - id: kobo\n    type: kobo\n    mapping: xlsform_htcds\n"
        "    options: {url: 'https://kf.example.org', asset_uid: aUID, token_env: SUGGEST_KOBO_TOKEN}\n"
    )
    with responses.RequestsMock() as rsps:
        rsps.get("https://kf.example.org/api/v2/assets/aUID/", json={"uid": "aUID", "content": xlsform_render.kobo_content("partner")})
        text = suggest_for_config(load_config(config_path), "kobo")
    assert "prs_FirstName: prs_First_Name" in text and "profile: kobo_mapping" in text
