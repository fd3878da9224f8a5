"""Write generated cases as a partner would keep them: the HTCDS Excel template v2.0, filled in.

The layout is copied from "HTCDS Excel Spreadsheet v2.0.xlsx" as it is, quirks included, because
partners' files have them: a hidden first row of field names (with the misspelt
`vic_TraffickinStatusDecisionMakingOrg`, no name over column A and none over the 'Reason for
Outgoing Referral' column), a second row of labels (whose mailing-address labels are shifted
against the names: the names are right), data from row 3 and column A holding the case number.
Picklists hold the labels of the template's validation sheet, sometimes the HTCDS value names.

Use:
    write_workbook(generate_cases(500), "cases.xlsx")
    write_csv(generate_cases(500), "cases.csv")
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from connector.sandbox.generate import (
    COUNTRIES,
    LABELS,
    MULTI_FIELDS,
    GeneratedCase,
    exploitation_country,
    recruitment_country,
    render,
)

SHEET = "Sheet1"
# (field name in the hidden row 1 or None, label in row 2), columns A.. as in the template.
TEMPLATE_COLUMNS: tuple[tuple[str | None, str | None], ...] = (
    (None, None),
    ("cas_CaseOwner", "Case Owner"),
    ("prs_Salutation", "Salutation"),
    ("prs_FirstName", "First Name"),
    ("prs_SecondName", "Second Name"),
    ("con_Consent", "Consent"),
    ("prs_Birthdate", "Birthdate"),
    ("prs_Gender", "Gender"),
    ("prs_Citizenship", "Citizenship"),
    ("prs_Title", "Title"),
    ("prs_Email", "Email"),
    ("prs_HomePhone", "Home Phone"),
    ("prs_MobilePhone", "Mobile Phone"),
    ("prs_MailingCity", "Mailing Street"),
    ("prs_MailingCountry", "Mailing City"),
    ("prs_MailingState", "Mailing State/Province"),
    ("prs_MailingStreet", "Mailing Zip/Postal Code"),
    ("prs_MailingPostalCode", "Mailing Country"),
    ("vic_TraffickingStatus", "Trafficking Status"),
    ("vic_TraffickinStatusDecisionMakingOrg", "Trafficking Status Decision Making Organization"),
    ("vic_MethodOfRecruitment", "Method of Recruitment"),
    ("vic_LocationOfRecruitment", "Location of Recruitment"),
    ("vic_MethodsOfControl", "Methods of Control"),
    ("vic_TypeOfExploitation", "Type of Exploitation"),
    ("vic_ForcedLabourIndustry", "Forced Labour Industry"),
    ("vic_TypeOfSexExploitation", "Type of Sex Exploitation"),
    ("vic_LocationOfExploitation", "Location of Exploitation"),
    ("cas_Status", "Status"),
    ("cas_ReferringOrganisation", "Referring Organisation"),
    ("cas_IncomingReferralDate", "Incoming Referral Date"),
    ("cas_ReferringPrimaryCaseWorker", "Referring Primary Case Worker"),
    ("cas_ReasonForIncomingReferral", "Reason for Incoming Referral"),
    ("cas_IncomingReferralDetails", "Incoming Referral Details"),
    ("cas_ReferredOrganisation", "Referred Organisation"),
    ("cas_ReferredPrimaryCaseWorker", "Referred Primary Case Worker"),
    (None, "Reason for Outgoing Referral"),
    ("cas_OutgoingReferralDate", "Outgoing Referral Date"),
    ("cas_OutgoingReferralDetails", "Outgoing Referral Details"),
    ("cas_ReasonForCaseClosure", "Reason for Case Closure"),
)
# The common-schema field each template column holds (column A is the case id).
COLUMN_FIELDS: tuple[str | None, ...] = tuple(
    {"vic_TraffickinStatusDecisionMakingOrg": "vic_TraffickingStatusDecisionMakingOrg"}.get(name or "", name)
    if name or label != "Reason for Outgoing Referral"
    else "cas_ReasonForOutgoingReferral"
    for name, label in TEMPLATE_COLUMNS
)
# The `expected_fields` keys an Excel mapping can produce from this layout.
EXCEL_FIELDS = frozenset(f for f in COLUMN_FIELDS if f and f not in ("vic_LocationOfRecruitment", "vic_LocationOfExploitation", "cas_ReferringOrganisation", "cas_ReferredOrganisation")) | {
    "ext_RegistrationDate", "ext_AgeAtRegistration", "ext_MajorityStatus", "ext_CountryOfExploitation",
}  # fmt: skip
DATE_NUMBER_FORMAT = "yyyy-mm-dd"


def _choice(case: GeneratedCase, name: str, share: float) -> bool:
    """A stable coin for (case, column): the same file for the same cases, run after run."""
    return (zlib.crc32(f"{case.case_id}|{name}".encode()) % 1000) < share * 1000


def _country(case: GeneratedCase, name: str, code: str, mess: bool) -> str:
    if mess and code in COUNTRIES and _choice(case, name + "#name", 0.3):
        return COUNTRIES[code].name
    return code


def _code_text(case: GeneratedCase, name: str, code: str, mess: bool, index: int = 0) -> str:
    if mess and _choice(case, f"{name}#code{index}", 0.15):
        return code
    return LABELS.get(name, {}).get(code, code)


def row_values(case: GeneratedCase, *, mess: bool = True) -> list[Any]:
    """The template row of a case: str, `date` (a real Excel date) or None per column, column A first.

    With `mess`, the case's mess is applied (`render`), picklists sometimes hold codes instead of
    labels and countries sometimes names instead of ISO2; without it every value is clean.
    """
    values: list[Any] = []
    for name in COLUMN_FIELDS:
        if name is None:
            values.append(case.case_id)
            continue
        if name == "vic_LocationOfRecruitment":
            code = recruitment_country(case)
            values.append(_country(case, name, code, mess) if code else None)
            continue
        if name == "vic_LocationOfExploitation":
            code = exploitation_country(case)
            text = _country(case, name, code, mess) if code else None
            values.append(render(case, name, text) if mess else text)
            continue
        value = case.victim[name] if name in case.victim else case.case.get(name)
        if value is None or value == []:
            values.append(None)
            continue
        if isinstance(value, date):
            if mess and case.mess.get(name):
                values.append(render(case, name, value.isoformat()))
            else:
                values.append(value)
            continue
        if isinstance(value, bool):
            text = "Yes" if value else "No"
        elif name in ("prs_Citizenship", "prs_MailingCountry"):
            codes = value if isinstance(value, list) else [value]
            text = ";".join(_country(case, f"{name}{i}", c, mess) for i, c in enumerate(codes))
        elif name in MULTI_FIELDS:
            text = ";".join(_code_text(case, name, c, mess, i) for i, c in enumerate(value))
        elif name in LABELS:
            text = _code_text(case, name, value, mess)
        else:
            text = str(value)
        values.append(render(case, name, text) if mess else text)
    return values


def write_workbook(cases: Iterable[GeneratedCase], path: str | Path, *, mess: bool = True, blank_rows: int = 0) -> Path:
    """Write live cases (deleted ones are left out, as a re-export drops them) in the template's layout.

    `blank_rows` appends that many pre-numbered empty rows after the data, as the template ships
    with (1000 rows numbered in column A and nothing else). Uses openpyxl's write-only mode, so a
    100,000-case workbook is written in constant memory.
    """
    path = Path(path)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET)
    sheet.row_dimensions[1].hidden = True
    sheet.freeze_panes = "B3"
    sheet.append([name for name, _ in TEMPLATE_COLUMNS])
    sheet.append([label for _, label in TEMPLATE_COLUMNS])
    written = 0
    for case in cases:
        if case.deleted:
            continue
        row = []
        for value in row_values(case, mess=mess):
            if isinstance(value, date):
                cell = WriteOnlyCell(sheet, value=value)
                cell.number_format = DATE_NUMBER_FORMAT
                row.append(cell)
            else:
                row.append(value)
        sheet.append(row)
        written += 1
    for i in range(blank_rows):
        sheet.append([written + i + 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def write_csv(cases: Iterable[GeneratedCase], path: str | Path, *, mess: bool = True) -> Path:
    """The CSV export of the same layout: header = the field-name row, then one line per live case.

    A CSV has no label row, so the column without a field name is headed by its label ('Reason for
    Outgoing Referral'), which is also the name the Excel source gives it; column A's header is empty.
    Dates are ISO text (or messy text).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [name if name or index == 0 else label for index, (name, label) in enumerate(TEMPLATE_COLUMNS)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([h or "" for h in header])
        for case in cases:
            if case.deleted:
                continue
            writer.writerow(["" if v is None else v.isoformat() if isinstance(v, date) else v for v in row_values(case, mess=mess)])
    return path


__all__ = ["COLUMN_FIELDS", "EXCEL_FIELDS", "TEMPLATE_COLUMNS", "row_values", "write_csv", "write_workbook"]
