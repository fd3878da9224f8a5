"""protect(): roles decide the quasi-identifiers, forbidden columns are dropped, and the gate admits the result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connector.config import ReleaseConfig
from privacy.gate import GateRefused, admit
from privacy.protect import Protected, ProtectionError, protect

ROLES = {
    "Datasource": "process",
    "yearOfRegistration": "quasi_identifier",
    "gender": "quasi_identifier",
    "ageBroad": "quasi_identifier",
    "majorityStatus": "quasi_identifier",
    "citizenship": "quasi_identifier",
    "CountryOfExploitation": "quasi_identifier",
    "isForcedLabour": "sensitive",
    "typeOfExploit": "sensitive",
    "releasePart": "process",
}


def view(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = pd.array(np.clip(rng.normal(24, 9, n), 0, 80).astype(int), dtype="Int64")
    return pd.DataFrame(
        {
            "Datasource": "Case Management",
            "yearOfRegistration": pd.array(rng.integers(2015, 2024, n), dtype="Int64"),
            "gender": pd.array(rng.choice(["Female", "Male"], n), dtype="string"),
            "ageBroad": age,
            "majorityStatus": pd.array(np.where(np.asarray(age) < 18, "Minor", "Adult"), dtype="string"),
            "citizenship": pd.array(rng.choice(["GR", "UA", "NG", "PH", "RO"], n), dtype="string"),
            "CountryOfExploitation": pd.array(rng.choice(["GR", "IT", "DE"], n), dtype="string"),
            "isForcedLabour": pd.array(rng.integers(0, 2, n), dtype="Int64"),
            "typeOfExploit": pd.array(rng.choice(["sexual", "labour", "other"], n), dtype="string"),
        }
    )


def test_protect_then_admit_round_trip():
    protected = protect(view(), ReleaseConfig(k=5), ROLES)
    assert isinstance(protected, Protected)
    release = admit(protected.table, protected.privacy, roles=ROLES)
    assert release.row_count == protected.privacy["records_out"] > 0


def test_qi_role_column_not_listed_is_still_a_quasi_identifier():
    protected = protect(view(), ReleaseConfig(k=5), ROLES)
    assert "majorityStatus" in protected.privacy["quasi_identifiers"]
    assert protected.privacy["quasi_identifiers_added"] == ["majorityStatus"]


def test_listed_column_with_another_role_is_treated_as_quasi_identifier():
    config = ReleaseConfig(k=5, quasi_identifiers=["gender", "typeOfExploit"])
    protected = protect(view(), config, ROLES)
    assert {"gender", "typeOfExploit"} <= set(protected.privacy["quasi_identifiers"])
    assert protected.privacy["hierarchies"]["typeOfExploit"] == "flat"


def test_forbidden_columns_are_dropped():
    data = view().assign(victimName="Jane", narrative="long story")
    roles = {**ROLES, "victimName": "direct_identifier", "narrative": "free_text"}
    protected = protect(data, ReleaseConfig(k=5), roles)
    assert "victimName" not in protected.table.columns and "narrative" not in protected.table.columns
    assert protected.privacy["columns_dropped"] == ["victimName", "narrative"]
    admit(protected.table, protected.privacy, roles=roles)


def test_column_without_role_is_refused():
    with pytest.raises(ProtectionError, match="mystery"):
        protect(view().assign(mystery=1), ReleaseConfig(k=5), ROLES)


def test_columns_selection_limits_the_release():
    config = ReleaseConfig(k=5, columns=["Datasource", "gender", "ageBroad", "isForcedLabour"])
    protected = protect(view(), config, ROLES)
    assert list(protected.table.columns) == [*config.columns, "releasePart"]
    assert protected.privacy["quasi_identifiers"] == ["ageBroad", "gender"]  # importance order: age band first
    assert set(protected.privacy["quasi_identifiers_absent"]) == {"yearOfRegistration", "citizenship", "CountryOfExploitation"}


def test_partner_hierarchy_and_levels_from_config():
    config = ReleaseConfig(k=5, levels={"ageBroad": 1}, hierarchies={"ageBroad": {"type": "interval", "name": "two bands", "levels": [[0, 18]]}})
    protected = protect(view(), config, ROLES)
    assert set(protected.table["ageBroad"].dropna()) <= {"0--17", "18+"}
    assert protected.privacy["hierarchies"]["ageBroad"] == "two bands"


def test_hierarchy_for_a_non_qi_is_a_config_error():
    with pytest.raises(ProtectionError, match="release.hierarchies.typeOfExploit"):
        protect(view(), ReleaseConfig(k=5, hierarchies={"typeOfExploit": {"type": "flat"}}), ROLES)


def test_l_diversity_from_config():
    config = ReleaseConfig.model_validate({"k": 5, "l_diversity": {"attribute": "typeOfExploit", "l": 2}})
    protected = protect(view(), config, ROLES)
    assert protected.privacy["l_diversity"] == {"facts": {"typeOfExploit": ["typeOfExploit"]}, "l": 2}
    admit(protected.table, protected.privacy, roles=ROLES)


def test_k_larger_than_table_is_a_clear_error():
    with pytest.raises(ProtectionError, match="5 rows cannot form a group of k=10"):
        protect(view(5), ReleaseConfig(k=10), ROLES)


def test_a_fact_that_cannot_be_diverse_is_hidden_and_the_release_still_passes():
    data = view(50).assign(typeOfExploit="same")
    config = ReleaseConfig.model_validate({"k": 2, "l_diversity": {"facts": ["typeOfExploit"], "l": 2}})
    protected = protect(data, config, ROLES)
    assert set(protected.table["typeOfExploit"]) == {"*"}
    assert admit(protected.table, protected.privacy, roles=ROLES).row_count == 50


def test_a_sensitive_column_listed_as_quasi_identifier_is_generalized_and_passes_the_gate():
    from connector.schema import load_schema

    frame = view(60)
    frame["RecruiterRelationship"] = ["Family", "Friend", "IntimatePartner", None] * 15
    roles = {**ROLES, "RecruiterRelationship": "sensitive"}
    release = ReleaseConfig(k=5, quasi_identifiers=[*ReleaseConfig().quasi_identifiers, "RecruiterRelationship"])
    protected = protect(frame, release, roles)
    assert "RecruiterRelationship" in protected.privacy["quasi_identifiers"]
    admitted = admit(protected.table, protected.privacy, roles=roles)
    assert admitted.row_count == protected.privacy["records_out"]
    assert load_schema().view["RecruiterRelationship"].role == "sensitive"
