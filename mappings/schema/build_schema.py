"""Build `htcds.yaml` and `codelists.yaml` from the HTCDS 2.0 field standards CSV.

Why a script: the standard is published as a spreadsheet; copying 100 fields and their value lists
by hand invites typos that no reviewer would catch. The CSV (and its CC BY 4.0 licence) sits in
`source/` next to this script, and so does `countries.csv` (ISO 3166-1 alpha-2 codes and names,
taken once from the 'validation' sheet of the HTCDS Excel template). Everything the CSV cannot say
-- the disclosure role of each field, our choice of type where the CSV is vague, code list names,
the connector's `ext_` fields -- is in the tables at the top of this file, so a reviewer sees every
judgement in one place. The committed YAML must equal this script's output (a unit test checks).

    .venv/bin/python mappings/schema/build_schema.py            # rewrite the two YAML files
    .venv/bin/python mappings/schema/build_schema.py --check    # exit 1 if they are stale
    .venv/bin/python mappings/schema/build_schema.py --countries-from "HTCDS Excel ... v2.0.xlsx"
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SOURCE_CSV = HERE / "source" / "htcds_field_standards_2.0.csv"
COUNTRIES_CSV = HERE / "source" / "countries.csv"
FIELDS_YAML = HERE / "htcds.yaml"
CODELISTS_YAML = HERE / "codelists.yaml"

# The CSV's section headings -> our snake_case section names. Headings not listed (the
# "Assessment and Planning" sections) hold only example questions, no fields.
SECTIONS = {
    "Organization": "organization",
    "Person": "person",
    "Person - Victim Context": "victim_context",
    "Person - Perpetrator Context": "perpetrator_context",
    "Case": "case",
    "Referral Details": "referral",
    "Case Comment": "case_comment",
    "Historic Trafficking Events": "historic_events",
    "Support Plan": "support_plan",
    "Consent": "consent",
}

# The CSV's field types -> common-schema types. "Number" and "Picklist or Text" need a decision per
# field (TYPE_OVERRIDES); "Lookup [to ...]" is any lookup.
TYPES = {
    "Text": "text",
    "Long Text": "long_text",
    "Date": "date",
    "Checkbox": "boolean",
    "Picklist": "code",
    "Multiselect Picklist": "codes",
    "Geolocation": "geolocation",
}

# Field -> (type, code list) where the CSV's type is not enough.
TYPE_OVERRIDES: dict[str, tuple[str, str | None]] = {
    "org_ShippingCountry": ("code", "countries"),
    "org_ShippingState": ("text", None),  # "Picklist or Text", but no list is given: free choice per org
    "prs_NumberOfChildren": ("integer", None),
    "prs_PrimaryLanguage": ("text", None),  # ISO 639 is open-ended: we keep the code as text
    "prs_SecondaryLanguage": ("text", None),
    "prs_Citizenship": ("codes", "countries"),
    "prs_MailingCountry": ("code", "countries"),
    "prs_MailingLongitude": ("number", None),
    "prs_MailingLatitude": ("number", None),
    "vic_AgeWhenTrafficked": ("integer", None),
    "hte_Country": ("code", "countries"),
}

# Picklist fields -> code list name. Fields that share a list share a name (checked to be identical).
CODELIST_NAMES = {
    "org_Type": "organisation_type",
    "prs_Gender": "gender",
    "prs_MaritalStatus": "marital_status",
    "prs_HighestLevelOfEducation": "education_level",
    "vic_TraffickingStatus": "trafficking_status",
    "vic_TraffickingStatusDecisionMakingOrg": "status_decision_org",
    "vic_RelationshipToTrafficker": "relationship_to_trafficker",
    "vic_RecruitmentWebsitesAndApps": "websites_and_apps",
    "vic_MethodOfRecruitment": "recruitment_method",
    "vic_MethodsOfControl": "methods_of_control",
    "vic_TypeOfExploitation": "exploitation_type",
    "vic_ForcedLabourIndustry": "labour_industry",
    "vic_TypeOfSexExploitation": "sex_exploitation_type",
    "vic_ExploitationWebsitesAndApps": "websites_and_apps",
    "vic_Vulnerabilities": "vulnerabilities",
    "per_RoleInProcess": "perpetrator_role",
    "cas_Status": "case_status",
    "cas_ReasonForIncomingReferral": "referral_reason",
    "cas_ReasonForOutgoingReferral": "referral_reason",
    "hte_Type": "event_type",
    "spl_Type": "support_plan_type",
}

DIRECT = "direct_identifier"
QUASI = "quasi_identifier"
SENSITIVE = "sensitive"
FREE_TEXT = "free_text"
PROCESS = "process"

# Role of every HTCDS field except Long Text (always free_text). A field missing here fails the build,
# so a new CSV version cannot slip a field through with a default role. The optional note explains a
# choice that is not obvious; it is appended to the field's description.
ROLES: dict[str, tuple[str, str]] = {
    # organization: the partner's own details; never needed in a release
    "org_Name": (DIRECT, ""),
    "org_ShippingCity": (DIRECT, ""),
    "org_ShippingCountry": (DIRECT, "Part of the organisation's address, so kept with it as a direct identifier."),
    "org_ShippingState": (DIRECT, ""),
    "org_ShippingStreet": (DIRECT, ""),
    "org_ShippingPostalCode": (DIRECT, ""),
    "org_ShippingLongitude": (DIRECT, ""),
    "org_ShippingLatitude": (DIRECT, ""),
    "org_Phone": (DIRECT, ""),
    "org_Type": (PROCESS, ""),
    # person
    "prs_Salutation": (DIRECT, ""),
    "prs_FirstName": (DIRECT, ""),
    "prs_MiddleName": (DIRECT, ""),
    "prs_SecondName": (DIRECT, ""),
    "prs_Birthdate": (DIRECT, "Never published; the connector derives ext_AgeAtRegistration from it."),
    "prs_Gender": (QUASI, ""),
    "prs_Deceased": (PROCESS, ""),
    "prs_MaritalStatus": (QUASI, ""),
    "prs_NumberOfChildren": (QUASI, ""),
    "prs_PrimaryLanguage": (QUASI, "ISO 639 language code kept as text: the list is open-ended."),
    "prs_SecondaryLanguage": (QUASI, "ISO 639 language code kept as text: the list is open-ended."),
    "prs_HighestLevelOfEducation": (QUASI, ""),
    "prs_Citizenship": (QUASI, "ISO 3166-1 alpha-2 codes."),
    "prs_IdentityNumber": (DIRECT, ""),
    "prs_Title": (DIRECT, ""),
    "prs_Email": (DIRECT, ""),
    "prs_HomePhone": (DIRECT, ""),
    "prs_MobilePhone": (DIRECT, ""),
    "prs_MailingCity": (DIRECT, ""),
    "prs_MailingCountry": (DIRECT, "Part of the mailing address, so a direct identifier like the rest of it; "
                                   "the CSV types it Text but asks for ISO 3166 codes, so it is a country code."),
    "prs_MailingState": (DIRECT, ""),
    "prs_MailingStreet": (DIRECT, ""),
    "prs_MailingPostalCode": (DIRECT, ""),
    "prs_MailingLongitude": (DIRECT, ""),
    "prs_MailingLatitude": (DIRECT, ""),
    # victim context
    "vic_AgreementToManagePersonalData": (PROCESS, ""),
    "vic_TraffickingStatus": (SENSITIVE, ""),
    "vic_TraffickingStatusDecisionMakingOrg": (PROCESS, ""),
    "vic_RelationshipToTrafficker": (SENSITIVE, ""),
    "vic_AgeWhenTrafficked": (QUASI, ""),
    "vic_RecruitmentWebsitesAndApps": (SENSITIVE, "A recruitment method."),
    "vic_MethodOfRecruitment": (SENSITIVE, ""),
    "vic_LocationOfRecruitment": (DIRECT, "A reference to a record of a specific place, which can locate the "
                                          "person; only a country derived from it may be published."),
    "vic_MethodsOfControl": (SENSITIVE, ""),
    "vic_TypeOfExploitation": (SENSITIVE, ""),
    "vic_ForcedLabourIndustry": (SENSITIVE, "ISIC v4 section (tier 1)."),
    "vic_TypeOfSexExploitation": (SENSITIVE, ""),
    "vic_LocationOfExploitation": (DIRECT, "A reference to a record of a specific place, which can locate the "
                                           "person; only ext_CountryOfExploitation is published."),
    "vic_ExploitationWebsitesAndApps": (SENSITIVE, "A method of exploitation."),
    "vic_Vulnerabilities": (SENSITIVE, ""),
    # perpetrator context
    "per_RoleInProcess": (SENSITIVE, ""),
    # case
    "cas_Status": (PROCESS, ""),
    "cas_CaseOwner": (DIRECT, "Names a case worker."),
    # referral
    "cas_ReferringOrganisation": (PROCESS, ""),
    "cas_IncomingReferralDate": (PROCESS, ""),
    "cas_ReferringPrimaryCaseWorker": (DIRECT, "Names a case worker."),
    "cas_ReasonForIncomingReferral": (PROCESS, ""),
    "cas_ReferredOrganisation": (PROCESS, ""),
    "cas_ReferredPrimaryCaseWorker": (DIRECT, "Names a case worker."),
    "cas_ReasonForOutgoingReferral": (PROCESS, ""),
    "cas_OutgoingReferralDate": (PROCESS, ""),
    # historic trafficking events
    "hte_Longitude": (DIRECT, ""),
    "hte_Latitude": (DIRECT, ""),
    "hte_City": (QUASI, "Locates where the person was trafficked."),
    "hte_Country": (QUASI, "The CSV types it Text; we hold an ISO 3166-1 alpha-2 code like every other country."),
    "hte_State": (QUASI, "Locates where the person was trafficked."),
    "hte_Street": (DIRECT, "A street where an event happened can be the person's home or workplace."),
    "hte_PostalCode": (DIRECT, "A postal code where an event happened can be the person's home or workplace."),
    "hte_Date": (QUASI, "Dates when the person was trafficked."),
    "hte_Type": (PROCESS, ""),
    # support plan
    "spl_PlannedEndDate": (PROCESS, ""),
    "spl_ActualEndDate": (PROCESS, ""),
    "spl_Type": (SENSITIVE, "Sensitive rather than process: a plan type such as "
                            "SexualExploitationRehabilitation reveals the type of exploitation."),
    # consent
    "con_Consent": (PROCESS, ""),
}

# The keys of connector.schema.FieldSpec, in the order the YAML lists them.
FIELD_KEYS = ("name", "section", "label", "type", "role", "codelist", "core", "description", "origin")
OPTIONAL_KEYS = ("items",)  # written only when a field has them (the `records` fields)

# Fields the connector derives; they are not in HTCDS 2.0.
EXTENSION_FIELDS: list[dict[str, Any]] = [
    {
        "name": "ext_RegistrationDate",
        "section": "case",
        "label": "Registration Date",
        "type": "date",
        "role": PROCESS,
        "codelist": None,
        "description": "When the case was registered with the partner: Salesforce CreatedDate, ODK/Kobo "
                       "submissionDate, or cas_IncomingReferralDate in the Excel template. Published only as a year.",
    },
    {
        "name": "ext_AgeAtRegistration",
        "section": "person",
        "label": "Age at Registration",
        "type": "integer",
        "role": QUASI,
        "codelist": None,
        "description": "Age in whole years on ext_RegistrationDate, from prs_Birthdate (or an age the source "
                       "records directly).",
    },
    {
        "name": "ext_MajorityStatus",
        "section": "person",
        "label": "Majority Status",
        "type": "code",
        "role": QUASI,
        "codelist": "majority_status",
        "description": "Minor (under 18) or Adult at registration, from ext_AgeAtRegistration or a source field "
                       "that records it when the age is unknown.",
    },
    {
        "name": "ext_CountryOfExploitation",
        "section": "victim_context",
        "label": "Country of Exploitation",
        "type": "code",
        "role": QUASI,
        "codelist": "countries",
        "description": "ISO 3166-1 alpha-2 country where the person was exploited, from the exploitation "
                       "event (hte_Country with hte_Type Exploitation) or vic_LocationOfExploitation.",
    },
    {
        "name": "ext_RecruiterRelation",
        "section": "victim_context",
        "label": "Relation to Recruiter",
        "type": "codes",
        "role": SENSITIVE,
        "codelist": "recruiter_relation",
        "description": "How the person knew the recruiter, in CTDC's categories.",
    },
    {
        "name": "ext_PerpetratorRoles",
        "section": "perpetrator_context",
        "label": "Perpetrator Roles",
        "type": "codes",
        "role": SENSITIVE,
        "codelist": "perpetrator_role",
        "description": "Every per_RoleInProcess code of the perpetrators linked to the case, combined.",
    },
    # One entry per perpetrator linked to the case (Salesforce: a Connected Person or Organisation
    # row). Its keys are the `items` below, each typed and checked like a field of its own.
    {
        "name": "ext_Perpetrators",
        "section": "perpetrator_context",
        "label": "Perpetrators",
        "type": "records",
        "role": QUASI,
        "codelist": None,
        "items": ["per_RoleInProcess", "per_Gender", "per_AgeAtRegistration", "per_Citizenship", "per_RelationshipToVictim", "per_MoneyPaid"],
        "description": "The perpetrators linked to the case, one entry each: role in the process, gender, age at the "
                       "case's registration, citizenship, relationship to the victim, money paid or received for the "
                       "victim. Published only through the victim-perpetrator view, generalized.",
    },
    {
        "name": "per_Gender",
        "section": "perpetrator_context",
        "label": "Perpetrator Gender",
        "type": "code",
        "role": QUASI,
        "codelist": "gender",
        "description": "prs_Gender of the perpetrator's person record; a key of ext_Perpetrators entries.",
    },
    {
        "name": "per_AgeAtRegistration",
        "section": "perpetrator_context",
        "label": "Perpetrator Age at Registration",
        "type": "integer",
        "role": QUASI,
        "codelist": None,
        "description": "The perpetrator's age in whole years on the case's ext_RegistrationDate, from their birth date "
                       "(never stored); a key of ext_Perpetrators entries.",
    },
    {
        "name": "per_Citizenship",
        "section": "perpetrator_context",
        "label": "Perpetrator Citizenship",
        "type": "code",
        "role": QUASI,
        "codelist": "countries",
        "description": "ISO 3166-1 alpha-2 citizenship of the perpetrator (the first when several); published only as a "
                       "UN M49 region. A key of ext_Perpetrators entries.",
    },
    {
        "name": "per_RelationshipToVictim",
        "section": "perpetrator_context",
        "label": "Relationship to Victim",
        "type": "code",
        "role": SENSITIVE,
        "codelist": "recruiter_relation",
        "description": "How the victim knew this perpetrator, in CTDC's categories (the package's Connected Person "
                       "Type); a key of ext_Perpetrators entries.",
    },
    {
        "name": "per_MoneyPaid",
        "section": "perpetrator_context",
        "label": "Money Paid or Received",
        "type": "boolean",
        "role": SENSITIVE,
        "codelist": None,
        "description": "Whether this perpetrator paid or received money for the victim (not in HTCDS 2.0 nor the "
                       "package: a field the partner adds); a key of ext_Perpetrators entries.",
    },
    {
        "name": "ext_TraffickingEvents",
        "section": "historic_events",
        "label": "Trafficking Events",
        "type": "records",
        "role": QUASI,
        "codelist": None,
        "items": ["hte_Date", "hte_Type", "hte_Country"],
        "description": "The historic trafficking events of the case (Salesforce: Event and Task activities; ODK Central "
                       "and Kobo: the form's events repeat), one entry each with its type, date and country. Never published itself: ext_TraffickMonths and "
                       "ext_CountryOfExploitation are derived from it.",
    },
    {
        "name": "ext_TraffickMonths",
        "section": "historic_events",
        "label": "Months Trafficked",
        "type": "integer",
        "role": SENSITIVE,
        "codelist": None,
        "description": "Whole months from the earliest Recruitment or Exploitation event to the registration date (HTCDS "
                       "has no exit event); unknown when either date is missing or an event is dated after registration "
                       "(a rejection). Published in CTDC's traffickMonths bands.",
    },
]

EXTENSION_CODELISTS: dict[str, list[dict[str, str]]] = {
    "majority_status": [
        {"code": "Minor", "label": "Minor (under 18)"},
        {"code": "Adult", "label": "Adult (18 or over)"},
    ],
    "recruiter_relation": [
        {"code": "IntimatePartner", "label": "Intimate partner"},
        {"code": "Friend", "label": "Friend"},
        {"code": "Family", "label": "Family member"},
        {"code": "Other", "label": "Other"},
        {"code": "Unknown", "label": "Unknown"},
    ],
}


def _lines(cell: str) -> list[str]:
    """Split a multi-line cell into stripped, non-empty lines (str.strip also removes NBSP)."""
    return [line.strip() for line in cell.splitlines() if line.strip()]


def _section(heading: str) -> str | None:
    return SECTIONS.get(re.sub(r"\s+", " ", heading.replace("-\n", "- ")).strip())


def read_rows(path: Path = SOURCE_CSV) -> list[dict[str, str]]:
    """The CSV's field rows, each with the section it belongs to (headings are rows of their own)."""
    rows: list[dict[str, str]] = []
    section: str | None = None
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Section"].strip():
                section = _section(row["Section"])
                continue
            name = row["Field Name including Prefix"].strip()
            if not name:
                continue
            if section is None:
                raise ValueError(f"{path.name}: field {name} is in a section we do not know")
            rows.append({**row, "section": section})
    return rows


