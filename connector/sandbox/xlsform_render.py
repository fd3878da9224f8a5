"""Generated cases as submissions of the HTCDS XLSForm: what the ODK Central and Kobo sandboxes serve.

The HTCDS XLSForm (`mappings/forms/htcds_xlsform.xlsx`, CC BY 4.0 IOM) has its own names
(`prs_First_Name`, `vic_Methods_of_Control`, ...) and no repeat group. Real partner forms have
repeats, so by default the sandboxes serve a *partner variant*: the HTCDS form unchanged, plus
`vic_RelationshipToTrafficker`, `cas_Case_Owner`, `cas_ReasonForCaseClosure`, an `outgoing_referral`
group and three repeats (`perpetrators`, `events`, `support_plans`). `variant="htcds"` serves the form
exactly as published (then the repeat-fed fields are simply absent).

The perpetrators repeat asks what the victim-perpetrator table needs, as a case worker would ask
it of the victim: roles (select_multiple), how the victim knew the person (asked of every
perpetrator, CTDC's relation codes), gender, an age in years (an estimate: a victim seldom knows a
trafficker's birth date; asked at the interview, which is the submission), citizenship (the
form's own country list) and whether the person paid or received money for the victim (yes / no /
don't know). The events repeat asks type, country, date and city of each trafficking event.

Values are rendered as a form server stores them: choice names, select_multiple names joined by
a space, ISO dates, then `generate.render` applies the case's mess, so the ODK, Kobo, Salesforce
and Excel sandboxes show the same mess on the same cases. Limits of the form, on purpose: the
HTCDS form asks for one citizenship (`select_one`), so a second citizenship is not rendered.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from connector.sandbox import generate as gen
from connector.sources.xlsform import FormDefinition, form_from_rows

FORM_ID = "htcds_xlsform"
BASE_VERSION = "vSmt4GQA3C9uBMLPEVfgND"
PARTNER_VERSION = "vSmt4GQA3C9uBMLPEVfgND-partner2"  # partner2: the perpetrator questions of the victim-perpetrator table
VARIANTS = ("partner", "htcds")
_VARIABLE = re.compile(r"\$\{(\w+)\}")

# Questions the partner variant adds, as XLSForm survey rows (inserted before `__version__`).
PARTNER_SURVEY: list[dict[str, Any]] = [
    {"type": "select_one relationshiptotrafficker", "name": "vic_RelationshipToTrafficker", "label": "Relationship to Trafficker"},
    {"type": "text", "name": "cas_Case_Owner", "label": "Case Owner"},
    {"type": "text", "name": "cas_ReasonForCaseClosure", "label": "Reason for Case Closure"},
    {"type": "begin_group", "name": "outgoing_referral", "label": "Outgoing referral"},
    {"type": "select_one referralreason", "name": "cas_ReasonForOutgoingReferral", "label": "Reason for Outgoing Referral"},
    {"type": "date", "name": "cas_OutgoingReferralDate", "label": "Outgoing Referral Date"},
    {"type": "text", "name": "cas_ReferredOrganisation", "label": "Referred Organisation"},
    {"type": "text", "name": "cas_ReferredPrimaryCaseWorker", "label": "Referred Primary Case Worker"},
    {"type": "text", "name": "cas_OutgoingReferralDetails", "label": "Outgoing Referral Details"},
    {"type": "end_group", "name": "", "label": None},
    {"type": "begin_repeat", "name": "perpetrators", "label": "Perpetrators"},
    {"type": "select_multiple perpetratorrole", "name": "per_Role_in_Process", "label": "Role in Process"},
    {"type": "select_one relationshiptovictim", "name": "per_Relationship_to_Victim", "label": "How did the victim know this person?"},
    {"type": "text", "name": "per_First_Name", "label": "First Name"},
    {"type": "text", "name": "per_Second_Name", "label": "Second Name"},
    {"type": "select_one gender", "name": "per_Gender", "label": "Gender"},
    {"type": "integer", "name": "per_Age", "label": "Age in years (an estimate if not known)"},
    {"type": "select_one citizenship", "name": "per_Citizenship", "label": "Citizenship"},
    {"type": "select_one yesnodontknow", "name": "per_Money_Paid", "label": "Did this person pay or receive money for the victim?"},
    {"type": "end_repeat", "name": "", "label": None},
    {"type": "begin_repeat", "name": "events", "label": "Trafficking events"},
    {"type": "select_one eventtype", "name": "hte_Type", "label": "Type"},
    {"type": "select_one citizenship", "name": "hte_Country", "label": "Country"},
    {"type": "date", "name": "hte_Date", "label": "Date"},
    {"type": "text", "name": "hte_City", "label": "City"},
    {"type": "end_repeat", "name": "", "label": None},
    {"type": "begin_repeat", "name": "support_plans", "label": "Support plans"},
    {"type": "select_one supportplantype", "name": "spl_Type", "label": "Type"},
    {"type": "date", "name": "spl_PlannedEndDate", "label": "Planned End Date"},
    {"type": "text", "name": "spl_Objectives", "label": "Objectives"},
    {"type": "end_repeat", "name": "", "label": None},
]  # fmt: skip
# Choice lists the added questions use, from the common schema's code lists (name = HTCDS code).
PARTNER_LISTS = {
    "relationshiptotrafficker": "relationship_to_trafficker",
    "referralreason": "referral_reason",
    "perpetratorrole": "perpetrator_role",
    "relationshiptovictim": "recruiter_relation",
    "eventtype": "event_type",
    "supportplantype": "support_plan_type",
}
# A yes/no question with a "don't know" answer: the common schema's boolean has no code list.
PARTNER_CHOICES = [("yesnodontknow", "yes", "Yes"), ("yesnodontknow", "no", "No"), ("yesnodontknow", "dont_know", "Don't know")]


@lru_cache(maxsize=1)
def _htcds_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    import openpyxl

    with resources.files("mappings").joinpath("forms", "htcds_xlsform.xlsx").open("rb") as handle:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        sheets = {}
        for ws in workbook.worksheets:
            rows = list(ws.iter_rows(values_only=True))
            header = [str(h) if h is not None else "" for h in rows[0]] if rows else []
            sheets[ws.title] = [{k: v for k, v in zip(header, row) if k and v is not None} for row in rows[1:]]
        workbook.close()
    settings = (sheets.get("settings") or [{}])[0]
    return sheets["survey"], sheets["choices"], settings


def form_rows(variant: str = "partner") -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """XLSForm rows (survey, choices, settings) of the HTCDS form or its partner variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown form variant {variant!r}; use one of {', '.join(VARIANTS)}")
    survey, choices, settings = _htcds_rows()
    survey = [dict(r) for r in survey]
    choices = [dict(r) for r in choices]
    settings = {**settings, "form_id": FORM_ID, "form_title": "htcds_xlsform", "version": BASE_VERSION}
    if variant == "partner":
        at = next(i for i, r in enumerate(survey) if r.get("name") == "__version__")
        survey[at:at] = [{k: v for k, v in r.items() if v is not None} for r in PARTNER_SURVEY]
        survey = [r if r.get("name") != "__version__" else {**r, "calculation": f"'{PARTNER_VERSION}'"} for r in survey]
        from connector.schema import load_schema

        codelists = load_schema().codelists
        for list_name, codelist in PARTNER_LISTS.items():
            choices.extend({"list_name": list_name, "name": code, "label": label} for code, label in codelists[codelist].items())
        choices.extend({"list_name": list_name, "name": name, "label": label} for list_name, name, label in PARTNER_CHOICES)
        settings["version"] = PARTNER_VERSION
    return survey, choices, settings


