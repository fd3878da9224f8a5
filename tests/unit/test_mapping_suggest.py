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
    assert "REVIEW" not in text.replace("Every line marked REVIEW", "")
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
    assert any(line.startswith("      f: Feminine ") and line.endswith("# confirmed") for line in lines)
    assert any(line.startswith("      m: Masculine ") and line.endswith("# confirmed") for line in lines)
    assert any(line.startswith("      DebtBondage: DebtBondage ") and line.endswith("# confirmed") for line in lines)  # every choice listed
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


# -- three partner forms that are not the template: how much does the draft get right? ----------

FIELD_FLOOR = 0.85
CHOICE_FLOOR = 0.80


def _score_form(tmp_path: Path, form: dict) -> tuple[int, int, int, int, list[str]]:
    from tests.unit.partner_forms import write_form

    schema = load_schema()
    path, truth = write_form(tmp_path, form)
    suggestion = match_form(__import__("connector.sources.xlsform", fromlist=["read_xlsform"]).read_xlsform(path), schema)
    got = {m.question.name: m for m in suggestion.matches}
    wrong: list[str] = []
    fields_ok = 0
    for name, expected in truth["fields"].items():
        target = got[name].target.name if name in got else None
        fields_ok += target == expected
        if target != expected:
            wrong.append(f"{form['form_id']}: {name} -> {target} (expected {expected})")
    choices = {k: v for k, v in truth["choices"].items() if schema.fields[truth["fields"][k[0]]].codelist}
    choices_ok = 0
    for (question, choice), expected in choices.items():
        match = got.get(question)
        code = match.choices.get(choice) if match is not None and match.target.name == truth["fields"][question] else "(question missed)"
        choices_ok += code == expected
        if code != expected:
            wrong.append(f"{form['form_id']}: {question}/{choice} -> {code} (expected {expected})")
    # The draft loads as it is, whatever it got wrong.
    draft = tmp_path / f"{form['form_id']}_draft.yaml"
    draft.write_text(render_yaml(suggestion))
    load_mapping(draft)
    return fields_ok, len(truth["fields"]), choices_ok, len(choices), wrong


def test_three_partner_forms_in_three_languages_are_mostly_matched(tmp_path: Path, capsys) -> None:
    from tests.unit.partner_forms import FORMS

    totals = [0, 0, 0, 0]
    lines = []
    for form in FORMS:
        f_ok, f_n, c_ok, c_n, wrong = _score_form(tmp_path, form)
        totals = [a + b for a, b in zip(totals, (f_ok, f_n, c_ok, c_n))]
        lines.append(f"{form['form_id']:<18} fields {f_ok}/{f_n}  choices {c_ok}/{c_n}")
        lines += [f"    miss: {w}" for w in wrong]
    field_share, choice_share = totals[0] / totals[1], totals[2] / totals[3]
    with capsys.disabled():
        print("\nmapping suggest on three partner forms (EN, FR, ES):")
        print("\n".join(lines))
        print(f"overall: fields {field_share:.0%} ({totals[0]}/{totals[1]}), choices {choice_share:.0%} ({totals[2]}/{totals[3]})")
    assert field_share >= FIELD_FLOOR and choice_share >= CHOICE_FLOOR


def test_sex_and_dob_and_f_are_matched_in_the_draft(tmp_path: Path) -> None:
    from tests.unit.partner_forms import SHELTER_EN, write_form

    path, _ = write_form(tmp_path, SHELTER_EN)
    lines = suggest_from_xlsform(path).splitlines()
    assert any(line.startswith("  prs_Gender:") and "'gender'" in line and "REVIEW" in line for line in lines)
    assert any(line.startswith("  prs_Birthdate: dob") for line in lines)
    assert any(line.startswith("      f: Feminine ") and line.endswith("# confirmed") for line in lines)
    assert any(line.lstrip().startswith("# juju: ?") and "REVIEW" in line for line in lines)
    assert any(line.startswith("  - favourite_food") and "REVIEW" in line for line in lines)
