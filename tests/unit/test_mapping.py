from datetime import date, datetime, timedelta

import pytest

from connector.mapping import MappingError, load_mapping
from connector.records import Page, RawRecord
from connector.schema import FieldSpec, Schema


def make_schema() -> Schema:
    def f(name, type_, role, codelist=None):
        return FieldSpec(name=name, section="test", label=name, type=type_, role=role, codelist=codelist)

    fields = [
        f("prs_FirstName", "text", "direct_identifier"),
        f("prs_Birthdate", "date", "direct_identifier"),
        f("prs_Gender", "code", "quasi_identifier", "gender"),
        f("prs_Citizenship", "codes", "quasi_identifier", "countries"),
        f("vic_MethodsOfControl", "codes", "sensitive", "control"),
        f("cas_IncomingReferralDetails", "long_text", "free_text"),
        f("prs_NumberOfChildren", "integer", "quasi_identifier"),
        f("con_Consent", "boolean", "process"),
        f("ext_RegistrationDate", "date", "process"),
        f("ext_AgeAtRegistration", "integer", "quasi_identifier"),
        f("ext_MajorityStatus", "code", "quasi_identifier", "majority"),
        f("ext_CountryOfExploitation", "code", "quasi_identifier", "countries"),
        f("ext_PerpetratorRoles", "codes", "sensitive", "roles"),
    ]
    codelists = {
        "gender": {"Feminine": "Feminine", "Masculine": "Masculine", "NonSpecifiedUnknown": "Non-specified/Unknown"},
        "countries": {"UA": "Ukraine", "PL": "Poland", "NG": "Nigeria"},
        "control": {"DebtBondage": "Debt bondage ", "PhysicalAbuse": "Physical abuse", "ThreatensChildrenFamily": "Threatens children/family"},
        "majority": {"Minor": "Minor", "Adult": "Adult"},
        "roles": {"Recruiter": "Recruiter", "Transporter": "Transporter", "Exploiter": "Exploiter"},
    }
    return Schema(version="test", fields={s.name: s for s in fields}, codelists=codelists)


MAPPING = """\
profile: test
fields:
  prs_FirstName: first
  prs_Birthdate: {from: born, formats: ["%m-%d-%Y"]}
  prs_Gender: {from: [gender, sex], map: {F: Feminine, "n/a": null}}
  prs_Citizenship: {from: citizenship, split: ";"}
  vic_MethodsOfControl: {from: control, split: ";"}
  cas_IncomingReferralDetails: details
  prs_NumberOfChildren: children
  con_Consent: consent
  ext_RegistrationDate: Case.CreatedDate
  ext_CountryOfExploitation: {from: events, where: {type: Exploitation}, pick: country}
  ext_PerpetratorRoles: {from: perpetrators, collect: roles, split: " "}
derive:
  ext_AgeAtRegistration: {age_at: {birth: prs_Birthdate, date: ext_RegistrationDate}}
  ext_MajorityStatus: {majority_from: ext_AgeAtRegistration}
"""


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return load_mapping(path, make_schema())


def map_one(mapping, fields, record_id="r1"):
    return mapping.map_record("src", RawRecord(record_id, fields))


def test_values_are_normalised_by_schema_type(mapping):
    case, rejections = map_one(
        mapping,
        {
            "first": "  Olena ",
            "born": "12/03/2001",
            "gender": " FEMININE",
            "citizenship": "Ukraine; pl",
            "control": "debt bondage;Threatens children/family ;DebtBondage",
            "children": "2",
            "consent": "Yes",
            "Case": {"CreatedDate": "2021-05-01T10:00:00.000+0000"},
            "events": [{"type": "Transit", "country": "PL"}, {"type": "Recruitment;exploitation", "country": "Nigeria"}],
            "perpetrators": [{"roles": "Recruiter Transporter"}, {"roles": "Exploiter Recruiter"}],
        },
    )
    assert rejections == []
    assert case.fields == {
        "prs_FirstName": "Olena",
        "prs_Birthdate": "2001-03-12",
        "prs_Gender": "Feminine",
        "prs_Citizenship": ["PL", "UA"],
        "vic_MethodsOfControl": ["DebtBondage", "ThreatensChildrenFamily"],
        "cas_IncomingReferralDetails": None,
        "prs_NumberOfChildren": 2,
        "con_Consent": True,
        "ext_RegistrationDate": "2021-05-01",
        "ext_CountryOfExploitation": "NG",
        "ext_PerpetratorRoles": ["Exploiter", "Recruiter", "Transporter"],
        "ext_AgeAtRegistration": 20,
        "ext_MajorityStatus": "Adult",
    }


def test_first_present_source_and_value_map(mapping):
    case, _ = map_one(mapping, {"sex": "F"})
    assert case.fields["prs_Gender"] == "Feminine"
    case, rejections = map_one(mapping, {"gender": "N/A"})
    assert case.fields["prs_Gender"] is None and rejections == []