@lru_cache(maxsize=4)
def form_definition(variant: str = "partner") -> FormDefinition:
    survey, choices, settings = form_rows(variant)
    return form_from_rows(survey, choices, settings)


# -- server renderings of the form -----------------------------------------------------------------


@lru_cache(maxsize=4)
def xform_xml(variant: str = "partner") -> str:
    """The XForm XML a Central server returns for the form: the packaged file for `htcds`, built for `partner`."""
    if variant == "htcds":
        return resources.files("mappings").joinpath("forms", "htcds_xlsform.xml").read_text(encoding="utf-8")
    return xform_from_rows(*form_rows(variant))


def xform_from_rows(survey: list[dict[str, Any]], choices: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """A minimal but valid XForm for XLSForm rows (instance, binds, body with labels and items), as pyxform lays it out."""
    form = form_from_rows(survey, choices, settings)
    version = settings.get("version") or ""

    instance: list[str] = []
    binds: list[str] = []
    body: list[str] = []
    stack: list[tuple[str, bool]] = []

    def path(name: str) -> str:
        return "/data/" + "/".join([n for n, _ in stack] + [name])

    for row in survey:
        kind = str(row.get("type", "")).strip()
        name = str(row.get("name") or "")
        label = row.get("label")
        if kind in ("begin_group", "begin_repeat"):
            ref = path(name)
            template = ' jr:template=""' if kind == "begin_repeat" else ""
            instance.append(f"<{name}{template}>")
            stack.append((name, kind == "begin_repeat"))
            if kind == "begin_repeat":
                body.append(f"<group ref={quoteattr(ref)}><label>{escape(str(label or name))}</label><repeat nodeset={quoteattr(ref)}>")
            else:
                body.append(f"<group ref={quoteattr(ref)}><label>{escape(str(label or name))}</label>")
            continue
        if kind in ("end_group", "end_repeat"):
            name, repeat = stack.pop()
            instance.append(f"</{name}>")
            body.append("</repeat></group>" if repeat else "</group>")
            continue
        ref = path(name)
        instance.append(f"<{name}/>")
        base, _, list_name = kind.partition(" ")
        if base in ("start", "end"):
            binds.append(f'<bind jr:preload="timestamp" jr:preloadParams="{base}" nodeset="{ref}" type="dateTime"/>')
            continue
        if base == "calculate":
            binds.append(f"<bind calculate={quoteattr(str(row.get('calculation')))} nodeset={quoteattr(ref)} type=\"string\"/>")
            continue
        xtype = {"date": "date", "integer": "int", "decimal": "decimal"}.get(base, "string")
        relevant = ""
        if row.get("relevant"):
            relevant = " relevant=" + quoteattr(_VARIABLE.sub(r"../\1", str(row["relevant"])))
        binds.append(f'<bind nodeset="{ref}"{relevant} required="false()" type="{xtype}"/>')
        text = escape(str(label or name))
        if base in ("select_one", "select_multiple"):
            tag = "select1" if base == "select_one" else "select"
            items = "".join(f"<item><label>{escape(str(lab or n))}</label><value>{escape(n)}</value></item>" for n, lab in form.choices.get(list_name, []))
            body.append(f"<{tag} ref={quoteattr(ref)}><label>{text}</label>{items}</{tag}>")
        else:
            body.append(f"<input ref={quoteattr(ref)}><label>{text}</label></input>")
    return (
        '<?xml version="1.0"?><h:html xmlns="http://www.w3.org/2002/xforms" xmlns:ev="http://www.w3.org/2001/xml-events" '
        'xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:odk="http://www.opendatakit.org/xforms" '
        'xmlns:orx="http://openrosa.org/xforms" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f'<h:head><h:title>{FORM_ID}</h:title><model odk:xforms-version="1.0.0"><instance><data id="{FORM_ID}" version="{version}">'
        + "".join(instance)
        + "<meta><instanceID/></meta></data></instance>"
        + "".join(binds)
        + '<bind jr:preload="uid" nodeset="/data/meta/instanceID" readonly="true()" type="string"/></model></h:head><h:body>'
        + "".join(body)
        + "</h:body></h:html>"
    )


def kobo_content(variant: str = "partner") -> dict[str, Any]:
    """The asset `content` Kobo returns: survey and choices rows, labels as translation lists, `$kuid`/`$autoname`."""
    survey, choices, settings = form_rows(variant)
    out_survey = []
    for i, row in enumerate(survey):
        kind = str(row.get("type", "")).strip()
        base, _, list_name = kind.partition(" ")
        item: dict[str, Any] = {"type": base, "$kuid": f"k{i:04d}"}
        if row.get("name"):
            item["name"] = row["name"]
            item["$autoname"] = row["name"]
            item["$xpath"] = row["name"]
        if list_name:
            item["select_from_list_name"] = list_name
        if row.get("label"):
            item["label"] = [str(row["label"])]
        if row.get("required") is not None:
            item["required"] = str(row["required"]).lower() == "true"
        if row.get("calculation"):
            item["calculation"] = row["calculation"]
        if row.get("relevant"):
            item["relevant"] = row["relevant"]
        out_survey.append(item)
    out_choices = [
        {"list_name": c["list_name"], "name": str(c["name"]), "$autovalue": str(c["name"]), "label": [str(c.get("label") or c["name"])], "$kuid": f"c{i:04d}"}
        for i, c in enumerate(choices)
    ]
    return {"schema": "1", "survey": out_survey, "choices": out_choices, "settings": {"version": settings["version"], "id_string": FORM_ID}, "translated": ["label"], "translations": [None]}


# -- cases as submissions -----------------------------------------------------------------------------


def instance_id(case: gen.GeneratedCase) -> str:
    """The submission's stable instanceID (`uuid:...`), derived from the case id so tests can find it."""
    return f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'htcds-sandbox/' + case.case_id)}"


