"""`mapping suggest` as a partner runs it: from an XLSForm file with no server, or from `options.xlsform`."""

import pytest

from connector.cli import main
from connector.mapping import load_mapping
from tests.unit.partner_forms import ACCUEIL_FR, write_form

JOB = """\
partner: {id: form-ngo}
sources:
  - id: odk-cases
    type: odk_central
    mapping: xlsform_htcds
    options:
      url: https://odk.example.org
      project_id: 1
      form_id: accueil_victimes
      email: it@example.org
      password_env: ODK_PASSWORD
      xlsform: accueil_victimes.xlsx
"""


def test_suggest_from_an_xlsform_needs_no_server_and_never_overwrites_without_force(tmp_path, capsys):
    form, _ = write_form(tmp_path, ACCUEIL_FR)
    out = tmp_path / "draft.yaml"
    assert main(["mapping", "suggest", "--xlsform", str(form), "--out", str(out)]) == 0
    draft = out.read_text()
    assert "prs_Birthdate: date_naissance" in draft and "femme: Feminine" in draft
    load_mapping(out)  # loads as written
    out.write_text("# my reviewed mapping\n")
    capsys.readouterr()
    assert main(["mapping", "suggest", "--xlsform", str(form), "--out", str(out)]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert out.read_text() == "# my reviewed mapping\n"
    assert main(["mapping", "suggest", "--xlsform", str(form), "--out", str(out), "--force"]) == 0
    assert out.read_text() == draft


def test_suggest_prints_the_draft_and_refuses_a_missing_file(tmp_path, capsys):
    form, _ = write_form(tmp_path, ACCUEIL_FR)
    assert main(["mapping", "suggest", "--xlsform", str(form)]) == 0
    assert "profile: accueil_victimes_mapping" in capsys.readouterr().out
    assert main(["mapping", "suggest", "--xlsform", str(tmp_path / "nope.xlsx")]) == 2
    assert "no such XLSForm file" in capsys.readouterr().err
    assert main(["mapping", "suggest"]) == 2


def test_options_xlsform_is_accepted_for_a_form_source_and_read_without_the_server(tmp_path, capsys, monkeypatch):
    write_form(tmp_path, ACCUEIL_FR)
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    monkeypatch.setenv("ODK_PASSWORD", "not-used-here")
    assert main(["mapping", "suggest", str(job), "odk-cases"]) == 0  # https://odk.example.org is never asked
    assert "from: sexe" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["excel", "kobo", "salesforce"])
def test_options_xlsform_is_no_unknown_key_and_a_missing_file_is_named(tmp_path, capsys, kind):
    from connector.config import ConfigError, load_config

    job = tmp_path / "job.yaml"
    job.write_text(f"partner: {{id: x}}\nsources:\n  - id: s\n    type: {kind}\n    mapping: excel_htcds\n    options:\n      xlsform: missing.xlsx\n")
    with pytest.raises(ConfigError) as info:
        load_config(job)
    problems = "\n".join(info.value.problems)
    assert f"{job}:7: sources[0].options.xlsform: file not found" in problems
    assert "xlsform: unknown key" not in problems
