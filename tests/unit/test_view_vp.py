"""The victim-perpetrator view (one row per case and perpetrator) and the traffickMonths bands."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from connector.sandbox.generate import expected_fields, generate_cases
from connector.schema import ViewColumn, load_schema
from privacy.view import band_labels, check_view, derive_release_view, view_table_schema
from privacy.view_vp import CASE_COLUMN, derive_vp_view

SCHEMA = load_schema()


def _perp(**values):
    keys = SCHEMA.fields["ext_Perpetrators"].items
    return {key: values.get(key) for key in keys}


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    cases = generate_cases(300, seed=5)
    return pd.DataFrame([expected_fields(c) for c in cases], index=[f"row-{c.case_id}" for c in cases])


def test_one_row_per_perpetrator_and_case_links_back(generated: pd.DataFrame) -> None:
    view = derive_vp_view(generated, SCHEMA, datasource="ngo-a")
    perpetrators = generated["ext_Perpetrators"].map(lambda v: len(v or []))
    assert len(view) == perpetrators.sum() and (perpetrators >= 2).any()
    assert view[CASE_COLUMN].value_counts().sort_index().to_dict() == perpetrators[perpetrators > 0].sort_index().to_dict()
    victims = derive_release_view(generated, SCHEMA, datasource="ngo-a")
    shared = [name for name in SCHEMA.vp_view if name in SCHEMA.view]
    assert "gender" in shared and "traffickMonths" in shared
    joined = victims.loc[view[CASE_COLUMN], shared].reset_index(drop=True)
    pd.testing.assert_frame_equal(view[shared], joined)  # the victim's columns are the victim view's, row for row
    assert list(view.columns) == [CASE_COLUMN, *SCHEMA.vp_view]


def test_perpetrator_columns_come_from_their_own_entry_generalized() -> None:
    cases = pd.DataFrame(
        {
            "prs_Gender": ["Feminine", "Masculine"],
            "prs_Citizenship": [["UA"], ["NG"]],
            "ext_CountryOfExploitation": ["PL", None],
            "ext_Perpetrators": [
                [
                    _perp(per_RoleInProcess=["Exploiter", "RecruiterOrIntermediary"], per_Gender="Masculine", per_AgeAtRegistration=41,
                          per_Citizenship="UA", per_RelationshipToVictim="Family", per_MoneyPaid=True),
                    _perp(per_RoleInProcess=["Transporter"], per_Gender="NonSpecifiedUnknown", per_AgeAtRegistration=17, per_MoneyPaid=False),
                ],
                None,  # no perpetrator: no row
            ],
        },
        index=[10, 20],
    )
    view = derive_vp_view(cases, SCHEMA, datasource="ngo-a")
    assert view[CASE_COLUMN].tolist() == [10, 10]
    first, second = view.iloc[0], view.iloc[1]
    assert first["perpetratorRole"] == "RecruiterOrIntermediary;Exploiter"  # code-list order
    assert (first["perpetratorGender"], first["perpetratorAge"], first["perpetratorCitizenshipRegion"]) == ("Male", "35--44", "Europe")
    assert (first["perpetratorRelationship"], first["perpetratorMoneyPaid"]) == ("Family", 1)
    assert pd.isna(second["perpetratorGender"]) and second["perpetratorAge"] == "0--17" and second["perpetratorMoneyPaid"] == 0
    assert pd.isna(second["perpetratorCitizenshipRegion"]) and pd.isna(second["perpetratorRelationship"])
    assert (first["gender"], first["citizenshipRegion"], first["CountryOfExploitationRegion"]) == ("Female", "Europe", "Europe")
    assert view["perpetratorMoneyPaid"].dtype == "Int64" and view["perpetratorAge"].dtype == "string"


def test_no_country_and_no_exact_age_of_a_perpetrator_is_in_the_view(generated: pd.DataFrame) -> None:
    view = derive_vp_view(generated, SCHEMA, datasource="ngo-a")
    regions = {"Africa", "Americas", "Antarctica", "Asia", "Europe", "Oceania"}
    for name in ("perpetratorCitizenshipRegion", "citizenshipRegion", "CountryOfExploitationRegion"):
        assert set(view[name].dropna()) <= regions and view[name].notna().any(), name
    assert set(view["perpetratorAge"].dropna()) <= set(SCHEMA.vp_view["perpetratorAge"].values)
    assert check_view(SCHEMA, SCHEMA.vp_view) == []
    assert all(column.role not in ("direct_identifier", "free_text") for column in SCHEMA.vp_view.values())


def test_no_cases_give_an_empty_view_with_every_column() -> None:
    view = derive_vp_view(pd.DataFrame({"prs_Gender": pd.Series([], dtype=object)}), SCHEMA, datasource="ngo-a")
    assert len(view) == 0 and list(view.columns) == [CASE_COLUMN, *SCHEMA.vp_view]


def test_shared_columns_are_the_victim_views_own() -> None:
    for name, column in SCHEMA.vp_view.items():
        if name in SCHEMA.view:
            assert column == SCHEMA.view[name], name
    fields = {f["name"]: f for f in view_table_schema(SCHEMA, view=SCHEMA.vp_view)["fields"]}
    assert fields["perpetratorRelationship"]["constraints"]["enum"] == list(SCHEMA.codelists["recruiter_relation"])


@pytest.mark.parametrize(("months", "band"), [(0, "0--12"), (12, "0--12"), (13, "13--24"), (24, "13--24"), (25, "25+"), (400, "25+"), (None, None), (-1, None)])
def test_traffick_months_in_ctdc_bands(months, band) -> None:
    view = derive_release_view(pd.DataFrame({"ext_TraffickMonths": [months]}, dtype=object), SCHEMA, datasource="x", columns=["traffickMonths"])
    value = view["traffickMonths"].iloc[0]
    assert (None if pd.isna(value) else value) == band
    assert SCHEMA.view["traffickMonths"].role == "sensitive"
    assert list(SCHEMA.view)[-2:] == ["traffickMonths", "releasePart"]


def test_band_labels_and_a_bad_bands_rule_is_named() -> None:
    assert band_labels([0, 13, 25]) == ["0--12", "13--24", "25+"]
    bad = dataclasses.replace(SCHEMA.view["traffickMonths"], values=("short", "long"))
    other = ViewColumn(name="x", type="string", role="sensitive", rule={"bands": "prs_Gender", "cuts": [0, 1]}, values=("0", "1+"))
    schema = dataclasses.replace(SCHEMA, view={**SCHEMA.view, "traffickMonths": bad, "x": other})
    problems = check_view(schema)
    assert any(p.startswith("column traffickMonths: values must be the band labels") for p in problems)
    assert any(p.startswith("column x: bands needs a number field") for p in problems)
