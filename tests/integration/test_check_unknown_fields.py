"""`check` warns "will stay unknown" only for fields that really will: none for the packaged mappings
against the packaged sandboxes (their sync fills every one), one for a field no source offers."""

import os
from pathlib import Path
from importlib import resources

import pytest

from connector.config import load_config
from connector.mapping import load_mapping
from connector.pipeline import Pipeline
from connector.sandbox.demo import demo_sandboxes

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    with demo_sandboxes(20, tmp / "cases.xlsx") as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield tmp
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _demo_job(tmp, mappings: dict[str, str] | None = None):
    text = open(DEMO, encoding="utf-8").read()
    text = text.replace("../../build/demo/cases.xlsx", str(tmp / "cases.xlsx")).replace("sqlite:///../../state/demo.sqlite", f"sqlite:///{tmp}/state.sqlite")
    for packaged, path in (mappings or {}).items():
        text = text.replace(f"mapping: {packaged}", f"mapping: {path}")
    path = tmp / "job.yaml"
    path.write_text(text)
    return load_config(path)


def _unknown_warnings(config) -> list[str]:
    pipeline = Pipeline(config)
    try:
        problems = pipeline.check()
    finally:
        pipeline.close()
    assert not [p for p in problems if p.severity == "error"], problems
    return [f"{p.where}: {p.message}" for p in problems if "will stay unknown" in p.message]


def test_the_packaged_mappings_against_the_sandboxes_draw_no_unknown_field_warning(demo_env):
    assert _unknown_warnings(_demo_job(demo_env)) == []


def test_a_field_no_source_offers_is_still_reported(demo_env):
    sf = resources.files("mappings").joinpath("salesforce_htcds.yaml").read_text()
    sf = sf.replace("prs_Title: Contact.Title", "prs_Title: Contact.Shoe_Size__c").replace("pick: Country__c", "pick: Planet__c")
    (demo_env / "sf.yaml").write_text(sf)
    warnings = _unknown_warnings(_demo_job(demo_env, {"salesforce_htcds": str(demo_env / "sf.yaml")}))
    assert len(warnings) == 2, warnings
    assert any("prs_Title <- Contact.Shoe_Size__c" in w for w in warnings)
    assert any("ext_CountryOfExploitation <- events.Planet__c" in w for w in warnings)


def test_missing_fields_reads_every_shape_a_source_lists():
    mapping = load_mapping("salesforce_htcds")
    offered = {"Contact.Gender__c", "perpetrators[].Role_in_Process__c", "events/Country__c", "Status"}
    missing = "\n".join(mapping.missing_fields(offered, {"Owner.Name"}))
    for fed in ("prs_Gender", "ext_PerpetratorRoles", "ext_CountryOfExploitation", "cas_Status", "cas_CaseOwner"):
        assert f"{fed} <-" not in missing
    assert "prs_FirstName <- Contact.FirstName" in missing and "ext_RecruiterRelation <- perpetrators." in missing