@pytest.mark.parametrize(
    "raw, expected",
    [
        (date(2000, 1, 2), "2000-01-02"),
        (datetime(2000, 1, 2, 5, 6), "2000-01-02"),
        ("2000-01-02", "2000-01-02"),
        ("02/01/2000", "2000-01-02"),
        ("2000.01.02", "2000-01-02"),
        ("Jan 2 2000", "2000-01-02"),
        ("01-02-2000", "2000-01-02"),  # the mapping's own extra format (%m-%d-%Y) wins over built-ins? no: tried first
        (36527, "2000-01-02"),  # an Excel serial number
    ],
)
def test_dates_in_many_formats(mapping, raw, expected):
    case, rejections = map_one(mapping, {"born": raw})
    assert rejections == []
    assert case.fields["prs_Birthdate"] == expected


def test_unknown_code_is_a_named_rejection_and_the_record_goes_on(mapping):
    case, rejections = map_one(mapping, {"gender": "Feminin", "first": "Ana", "control": "DebtBondage;Blackmail"}, "case-7")
    assert case.fields["prs_Gender"] is None
    assert case.fields["prs_FirstName"] == "Ana"
    assert case.fields["vic_MethodsOfControl"] == ["DebtBondage"]
    by_field = {r.field: r for r in rejections}
    assert set(by_field) == {"prs_Gender", "vic_MethodsOfControl"}
    assert by_field["prs_Gender"].source == "src" and by_field["prs_Gender"].record_id == "case-7"
    # a misspelt code is shown, with the code it is closest to; anything else only by its length
    assert by_field["prs_Gender"].value == "Feminin"
    assert by_field["prs_Gender"].reason == "not a code of list 'gender'; closest code Feminine"
    assert by_field["vic_MethodsOfControl"].value == "[redacted, 9 chars]"
    assert by_field["vic_MethodsOfControl"].reason == "not a code of list 'control'"


def test_birth_date_in_the_future_is_rejected_without_showing_it(mapping):
    future = (date.today() + timedelta(days=400)).isoformat()
    case, rejections = map_one(mapping, {"born": future})
    assert case.fields["prs_Birthdate"] is None
    (rejection,) = rejections
    assert rejection.field == "prs_Birthdate" and rejection.reason == "date in the future"
    assert future not in (rejection.value or "")
    assert rejection.value == f"[redacted, {len(future)} chars]"


@pytest.mark.parametrize("typed", ["Amina", "0712-345-678", "12/03/1990", "j.doe", "Nairobi-Kibera", "she said her name is Olena Petrenko, 23"])
def test_personal_values_typed_into_fields_never_appear_in_rejections(mapping, typed):
    _, rejections = map_one(mapping, {"born": typed + "x", "gender": typed, "citizenship": typed, "children": typed})
    assert {r.field for r in rejections} >= {"prs_Birthdate", "prs_Gender", "prs_Citizenship"}
    for rejection in rejections:
        assert typed not in (rejection.value or "") and typed not in rejection.reason


def test_unparseable_numbers_and_booleans(mapping):
    case, rejections = map_one(mapping, {"children": "two", "consent": "maybe"})
    assert case.fields["prs_NumberOfChildren"] is None and case.fields["con_Consent"] is None
    assert {(r.field, r.reason) for r in rejections} == {
        ("prs_NumberOfChildren", "not a whole number"),
        ("con_Consent", "not a yes/no value"),
    }


def test_birth_after_registration_rejects_the_derived_age(mapping):
    case, rejections = map_one(mapping, {"born": "2020-01-01", "Case": {"CreatedDate": "2019-01-01"}})
    assert case.fields["ext_AgeAtRegistration"] is None and case.fields["ext_MajorityStatus"] is None
    assert [(r.field, r.reason) for r in rejections] == [("prs_Birthdate", "birth date after the registration date")]


def test_minor_at_registration(mapping):
    case, _ = map_one(mapping, {"born": "2010-06-02", "Case": {"CreatedDate": "2026-06-01"}})
    assert case.fields["ext_AgeAtRegistration"] == 15
    assert case.fields["ext_MajorityStatus"] == "Minor"


def test_deleted_records_carry_no_fields(mapping):
    case, rejections = mapping.map_record("src", RawRecord("r9", {"first": "x"}, deleted=True))
    assert case.deleted and case.fields == {} and rejections == []


def test_map_page_keeps_cursor_and_collects_rejections(mapping):
    page = Page([RawRecord("a", {"gender": "F"}), RawRecord("b", {"gender": "??"})], cursor="c-2", number=3)
    mapped = mapping.map_page("src", page)
    assert mapped.cursor == "c-2" and mapped.number == 3
    assert [c.record_id for c in mapped.cases] == ["a", "b"]
    assert [r.record_id for r in mapped.rejections] == ["b"]


def test_bad_mapping_file_lists_each_problem_with_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "fields:\n"
        "  prs_Gender: {from: g, map: {F: Femme}}\n"
        "  prs_Nickname: nick\n"
        "  prs_FirstName: {from: f, spilt: ';'}\n"
        "derive:\n"
        "  ext_AgeAtRegistration: {age_of: x}\n"
    )
    with pytest.raises(MappingError) as info:
        load_mapping(path, make_schema())
    problems = info.value.problems
    assert any(p.startswith(f"{path}:2") and "'Femme' is not a code of list 'gender'" in p for p in problems)
    assert any(p.startswith(f"{path}:3") and "'prs_Nickname' is not a common-schema field" in p for p in problems)
    assert any(p.startswith(f"{path}:4") and "unknown key 'spilt'" in p for p in problems)
    assert any(p.startswith(f"{path}:6") and "unknown derivation" in p for p in problems)
    assert len(problems) == 4


