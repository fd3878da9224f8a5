"""An in-memory Salesforce org with the HTCDS unmanaged package, filled from generated cases.

It holds what a real org would: Case, Contact (victims and connected persons), the custom objects
`Connected_Person_or_Organisation__c` and `Support_Plan__c`, Event (the package's Activity fields),
Account and User, each record with `Id`, `IsDeleted`, `CreatedDate`, `LastModifiedDate`,
`SystemModstamp`. The referring/referred organisations and primary case workers are lookups, as
the standard defines them ("Lookup [to organisation]" -> Account, "Lookup [to person]" -> Contact):
the Case holds the related record's Id, and a query reaches its Name through the relationship
(`Referring_Organisation__r.Name`). The package's README (UNMigration/HTCDS
`Toolkit/Salesforce/README.md`) says as much: "Standard Case, Contact and Account objects are
assumed to be used to describe client cases, contact details and organisations", and "Historical
Trafficking Event fields have been added to the Activity standard object" (so Event and Task).
Picklist API values are the HTCDS codes, multi-selects are ';'-joined, and the generator's mess is
applied to the rendered text as a careless user would type it into an unrestricted picklist.

A Connected Person or Organisation row points at the perpetrator's own Contact (gender, birth date,
nationality), which a query reaches as `Connected_Contact__r.Gender__c`, inside a child subquery
too (SOQL and SOSL Reference, "Using Relationship Queries"). `Money_Paid__c` is not in the package:
it stands for a field a partner adds ("money paid or received for the victim", a Yes/No picklist so
that unknown stays blank).

`set_cases` compares each record with its previous version and re-stamps only the records that
changed, as Salesforce does: editing a perpetrator row changes that row's SystemModstamp, not the
Case's. The HTTP layer (`salesforce.py`) turns queries into pages; this module only answers them.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from connector.sandbox.salesforce_soql import Query, SoqlError, compare

API_VERSION = "59.0"
ID_PREFIX = {"Account": "001", "Case": "500", "Contact": "003", "Event": "00U", "Task": "00T", "User": "005", "Connected_Person_or_Organisation__c": "a01", "Support_Plan__c": "a02"}
SYSTEM_FIELDS = [
    ("Id", "id", "Record ID"),
    ("IsDeleted", "boolean", "Deleted"),
    ("CreatedDate", "datetime", "Created Date"),
    ("LastModifiedDate", "datetime", "Last Modified Date"),
    ("SystemModstamp", "datetime", "System Modstamp"),
]

# The package's custom fields for historic trafficking events are on Activity: Events and Tasks both carry them.
_ACTIVITY_CUSTOM = [
    ("Type__c", "picklist", "Type"),
    ("Country__c", "picklist", "Country"),
    ("City__c", "string", "City"),
    ("State__c", "string", "State"),
    ("Street__c", "string", "Street"),
    ("Postal_Code__c", "string", "Postal Code"),
    ("Date__c", "date", "Date"),
    ("Description__c", "textarea", "Description"),
    ("Event_Geolocation__c", "location", "Event Geolocation"),
]

# object -> [(api name, type, label)] beyond the system fields. The package's custom fields carry
# the conventional API names; a partner org may rename them (see `Org(renames=...)`).
OBJECT_FIELDS: dict[str, list[tuple[str, str, str]]] = {
    "User": [("Name", "string", "Full Name")],
    "Account": [("Name", "string", "Account Name")],
    "Contact": [
        ("Name", "string", "Full Name"),
        ("Salutation", "picklist", "Salutation"),
        ("FirstName", "string", "First Name"),
        ("LastName", "string", "Last Name"),
        ("Title", "string", "Title"),
        ("Birthdate", "date", "Birthdate"),
        ("Email", "email", "Email"),
        ("MobilePhone", "phone", "Mobile Phone"),
        ("HomePhone", "phone", "Home Phone"),
        ("MailingStreet", "textarea", "Mailing Street"),
        ("MailingCity", "string", "Mailing City"),
        ("MailingState", "string", "Mailing State/Province"),
        ("MailingPostalCode", "string", "Mailing Zip/Postal Code"),
        ("MailingCountry", "string", "Mailing Country"),
        ("Gender__c", "picklist", "Gender"),
        ("Deceased__c", "boolean", "Deceased"),
        ("Nationality__c", "multipicklist", "Nationality"),
        ("Identity_Number__c", "string", "Identity Number"),
        ("Mobile_Phone__c", "phone", "Mobile Phone"),
    ],
    "Case": [
        ("CaseNumber", "string", "Case Number"),
        ("ContactId", "reference", "Contact ID"),
        ("OwnerId", "reference", "Owner ID"),
        ("Status", "picklist", "Status"),
        ("Subject", "string", "Subject"),
        ("Agreement_to_Manage_Personal_Data__c", "picklist", "Agreement to Manage Personal Data"),
        ("Trafficking_Status__c", "picklist", "Trafficking Status"),
        ("Trafficking_Status_Decision_Making_Org__c", "picklist", "Trafficking Status Decision Making Organisation"),
        ("Relationship_to_Trafficker__c", "picklist", "Relationship to Trafficker"),
        ("Method_of_Recruitment__c", "multipicklist", "Method of Recruitment"),
        ("Methods_of_Control__c", "multipicklist", "Methods of Control"),
        ("Type_of_Exploitation__c", "multipicklist", "Type of Exploitation"),
        ("Type_of_Sex_Exploitation__c", "multipicklist", "Type of Sex Exploitation"),
        ("Forced_Labour_Industry__c", "picklist", "Forced Labour Industry"),
        ("Vulnerabilities__c", "multipicklist", "Vulnerabilities"),
        ("Details_Of_Vulnerabilities__c", "textarea", "Details Of Vulnerabilities"),
        ("Recruitment_Websites_and_Apps__c", "multipicklist", "Recruitment Websites and Apps"),
        ("Exploitation_Websites_and_Apps__c", "multipicklist", "Exploitation Websites and Apps"),
        ("Location_of_Recruitment__c", "string", "Location of Recruitment"),
        ("Potential_Liability__c", "textarea", "Potential Liability"),
        ("Incoming_Referral_Date__c", "date", "Incoming Referral Date"),
        ("Reason_for_Incoming_Referral__c", "picklist", "Reason for Incoming Referral"),
        ("Incoming_Referral_Details__c", "textarea", "Incoming Referral Details"),
        ("Referring_Organisation__c", "reference", "Referring Organisation"),
        ("Referring_Primary_Case_Worker__c", "reference", "Referring Primary Case Worker"),
        ("Outgoing_Referral_Date__c", "date", "Outgoing Referral Date"),
        ("Reason_for_Outgoing_Referral__c", "picklist", "Reason for Outgoing Referral"),
        ("Outgoing_Referral_Details__c", "textarea", "Outgoing Referral Details"),
        ("Referred_Organisation__c", "reference", "Referred Organisation"),
        ("Referred_Primary_Case_Worker__c", "reference", "Referred Primary Case Worker"),
        ("Reason_for_Case_Closure__c", "textarea", "Reason for Case Closure"),
    ],
    "Connected_Person_or_Organisation__c": [
        ("Name", "string", "Connected Person or Organisation Name"),
        ("Case__c", "reference", "Case"),
        ("Type__c", "picklist", "Type"),
        ("Connected_Contact__c", "reference", "Connected Contact"),
        ("Connected_Organistion__c", "reference", "Connected Organistion"),
        ("Role_in_Process__c", "multipicklist", "Role in Process"),
        # Not in the package: a partner's own field (CTDC's "money paid or received for the victim").
        ("Money_Paid__c", "picklist", "Money Paid or Received"),
    ],
    "Event": [
        ("Subject", "string", "Subject"),
        ("WhatId", "reference", "Related To ID"),
        ("ActivityDateTime", "datetime", "Due Date Time"),
        ("DurationInMinutes", "int", "Duration"),
        *_ACTIVITY_CUSTOM,
    ],
    "Task": [
        ("Subject", "string", "Subject"),
        ("WhatId", "reference", "Related To ID"),
        ("ActivityDate", "date", "Due Date Only"),
        ("Status", "picklist", "Status"),
        *_ACTIVITY_CUSTOM,
    ],
    "Support_Plan__c": [
        ("Name", "string", "Support Plan Name"),
        ("Case__c", "reference", "Case"),
        ("Type__c", "picklist", "Type"),
        ("Planned_End_Date__c", "date", "Planned End Date"),
        ("Actual_End_Date__c", "date", "Actual End Date"),
        ("Action_Plan__c", "textarea", "Action Plan"),
        ("Objectives__c", "textarea", "Objectives"),
    ],
}
# The published package (UNMigration/HTCDS `Toolkit/Salesforce/Package contents.md`, copied in
# shared/reference/htcds/salesforce_package_contents.md) creates no Trafficking Status, Decision
# Making Organisation or Relationship to Trafficker field on Case; its metadata is not public, so an
# org that tracks them has added its own. This org is laid out like that: every package field under
# the API name its label gives (`Location of Recruitment` -> `Location_of_Recruitment__c`), and the
# three extra fields as a partner added them, under other names, found by label (the 2.0
# standard's spelling "Decision Making Organization") or by the HTCDS name in the help text.
# Keys are "Object.StoredName"; `Org(package_layout=False)` serves the conventional names instead.
PARTNER_FIELDS: dict[str, tuple[str, str, str | None]] = {  # stored name -> (API name, label, inlineHelpText)
    "Case.Trafficking_Status__c": ("Victim_Status__c", "Victim Status", "HTCDS field vic_TraffickingStatus: the victim's status as decided"),
    "Case.Trafficking_Status_Decision_Making_Org__c": ("Decision_Making_Organization__c", "Trafficking Status Decision Making Organization", None),
    "Case.Relationship_to_Trafficker__c": ("Relationship_with_Trafficker__c", "Relationship with Trafficker", "How the victim knew the recruiter (HTCDS RelationshipToTrafficker)"),
}
# child object -> {relationship name: (parent object, reference field)}
PARENTS: dict[str, dict[str, tuple[str, str]]] = {
    "Case": {
        "Contact": ("Contact", "ContactId"),
        "Owner": ("User", "OwnerId"),
        # the standard's "Lookup [to organisation]" and "Lookup [to person]" (Account and Contact here)
        "Referring_Organisation__r": ("Account", "Referring_Organisation__c"),
        "Referred_Organisation__r": ("Account", "Referred_Organisation__c"),
        "Referring_Primary_Case_Worker__r": ("Contact", "Referring_Primary_Case_Worker__c"),
        "Referred_Primary_Case_Worker__r": ("Contact", "Referred_Primary_Case_Worker__c"),
    },
    "Connected_Person_or_Organisation__c": {"Case__r": ("Case", "Case__c"), "Connected_Contact__r": ("Contact", "Connected_Contact__c")},
    "Support_Plan__c": {"Case__r": ("Case", "Case__c")},
    "Event": {"What": ("Case", "WhatId")},
    "Task": {"What": ("Case", "WhatId")},
}
# parent object -> {child relationship name: (child object, reference field)}
CHILDREN: dict[str, dict[str, tuple[str, str]]] = {
    "Case": {
        "Connected_Persons_or_Organisations__r": ("Connected_Person_or_Organisation__c", "Case__c"),
        "Events": ("Event", "WhatId"),
        "Tasks": ("Task", "WhatId"),
        "Support_Plans__r": ("Support_Plan__c", "Case__c"),
    },
    "Contact": {"Cases": ("Case", "ContactId")},
}

# generator field -> (object, API field); lists become ';'-joined multi-selects
VICTIM_FIELDS = {
    "prs_Salutation": "Salutation",
    "prs_FirstName": "FirstName",
    "prs_SecondName": "LastName",
    "prs_Title": "Title",
    "prs_Birthdate": "Birthdate",
    "prs_Email": "Email",
    "prs_MobilePhone": "MobilePhone",
    "prs_HomePhone": "HomePhone",
    "prs_MailingStreet": "MailingStreet",
    "prs_MailingCity": "MailingCity",
    "prs_MailingState": "MailingState",
    "prs_MailingPostalCode": "MailingPostalCode",
    "prs_MailingCountry": "MailingCountry",
    "prs_Gender": "Gender__c",
    "prs_Deceased": "Deceased__c",
    "prs_Citizenship": "Nationality__c",
    "prs_IdentityNumber": "Identity_Number__c",
}
CASE_FIELDS = {
    "con_Consent": "Agreement_to_Manage_Personal_Data__c",
    "vic_AgreementToManagePersonalData": "Agreement_to_Manage_Personal_Data__c",
    "vic_TraffickingStatus": "Trafficking_Status__c",
    "vic_TraffickingStatusDecisionMakingOrg": "Trafficking_Status_Decision_Making_Org__c",
    "vic_RelationshipToTrafficker": "Relationship_to_Trafficker__c",
    "vic_MethodOfRecruitment": "Method_of_Recruitment__c",
    "vic_MethodsOfControl": "Methods_of_Control__c",
    "vic_TypeOfExploitation": "Type_of_Exploitation__c",
    "vic_TypeOfSexExploitation": "Type_of_Sex_Exploitation__c",
    "vic_ForcedLabourIndustry": "Forced_Labour_Industry__c",
    "vic_Vulnerabilities": "Vulnerabilities__c",
    "vic_DetailsOfVulnerabilities": "Details_Of_Vulnerabilities__c",
    "vic_RecruitmentWebsitesAndApps": "Recruitment_Websites_and_Apps__c",
    "vic_ExploitationWebsitesAndApps": "Exploitation_Websites_and_Apps__c",
    "cas_Status": "Status",
    "cas_IncomingReferralDate": "Incoming_Referral_Date__c",
    "cas_ReasonForIncomingReferral": "Reason_for_Incoming_Referral__c",
    "cas_IncomingReferralDetails": "Incoming_Referral_Details__c",
    "cas_ReferringOrganisation": "Referring_Organisation__c",
    "cas_ReferringPrimaryCaseWorker": "Referring_Primary_Case_Worker__c",
    "cas_OutgoingReferralDate": "Outgoing_Referral_Date__c",
    "cas_ReasonForOutgoingReferral": "Reason_for_Outgoing_Referral__c",
    "cas_OutgoingReferralDetails": "Outgoing_Referral_Details__c",
    "cas_ReferredOrganisation": "Referred_Organisation__c",
    "cas_ReferredPrimaryCaseWorker": "Referred_Primary_Case_Worker__c",
    "cas_ReasonForCaseClosure": "Reason_for_Case_Closure__c",
}
LOOKUPS = {  # Case lookup field -> the object it points to
    "Referring_Organisation__c": "Account",
    "Referred_Organisation__c": "Account",
    "Referring_Primary_Case_Worker__c": "Contact",
    "Referred_Primary_Case_Worker__c": "Contact",
}
EVENT_FIELDS = {"hte_Type": "Type__c", "hte_Country": "Country__c", "hte_Date": "Date__c", "hte_City": "City__c", "hte_State": "State__c", "hte_Street": "Street__c", "hte_PostalCode": "Postal_Code__c", "hte_Description": "Description__c"}
SUPPORT_FIELDS = {"spl_Type": "Type__c", "spl_PlannedEndDate": "Planned_End_Date__c", "spl_ActualEndDate": "Actual_End_Date__c", "spl_Objectives": "Objectives__c", "spl_ActionPlan": "Action_Plan__c"}
PERPETRATOR_FIELDS = {"per_RoleInProcess": "Role_in_Process__c", "relation": "Type__c", "money_paid": "Money_Paid__c"}
# the perpetrator's own Contact (the row's Connected Contact): name, gender, birth date, nationality
PERPETRATOR_PERSON = {"prs_FirstName": "FirstName", "prs_SecondName": "LastName", "prs_Gender": "Gender__c", "prs_Birthdate": "Birthdate", "citizenship": "Nationality__c"}


def _utc_seconds(value: datetime) -> datetime:
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).replace(microsecond=0)


def _render_function():
    """The generator's `render` (applies a case's mess), or identity if the generator is absent."""
    try:
        from connector.sandbox.generate import render  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - only while the generator is being written
        return lambda case, field, text: text
    return render


@dataclass
class Org:
    """The org's records and the rules to query them. Thread-safe: every access holds `lock`."""

    renames: dict[str, str] = field(default_factory=dict)  # "Object.Conventional" -> partner API name
    hidden: set[str] = field(default_factory=set)  # "Object.Field" hidden by field-level security
    package_layout: bool = True  # the published package plus a partner's own fields (PARTNER_FIELDS)
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: dict[tuple, str] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)
    _children: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    _latest: datetime | None = None
    # (object, stamp field) -> (stamps ascending, positions in insertion order): the query planner's index
    _stamps: dict[tuple[str, str], tuple[list[datetime], list[int]]] = field(default_factory=dict)
    _refs: dict[tuple[str, str, bool], dict[str, list[int]]] = field(default_factory=dict)
    _in_sets: dict[int, tuple[list[Any], frozenset[Any], frozenset[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in OBJECT_FIELDS:
            self.records.setdefault(obj, {})
        self._labels: dict[str, str] = {}
        self._help: dict[str, str] = {}
        if self.package_layout:
            for key, (api, label, help_text) in PARTNER_FIELDS.items():
                self.renames.setdefault(key, api)
                self._labels[key] = label
                if help_text:
                    self._help[key] = help_text
        self._resolvers: dict[tuple[str, str], Callable[[dict[str, Any] | None], Any]] = {}
        self._external = {}  # object -> {lower external name -> canonical}
        self._to_external = {}  # object -> {canonical -> external}
        for obj, specs in OBJECT_FIELDS.items():
            names = [name for name, _, _ in SYSTEM_FIELDS] + [name for name, _, _ in specs]
            ext = {}
            out = {}
            for name in names:
                external = self.renames.get(f"{obj}.{name}", name)
                if f"{obj}.{external}" in self.hidden or f"{obj}.{name}" in self.hidden:
                    continue
                ext[external.lower()] = name
                out[name] = external
            self._external[obj] = ext
            self._to_external[obj] = out

    # -- loading generated cases -------------------------------------------------------------------

    def record_id(self, obj: str, key: tuple) -> str:
        """A stable 18-character Id per (object, key), so edits keep their Ids across `set_cases`."""
        full = (obj,) + key
        if full not in self._ids:
            self._counters[obj] = self._counters.get(obj, 0) + 1
            self._ids[full] = f"{ID_PREFIX[obj]}Hc{self._counters[obj]:010d}AAA"
        return self._ids[full]

    def set_cases(self, cases: Iterable[Any]) -> None:
        """Replace the org's content with `cases`, re-stamping only records whose content changed."""
        render = _render_function()
        fresh: dict[str, dict[str, tuple[dict[str, Any], datetime, datetime, bool]]] = {obj: {} for obj in OBJECT_FIELDS}
        for case in cases:
            for obj, rec_id, values, created, stamp, deleted in self._case_records(case, render):
                fresh[obj][rec_id] = (values, created, stamp, deleted)
        previous = self._latest  # the org's clock: a change made now cannot be stamped before it
        now = (previous + timedelta(seconds=1)) if previous else datetime.now(timezone.utc).replace(microsecond=0)
        with self.lock:
            for obj, new in fresh.items():
                old = self.records[obj]
                for rec_id, (values, created, stamp, deleted) in new.items():
                    if obj == "Contact":  # the standard compound Name, as Salesforce derives it
                        values = {**values, "Name": " ".join(str(v) for v in (values.get("FirstName"), values.get("LastName")) if v) or None}
                    before = old.get(rec_id)
                    record = {"Id": rec_id, **values, "IsDeleted": deleted, "CreatedDate": created}
                    if before is not None and _content(before) == _content(record):
                        record["LastModifiedDate"] = before["LastModifiedDate"]
                        record["SystemModstamp"] = before["SystemModstamp"]
                    else:
                        if previous is not None and stamp <= previous:
                            stamp = now
                        record["LastModifiedDate"] = stamp
                        record["SystemModstamp"] = stamp
                    old[rec_id] = record
                for rec_id in list(old):
                    if rec_id not in new and not old[rec_id]["IsDeleted"]:
                        old[rec_id] = {**old[rec_id], "IsDeleted": True, "SystemModstamp": now, "LastModifiedDate": now}
            self._reindex()
            stamps = [r["SystemModstamp"] for records in self.records.values() for r in records.values()]
            self._latest = max(stamps) if stamps else None

    def _case_records(self, case: Any, render) -> Iterable[tuple[str, str, dict[str, Any], datetime, datetime, bool]]:
        cid = str(case.case_id)
        created = _utc_seconds(case.created_at)
        stamp = _utc_seconds(case.updated_at)
        deleted = bool(getattr(case, "deleted", False))

        def value(field_name: str, raw: Any, kind: str) -> Any:
            if raw is None or raw == [] or raw == "":
                return None
            if kind in ("date", "datetime", "boolean", "int"):
                # A typed field cannot hold free text or an unknown code: the user left it empty.
                if case.mess.get(field_name) in ("blank", "free_text", "unknown_code"):
                    return None
                if kind == "date" and isinstance(raw, datetime):
                    return raw.date()
                if kind == "date" and isinstance(raw, str):
                    try:
                        return date.fromisoformat(raw[:10])
                    except ValueError:
                        return None
                return raw
            if isinstance(raw, bool):
                text = "Yes" if raw else "No"
            elif isinstance(raw, (list, tuple)):
                text = ";".join(str(v) for v in raw)
            else:
                text = raw.isoformat() if isinstance(raw, date) else str(raw)
            rendered = render(case, field_name, text)
            return None if rendered is None or rendered == "" else rendered

        owner_name = (case.case or {}).get("cas_CaseOwner")
        owner_id = None
        if owner_name:
            owner_id = self.record_id("User", (str(owner_name),))
            yield "User", owner_id, {"Name": str(owner_name)}, created, created, False

        victim = case.victim or {}
        contact_id = None
        if victim:
            contact_id = self.record_id("Contact", ("victim", cid))
            values = {api: value(name, victim.get(name), _kind("Contact", api)) for name, api in VICTIM_FIELDS.items()}
            values["Mobile_Phone__c"] = None
            if sum(map(ord, cid)) % 3 == 0:  # some case workers type the mobile into the package's own field
                values["Mobile_Phone__c"], values["MobilePhone"] = values["MobilePhone"], None
            yield "Contact", contact_id, values, created, stamp, deleted

        case_id = self.record_id("Case", (cid,))
        values = {api: value(name, (case.case or {}).get(name), _kind("Case", api)) for name, api in CASE_FIELDS.items() if name in (case.case or {})}
        for _, api in CASE_FIELDS.items():
            values.setdefault(api, None)
        values.update(
            {
                "CaseNumber": cid,
                "ContactId": contact_id,
                "OwnerId": owner_id,
                "Subject": "Trafficking case",
                "Location_of_Recruitment__c": location_of_recruitment(case),
                "Potential_Liability__c": None,
            }
        )
        for api, parent in LOOKUPS.items():  # the typed name becomes a related record; the Case holds its Id
            name = values.get(api)
            if name:
                parent_id = self.record_id(parent, ("lookup", str(name)))
                person = {**{a: None for a in VICTIM_FIELDS.values()}, "Mobile_Phone__c": None, "LastName": str(name)}  # Name = the name as typed
                parent_values = {"Name": str(name)} if parent == "Account" else person
                yield parent, parent_id, parent_values, created, created, False
                values[api] = parent_id
        yield "Case", case_id, values, created, stamp, deleted

        for i, perp in enumerate(getattr(case, "perpetrators", None) or []):
            person_id = self.record_id("Contact", ("perpetrator", cid, i))
            # `per:` names: the victim's mess (on prs_Gender, prs_Birthdate) is not the perpetrator's
            person = {api: value(f"per:{name}", perp.get(name), _kind("Contact", api)) for name, api in PERPETRATOR_PERSON.items()}
            person = {**{api: None for _, api in VICTIM_FIELDS.items()}, "Mobile_Phone__c": None, **person}
            yield "Contact", person_id, person, created, stamp, deleted
            row = {api: value(f"per:{name}", perp.get(name), _kind("Connected_Person_or_Organisation__c", api)) for name, api in PERPETRATOR_FIELDS.items()}
            row.update({"Name": f"CP-{cid}-{i + 1}", "Case__c": case_id, "Connected_Contact__c": person_id, "Connected_Organistion__c": None})
            yield "Connected_Person_or_Organisation__c", self.record_id("Connected_Person_or_Organisation__c", (cid, i)), row, created, stamp, deleted
        # Historic events: the package's fields are on Activity, so some organisations log them as
        # Tasks; this org does so for every other case. And rows deleted by the case worker stay in
        # the recycle bin (IsDeleted), where queryAll still finds them, child subqueries included.
        activity = "Task" if sum(map(ord, cid)) % 2 == 0 else "Event"
        if sum(map(ord, cid)) % 4 in (1, 2) and not deleted:
            row = {"Name": f"CP-{cid}-deleted", "Case__c": case_id, "Connected_Contact__c": None, "Connected_Organistion__c": None}
            row.update({"Type__c": "IntimatePartner", "Role_in_Process__c": "Kidnapper;RecruiterOrIntermediary"})
            yield "Connected_Person_or_Organisation__c", self.record_id("Connected_Person_or_Organisation__c", (cid, "deleted")), row, created, stamp, True
            row = {api: None for api in EVENT_FIELDS.values()}
            row.update({"Type__c": "Exploitation", "Country__c": "IS", "Date__c": created.date(), "Subject": "Entered by mistake", "WhatId": case_id})
            row.update({"ActivityDate": created.date(), "Status": "Completed"} if activity == "Task" else {"ActivityDateTime": created, "DurationInMinutes": 0})
            yield activity, self.record_id(activity, (cid, "deleted")), row, created, stamp, True
        exploitation_seen = False
        for i, event in enumerate(getattr(case, "events", None) or []):
            row = {api: value(name, event.get(name), _kind("Event", api)) for name, api in EVENT_FIELDS.items()}
            if event.get("hte_Type") == "Exploitation" and not exploitation_seen:
                # the generator's mess for the country of exploitation lives on its first Exploitation event
                exploitation_seen = True
                row["Country__c"] = value("vic_LocationOfExploitation", event.get("hte_Country"), "picklist")
            when = row.get("Date__c")
            row.update({"Subject": "Trafficking event", "WhatId": case_id})
            if activity == "Task":
                row.update({"ActivityDate": when if isinstance(when, date) else created.date(), "Status": "Completed"})
            else:
                at = datetime(when.year, when.month, when.day, 12, tzinfo=timezone.utc) if isinstance(when, date) else created
                row.update({"ActivityDateTime": at, "DurationInMinutes": 0})
            yield activity, self.record_id(activity, (cid, i)), row, created, stamp, deleted
        for i, plan in enumerate(getattr(case, "support_plans", None) or []):
            row = {api: value(name, plan.get(name), _kind("Support_Plan__c", api)) for name, api in SUPPORT_FIELDS.items()}
            row.update({"Name": f"SP-{cid}-{i + 1}", "Case__c": case_id})
            yield "Support_Plan__c", self.record_id("Support_Plan__c", (cid, i)), row, created, stamp, deleted

    def _reindex(self) -> None:
        self._stamps = {}  # rebuilt on the next query that filters on a stamp
        self._refs = {}
        self._children = {}
        for parent, relations in CHILDREN.items():
            for _, (child, ref) in relations.items():
                index: dict[str, list[str]] = {}
                for rec_id, record in self.records[child].items():
                    key = record.get(ref)
                    if key:
                        index.setdefault(key, []).append(rec_id)
                self._children[(child, ref)] = index
        # Salesforce keeps its indexes as records change; building them here, when the org's data
        # is set, keeps that cost out of the first query a connector sends (a benchmark measures
        # the connector). Indexes on other fields are built on their first query.
        for obj in self.records:
            self._stamp_index(obj, "SystemModstamp")
            self._index(obj, "Id", folded=True)
            for _, (parent_obj, ref) in PARENTS.get(obj, {}).items():
                self._index(obj, ref)
        for relations in CHILDREN.values():
            for _, (child, ref) in relations.items():
                self._index(child, ref, folded=True)

    def now(self) -> datetime:
        """The org's clock: the latest change it holds (generated data lives in its own time)."""
        return self._latest or datetime.now(timezone.utc).replace(microsecond=0)

    # -- describe -------------------------------------------------------------------------------------

    def object_names(self) -> list[str]:
        return list(OBJECT_FIELDS)

    def describe(self, obj: str, base: str) -> dict[str, Any]:
        """The `sobjects/{obj}/describe` body: the fields this user may read, with picklist values."""
        from connector.schema import load_schema

        schema = load_schema()
        picklists = _picklist_lists()
        fields = []
        for name, kind, label in SYSTEM_FIELDS + OBJECT_FIELDS[obj]:
            external = self._to_external[obj].get(name)
            if external is None:
                continue
            entry: dict[str, Any] = {
                "name": external,
                "label": self._labels.get(f"{obj}.{name}", label),
                "inlineHelpText": self._help.get(f"{obj}.{name}"),
                "type": kind,
                "custom": external.endswith("__c"),
                "nillable": name not in ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"),
                "filterable": kind not in ("textarea",),
                "sortable": kind not in ("textarea", "multipicklist"),
                "length": 255 if kind in ("string", "picklist", "email", "phone") else 4099 if kind == "multipicklist" else 32768 if kind == "textarea" else 0,
                "picklistValues": [],
                "referenceTo": [],
                "relationshipName": None,
            }
            codelist = picklists.get(f"{obj}.{name}")
            if codelist and codelist in schema.codelists:
                entry["picklistValues"] = [
                    {"active": True, "defaultValue": False, "label": label_, "validFor": None, "value": code} for code, label_ in schema.codelists[codelist].items()
                ]
            for relationship, (parent, ref) in PARENTS.get(obj, {}).items():
                if ref == name:
                    entry["referenceTo"] = [parent]
                    entry["relationshipName"] = relationship
            fields.append(entry)
        children = [
            {"cascadeDelete": child == "Event", "childSObject": child, "deprecatedAndHidden": False, "field": ref, "relationshipName": relationship}
            for relationship, (child, ref) in CHILDREN.get(obj, {}).items()
        ]
        return {
            "name": obj,
            "label": obj.replace("__c", "").replace("_", " "),
            "custom": obj.endswith("__c"),
            "keyPrefix": ID_PREFIX[obj],
            "queryable": True,
            "retrieveable": True,
            "fields": fields,
            "childRelationships": children,
            "urls": {"describe": f"{base}/sobjects/{obj}/describe", "sobject": f"{base}/sobjects/{obj}"},
        }

    # -- queries --------------------------------------------------------------------------------------

    def canonical(self, obj: str, name: str) -> str:
        """The stored name of a field as the query spells it; INVALID_FIELD if this org lacks it."""
        found = self._external[obj].get(name.lower())
        if found is None:
            raise SoqlError(
                f"\nNo such column '{name}' on entity '{obj}'. If you are attempting to use a custom field, be sure to append the '__c' "
                "after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                "INVALID_FIELD",
            )
        return found

    def resolve(self, obj: str, record: dict[str, Any] | None, path: str) -> Any:
        """Value of `path` (`Field`, `Parent.Field`, `Parent.Parent.Field`) on a record."""
        return self.resolver(obj, path)(record)

    def resolver(self, obj: str, path: str) -> Callable[[dict[str, Any] | None], Any]:
        """`resolve` of one path as a function of the record, its names looked up once (a results
        set resolves the same fields for every row; the lookups were a third of a Bulk download's
        CPU). INVALID_FIELD for a path this org cannot answer, raised here, before any row."""
        key = (obj, path)
        found = self._resolvers.get(key)
        if found is not None:
            return found
        parts = path.split(".")
        chain: list[tuple[str, str]] = []  # (parent object, lookup field), outward
        current_obj = obj
        for relationship in parts[:-1]:
            rel = _find(PARENTS.get(current_obj, {}), relationship)
            if rel is None:
                if relationship.lower() == current_obj.lower() and len(parts) == 2:
                    continue  # `Case.Id` on Case
                raise SoqlError(f"\nDidn't understand relationship '{relationship}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name.", "INVALID_FIELD")
            parent_obj, ref = PARENTS[current_obj][rel]
            chain.append((parent_obj, ref))
            current_obj = parent_obj
        last = parts[-1]
        what_type = last.lower() == "type" and len(parts) > 1 and parts[-2].lower() == "what"
        name = None if what_type else self.canonical(current_obj, last)
        records, final_obj = self.records, current_obj

        def value(record: dict[str, Any] | None) -> Any:
            current = record
            for parent_obj, ref in chain:
                target = current.get(ref) if current else None
                current = records[parent_obj].get(target) if target else None
            if what_type:
                return final_obj if current else None
            return current.get(name) if current else None

        self._resolvers[key] = value
        return value

    def run(self, query: Query, include_deleted: bool) -> list[str]:
        """Ids of `query.obj` records matching the WHERE clause, in ORDER BY order, up to LIMIT."""
        obj = self._object(query.obj)
        with self.lock:
            for name in query.fields:
                self.resolve(obj, None, name)
            candidates = self._candidates(obj, query.where)
            rows = [r for r in candidates if (include_deleted or not r["IsDeleted"]) and self.matches(obj, r, query.where)]
            for name, descending, nulls_last in reversed(query.order):
                present = [r for r in rows if self.resolve(obj, r, name) is not None]
                absent = [r for r in rows if self.resolve(obj, r, name) is None]
                present.sort(key=lambda r: _sort_key(self.resolve(obj, r, name)), reverse=descending)
                rows = present + absent if nulls_last else absent + present
            if query.limit is not None:
                rows = rows[: query.limit]
            return [r["Id"] for r in rows]

    def _candidates(self, obj: str, where: Any) -> Iterable[dict[str, Any]]:
        """The records that may match `where`, in the org's record order: every record, or, when the
        clause ANDs a range on a stamp field (`SystemModstamp > X`, the incremental query, or a
        parent's: `Contact.SystemModstamp > X`), only those in that range, found by bisection in a
        sorted index, as Salesforce's own index on SystemModstamp serves such a filter ("Query & Search Optimization Cheat Sheet": SystemModstamp
        is indexed). Every condition is still checked on each candidate by `matches`, so the index
        changes the cost, never the answer. A field `IN` a list of strings (`Id IN (...)`, a child's
        `Case__c IN (...)`: the keyed read of a batch's children) is served by an index of that
        field's values, compared case-insensitively as `_in` compares them (the same cheat sheet
        lists Id, lookup and master-detail fields among the standard indexed fields)."""
        records = self.records[obj]
        best: list[int] | None = None
        for node in _conjuncts(where):
            if node[0] == "in" and "." not in node[1] and node[2] and all(isinstance(v, str) for v in node[2]):
                # `Id IN (...)`, `Case__c IN (...)`: the records holding one of the listed strings
                by_value = self._index(obj, self.canonical(obj, node[1]), folded=True)
                found = sorted({p for v in node[2] for p in by_value.get(v.casefold(), ())})
                best = found if best is None or len(found) < len(best) else best
                continue
            if node[0] != "cmp" or node[2] not in _RANGE_OPS or node[1].count(".") > 1:
                continue
            relationship, _, field_name = node[1].rpartition(".")
            bound = _as_stamp(node[3])
            if bound is None:
                continue
            if not relationship:  # `SystemModstamp > X` on the object itself
                name = self.canonical(obj, field_name)
                if name in _STAMP_FIELDS:
                    found = self._stamp_range(obj, name, node[2], bound)
                    best = found if best is None or len(found) < len(best) else best
                continue
            rel = _find(PARENTS.get(obj, {}), relationship)  # `Contact.SystemModstamp > X`: the changed parents' children
            if rel is None:
                continue
            parent_obj, ref = PARENTS[obj][rel]
            name = self.canonical(parent_obj, field_name)
            if name not in _STAMP_FIELDS:
                continue
            parents = list(self.records[parent_obj].values())
            by_parent = self._index(obj, ref)
            found = sorted(p for i in self._stamp_range(parent_obj, name, node[2], bound) for p in by_parent.get(parents[i]["Id"], ()))
            best = found if best is None or len(found) < len(best) else best
        if best is None:
            return records.values()
        ordered = list(records.values())
        return [ordered[position] for position in sorted(best)]

    def _stamp_range(self, obj: str, name: str, op: str, bound: datetime) -> list[int]:
        """Positions of `obj`'s records whose stamp `name` satisfies `op bound`, by bisection."""
        stamps, positions = self._stamp_index(obj, name)
        lo, hi = 0, len(stamps)
        if op in (">", ">="):
            lo = (bisect.bisect_right if op == ">" else bisect.bisect_left)(stamps, bound)
        elif op in ("<", "<="):
            hi = (bisect.bisect_left if op == "<" else bisect.bisect_right)(stamps, bound)
        else:
            lo, hi = bisect.bisect_left(stamps, bound), bisect.bisect_right(stamps, bound)
        return positions[lo:hi]

    def _index(self, obj: str, name: str, *, folded: bool = False) -> dict[str, list[int]]:
        """Positions of `obj`'s records by the value of field `name`: a lookup's Id as stored (the
        reverse of a parent path), or with `folded` every string case-folded (`Field IN (...)`,
        compared as `_in` compares)."""
        key = (obj, name, folded)
        index = self._refs.get(key)
        if index is None:
            index = {}
            for position, record in enumerate(self.records[obj].values()):
                value = record.get(name)
                if folded and isinstance(value, str):
                    index.setdefault(value.casefold(), []).append(position)
                elif not folded and value:
                    index.setdefault(value, []).append(position)
            self._refs[key] = index
        return index

    def _stamp_index(self, obj: str, name: str) -> tuple[list[datetime], list[int]]:
        key = (obj, name)
        if key not in self._stamps:
            pairs = sorted((r[name], position) for position, r in enumerate(self.records[obj].values()) if r.get(name) is not None)
            self._stamps[key] = ([stamp for stamp, _ in pairs], [position for _, position in pairs])
        return self._stamps[key]

    def matches(self, obj: str, record: dict[str, Any], node: Any) -> bool:
        if node is None:
            return True
        kind = node[0]
        if kind == "and":
            return self.matches(obj, record, node[1]) and self.matches(obj, record, node[2])
        if kind == "or":
            return self.matches(obj, record, node[1]) or self.matches(obj, record, node[2])
        if kind == "not":
            return not self.matches(obj, record, node[1])
        value = self.resolve(obj, record, node[1])
        if kind == "cmp":
            return compare(value, node[2], node[3])
        if kind == "in":
            return self._in(value, node[2])
        if kind == "semijoin":
            sub: Query = node[2]
            cache_key = id(sub)
            cache = getattr(self, "_semijoin_cache", {})
            if cache_key not in cache:
                sub_obj = self._object(sub.obj)
                if len(sub.fields) != 1:
                    raise SoqlError("a semi-join subquery selects exactly one field")
                ids = self.run(sub, include_deleted=False)
                cache[cache_key] = {self.resolve(sub_obj, self.records[sub_obj][i], sub.fields[0]) for i in ids}
                self._semijoin_cache = cache
            return value in cache[cache_key]
        raise SoqlError(f"unsupported condition {kind}")

    def children(self, parent_obj: str, parent_id: str, sub: Query, include_deleted: bool = False) -> tuple[str, list[dict[str, Any]]]:
        """Rows of a child-relationship subquery for one parent (filtered, ordered).

        Under queryAll the deleted children come too: the REST QueryAll resource "returns records
        that are deleted because of a merge or delete" for the whole query, so a subquery that
        should not see them says `WHERE IsDeleted = false`.
        """
        rel = _find(CHILDREN.get(parent_obj, {}), sub.obj)
        if rel is None:
            raise SoqlError(f"\nDidn't understand relationship '{sub.obj}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name.", "INVALID_TYPE")
        child, ref = CHILDREN[parent_obj][rel]
        rows = [self.records[child][i] for i in self._children.get((child, ref), {}).get(parent_id, [])]
        rows = [r for r in rows if (include_deleted or not r["IsDeleted"]) and self.matches(child, r, sub.where)]
        for name, descending, _ in reversed(sub.order):
            rows.sort(key=lambda r: _sort_key(self.resolve(child, r, name)), reverse=descending)
        return child, rows[: sub.limit] if sub.limit is not None else rows

    def _in(self, value: Any, listed: list[Any]) -> bool:
        """`value IN (listed)` with `compare`'s "=" (strings case-insensitively), by set lookup."""
        cached = self._in_sets.get(id(listed))
        if cached is None or cached[0] is not listed:
            others = frozenset(v for v in listed if not isinstance(v, str) and v is not None)
            cached = (listed, others, frozenset(v.casefold() for v in listed if isinstance(v, str)))
            self._in_sets[id(listed)] = cached
        if isinstance(value, str):
            return value.casefold() in cached[2]
        if value is None:
            return None in listed
        try:
            return value in cached[1]
        except TypeError:  # an unhashable value: compare one by one
            return any(compare(value, "=", v) for v in listed)

    def clear_query_cache(self) -> None:
        self._semijoin_cache = {}
        self._in_sets = {}

    def _object(self, name: str) -> str:
        for obj in OBJECT_FIELDS:
            if obj.lower() == name.lower():
                return obj
        raise SoqlError(
            f"\nsObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
            "INVALID_TYPE",
        )

    def external(self, obj: str, name: str) -> str:
        return self._to_external[obj].get(name, name)


def location_of_recruitment(case: Any) -> str | None:
    """What this org keeps in the package's `Location_of_Recruitment__c`: the recruitment event's city."""
    for event in getattr(case, "events", None) or []:
        if event.get("hte_Type") == "Recruitment":
            return event.get("hte_City") or None
    return None


def _find(mapping: dict[str, Any], name: str) -> str | None:
    for key in mapping:
        if key.lower() == name.lower():
            return key
    return None


def _kind(obj: str, api: str) -> str:
    for name, kind, _ in OBJECT_FIELDS[obj]:
        if name == api:
            return kind
    return "string"


_STAMP_FIELDS = ("SystemModstamp", "LastModifiedDate", "CreatedDate")
_RANGE_OPS = (">", ">=", "<", "<=", "=")


def _conjuncts(node: Any) -> list[Any]:
    """The conditions a WHERE clause ANDs together (the clause itself when it is not an AND)."""
    if node is None:
        return []
    if node[0] == "and":
        return _conjuncts(node[1]) + _conjuncts(node[2])
    return [node]


def _as_stamp(value: Any) -> datetime | None:
    """A literal as the UTC datetime `compare` would compare a stamp with; None if it is not a date."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return None


def _content(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("SystemModstamp", "LastModifiedDate")}


def _sort_key(value: Any) -> Any:
    if isinstance(value, str):
        return (0, value)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, datetime):
        return (2, value.timestamp())
    if isinstance(value, date):
        return (2, datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp())
    return (3, value)


def _picklist_lists() -> dict[str, str]:
    """Which HTCDS code list each package picklist draws its values from (for describe)."""
    return {
        "Contact.Gender__c": "gender",
        "Contact.Nationality__c": "countries",
        "Case.Status": "case_status",
        "Case.Trafficking_Status__c": "trafficking_status",
        "Case.Trafficking_Status_Decision_Making_Org__c": "status_decision_org",
        "Case.Relationship_to_Trafficker__c": "relationship_to_trafficker",
        "Case.Method_of_Recruitment__c": "recruitment_method",
        "Case.Methods_of_Control__c": "methods_of_control",
        "Case.Type_of_Exploitation__c": "exploitation_type",
        "Case.Type_of_Sex_Exploitation__c": "sex_exploitation_type",
        "Case.Forced_Labour_Industry__c": "labour_industry",
        "Case.Vulnerabilities__c": "vulnerabilities",
        "Case.Recruitment_Websites_and_Apps__c": "websites_and_apps",
        "Case.Exploitation_Websites_and_Apps__c": "websites_and_apps",
        "Case.Reason_for_Incoming_Referral__c": "referral_reason",
        "Case.Reason_for_Outgoing_Referral__c": "referral_reason",
        "Connected_Person_or_Organisation__c.Role_in_Process__c": "perpetrator_role",
        "Connected_Person_or_Organisation__c.Type__c": "recruiter_relation",
        "Case.Agreement_to_Manage_Personal_Data__c": "yes_no",
        "Event.Type__c": "event_type",
        "Event.Country__c": "countries",
        "Support_Plan__c.Type__c": "support_plan_type",
    }