def _iso(value: date | None) -> str | None:
    return value.isoformat()[:10] if value is not None else None


def _names(form: FormDefinition, list_name: str, codes: list[str] | str | None) -> str | None:
    """Choice names for codes: the form's own spelling (its `DebtBondage ` has a trailing space; a server stores it stripped)."""
    if codes is None:
        return None
    items = [codes] if isinstance(codes, str) else list(codes)
    if not items:
        return None
    spelled = {gen_fold(n): n.strip() for n, _ in form.choices.get(list_name, [])}
    return " ".join(spelled.get(gen_fold(code), code) for code in items)


def gen_fold(text: str) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def render_answers(case: gen.GeneratedCase, variant: str = "partner") -> dict[str, Any]:
    """One case as the form's answers: {path: value} for questions, {repeat path: [child answers]} for repeats.

    Paths are the XForm paths below the root (`outgoing_referral/cas_OutgoingReferralDate`); each
    sandbox turns them into its own shape (ODK nests groups, Kobo keeps `group/name` keys).
    """
    form = form_definition(variant)
    v, c = case.victim, case.case
    r = lambda field, text: gen.render(case, field, text)  # noqa: E731 - one short alias keeps the table readable
    consent = c.get("con_Consent")
    citizenship = (v.get("prs_Citizenship") or [None])[0]
    coe = gen.exploitation_country(case)
    answers: dict[str, Any] = {
        "start": case.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "end": case.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "con_Consent": r("con_Consent", None if consent is None else ("TRUE" if consent else "FALSE")),
        "prs_Salutation": v.get("prs_Salutation"),
        "prs_First_Name": v.get("prs_FirstName"),
        "prs_Second_Name": v.get("prs_SecondName"),
        "prs_Birthdate": r("prs_Birthdate", _iso(v.get("prs_Birthdate"))),
        "prs_Gender": r("prs_Gender", _names(form, "gender", v.get("prs_Gender"))),
        "prs_Citizenship": r("prs_Citizenship", citizenship),
        "prs_Title": v.get("prs_Title"),
        "prs_Email": v.get("prs_Email"),
        "prs_HomePhone": v.get("prs_HomePhone"),
        "prs_MobilePhone": v.get("prs_MobilePhone"),
        "prs_MailingCity": v.get("prs_MailingCity"),
        "prs_MailingCountry": r("prs_MailingCountry", v.get("prs_MailingCountry")),
        "prs_MailingState": v.get("prs_MailingState"),
        "prs_MailingStreet": v.get("prs_MailingStreet"),
        "prs_MailingPostalCode": v.get("prs_MailingPostalCode"),
        "vic_MethodOfRecruitment": r("vic_MethodOfRecruitment", _names(form, "methodofrecruitment", c.get("vic_MethodOfRecruitment"))),
        "vic_LocationOfRecruitment": gen.recruitment_country(case),
        "vic_TraffickingStatus": r("vic_TraffickingStatus", _names(form, "traffickingstatus", c.get("vic_TraffickingStatus"))),
        "vic_TraffickingStatusDecisionMakingOrg": r(
            "vic_TraffickingStatusDecisionMakingOrg", _names(form, "traffickingstatusdecisionmakingorg", c.get("vic_TraffickingStatusDecisionMakingOrg"))
        ),
        "vic_Methods_of_Control": r("vic_MethodsOfControl", _names(form, "methodsofcontrol", c.get("vic_MethodsOfControl"))),
        "vic_TypeOfExploitation": r("vic_TypeOfExploitation", _names(form, "typeofexploitation", c.get("vic_TypeOfExploitation"))),
        "vic_ForcedLabourIndustry": r("vic_ForcedLabourIndustry", _names(form, "forcedlabourindustry", c.get("vic_ForcedLabourIndustry"))),
        "vic_TypeOfSexExploitation": r("vic_TypeOfSexExploitation", _names(form, "typeofsexexploitation", c.get("vic_TypeOfSexExploitation"))),
        "vic_LocationOfExploitation": r("vic_LocationOfExploitation", coe),
        "cas_Status": r("cas_Status", _names(form, "status", c.get("cas_Status"))),
        "cas_ReferringOrganisation": c.get("cas_ReferringOrganisation"),
        "cas_IncomingReferralDate": r("cas_IncomingReferralDate", _iso(c.get("cas_IncomingReferralDate"))),
        "cas_ReferringPrimaryCaseWorker": c.get("cas_ReferringPrimaryCaseWorker"),
        "cas_ReasonForIncomingReferral": r("cas_ReasonForIncomingReferral", c.get("cas_ReasonForIncomingReferral")),
        "cas_IncomingReferralDetails": c.get("cas_IncomingReferralDetails"),
    }
    if variant == "partner":
        answers.update(
            {
                "vic_RelationshipToTrafficker": r("vic_RelationshipToTrafficker", c.get("vic_RelationshipToTrafficker")),
                "cas_Case_Owner": c.get("cas_CaseOwner"),
                "cas_ReasonForCaseClosure": c.get("cas_ReasonForCaseClosure"),
                "outgoing_referral/cas_ReasonForOutgoingReferral": r("cas_ReasonForOutgoingReferral", c.get("cas_ReasonForOutgoingReferral")),
                "outgoing_referral/cas_OutgoingReferralDate": r("cas_OutgoingReferralDate", _iso(c.get("cas_OutgoingReferralDate"))),
                "outgoing_referral/cas_ReferredOrganisation": c.get("cas_ReferredOrganisation"),
                "outgoing_referral/cas_ReferredPrimaryCaseWorker": c.get("cas_ReferredPrimaryCaseWorker"),
                "outgoing_referral/cas_OutgoingReferralDetails": c.get("cas_OutgoingReferralDetails"),
                "perpetrators": [_perpetrator(case, p) for p in case.perpetrators],
                "events": [_event(case, e, first=(e is _first_exploitation(case))) for e in case.events],
                "support_plans": [
                    {"spl_Type": s.get("spl_Type"), "spl_PlannedEndDate": _iso(s.get("spl_PlannedEndDate")), "spl_Objectives": s.get("spl_Objectives")}
                    for s in case.support_plans
                ],
            }
        )
    answers["__version__"] = PARTNER_VERSION if variant == "partner" else BASE_VERSION
    return answers