def test_unknown_packaged_mapping_lists_known_ones():
    with pytest.raises(MappingError, match="no packaged mapping named 'nope'"):
        load_mapping("nope", make_schema())


def test_raw_fields_lists_top_level_sources(mapping):
    assert {"first", "born", "gender", "sex", "Case", "events", "perpetrators"} <= mapping.raw_fields()


def test_closest_code_suggestions_are_cached_and_the_same(monkeypatch):
    """The closest-code hint is computed once per list and misspelling (difflib compares the value
    with every code and label); a cached answer is the answer difflib gives."""
    import difflib

    from connector import mapping as mapping_module
    from connector.records import RawRecord

    mapping = mapping_module.load_mapping("excel_htcds")
    calls: list[str] = []
    real = difflib.get_close_matches
    monkeypatch.setattr(mapping_module.difflib, "get_close_matches", lambda word, *a, **k: calls.append(word) or real(word, *a, **k))
    first = mapping.closest_code("gender", mapping_module.fold("Feminin"))
    again = mapping.closest_code("gender", mapping_module.fold("Feminin"))
    expected = real(mapping_module.fold("Feminin"), list(mapping._lookups["gender"]), n=1, cutoff=mapping_module.NEAR_CODE)
    assert first == again == mapping._lookups["gender"][expected[0]] == "Feminine"
    assert mapping.closest_code("gender", "zzzzzz") is None and mapping.closest_code("gender", "zzzzzz") is None
    assert calls == ["feminin", "zzzzzz"]
    reasons = [mapping.map_record("s", RawRecord(record_id=str(i), fields={"prs_Gender": value}))[1] for i, value in enumerate(["Feminin", "feminin ", "Feminin"])]
    assert len({r[0].reason for r in reasons}) == 1 and "closest code" in reasons[0][0].reason
    assert calls == ["feminin", "zzzzzz"]  # three records with the misspelling: no new difflib run


def test_coded_values_read_the_same_from_the_memo_and_keep_their_types():
    """The per-field memo gives each record the result a fresh normalisation gives, as new objects,
    and does not confuse equal keys of different types (True == 1 == 1.0)."""
    from connector.mapping import load_mapping
    from connector.records import RawRecord

    mapping = load_mapping("excel_htcds")
    fresh = load_mapping("excel_htcds")
    fresh._compiled = [(rule, spec, None, extract) for rule, spec, _, extract in fresh._compiled]  # no memo
    samples = ["Female", "F", "Femal", "x", True, 1, 1.0, "", None]
    for i, value in enumerate(samples * 2):
        record = RawRecord(record_id=str(i), fields={"prs_Gender": value, "vic_TypeOfExploitation": "Forced Labour;Sexual Exploitation;nonsense"})
        got, expected = mapping.map_record("s", record), fresh.map_record("s", record)
        assert got == expected, value
    one = mapping.map_record("s", RawRecord(record_id="a", fields={"vic_TypeOfExploitation": "Forced Labour"}))[0]
    two = mapping.map_record("s", RawRecord(record_id="b", fields={"vic_TypeOfExploitation": "Forced Labour"}))[0]
    assert one.fields["vic_TypeOfExploitation"] == two.fields["vic_TypeOfExploitation"]
    assert one.fields["vic_TypeOfExploitation"] is not two.fields["vic_TypeOfExploitation"]  # no shared lists between records


@pytest.mark.parametrize("name", ["excel_htcds", "xlsform_htcds", "salesforce_htcds"])
def test_compiled_extractors_read_what_the_rules_say(name):
    from connector.mapping import _extract, _extractor, load_mapping

    for rule in load_mapping(name).rules:
        extract = _extractor(rule)
        variants = [{}, {s: "  " for s in rule.sources}]
        for i, source in enumerate(rule.sources):
            variants.append({source: f"v{i}"})
            variants.append({**{s: None for s in rule.sources[:i]}, source: f"v{i}", **{s: "later" for s in rule.sources[i + 1 :]}})
        for fields in variants:
            assert extract(fields) == _extract(fields, rule), (rule.target, fields)


def test_the_sort_text_of_entry_values_is_their_json_even_when_remembered() -> None:
    """`records` entries are sorted by each value's JSON text; the text is remembered per typed
    value, so [1] and [True], 1 and 1.0, keep their own texts whatever came first."""
    import json

    from connector.mapping import _sort_text

    values = [[1], [True], 1, 1.0, True, "1", None, ["a", "b"], ("a", "b"), [{"x": 1}], {"b": 1, "a": 2}, [1], [True], 1.0, 1]
    for value in values:
        assert _sort_text(value) == json.dumps(value, sort_keys=True, default=str), value
