"""The release gate refuses every broken guarantee, checks the bytes it publishes, and alone makes a Release."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from privacy.gate import GateRefused, Release, admit, parse_csv_bytes, to_csv_bytes

ROLES = {"gender": "quasi_identifier", "ageBroad": "quasi_identifier", "isForcedLabour": "sensitive", "Datasource": "process",
         "victimName": "direct_identifier", "narrative": "free_text"}


def table(rows: int = 12) -> pd.DataFrame:
    """k=3 holds: four classes of three."""
    genders = ["Female", "Male"]
    ages = ["18--20", "21--23"]
    data = [(genders[i % 2], ages[(i // 2) % 2], str(i % 3 == 0 and 1 or 0), "Case Management") for i in range(rows)]
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
    assert reason.startswith("4 combinations of gender, ageBroad occur fewer than k=4 times (12 records; the rarest occurs 3 time(s))")


def test_refuses_a_planted_rare_combination():
    frame = pd.concat([table(12), pd.DataFrame([["Transgender", "48+", "1", "Case Management"]], columns=table().columns)])
    found = reasons(frame, privacy(frame))
    assert any("1 combinations of gender, ageBroad occur fewer than k=3 times" in r and "rarest occurs 1 time" in r for r in found)
    # a refusal travels to logs, notifications and the receiver's answer: it never shows the values
    assert not any("Transgender" in r or "48+" in r for r in found)


def test_qi_role_column_counts_even_if_the_record_does_not_name_it():
    frame = table(12)
    record = privacy(frame, quasi_identifiers=["gender"])  # ageBroad forgotten by the config
    frame.loc[0, "ageBroad"] = "48+"
    assert any("combinations of gender, ageBroad occur fewer than" in r for r in reasons(frame, record))


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


def test_refuses_a_class_that_is_not_l_diverse():
    frame = table(12)
    frame["isForcedLabour"] = "0"
    frame.loc[frame.index[:3], "isForcedLabour"] = ["1", "0", "1"]
    record = privacy(frame, l_diversity={"attribute": "isForcedLabour", "l": 2, "kind": "distinct"})
    assert any("not distinct 2-diverse" in r for r in reasons(frame, record))


def test_admits_an_entropy_l_diverse_table():
    frame = pd.DataFrame({"gender": ["F"] * 6, "ageBroad": ["a"] * 6, "isForcedLabour": ["0", "1"] * 3, "Datasource": "x"})
    record = privacy(frame, l_diversity={"attribute": "isForcedLabour", "l": 2, "kind": "entropy"})
    assert admit(frame, record, roles=ROLES).row_count == 6
    frame["isForcedLabour"] = ["0", "0", "0", "0", "1", "1"]  # entropy below log 2
    assert any("entropy 2-diverse" in r for r in reasons(frame, record))


def test_unknown_sensitive_values_do_not_count_towards_l():
    frame = pd.DataFrame({"gender": ["F"] * 4, "ageBroad": ["a"] * 4, "isForcedLabour": ["1", "1", None, None], "Datasource": "x"})
    record = privacy(frame, k=2, l_diversity={"attribute": "isForcedLabour", "l": 2, "kind": "distinct"})
    assert any("2-diverse" in r for r in reasons(frame, record))


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
    assert found == [f"column {column}: 1 cells hold something other than its codes (free text is never published)"]
    assert not any(cell in r for r in found)


def test_admits_codes_and_joined_codes():
    frame = table(12)
    frame["RecruiterRelationship"] = "IntimatePartner;Family"
    frame["meansOfControlConcatenated"] = "meansOfControlDebtBondage;meansOfControlThreats"
    roles = {**ROLES, "RecruiterRelationship": "sensitive", "meansOfControlConcatenated": "sensitive"}
    assert admit(frame, privacy(frame), roles=roles).row_count == 12