MONEY_PAID = {True: "yes", False: "no", None: "dont_know"}  # None: the generator's "not recorded"


def _perpetrator(case: gen.GeneratedCase, perp: dict) -> dict[str, Any]:
    """One perpetrator as the partner variant's repeat answers it.

    The victim seldom knows a trafficker's birth date, so the form asks an age in years (an
    estimate if need be) at the interview, which is the submission: the generator's age on the
    registration date. A relationship is asked of every perpetrator, and money paid has a
    "don't know" answer for what the generator leaves unrecorded.
    """
    birth = perp.get("prs_Birthdate")
    return {
        "per_Role_in_Process": " ".join(perp["per_RoleInProcess"]),
        "per_Relationship_to_Victim": perp.get("relation"),
        "per_First_Name": perp.get("prs_FirstName"),
        "per_Second_Name": perp.get("prs_SecondName"),
        "per_Gender": perp.get("prs_Gender"),
        "per_Age": None if birth is None else str(gen.age_on(birth, case.created_at.date())),
        "per_Citizenship": perp.get("citizenship"),
        "per_Money_Paid": MONEY_PAID[perp.get("money_paid")],
    }


def _first_exploitation(case: gen.GeneratedCase) -> dict | None:
    return next((e for e in case.events if e["hte_Type"] == "Exploitation"), None)


