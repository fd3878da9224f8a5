"""Reading XLSForm definitions in every dialect, and the one raw shape both form servers produce."""

from __future__ import annotations

from importlib import resources

from connector.sandbox import xlsform_render
from connector.sources.xlsform import FlattenStats, flatten_answers, form_from_kobo_content, form_from_odk_fields, form_from_xform, read_xlsform


def _shape(form):  # noqa: ANN001, ANN202 - a test helper
    return [(f.path, f.type, f.repeat) for f in form.fields if f.type != "calculate"]


def test_the_packaged_htcds_xlsform_and_its_xform_agree() -> None:
    path = resources.files("mappings").joinpath("forms", "htcds_xlsform.xlsx")
    workbook = read_xlsform(str(path))
    xform = form_from_xform(resources.files("mappings").joinpath("forms", "htcds_xlsform.xml").read_text(encoding="utf-8"))
    assert workbook.version == xform.version == "vSmt4GQA3C9uBMLPEVfgND"
    assert [f.name for f in workbook.fields] == [f.name for f in xform.fields]
    assert workbook.field("vic_Methods_of_Control").type == "select_multiple"
    assert "DebtBondage " in workbook.choice_names("methodsofcontrol")  # the form's own trailing space
    assert xform.field("prs_Gender").label == "Gender" and "NonConforming" in xform.choice_names(xform.field("prs_Gender").list_name)
    assert workbook.repeats == [] and workbook.groups == []


def test_partner_variant_reads_the_same_from_rows_xform_kobo_content_and_central_fields() -> None:
    rows = xlsform_render.form_definition("partner")
    xform = form_from_xform(xlsform_render.xform_xml("partner"))
    kobo = form_from_kobo_content(xlsform_render.kobo_content("partner"))
    assert _shape(rows) == _shape(xform) == _shape(kobo)
    assert rows.repeats == xform.repeats == kobo.repeats == ["perpetrators", "events", "support_plans"]
    assert rows.groups == ["outgoing_referral"]
    assert rows.field("per_Role_in_Process").repeat == "perpetrators"
    fields = [
        {"path": "/outgoing_referral", "name": "outgoing_referral", "type": "structure"},
        {"path": "/outgoing_referral/cas_OutgoingReferralDate", "name": "cas_OutgoingReferralDate", "type": "date"},
        {"path": "/perpetrators", "name": "perpetrators", "type": "repeat"},
        {"path": "/perpetrators/per_Role_in_Process", "name": "per_Role_in_Process", "type": "string", "selectMultiple": True},
        {"path": "/meta/instanceID", "name": "instanceID", "type": "string"},
    ]
    central = form_from_odk_fields(fields, definition=xform)
    assert [(f.path, f.type, f.repeat) for f in central.fields] == [
        ("outgoing_referral/cas_OutgoingReferralDate", "date", None),
        ("perpetrators/per_Role_in_Process", "select_multiple", "perpetrators"),
    ]
    assert central.field("per_Role_in_Process").list_name is not None


def test_odk_nested_groups_and_kobo_group_paths_flatten_to_the_same_record() -> None:
    odk = {
        "prs_Gender": "Feminine",
        "outgoing_referral": {"cas_OutgoingReferralDate": "2024-02-01"},
        "perpetrators": [{"per_Role_in_Process": "Exploiter Smuggler", "__id": "x1"}],
        "perpetrators2@odata.navigationLink": "Submissions('a')/perpetrators2",
    }
    kobo = {
        "prs_Gender": "Feminine",
        "outgoing_referral/cas_OutgoingReferralDate": "2024-02-01",
        "perpetrators": [{"perpetrators/per_Role_in_Process": "Exploiter Smuggler"}],
    }
    flat_odk = flatten_answers(odk, skip=frozenset({"__id"}))
    assert flat_odk == flatten_answers(kobo)
    assert flat_odk == {
        "prs_Gender": "Feminine",
        "cas_OutgoingReferralDate": "2024-02-01",
        "outgoing_referral/cas_OutgoingReferralDate": "2024-02-01",
        "perpetrators": [{"per_Role_in_Process": "Exploiter Smuggler"}],
    }


def test_a_name_used_in_two_groups_keeps_the_first_short_key_and_counts_the_collision() -> None:
    stats = FlattenStats()
    flat = flatten_answers({"a/city": "Lviv", "b/city": "Kyiv"}, stats=stats)
    assert flat == {"city": "Lviv", "a/city": "Lviv", "b/city": "Kyiv"}
    assert stats.collisions == 1


def test_the_partner_forms_perpetrators_and_events_map_the_same_from_odk_and_kobo_answers() -> None:
    from connector.mapping import load_mapping
    from connector.records import RawRecord

    recruiter = {"per_Role_in_Process": "Exploiter RecruiterOrIntermediary", "per_Relationship_to_Victim": "Family", "per_First_Name": "Ivan",
                 "per_Gender": "Masculine", "per_Age": 41, "per_Citizenship": "UA", "per_Money_Paid": "yes"}  # fmt: skip
    transporter = {"per_Role_in_Process": "Transporter", "per_Relationship_to_Victim": "Other", "per_Money_Paid": "dont_know"}
    events = [{"hte_Type": "Exploitation", "hte_Country": "PL", "hte_Date": "2020-03-01"}, {"hte_Type": "Recruitment", "hte_Country": "UA", "hte_Date": "2020-01-10", "hte_City": "Lviv"}]
    odk = {"perpetrators": [{**recruiter, "__id": "r1"}, {**transporter, "__id": "r2"}], "events": [{**e, "__id": f"e{i}"} for i, e in enumerate(events)]}
    kobo = {  # Kobo keys repeat answers by their full path and keeps numbers as text
        "perpetrators": [{f"perpetrators/{k}": str(v) for k, v in child.items()} for child in (recruiter, transporter)],
        "events": [{f"events/{k}": v for k, v in e.items()} for e in events],
    }
    mapping = load_mapping("xlsform_htcds")
    mapped = []
    for answers in (odk, kobo):
        fields = {**flatten_answers(answers, skip=frozenset({"__id"})), "_submission_time": "2021-06-15T10:00:00.000Z"}
        case, rejections = mapping.map_record("form", RawRecord("uuid:1", fields))
        assert rejections == []
        mapped.append(case.fields)
    odk_fields, kobo_fields = mapped
    assert odk_fields == kobo_fields
    assert odk_fields["ext_Perpetrators"] == [
        {"per_RoleInProcess": ["Exploiter", "RecruiterOrIntermediary"], "per_Gender": "Masculine", "per_AgeAtRegistration": 41,
         "per_Citizenship": "UA", "per_RelationshipToVictim": "Family", "per_MoneyPaid": True},
        {"per_RoleInProcess": ["Transporter"], "per_Gender": None, "per_AgeAtRegistration": None,
         "per_Citizenship": None, "per_RelationshipToVictim": "Other", "per_MoneyPaid": None},  # "don't know" is unknown
    ]  # fmt: skip
    assert odk_fields["ext_RecruiterRelation"] == ["Family"]  # the recruiter's relation only: roles are space-separated
    assert odk_fields["ext_PerpetratorRoles"] == ["Exploiter", "RecruiterOrIntermediary", "Transporter"]
    assert [e["hte_Type"] for e in odk_fields["ext_TraffickingEvents"]] == ["Recruitment", "Exploitation"]
    assert odk_fields["ext_CountryOfExploitation"] == "PL" and odk_fields["ext_TraffickMonths"] == 17
