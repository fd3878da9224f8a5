"""Release-view derivation on hand-made cases whose expected view is worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from connector.schema import Schema, load_schema
from privacy.view import derive_release_view, describe_rule, view_table_schema

NA = pd.NA


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


FULL = {
    "ext_RegistrationDate": "2019-05-01",
    "prs_Gender": "TransgenderMasculine",
    "ext_AgeAtRegistration": 16,
    "ext_MajorityStatus": "Minor",
    "prs_Citizenship": ["GH", "NG"],
    "vic_MethodsOfControl": ["DebtBondage", "ThreatensChildrenFamily", "WithholdsDocuments"],
    "vic_TypeOfExploitation": ["ForcedBegging", "SexualExploitation"],
    "vic_ForcedLabourIndustry": "T_ActivitiesOfHouseholdsAsEmployers",
    "vic_TypeOfSexExploitation": ["Pornography"],
    "ext_PerpetratorRoles": ["Exploiter", "Kidnapper"],
    "ext_RecruiterRelation": ["Family", "IntimatePartner"],
    "ext_CountryOfExploitation": "TH",
    "prs_FirstName": "Ama",  # a direct identifier in the input must not reach the view
}
KNOWN_EMPTY = {
    "ext_RegistrationDate": "2021-01-15",
    "prs_Gender": "NonSpecifiedUnknown",
    "ext_AgeAtRegistration": 30,
    "ext_MajorityStatus": "Adult",
    "prs_Citizenship": "KH",  # a single select arrives as a plain code
    "vic_MethodsOfControl": [],
    "vic_TypeOfExploitation": ["ForcedLabour"],
    "vic_ForcedLabourIndustry": None,
    "vic_TypeOfSexExploitation": None,
    "ext_PerpetratorRoles": ["RecruiterOrIntermediary"],
    "ext_RecruiterRelation": None,
    "ext_CountryOfExploitation": None,
}
UNKNOWN = {"prs_Gender": None}


@pytest.fixture(scope="module")
def view(schema: Schema) -> pd.DataFrame:
    cases = pd.DataFrame([FULL, KNOWN_EMPTY, UNKNOWN], index=["a", "b", "c"])
    return derive_release_view(cases, schema, datasource="ngo-test")


def _row(view: pd.DataFrame, label: str) -> dict:
    return {name: (NA if pd.isna(value) else value) for name, value in view.loc[label].items()}


def test_view_has_exactly_the_view_columns_with_nullable_dtypes(schema: Schema, view: pd.DataFrame) -> None:
    assert list(view.columns) == list(schema.view)
    assert list(view.index) == ["a", "b", "c"]
    for name, column in schema.view.items():
        expected = "Int64" if column.type == "integer" else "string"
        assert str(view[name].dtype) == expected, name
    assert "prs_FirstName" not in view.columns


def test_full_case_quasi_identifiers(view: pd.DataFrame) -> None:
    row = _row(view, "a")
    assert row["yearOfRegistration"] == 2019
    assert row["Datasource"] == "ngo-test"
    assert row["gender"] == "Transgender"
    assert row["ageBroad"] == 16
    assert row["majorityStatus"] == "Minor"
    assert row["citizenship"] == "GH"  # the first of several
    assert row["CountryOfExploitation"] == "TH"


def test_full_case_means_of_control_flags_and_concatenation(view: pd.DataFrame) -> None:
    row = _row(view, "a")
    ones = {"meansOfControlDebtBondage", "meansOfControlThreats", "meansOfControlWithholdsDocuments"}
    blanks = {"meansOfControlRestrictsMovement", "meansOfControlUsesChildren"}  # no HTCDS code feeds them
    flags = [c for c in view.columns if c.startswith("meansOfControl") and c != "meansOfControlConcatenated"]
    assert len(flags) == 18
    for name in flags:
        expected = 1 if name in ones else NA if name in blanks else 0
        assert row[name] is expected or row[name] == expected, name
    assert row["meansOfControlConcatenated"] == "meansOfControlDebtBondage;meansOfControlThreats;meansOfControlWithholdsDocuments"


def test_full_case_exploitation_labour_sex_and_recruiter(view: pd.DataFrame) -> None:
    row = _row(view, "a")
    assert (row["isForcedLabour"], row["isSexualExploit"], row["isSexAndLabour"]) == (1, 1, 1)  # forced begging is labour
    assert (row["isOtherExploit"], row["isForcedMarriage"], row["isSlaveryAndPractices"]) == (0, 0, 0)
    assert row["typeOfExploitConcatenated"] == "isForcedLabour;isSexualExploit"
    assert (row["typeOfLabourBegging"], row["typeOfLabourDomesticWork"], row["typeOfLabourAgriculture"]) == (1, 1, 0)
    assert row["typeOfLabourNotSpecified"] == 0
    assert row["typeOfLabourAquafarming"] is NA
    assert row["typeOfLabourConcatenated"] == "typeOfLabourBegging;typeOfLabourDomesticWork"
    assert (row["typeOfSexPornography"], row["typeOfSexProstitution"]) == (1, 0)
    assert row["typeOfSexConcatenated"] == "typeOfSexPornography"
    assert row["isAbduction"] == 1
    assert row["RecruiterRelationship"] == "IntimatePartner;Family"  # code-list order, not input order
    assert (row["recruiterRelationIntimatePartner"], row["recruiterRelationFamily"], row["recruiterRelationFriend"]) == (1, 1, 0)


def test_known_but_empty_values_give_zeros_and_not_specified(view: pd.DataFrame) -> None:
    row = _row(view, "b")
    assert row["yearOfRegistration"] == 2021
    assert row["gender"] is NA  # NonSpecifiedUnknown
    assert row["citizenship"] == "KH"
    assert row["meansOfControlDebtBondage"] == 0  # recorded, with no method: 0, not blank
    assert row["meansOfControlNotSpecified"] == 1
    assert row["meansOfControlConcatenated"] == "meansOfControlNotSpecified"
    assert (row["isForcedLabour"], row["isSexualExploit"], row["isSexAndLabour"]) == (1, 0, 0)
    assert row["typeOfExploitConcatenated"] == "isForcedLabour"
    assert row["typeOfLabourConstruction"] is NA  # industry unknown
    assert row["typeOfLabourBegging"] == 0  # fed by the known exploitation type
    assert row["typeOfLabourNotSpecified"] == 1  # a labour case without an industry
    assert row["typeOfLabourConcatenated"] == "typeOfLabourNotSpecified"
    assert row["typeOfSexProstitution"] is NA
    assert row["typeOfSexConcatenated"] is NA
    assert row["isAbduction"] == 0
    assert row["RecruiterRelationship"] is NA
    assert row["recruiterRelationFriend"] is NA
    assert row["CountryOfExploitation"] is NA


def test_unknown_or_missing_fields_give_blanks(view: pd.DataFrame) -> None:
    row = _row(view, "c")
    assert row["Datasource"] == "ngo-test"
    assert row["meansOfControlNotSpecified"] == 1  # the one flag that reports unknown means of control
    assert row["meansOfControlConcatenated"] == "meansOfControlNotSpecified"
    blank = {name for name, value in row.items() if value is NA}
    assert blank == set(view.columns) - {"Datasource", "meansOfControlNotSpecified", "meansOfControlConcatenated"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("Feminine", "Female"),
        ("Masculine", "Male"),
        ("TransgenderFeminine", "Transgender"),
        ("TransgenderMasculine", "Transgender"),
        ("NonConforming", "Other"),
        ("NonSpecifiedUnknown", NA),
        ("female", NA),  # not an HTCDS code: the mapping should have caught it; never guessed here
        (None, NA),
    ],
)
def test_gender_mapping(schema: Schema, code: str | None, expected: object) -> None:
    view = derive_release_view(pd.DataFrame({"prs_Gender": [code]}), schema, datasource="x", columns=["gender"])
    value = view["gender"].iloc[0]
    assert (value is NA) if expected is NA else value == expected


@pytest.mark.parametrize(
    ("value", "year"),
    [("2018-02-28", 2018), ("2018-02-28T10:00:00.000Z", 2018), (pd.Timestamp("2017-07-01"), 2017), (None, NA), ("n/a", NA)],
)
def test_year_of_registration(schema: Schema, value: object, year: object) -> None:
    view = derive_release_view(pd.DataFrame({"ext_RegistrationDate": [value]}), schema, datasource="x", columns=["yearOfRegistration"])
    got = view["yearOfRegistration"].iloc[0]
    assert (got is NA) if year is NA else got == year


def test_age_from_a_float_column_stays_a_whole_number(schema: Schema) -> None:
    # pandas turns an int column with a None into floats; the view must still hold Int64 ages
    cases = pd.DataFrame({"ext_AgeAtRegistration": [24, None, 9]})
    view = derive_release_view(cases, schema, datasource="x", columns=["ageBroad"])
    assert view["ageBroad"].tolist() == [24, NA, 9]
    assert str(view["ageBroad"].dtype) == "Int64"


def test_columns_subset_in_requested_order_computes_dependencies(schema: Schema) -> None:
    cases = pd.DataFrame([FULL, KNOWN_EMPTY])
    view = derive_release_view(cases, schema, datasource="x", columns=["isSexAndLabour", "citizenship", "typeOfLabourConcatenated"])
    assert list(view.columns) == ["isSexAndLabour", "citizenship", "typeOfLabourConcatenated"]
    assert view["isSexAndLabour"].tolist() == [1, 0]
    assert view["typeOfLabourConcatenated"].tolist() == ["typeOfLabourBegging;typeOfLabourDomesticWork", "typeOfLabourNotSpecified"]


def test_unknown_column_is_refused(schema: Schema) -> None:
    with pytest.raises(ValueError, match="prs_FirstName"):
        derive_release_view(pd.DataFrame([FULL]), schema, datasource="x", columns=["gender", "prs_FirstName"])


def test_empty_cases_give_an_empty_view_with_the_right_dtypes(schema: Schema) -> None:
    view = derive_release_view(pd.DataFrame(), schema, datasource="x")
    assert len(view) == 0 and list(view.columns) == list(schema.view)
    assert str(view["isForcedLabour"].dtype) == "Int64" and str(view["gender"].dtype) == "string"


def test_table_schema_lists_columns_with_types_roles_and_enums(schema: Schema) -> None:
    table = view_table_schema(schema, ["gender", "isForcedLabour", "citizenship", "ageBroad"])
    fields = {f["name"]: f for f in table["fields"]}
    assert [f["name"] for f in table["fields"]] == ["gender", "isForcedLabour", "citizenship", "ageBroad"]
    assert fields["gender"]["constraints"]["enum"] == ["Female", "Male", "Transgender", "Other"]
    assert fields["isForcedLabour"]["type"] == "integer" and fields["isForcedLabour"]["constraints"]["enum"] == [0, 1]
    assert "NG" in fields["citizenship"]["constraints"]["enum"]
    assert "constraints" not in fields["ageBroad"]
    assert {f["role"] for f in table["fields"]} == {"quasi_identifier", "sensitive"}
    assert len(view_table_schema(schema)["fields"]) == len(schema.view)


def test_derived_view_validates_against_its_table_schema(schema: Schema, view: pd.DataFrame, tmp_path) -> None:
    import frictionless  # a dev dependency: missing is a failure, not a skip
    path = tmp_path / "view.csv"
    view.to_csv(path, index=False)
    resource = frictionless.Resource(path="view.csv", basepath=str(tmp_path), schema=frictionless.Schema.from_descriptor(view_table_schema(schema)))
    report = frictionless.validate(resource)
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])


def test_rules_read_in_plain_words(schema: Schema) -> None:
    assert describe_rule(schema.view["yearOfRegistration"].rule) == "The year of `ext_RegistrationDate`; blank if that date is unknown."
    assert "DebtBondage" in describe_rule(schema.view["meansOfControlDebtBondage"].rule)
    assert describe_rule(schema.view["meansOfControlUsesChildren"].rule).startswith("Always blank: ")


def test_a_rule_runs_per_distinct_value_yet_each_case_gets_its_own_value(schema: Schema) -> None:
    """Derivation works on encoded columns (issue #16): equal values of different types stay apart
    (True is not 1), list values and unhashable values still reach the rule, row order is kept."""
    index = [10, 11, 12, 13, 14, 15, 16]
    cases = pd.DataFrame(
        {
            "ext_MajorityStatus": pd.Series(["Minor", True, 1, "Minor", None, 1.5, "Adult"], index=index, dtype=object),
            "prs_Citizenship": pd.Series([["GH", "NG"], ["NG"], ["GH", "NG"], [{"odd": 1}], "GH", None, ("NG", "GH")], index=index, dtype=object),
        }
    )
    view = derive_release_view(cases, schema, datasource="ngo-a", columns=["majorityStatus", "citizenship", "Datasource"])
    assert view["majorityStatus"].fillna("-").tolist() == ["Minor", "True", "1", "Minor", "-", "1.5", "Adult"]
    assert view["citizenship"].fillna("-").tolist() == ["GH", "NG", "GH", "{'odd': 1}", "GH", "-", "NG"]
    assert view["Datasource"].tolist() == ["ngo-a"] * 7
    assert list(view.index) == index
