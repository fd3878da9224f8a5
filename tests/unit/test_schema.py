"""The common schema as data: complete against the HTCDS 2.0 CSV, roles that keep identifiers in, reproducible."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from connector.schema import Schema, ViewColumn, load_schema
from privacy.view import check_view

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "mappings" / "schema"
SOURCE_CSV = SCHEMA_DIR / "source" / "htcds_field_standards_2.0.csv"


def _csv_fields() -> list[dict[str, str]]:
    with SOURCE_CSV.open(encoding="utf-8-sig", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["Field Name including Prefix"].strip()]


def _build_module():
    spec = importlib.util.spec_from_file_location("build_schema", SCHEMA_DIR / "build_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def test_packaged_schema_loads_and_view_passes_its_checks(schema: Schema) -> None:
    assert schema.version == "1.0.0"
    assert check_view(schema) == []
    for spec in schema.fields.values():
        if spec.type in ("code", "codes"):
            assert schema.codelists[spec.codelist], spec.name


def test_every_csv_field_is_in_the_schema_and_nothing_else_from_htcds(schema: Schema) -> None:
    csv_names = {row["Field Name including Prefix"].strip() for row in _csv_fields()}
    assert len(csv_names) == 83
    htcds_names = {name for name, spec in schema.fields.items() if spec.origin == "htcds"}
    assert htcds_names == csv_names
    # Extension fields are `ext_`, or entry keys of a records field (per_Gender of ext_Perpetrators, in the prefix of its section)
    entry_keys = {item for spec in schema.fields.values() for item in spec.items}
    assert all(name.startswith("ext_") or name in entry_keys for name, spec in schema.fields.items() if spec.origin == "extension")


def test_sections_are_the_standards_sections_in_snake_case(schema: Schema) -> None:
    assert {spec.section for spec in schema.fields.values()} == {
        "organization", "person", "victim_context", "perpetrator_context", "case", "referral",
        "case_comment", "historic_events", "support_plan", "consent",
    }
    assert schema.fields["cas_IncomingReferralDate"].section == "referral"
    assert schema.fields["cas_Status"].section == "case"
    assert schema.fields["per_RoleInProcess"].section == "perpetrator_context"


def test_every_long_text_is_free_text(schema: Schema) -> None:
    long_texts = [row["Field Name including Prefix"].strip() for row in _csv_fields() if row["Field Type"].strip() == "Long Text"]
    assert len(long_texts) == 9
    for name in long_texts:
        assert (schema.fields[name].type, schema.fields[name].role) == ("long_text", "free_text"), name
    assert sorted(n for n, s in schema.fields.items() if s.role == "free_text") == sorted(long_texts)


DIRECT_IDENTIFIERS = [
    "prs_Salutation", "prs_FirstName", "prs_MiddleName", "prs_SecondName", "prs_Title", "prs_Birthdate",
    "prs_Email", "prs_HomePhone", "prs_MobilePhone", "prs_MailingStreet", "prs_MailingCity", "prs_MailingState",
    "prs_MailingPostalCode", "prs_MailingCountry", "prs_MailingLongitude", "prs_MailingLatitude",
    "prs_IdentityNumber", "hte_Longitude", "hte_Latitude", "org_ShippingLongitude", "org_ShippingLatitude",
    "cas_CaseOwner", "cas_ReferringPrimaryCaseWorker", "cas_ReferredPrimaryCaseWorker",
    "org_Name", "org_Phone", "org_ShippingStreet", "org_ShippingCity", "org_ShippingState", "org_ShippingPostalCode",
]


@pytest.mark.parametrize("name", DIRECT_IDENTIFIERS)
def test_named_direct_identifiers_have_that_role(schema: Schema, name: str) -> None:
    assert schema.fields[name].role == "direct_identifier"


def test_every_coordinate_is_a_direct_identifier(schema: Schema) -> None:
    coordinates = [s for s in schema.fields.values() if s.type == "geolocation" or s.name.endswith(("Longitude", "Latitude"))]
    assert len(coordinates) == 6
    assert {s.role for s in coordinates} == {"direct_identifier"}


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("prs_Gender", "quasi_identifier"),
        ("prs_Citizenship", "quasi_identifier"),
        ("prs_MaritalStatus", "quasi_identifier"),
        ("prs_NumberOfChildren", "quasi_identifier"),
        ("prs_HighestLevelOfEducation", "quasi_identifier"),
        ("vic_AgeWhenTrafficked", "quasi_identifier"),
        ("hte_Country", "quasi_identifier"),
        ("hte_Date", "quasi_identifier"),
        ("vic_TypeOfExploitation", "sensitive"),
        ("vic_MethodsOfControl", "sensitive"),
        ("vic_ForcedLabourIndustry", "sensitive"),
        ("vic_TypeOfSexExploitation", "sensitive"),
        ("vic_MethodOfRecruitment", "sensitive"),
        ("vic_RelationshipToTrafficker", "sensitive"),
        ("per_RoleInProcess", "sensitive"),
        ("vic_Vulnerabilities", "sensitive"),
        ("vic_TraffickingStatus", "sensitive"),
        ("cas_Status", "process"),
        ("cas_IncomingReferralDate", "process"),
        ("cas_ReasonForOutgoingReferral", "process"),
        ("con_Consent", "process"),
        ("prs_Deceased", "process"),
    ],
)
def test_roles_of_identifying_and_sensitive_fields(schema: Schema, name: str, role: str) -> None:
    assert schema.fields[name].role == role


def test_types_follow_the_csv_with_country_and_language_decisions(schema: Schema) -> None:
    f = schema.fields
    assert (f["prs_Gender"].type, f["prs_Gender"].codelist) == ("code", "gender")
    assert (f["vic_MethodsOfControl"].type, f["vic_MethodsOfControl"].codelist) == ("codes", "methods_of_control")
    assert (f["prs_Citizenship"].type, f["prs_Citizenship"].codelist) == ("codes", "countries")
    assert (f["org_ShippingCountry"].type, f["org_ShippingCountry"].codelist) == ("code", "countries")
    assert (f["prs_PrimaryLanguage"].type, f["prs_PrimaryLanguage"].role) == ("text", "quasi_identifier")
    assert f["prs_PrimaryLanguage"].codelist is None
    assert f["prs_NumberOfChildren"].type == "integer"
    assert f["prs_Birthdate"].type == "date"
    assert f["con_Consent"].type == "boolean"
    assert f["cas_CaseOwner"].type == "lookup"
    assert f["prs_Gender"].core is True and f["prs_Deceased"].core is False


def test_deprecated_fields_are_kept_and_say_so(schema: Schema) -> None:
    deprecated = [row["Field Name including Prefix"].strip() for row in _csv_fields() if row["Status"].strip() == "DEPRECATED"]
    assert sorted(deprecated) == ["vic_AgreementToManagePersonalData", "vic_DetailsOfVulnerabilities", "vic_Vulnerabilities"]
    for name in deprecated:
        assert schema.fields[name].description.startswith("DEPRECATED"), name


def test_code_lists_use_value_names_as_codes_with_stripped_labels(schema: Schema) -> None:
    assert schema.codelists["methods_of_control"]["DebtBondage"] == "Debt bondage"
    assert schema.codelists["gender"]["Feminine"] == "Feminine"  # the CSV label ends in a no-break space
    assert schema.codelists["labour_industry"]["A_AgricultureForestryAndFishing"] == "Agriculture, forestry and fishing"
    assert list(schema.codelists["exploitation_type"])[:2] == ["ForcedLabour", "SexualExploitation"]
    assert len(schema.codelists["support_plan_type"]) == 9  # the CSV cell ends with an empty line
    for name, codes in schema.codelists.items():
        for code, label in codes.items():
            assert code == code.strip() and code, (name, code)
            assert label == label.strip() and label, (name, code)


def test_countries_are_iso_alpha2_and_survive_yaml(schema: Schema) -> None:
    countries = schema.codelists["countries"]
    assert len(countries) == 249
    assert countries["NO"] == "Norway"  # unquoted NO would load as a boolean
    assert countries["NA"] == "Namibia"
    assert countries["GB"] == "United Kingdom of Great Britain and Northern Ireland"
    assert all(len(code) == 2 and code.isupper() for code in countries)


def test_extension_fields(schema: Schema) -> None:
    f = schema.fields
    assert (f["ext_RegistrationDate"].type, f["ext_RegistrationDate"].role) == ("date", "process")
    assert (f["ext_AgeAtRegistration"].type, f["ext_AgeAtRegistration"].role) == ("integer", "quasi_identifier")
    assert list(schema.codelists[f["ext_MajorityStatus"].codelist]) == ["Minor", "Adult"]
    assert f["ext_CountryOfExploitation"].codelist == "countries"
    assert list(schema.codelists[f["ext_RecruiterRelation"].codelist]) == ["IntimatePartner", "Friend", "Family", "Other", "Unknown"]
    assert f["ext_RecruiterRelation"].role == "sensitive"
    assert f["ext_PerpetratorRoles"].codelist == f["per_RoleInProcess"].codelist
    assert {s.origin for s in f.values() if s.name.startswith("ext_")} == {"extension"}


def test_committed_yaml_equals_build_script_output() -> None:
    fields_text, codelists_text = _build_module().render()
    assert (SCHEMA_DIR / "htcds.yaml").read_text(encoding="utf-8") == fields_text
    assert (SCHEMA_DIR / "codelists.yaml").read_text(encoding="utf-8") == codelists_text


def test_build_refuses_a_field_without_a_role(monkeypatch: pytest.MonkeyPatch) -> None:
    build = _build_module()
    roles = dict(build.ROLES)
    del roles["prs_Gender"]
    monkeypatch.setattr(build, "ROLES", roles)
    with pytest.raises(ValueError, match="prs_Gender"):
        build.render()


CTDC_VIEW_ORDER = (
    "yearOfRegistration Datasource gender ageBroad majorityStatus citizenship "
    "meansOfControlDebtBondage meansOfControlTakesEarnings meansOfControlRestrictsFinancialAccess meansOfControlThreats "
    "meansOfControlPsychologicalAbuse meansOfControlPhysicalAbuse meansOfControlSexualAbuse meansOfControlFalsePromises "
    "meansOfControlPsychoactiveSubstances meansOfControlRestrictsMovement meansOfControlRestrictsMedicalCare "
    "meansOfControlExcessiveWorkingHours meansOfControlUsesChildren meansOfControlThreatOfLawEnforcement "
    "meansOfControlWithholdsNecessities meansOfControlWithholdsDocuments meansOfControlOther meansOfControlNotSpecified "
    "meansOfControlConcatenated isForcedLabour isSexualExploit isOtherExploit isSexAndLabour isForcedMarriage "
    "isForcedMilitary isOrganRemoval isSlaveryAndPractices typeOfExploitConcatenated typeOfLabourAgriculture "
    "typeOfLabourAquafarming typeOfLabourBegging typeOfLabourConstruction typeOfLabourDomesticWork typeOfLabourHospitality "
    "typeOfLabourIllicitActivities typeOfLabourManufacturing typeOfLabourMiningOrDrilling typeOfLabourPeddling "
    "typeOfLabourTransportation typeOfLabourOther typeOfLabourNotSpecified typeOfLabourConcatenated typeOfSexProstitution "
    "typeOfSexPornography typeOfSexRemoteInteractiveServices typeOfSexPrivateSexualServices typeOfSexConcatenated "
    "isAbduction RecruiterRelationship CountryOfExploitation recruiterRelationIntimatePartner recruiterRelationFriend "
    "recruiterRelationFamily recruiterRelationOther recruiterRelationUnknown"
).split()


def test_view_has_ctdc_columns_in_ctdc_order_with_agreed_conventions(schema: Schema) -> None:
    # CTDC's columns, then its trafficking duration (issue 15), then the series' part label
    assert list(schema.view) == [*CTDC_VIEW_ORDER, "traffickMonths", "releasePart"]
    assert schema.view["releasePart"].role == "process"
    v = schema.view
    assert (v["yearOfRegistration"].role, v["yearOfRegistration"].hierarchy) == ("quasi_identifier", "year")
    assert (v["ageBroad"].type, v["ageBroad"].hierarchy) == ("integer", "age")
    assert (v["gender"].values, v["gender"].hierarchy) == (("Female", "Male", "Transgender", "Other"), "gender")
    assert (v["majorityStatus"].values, v["majorityStatus"].hierarchy) == (("Minor", "Adult"), "majority")
    assert v["citizenship"].hierarchy == v["CountryOfExploitation"].hierarchy == "country"
    assert v["Datasource"].role == "process" and v["Datasource"].rule == {"config": "datasource"}
    quasi = {name for name, column in v.items() if column.role == "quasi_identifier"}
    assert quasi == {"yearOfRegistration", "gender", "ageBroad", "majorityStatus", "citizenship", "CountryOfExploitation"}
    others = set(v) - quasi - {"Datasource", "releasePart"}
    assert {v[name].role for name in others} == {"sensitive"}


def test_view_check_refuses_identifiers_and_unknown_codes(schema: Schema) -> None:
    leaking = ViewColumn(name="firstName", type="string", role="sensitive", rule={"copy": "prs_FirstName"})
    typo = ViewColumn(name="debt", type="integer", role="sensitive", rule={"flag": "vic_MethodsOfControl", "any_of": ["Debtbondage"]})
    free = ViewColumn(name="notes", type="string", role="free_text", rule={"copy": "cco_CaseComment"})
    bad = dataclasses.replace(schema, view={**schema.view, "firstName": leaking, "debt": typo, "notes": free})
    problems = "\n".join(check_view(bad))
    assert "column firstName: derived from prs_FirstName, a direct_identifier field" in problems
    assert "column debt: code 'Debtbondage' is not in vic_MethodsOfControl's code list" in problems
    assert "column notes: role free_text may not be in the release view" in problems
