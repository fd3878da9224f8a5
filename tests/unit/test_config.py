import pytest

from connector.config import ConfigError, load_config
from connector.secrets import Secret, SecretMissing

GOOD = """\
partner:
  id: ngo-one
sources:
  - id: s1
    type: fake
    mapping: excel_htcds
    options:
      page_size: 5
"""


def test_good_config_loads_with_defaults(write_config):
    config = load_config(write_config(GOOD))
    assert config.job.partner.id == "ngo-one"
    assert config.job.release.k == 10
    assert config.job.sources[0].parsed_options.page_size == 5
    # a relative SQLite path is relative to the config file, not the working directory
    assert config.store_url() == f"sqlite:///{config.base_dir}/state/cases.sqlite"


def test_literal_password_is_an_error_naming_line_and_key(write_config):
    path = write_config(GOOD + "      password: hunter2hunter2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert f"{path}:9: sources[0].options.password" in problem
    assert "literal secret" in problem
    assert "hunter2" not in problem


@pytest.mark.parametrize("line", ["      password_env: NGO_PASSWORD\n", "      password: ${NGO_PASSWORD}\n"])
def test_secret_references_become_secret_objects_read_only_on_demand(write_config, monkeypatch, line):
    config = load_config(write_config(GOOD + line))
    secret = config.job.sources[0].parsed_options.password
    assert isinstance(secret, Secret) and secret.env == "NGO_PASSWORD"
    with pytest.raises(SecretMissing, match="NGO_PASSWORD is not set"):
        secret.get()
    monkeypatch.setenv("NGO_PASSWORD", "s3cret-value")
    assert secret.get() == "s3cret-value"
    assert "s3cret-value" not in repr(config.job)


def test_password_file_is_relative_to_config(write_config, tmp_path):
    (tmp_path / "pw.txt").write_text("from-file\n")
    config = load_config(write_config(GOOD + "      password_file: pw.txt\n"))
    assert config.job.sources[0].parsed_options.password.get() == "from-file"


def test_two_sources_with_one_id_is_an_error(write_config):
    text = GOOD + "  - id: s1\n    type: fake\n    mapping: excel_htcds\n"
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    assert any("two sources have the id 's1'" in p for p in info.value.problems)


def test_each_problem_gets_its_own_message_with_line(write_config):
    text = """\
partner:
  id: Bad Id
sources:
  - id: s1
    type: fake
    mapping: excel_htcds
    optoins: {}
release:
  k: 1
"""
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert any(p.startswith(f"{path}:2: partner.id") for p in problems)
    assert any(p.startswith(f"{path}:7: sources[0].optoins") and "unknown key" in p for p in problems)
    assert any(p.startswith(f"{path}:9: release.k") for p in problems)
    assert len(problems) == 3


def test_unknown_source_option_names_its_line(write_config):
    path = write_config(GOOD + "      pagesize: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:9: sources[0].options.pagesize: unknown key (check its spelling and indentation)"]


def test_unknown_source_type_lists_known_types(write_config):
    path = write_config(GOOD.replace("type: fake", "type: sharepoint"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "unknown source type 'sharepoint'" in info.value.problems[0]
    assert f"{path}:5:" in info.value.problems[0]


def test_environment_substitution_and_missing_variable(write_config, monkeypatch):
    monkeypatch.setenv("STORE_DIR", "/var/lib/htcds")
    config = load_config(write_config(GOOD + "store:\n  url: sqlite:///${STORE_DIR}/cases.sqlite\n"))
    assert config.store_url() == "sqlite:////var/lib/htcds/cases.sqlite"
    path = write_config(GOOD + "store:\n  url: postgresql://${NO_SUCH_VAR_X}/db\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}:10: store.url: environment variable NO_SUCH_VAR_X is not set"]


def test_invalid_yaml_names_line(write_config):
    path = write_config("partner:\n  id: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}:")
    assert "not valid YAML" in info.value.problems[0]


def test_template_written_by_init_is_a_valid_config(tmp_path):
    from importlib import resources

    path = tmp_path / "connector.yaml"
    path.write_text(resources.files("connector").joinpath("config_template.yaml").read_text())
    config = load_config(path)
    assert config.job.sources[0].type == "excel"


def test_destination_errors_name_the_key_the_user_wrote(write_config):
    path = write_config(GOOD + "destination:\n  type: central_api\n  url: http://central.example.org\n  token_env: CENTRAL_TOKEN\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:11: destination.url:") and "https" in problem


def test_environment_default_is_used_only_when_the_variable_is_unset(write_config, monkeypatch):
    text = GOOD + "store:\n  url: sqlite:///${STATE_DIR_X:-/var/lib/x}/cases.sqlite\n"
    monkeypatch.delenv("STATE_DIR_X", raising=False)
    assert load_config(write_config(text)).store_url() == "sqlite:////var/lib/x/cases.sqlite"
    monkeypatch.setenv("STATE_DIR_X", "/srv/y")
    assert load_config(write_config(text)).store_url() == "sqlite:////srv/y/cases.sqlite"