def read_countries(path: Path = COUNTRIES_CSV) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [{"code": row["code"], "label": row["label"]} for row in csv.DictReader(handle)]


def extract_countries(xlsx: Path, out: Path = COUNTRIES_CSV) -> None:
    """Write `countries.csv` from the 'validation' sheet (columns Country Code, Country) of the HTCDS template."""
    import openpyxl

    sheet = openpyxl.load_workbook(xlsx, read_only=True, data_only=True)["validation"]
    rows = list(sheet.iter_rows(values_only=True))
    header_at = next(i for i, row in enumerate(rows) if "Country Code" in row)
    code_col, name_col = rows[header_at].index("Country Code"), rows[header_at].index("Country")
    pairs = [(str(r[code_col]).strip(), str(r[name_col]).strip()) for r in rows[header_at + 1 :] if r[code_col]]
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["code", "label"])
        writer.writerows(pairs)


def _description(row: dict[str, str], note: str) -> str:
    parts = []
    if row["Status"].strip().upper() == "DEPRECATED":
        parts.append("DEPRECATED in HTCDS 2.0 (kept so older data maps).")
    if row["Description"].strip():
        parts.append(row["Description"].strip())
    if note:
        parts.append(note)
    return " ".join(parts) if all("\n" not in p for p in parts) else "\n\n".join(parts)