def _event(case: gen.GeneratedCase, event: dict, *, first: bool) -> dict[str, Any]:
    country = event.get("hte_Country")
    # The country of exploitation carries the case's `vic_LocationOfExploitation` mess, as in every sandbox.
    if first:
        country = gen.render(case, "vic_LocationOfExploitation", country)
    return {"hte_Type": event.get("hte_Type"), "hte_Country": country, "hte_Date": _iso(event.get("hte_Date")), "hte_City": event.get("hte_City")}


# Common-schema fields that only the partner variant's questions feed: unknown with the published form.
PARTNER_FIELDS = (
    "vic_RelationshipToTrafficker", "cas_CaseOwner", "cas_ReasonForCaseClosure", "cas_ReasonForOutgoingReferral",
    "cas_OutgoingReferralDate", "cas_ReferredOrganisation", "cas_ReferredPrimaryCaseWorker", "cas_OutgoingReferralDetails",
    "ext_CountryOfExploitation", "ext_RecruiterRelation", "ext_PerpetratorRoles", "ext_Perpetrators", "ext_TraffickingEvents",
    "ext_TraffickMonths",
)  # fmt: skip


def expected_for_form(case: gen.GeneratedCase, variant: str = "partner") -> dict[str, Any]:
    """`generate.expected_fields` as this form can carry it: one citizenship only (the form's
    `select_one`); with the published form (`htcds`), the partner variant's fields unknown."""
    expected = gen.expected_fields(case)
    if expected.get("prs_Citizenship"):
        expected["prs_Citizenship"] = expected["prs_Citizenship"][:1]
    if variant == "htcds":
        expected.update(dict.fromkeys(PARTNER_FIELDS))
    return expected


def utc_iso(moment: datetime) -> str:
    """Central's timestamp format: ISO 8601 in UTC with milliseconds and `Z`."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
