"""The release gate refuses every broken guarantee, checks the bytes it publishes, and alone makes a Release."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from privacy.gate import GateRefused, Release, admit, parse_csv_bytes, to_csv_bytes

ROLES = {"gender": "quasi_identifier", "ageBroad": "quasi_identifier", "isForcedLabour": "sensitive", "Datasource": "process",
         "victimName": "direct_identifier", "narrative": "free_text"}


def table(rows: int = 12) -> pd.DataFrame:
    """k=3 holds over every column: four classes of three whole rows."""
    genders = ["Female", "Male"]
    ages = ["18--20", "21--23"]
    data = [(genders[i % 2], ages[(i // 2) % 2], "1" if i % 2 == 0 else "0", "Case Management") for i in range(rows)]
    return pd.DataFrame(data, columns=["gender", "ageBroad", "isForcedLabour", "Datasource"])


def privacy(frame: pd.DataFrame, k: int = 3, **extra) -> dict:
    return {"method": "k_anonymity", "k": k, "quasi_identifiers": ["gender", "ageBroad"], "records_out": len(frame), **extra}


def reasons(frame: pd.DataFrame, record: dict, roles: dict = ROLES) -> list[str]:
    with pytest.raises(GateRefused) as info:
        admit(frame, record, roles=roles)
    return info.value.reasons


def test_admits_a_k_anonymous_table_with_sorted_deterministic_bytes():
    frame = table()
    release = admit(frame, privacy(frame), roles=ROLES)
    assert release.row_count == 12
    assert release.columns == ("gender", "ageBroad", "isForcedLabour", "Datasource")
    header, rows = parse_csv_bytes(release.data_csv)
    assert rows == sorted(rows)
    assert release.data_csv.startswith(b"gender,ageBroad,isForcedLabour,Datasource\n")
    assert b"\r" not in release.data_csv
    shuffled = frame.sample(frac=1, random_state=1)
    assert admit(shuffled, privacy(shuffled), roles=ROLES).data_csv == release.data_csv


def test_na_is_written_as_empty_and_counts_as_a_value():
    frame = table(12)
    frame["gender"] = pd.array([None] * 3 + ["Female"] * 9, dtype="string")
    frame["ageBroad"] = "18--20"
    frame["isForcedLabour"] = "1"
    release = admit(frame, privacy(frame), roles=ROLES)
    assert b"\n,18--20," in release.data_csv


@pytest.mark.parametrize("column,role", [("victimName", "direct_identifier"), ("narrative", "free_text")])
def test_refuses_each_forbidden_role(column, role):
    frame = table().assign(**{column: "x"})
    assert any(f"column {column}: role {role}" in r for r in reasons(frame, privacy(frame)))


def test_refuses_a_column_without_a_known_role():
    frame = table().assign(mystery="x")
    assert any("column mystery: no known disclosure role" in r for r in reasons(frame, privacy(frame)))


def test_refuses_each_class_smaller_than_k():
    frame = table(12)
    found = reasons(frame, privacy(frame, k=4))
    (reason,) = found
    assert reason.startswith("4 combinations of published columns occur fewer than k=4 times (12 records; the rarest occurs 3 time(s))")


def test_refuses_a_planted_rare_combination():
    frame = pd.concat([table(12), pd.DataFrame([["Transgender", "48+", "1", "Case Management"]], columns=table().columns)])
    found = reasons(frame, privacy(frame))
    assert any("1 combinations of published columns occur fewer than k=3 times" in r and "rarest occurs 1 time" in r for r in found)
    # a refusal travels to logs, notifications and the receiver's answer: it never shows the values
    assert not any("Transgender" in r or "48+" in r for r in found)


def test_every_published_column_counts_not_only_the_quasi_identifiers():
    """The attacker who matters (the trafficker) knows the exploitation: a row made unique by a
    sensitive column singles its victim out, however k-anonymous the quasi-identifiers are."""
    frame = table(12)
    record = privacy(frame, quasi_identifiers=["gender"])  # a config that names one trait only
    frame.loc[0, "isForcedLabour"] = "0"  # gender and age still in classes of 3; the whole row is unique
    assert any("combinations of published columns occur fewer than k=3" in r for r in reasons(frame, record))


def test_a_blank_cell_is_a_value_and_its_rows_are_counted():
    """Rows with a blank quasi-identifier are a class of their own; dropping them from the count
    (a groupby that skips NA) would let a unique row with an unknown age through."""
    frame = pd.concat([table(12), pd.DataFrame([["Female", None, "1", "Case Management"]], columns=table().columns)], ignore_index=True)
    found = reasons(frame, privacy(frame))  # the only rare row is the one with an unknown age
    assert any("1 combinations of published columns occur fewer than k=3" in r for r in found)
    frame = table(12)
    frame.loc[[0, 4, 8], "ageBroad"] = None  # a whole class of three with an unknown age: k=3 holds
    assert admit(frame, privacy(frame), roles=ROLES).row_count == 12


def test_a_suppressed_star_is_a_value_of_its_own():
    frame = table(12)
    frame.loc[:1, "isForcedLabour"] = "*"  # two rows now differ from their class by a '*'
    assert any("occur fewer than k=3" in r for r in reasons(frame, privacy(frame)))


@pytest.mark.parametrize("bad", ["Male\r", "Ma\nle", "Male\x00"])
def test_refuses_line_breaks_and_control_characters_in_cells(bad):
    frame = table(12)
    frame["gender"] = bad  # one class of 12: k holds, but a reader could split these cells differently
    assert any("hold line breaks or control characters" in r for r in reasons(frame, privacy(frame)))


def test_refuses_mismatched_records_out():
    frame = table()
    assert any("records_out=11" in r for r in reasons(frame, privacy(frame, records_out=11)))


def test_refuses_an_empty_table():
    frame = table().iloc[:0]
    assert any("empty" in r for r in reasons(frame, privacy(frame)))


def test_refuses_missing_or_invalid_k_and_unknown_method():
    frame = table()
    assert any("no valid k" in r for r in reasons(frame, {**privacy(frame), "k": 1}))
    assert any("not one the gate knows" in r for r in reasons(frame, {**privacy(frame), "method": "none"}))


def test_synthetic_release_without_its_epsilon_is_refused():
    frame = table()
    assert any("epsilon" in r for r in reasons(frame, {**privacy(frame), "method": "synthetic"}))


L_FACT = {"facts": {"typeOfExploitConcatenated": ["typeOfExploitConcatenated", "isSexualExploit", "isForcedLabour"]}, "l": 2}
L_ROLES = {**ROLES, "typeOfExploitConcatenated": "sensitive", "isSexualExploit": "sensitive"}


def exploit_table(values: list[tuple[str, str, str]], repeat: int = 3) -> pd.DataFrame:
    rows = [("Female", "18--20", flag_l, "Case Management", concat, flag_s) for concat, flag_s, flag_l in values for _ in range(repeat)]
    return pd.DataFrame(rows, columns=["gender", "ageBroad", "isForcedLabour", "Datasource", "typeOfExploitConcatenated", "isSexualExploit"])


def test_l_diversity_counts_meanings_not_strings():
    """Two distinct strings that both say "sexually exploited" leave everyone in the class certainly
    sexually exploited: not diverse, whatever a distinct-string count says."""
    frame = exploit_table([("isSexualExploit", "1", "0"), ("isForcedLabour;isSexualExploit", "1", "1")])
    assert any("not l-diverse (l=2) in the meaning of typeOfExploitConcatenated" in r for r in reasons(frame, privacy(frame, l_diversity=L_FACT), L_ROLES))
    diverse = exploit_table([("isSexualExploit", "1", "0"), ("isForcedLabour", "0", "1")])
    assert admit(diverse, privacy(diverse, l_diversity=L_FACT), roles=L_ROLES).row_count == 6


def test_l_diversity_ignores_rows_where_the_fact_is_suppressed():
    frame = exploit_table([("isSexualExploit", "1", "0"), ("*", "*", "*")])
    assert any("in the meaning of typeOfExploitConcatenated" in r for r in reasons(frame, privacy(frame, l_diversity=L_FACT), L_ROLES))


def test_l_diversity_rule_without_facts_is_refused():
    frame = table()
    assert any("l-diversity rule is not valid" in r for r in reasons(frame, privacy(frame, l_diversity={"attribute": "isForcedLabour", "l": 2})))


def test_the_rows_added_since_the_previous_release_must_meet_k_on_their_own():
    before = table(12)
    previous = admit(before, privacy(before), roles=ROLES).data_csv
    after = pd.concat([before, before.iloc[:1]], ignore_index=True)  # one new case: k still holds overall (4 of one row)
    assert admit(after, privacy(after), roles=ROLES).row_count == 13
    with pytest.raises(GateRefused) as info:
        admit(after, privacy(after), roles=ROLES, previous=previous)
    assert any("rows added since the previous release include 1 row(s)" in r for r in info.value.reasons)
    grown = pd.concat([before, before.iloc[[0, 0, 0]]], ignore_index=True)  # three alike: a whole group
    assert admit(grown, privacy(grown), roles=ROLES, previous=previous).row_count == 15


def test_the_rows_removed_since_the_previous_release_must_meet_k_on_their_own():
    before = pd.concat([table(12), table(12).iloc[:1]], ignore_index=True)
    previous = admit(before, privacy(before), roles=ROLES).data_csv
    after = table(12)  # one case deleted
    with pytest.raises(GateRefused) as info:
        admit(after, privacy(after), roles=ROLES, previous=previous)
    assert any("rows removed since the previous release" in r for r in info.value.reasons)


def test_release_cannot_be_constructed_directly():
    with pytest.raises(TypeError, match="only by privacy.gate.admit"):
        Release(b"gender\nF\n", ("gender",), 1, {"k": 2})


def test_release_cannot_be_altered_with_replace():
    frame = table()
    release = admit(frame, privacy(frame), roles=ROLES)
    with pytest.raises(TypeError, match="only by privacy.gate.admit"):
        dataclasses.replace(release, data_csv=b"gender\nF\n")


def test_the_gate_checks_the_bytes_not_the_dataframe():
    # two values that differ in pandas but serialise the same are one class in the release
    frame = pd.DataFrame({"gender": ["1", 1, "1"], "ageBroad": ["a"] * 3, "isForcedLabour": "0", "Datasource": "x"})
    assert admit(frame, privacy(frame), roles=ROLES).row_count == 3
    assert to_csv_bytes(frame).count(b"1,a,0,x\n") == 3


@pytest.mark.parametrize("column, cell", [
    ("RecruiterRelationship", "her uncle John Okello, 0712 345 678"),
    ("meansOfControlConcatenated", "Amina Yusuf said he kept her passport"),
    ("isForcedLabour", "yes"),
    ("meansOfControlDebtBondage", "1.0"),
])
def test_refuses_a_coded_column_holding_anything_but_its_codes(column, cell):
    frame = table(12)
    valid = {"RecruiterRelationship": "IntimatePartner;Family", "meansOfControlConcatenated": "meansOfControlDebtBondage"}
    frame[column] = [valid.get(column, "1")] * 11 + [cell]
    found = reasons(frame, privacy(frame), {**ROLES, column: "sensitive"})
    assert f"column {column}: 1 cells hold something other than its codes (free text is never published)" in found
    assert not any(cell in r for r in found)


def test_admits_codes_and_joined_codes():
    frame = table(12)
    frame["RecruiterRelationship"] = "IntimatePartner;Family"
    frame["meansOfControlConcatenated"] = "meansOfControlDebtBondage;meansOfControlThreats"
    frame.loc[frame["gender"] == "Female", "meansOfControlConcatenated"] = "*"  # a suppressed fact is no free text
    roles = {**ROLES, "RecruiterRelationship": "sensitive", "meansOfControlConcatenated": "sensitive"}
    assert admit(frame, privacy(frame), roles=roles).row_count == 12