def build(rows: list[dict[str, str]], countries: list[dict[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the documents of htcds.yaml and codelists.yaml. Raises ValueError naming what is wrong."""
    fields: list[dict[str, Any]] = []
    codelists: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        name = row["Field Name including Prefix"].strip()
        csv_type = row["Field Type"].strip()
        if name in TYPE_OVERRIDES:
            ftype, codelist = TYPE_OVERRIDES[name]
        elif csv_type.startswith("Lookup"):
            ftype, codelist = "lookup", None
        elif csv_type in TYPES:
            ftype, codelist = TYPES[csv_type], None
        else:
            raise ValueError(f"field {name}: CSV type {csv_type!r} needs an entry in TYPE_OVERRIDES")
        if ftype in ("code", "codes") and codelist is None:
            codelist = CODELIST_NAMES.get(name)
            if codelist is None:
                raise ValueError(f"field {name}: picklist without a name in CODELIST_NAMES")
            codes = _lines(row["Value Names (if picklist)"])
            labels = _lines(row["Value Labels (if picklist)"])
            if len(codes) != len(labels):
                raise ValueError(f"field {name}: {len(codes)} value names but {len(labels)} labels")
            items = [{"code": code, "label": label} for code, label in zip(codes, labels)]
            if codelist in codelists and codelists[codelist] != items:
                raise ValueError(f"field {name}: code list {codelist} differs from another field's")
            codelists[codelist] = items
        if ftype == "long_text":
            role, note = FREE_TEXT, ""
        elif name in ROLES:
            role, note = ROLES[name]
        else:
            raise ValueError(f"field {name}: no role in ROLES")
        fields.append(
            {
                "name": name,
                "section": row["section"],
                "label": row["Field Label"].strip(),
                "type": ftype,
                "role": role,
                "codelist": codelist,
                "core": row["Core"].strip().lower() == "core",
                "description": _description(row, note),
                "origin": "htcds",
            }
        )
    unused = set(ROLES) - {f["name"] for f in fields}
    if unused:
        raise ValueError(f"ROLES names fields the CSV does not have: {sorted(unused)}")
    for spec in EXTENSION_FIELDS:
        entry = {**spec, "core": False, "origin": "extension"}
        fields.append({key: entry[key] for key in FIELD_KEYS + OPTIONAL_KEYS if key in entry})
    codelists["countries"] = countries
    codelists.update(EXTENSION_CODELISTS)
    fields_doc = {"standard": "HTCDS", "standard_version": "2.0", "schema_version": "1.0.0", "fields": fields}
    return fields_doc, dict(sorted(codelists.items()))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the descriptions read as they do in the standard."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)

HEADER = (
    "# GENERATED by mappings/schema/build_schema.py from source/htcds_field_standards_2.0.csv\n"
    "# (HTCDS by IOM, CC BY 4.0, see source/LICENSE.md). Edit the script, not this file.\n"
)


def dump(document: Any) -> str:
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def render() -> tuple[str, str]:
    """The text of htcds.yaml and codelists.yaml as this script writes them."""
    fields_doc, codelists_doc = build(read_rows(), read_countries())
    return dump(fields_doc), dump(codelists_doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed YAML is stale")
    parser.add_argument("--countries-from", type=Path, help="rewrite source/countries.csv from this HTCDS .xlsx")
    args = parser.parse_args(argv)
    if args.countries_from:
        extract_countries(args.countries_from)
    fields_text, codelists_text = render()
    targets = {FIELDS_YAML: fields_text, CODELISTS_YAML: codelists_text}
    if args.check:
        stale = [p.name for p, text in targets.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
