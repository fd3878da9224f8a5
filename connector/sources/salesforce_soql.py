"""What the Salesforce source asks for: the HTCDS package's objects and fields, and the SOQL it sends.

The package's conventional API names are defaults; a partner's org may differ, so `Layout.resolve`
matches every wanted field against the org's `describe` (by API name, then by the package's label)
and honours the `field_names` overrides of the config. Raw records always carry the conventional
names, so one mapping file serves every partner.

Each query is built by one function a test can call on its own:

    layout = Layout.conventional()
    soql = case_query(layout, window, subqueries=True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, NamedTuple

from connector.sources.cursor import load_versioned, unreadable

# role -> conventional object API name
OBJECTS = {
    "case": "Case",
    "contact": "Contact",
    "connected": "Connected_Person_or_Organisation__c",
    "event": "Event",
    "task": "Task",
    "support_plan": "Support_Plan__c",
}
# child role -> (conventional child relationship name on Case, reference field to the Case, raw key)
CHILD_ROLES = {
    "connected": ("Connected_Persons_or_Organisations__r", "Case__c", "perpetrators"),
    "event": ("Events", "WhatId", "events"),
    "task": ("Tasks", "WhatId", "events"),  # the package's fields are on Activity: events logged as Tasks too
    "support_plan": ("Support_Plans__r", "Case__c", "support_plans"),
}
class Want(NamedTuple):
    """A field the source reads: its conventional API name, the labels it has had, and its HTCDS name.

    `required` only for the fields the source cannot work without (Ids, stamps, the references that
    join a case's records): everything else is reported as a warning and stays unknown when absent.
    """

    name: str
    labels: tuple[str, ...]
    required: bool = False
    htcds: str | None = None
    lookup: bool = False  # the standard's "Lookup [to ...]": read the related record's Name, never its Id

    @property
    def relationship(self) -> str:
        """The conventional relationship name of a lookup (`Referring_Organisation__r`), the raw key of its `{"Name"}`."""
        return self.name[:-3] + "__r" if self.name.endswith("__c") else self.name.removesuffix("Id")


def _w(name: str, labels: str | tuple[str, ...], htcds: str | None = None, *, required: bool = False, lookup: bool = False) -> Want:
    return Want(name, (labels,) if isinstance(labels, str) else labels, required, htcds, lookup)


# role -> the fields wanted. Labels: the published package's (shared/reference/htcds/
# salesforce_package_contents.md) and the HTCDS 2.0 standard's, which spells "Organization".
# Historic trafficking events: the package's custom fields are on Activity, so Events and Tasks carry the same.
_ACTIVITY = [
    _w("Id", "Activity ID", required=True),
    _w("WhatId", "Related To ID", required=True),
    _w("Type__c", "Type", "hte_Type"),
    _w("Country__c", "Country", "hte_Country"),
    _w("City__c", "City", "hte_City"),
    _w("Date__c", "Date", "hte_Date"),
    _w("State__c", "State", "hte_State"),
]

FIELDS: dict[str, list[Want]] = {
    "case": [
        _w("Id", "Case ID", required=True),
        _w("CaseNumber", "Case Number"),
        _w("IsDeleted", "Deleted", required=True),
        _w("CreatedDate", "Created Date", "ext_RegistrationDate", required=True),
        _w("LastModifiedDate", "Last Modified Date", required=True),
        _w("SystemModstamp", "System Modstamp", required=True),
        _w("ContactId", "Contact ID", required=True),
        _w("Status", "Status", "cas_Status"),
        _w("Agreement_to_Manage_Personal_Data__c", "Agreement to Manage Personal Data", "con_Consent"),
        _w("Trafficking_Status__c", "Trafficking Status", "vic_TraffickingStatus"),
        _w(
            "Trafficking_Status_Decision_Making_Org__c",
            ("Trafficking Status Decision Making Organisation", "Trafficking Status Decision Making Organization", "Trafficking Status Decision Making Org"),
            "vic_TraffickingStatusDecisionMakingOrg",
        ),
        _w("Relationship_to_Trafficker__c", "Relationship to Trafficker", "vic_RelationshipToTrafficker"),
        _w("Method_of_Recruitment__c", "Method of Recruitment", "vic_MethodOfRecruitment"),
        _w("Location_of_Recruitment__c", "Location of Recruitment", "vic_LocationOfRecruitment", lookup=True),
        _w("Methods_of_Control__c", "Methods of Control", "vic_MethodsOfControl"),
        _w("Type_of_Exploitation__c", "Type of Exploitation", "vic_TypeOfExploitation"),
        _w("Type_of_Sex_Exploitation__c", "Type of Sex Exploitation", "vic_TypeOfSexExploitation"),
        _w("Forced_Labour_Industry__c", ("Forced Labour Industry", "Forced Labor Industry"), "vic_ForcedLabourIndustry"),
        _w("Incoming_Referral_Date__c", "Incoming Referral Date", "cas_IncomingReferralDate"),
        _w("Reason_for_Incoming_Referral__c", "Reason for Incoming Referral", "cas_ReasonForIncomingReferral"),
        _w("Incoming_Referral_Details__c", "Incoming Referral Details", "cas_IncomingReferralDetails"),
        _w("Referring_Organisation__c", ("Referring Organisation", "Referring Organization"), "cas_ReferringOrganisation", lookup=True),
        _w("Referring_Primary_Case_Worker__c", "Referring Primary Case Worker", "cas_ReferringPrimaryCaseWorker", lookup=True),
        _w("Outgoing_Referral_Date__c", "Outgoing Referral Date", "cas_OutgoingReferralDate"),
        _w("Reason_for_Outgoing_Referral__c", "Reason for Outgoing Referral", "cas_ReasonForOutgoingReferral"),
        _w("Outgoing_Referral_Details__c", "Outgoing Referral Details", "cas_OutgoingReferralDetails"),
        _w("Referred_Organisation__c", ("Referred Organisation", "Referred Organization"), "cas_ReferredOrganisation", lookup=True),
        _w("Referred_Primary_Case_Worker__c", "Referred Primary Case Worker", "cas_ReferredPrimaryCaseWorker", lookup=True),
        _w("Reason_for_Case_Closure__c", "Reason for Case Closure", "cas_ReasonForCaseClosure"),
        _w("Vulnerabilities__c", "Vulnerabilities", "vic_Vulnerabilities"),
        _w("Recruitment_Websites_and_Apps__c", "Recruitment Websites and Apps", "vic_RecruitmentWebsitesAndApps"),
        _w("Exploitation_Websites_and_Apps__c", "Exploitation Websites and Apps", "vic_ExploitationWebsitesAndApps"),
    ],
    "contact": [
        _w("Id", "Contact ID", required=True),
        _w("SystemModstamp", "System Modstamp", required=True),
        _w("Salutation", "Salutation", "prs_Salutation"),
        _w("FirstName", "First Name", "prs_FirstName"),
        _w("LastName", "Last Name", "prs_SecondName"),
        _w("Title", "Title", "prs_Title"),
        _w("Birthdate", "Birthdate", "prs_Birthdate"),
        _w("Email", "Email", "prs_Email"),
        _w("MobilePhone", "Mobile Phone", "prs_MobilePhone"),
        _w("Mobile_Phone__c", "Mobile Phone", "prs_MobilePhone"),  # the package's own: a direct identifier too
        _w("HomePhone", "Home Phone", "prs_HomePhone"),
        _w("MailingStreet", "Mailing Street", "prs_MailingStreet"),
        _w("MailingCity", "Mailing City", "prs_MailingCity"),
        _w("MailingState", "Mailing State/Province", "prs_MailingState"),
        _w("MailingPostalCode", "Mailing Zip/Postal Code", "prs_MailingPostalCode"),
        _w("MailingCountry", "Mailing Country", "prs_MailingCountry"),
        _w("Gender__c", "Gender", "prs_Gender"),
        _w("Nationality__c", "Nationality", "prs_Citizenship"),
        _w("Identity_Number__c", "Identity Number", "prs_IdentityNumber"),
        _w("Deceased__c", "Deceased"),
    ],
    "connected": [
        _w("Id", "Record ID", required=True),
        _w("Case__c", "Case", required=True),
        _w("Type__c", "Type", "ext_RecruiterRelation"),
        _w("Role_in_Process__c", "Role in Process", "ext_PerpetratorRoles"),
        _w("Money_Paid__c", ("Money Paid or Received", "Money Paid", "Money Received"), "per_MoneyPaid"),  # not in the package: a partner's field
        _w("Connected_Contact__c", "Connected Contact"),
        _w("Connected_Organistion__c", ("Connected Organistion", "Connected Organisation", "Connected Organization")),
    ],
    "event": list(_ACTIVITY),
    "task": list(_ACTIVITY),
    "support_plan": [
        _w("Id", "Record ID", required=True),
        _w("Case__c", "Case", required=True),
        _w("Type__c", "Type", "spl_Type"),
        _w("Planned_End_Date__c", "Planned End Date", "spl_PlannedEndDate"),
        _w("Actual_End_Date__c", "Actual End Date", "spl_ActualEndDate"),
        _w("Objectives__c", "Objectives", "spl_Objectives"),
    ],
}
# The perpetrator's person details live on their Contact (the row's Connected Contact lookup): read
# through the relationship, under the Contact's conventional names, as `Connected_Contact` on the row.
# SOQL allows child-to-parent paths inside a parent-to-child subquery ("Using Relationship Queries",
# SOQL and SOSL Reference: `SELECT Name, (SELECT CreatedBy.Name FROM Notes) FROM Account`), and a
# custom lookup `X__c` is traversed as `X__r` ("Understanding Relationship Names").
CONNECTED_PERSON = ("Gender__c", "Birthdate", "Nationality__c")
CONNECTED_PERSON_KEY = "Connected_Contact"
OWNER_NAME = "Owner.Name"  # the case owner's name, through the standard Owner relationship
VICTIM_TYPE = "victim"  # a connected person row of this Type__c is a further victim


def _fold(text: str) -> str:
    """Label comparison key: case, spaces and punctuation do not matter."""
    return re.sub(r"[^0-9a-z]+", "", text.casefold())


def _names_htcds(text: str | None, htcds: str) -> bool:
    """Whether a help text or description names the HTCDS field, with or without its prefix."""
    if not text:
        return False
    bare = htcds.split("_", 1)[1] if "_" in htcds else htcds
    return re.search(rf"(?<![A-Za-z0-9_])(?:{re.escape(htcds)}|{re.escape(bare)})(?![A-Za-z0-9_])", text, re.IGNORECASE) is not None


@dataclass
class Layout:
    """The org's actual object, relationship and field names for each conventional one.

    `fields[role]` maps conventional name -> actual API name (only fields the org has and the user
    can read); `missing[role]` lists conventional names found nowhere; `found_how[role]` says how
    each was found (`API name`, `label`, `help text`, `field_names`); `types[role]` holds the
    describe type of each actual field (to read Bulk CSV strings back into JSON types).
    """

    objects: dict[str, str] = field(default_factory=lambda: dict(OBJECTS))
    relationships: dict[str, str] = field(default_factory=lambda: {role: spec[0] for role, spec in CHILD_ROLES.items()})
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    found_how: dict[str, dict[str, str]] = field(default_factory=dict)
    types: dict[str, dict[str, str]] = field(default_factory=dict)
    lookups: dict[str, str] = field(default_factory=dict)  # Case lookup (conventional) -> the org's relationship name
    _names: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)  # conventional_names, per role
    _renamed: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)  # renamer, per role

    @classmethod
    def conventional(cls) -> "Layout":
        layout = cls()
        for role, wants in FIELDS.items():
            layout.fields[role] = {w.name: w.name for w in wants}
            layout.types[role] = {}
        return layout

    def resolve(self, role: str, describe: dict[str, Any], overrides: dict[str, str]) -> None:
        """Match the wanted fields of `role` against its describe result (readable fields only).

        The package's metadata is not public and partners add their own fields, so a wanted field
        is found by (1) the API name `field_names` gives, else the conventional one, (2) one of its
        labels, (3) its HTCDS name in the field's help text or description. A label or help text
        that matches several fields finds none: the partner names it in `field_names`.
        """
        described = describe.get("fields", [])
        by_name = {f["name"].lower(): f for f in described}
        obj = self.objects[role]
        self.fields[role] = {}
        self._names.pop(role, None)
        self._renamed.pop(role, None)
        self.missing[role] = []
        self.found_how[role] = {}
        self.types[role] = {f["name"]: f.get("type", "string") for f in described}
        taken = {w.name.lower() for w in FIELDS[role]} | {v.lower() for v in overrides.values()}
        for want in FIELDS[role]:
            override = overrides.get(f"{obj}.{want.name}") or overrides.get(f"{OBJECTS[role]}.{want.name}")
            found, how = by_name.get((override or want.name).lower()), ("field_names" if override else "API name")
            if found is None and not override:
                labels = {_fold(label) for label in want.labels}
                candidates = [f for f in described if _fold(str(f.get("label", ""))) in labels and bool(f.get("custom")) == want.name.endswith("__c") and f["name"].lower() not in taken]
                found, how = (candidates[0], "label") if len(candidates) == 1 else (None, how)
            if found is None and not override and want.htcds:
                candidates = [
                    f for f in described if f["name"].lower() not in taken and (_names_htcds(f.get("inlineHelpText"), want.htcds) or _names_htcds(f.get("description"), want.htcds))
                ]
                found, how = (candidates[0], "help text") if len(candidates) == 1 else (None, how)
            if found is None:
                self.missing[role].append(want.name)
            else:
                self.fields[role][want.name] = found["name"]
                self.found_how[role][want.name] = how
                taken.add(found["name"].lower())
                if role == "case" and want.lookup and found.get("type") == "reference" and found.get("relationshipName"):
                    self.lookups[want.name] = found["relationshipName"]
        if role == "case":
            self.resolve_relationships(describe)

    def resolve_relationships(self, describe: dict[str, Any]) -> None:
        """Find each child relationship on Case: the configured name, else the one over the child's reference field."""
        relations = describe.get("childRelationships", [])
        names = {str(r.get("relationshipName")) for r in relations}
        for role, (_, ref, _) in CHILD_ROLES.items():
            if self.relationships[role] in names:
                continue
            for rel in relations:
                if rel.get("childSObject") == self.objects[role] and str(rel.get("field", "")).lower() == ref.lower() and rel.get("relationshipName"):
                    self.relationships[role] = rel["relationshipName"]
                    break

    def actual(self, role: str, name: str) -> str | None:
        return self.fields.get(role, {}).get(name)

    def select(self, role: str, prefix: str = "") -> list[str]:
        return [prefix + actual for actual in self.fields[role].values()]

    def conventional_names(self, role: str) -> dict[str, str]:
        """actual API name (lower case) -> conventional name, to rename raw values (built once per
        role: every record of a pull is renamed with it; `resolve` starts it afresh)."""
        names = self._names.get(role)
        if names is None:
            names = self._names[role] = {actual.lower(): name for name, actual in self.fields[role].items()}
        return names

    def rename(self, role: str, rec: dict[str, Any]) -> dict[str, Any]:
        """A record's plain values under conventional names (no `attributes`, no nested records).

        Records of one pull repeat the same keys, so each key's name is found once (`conventional_names`
        by its lower case) and remembered as the API wrote it."""
        known = self._renamed.get(role)
        if known is None:
            known = self._renamed[role] = {}
        out: dict[str, Any] = {}
        for key, value in rec.items():
            if key == "attributes" or isinstance(value, dict):
                continue
            name = known.get(key)
            if name is None:
                name = known[key] = self.conventional_names(role).get(key.lower(), key)
            out[name] = value
        return out

    def required_missing(self) -> list[tuple[str, str]]:
        wanted = {role: {w.name for w in wants if w.required} for role, wants in FIELDS.items()}
        return [(self.objects[role], name) for role, names in self.missing.items() for name in names if name in wanted[role]]

    def field_map(self) -> list[str]:
        """One line per wanted field with an HTCDS name: `HTCDS name <- Object.ApiName (how found)`."""
        lines = []
        for role, wants in FIELDS.items():
            obj = self.objects[role]
            for want in wants:
                if not want.htcds:
                    continue
                actual = self.actual(role, want.name)
                how = self.found_how.get(role, {}).get(want.name, "?")
                if actual and role == "case" and want.name in self.lookups:
                    actual, how = f"{actual} -> {self.lookups[want.name]}.Name", f"{how}; a lookup: its record's Name"
                where = f"{obj}.{actual} ({how})" if actual else "not found: stays unknown"
                lines.append(f"{want.htcds} <- {where}")
        return lines


# -- literals and cursors ----------------------------------------------------------------------------


def soql_datetime(value: datetime) -> str:
    """A SOQL datetime literal (UTC, second precision: Salesforce stores no finer)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_sf_datetime(text: str) -> datetime:
    """`2024-01-31T10:00:00.000+0000` (REST) or `...000Z` (Bulk CSV) -> aware UTC datetime."""
    text = text.strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


CURSOR_VERSION = 1  # `{"v": 1, "ts", "id"}`; a cursor without "v" is the same format, written before it had one


@dataclass(frozen=True)
class Cursor:
    """Where the last stored page ended: the cursor field's value and the Id, as `{"v", "ts", "id"}`."""

    ts: datetime
    id: str = ""

    def dumps(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "ts": soql_datetime(self.ts), "id": self.id}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None, where: str = "source ?") -> "Cursor | None":
        """The stored cursor, or a SourceError naming the source and how to reset it (never a crash)."""
        if not text:
            return None
        data = load_versioned(text, where, (CURSOR_VERSION,))
        if not isinstance(data.get("ts"), str) or not isinstance(data.get("id", ""), str):
            raise unreadable(where, 'no "ts" timestamp')
        try:
            return cls(parse_sf_datetime(data["ts"]), data.get("id", ""))
        except ValueError:
            raise unreadable(where, f"timestamp {data['ts'][:40]!r} is not a Salesforce datetime") from None


@dataclass(frozen=True)
class Window:
    """The slice of cases one run reads: after `cursor` (less the lookback), up to `upper`."""

    cursor_field: str
    after: Cursor | None
    lookback: timedelta
    upper: datetime | None

    def lower_bound(self) -> datetime | None:
        return None if self.after is None else self.after.ts - self.lookback

    def related_strict(self) -> bool:
        """After an end-of-run cursor (no Id) without lookback, everything at `ts` itself is stored."""
        return self.after is not None and not self.after.id and self.lookback == timedelta(0)

    def condition(self, prefix: str = "") -> str:
        f = prefix + self.cursor_field
        parts = []
        if self.after is not None:
            if self.lookback > timedelta(0):
                parts.append(f"{f} >= {soql_datetime(self.after.ts - self.lookback)}")
            elif not self.after.id:  # the end-of-run cursor: everything up to `ts` is stored
                parts.append(f"{f} > {soql_datetime(self.after.ts)}")
            else:
                ts = soql_datetime(self.after.ts)
                parts.append(f"({f} > {ts} OR ({f} = {ts} AND {prefix}Id > {soql_string(self.after.id)}))")
        if self.upper is not None:
            parts.append(f"{f} <= {soql_datetime(self.upper)}")
        return " AND ".join(parts)


# -- queries -------------------------------------------------------------------------------------------


def _where(*conditions: str) -> str:
    kept = [c for c in conditions if c]
    return (" WHERE " + " AND ".join(kept)) if kept else ""


def case_fields(layout: Layout, with_owner: bool = True) -> list[str]:
    """The Case's fields, its victim's, the owner's name and each lookup's related Name (`X__r.Name`)."""
    fields = layout.select("case") + [f"{relationship}.Name" for relationship in layout.lookups.values()] + layout.select("contact", "Contact.")
    if with_owner:
        fields.append(OWNER_NAME)
    return fields


def connected_person_relationship(layout: Layout) -> str | None:
    """The relationship name of the Connected Contact lookup (`X__c` -> `X__r`), None if the org lacks it."""
    ref = layout.actual("connected", "Connected_Contact__c")
    if ref is None:
        return None
    return ref[:-3] + "__r" if ref.endswith("__c") else ref.removesuffix("Id")


def child_fields(layout: Layout, role: str) -> list[str]:
    """A child object's fields; for a connected person also their Contact's gender, birth date, nationality."""
    fields = layout.select(role)
    relationship = connected_person_relationship(layout) if role == "connected" else None
    if relationship:
        fields += [f"{relationship}.{actual}" for name in CONNECTED_PERSON if (actual := layout.actual("contact", name))]
    return fields


def child_subquery(layout: Layout, role: str) -> str:
    """A child relationship's live rows: the case query runs under queryAll, which returns deleted
    rows for the whole query, subqueries included, so the subquery filters them itself."""
    return f"(SELECT {', '.join(child_fields(layout, role))} FROM {layout.relationships[role]} WHERE IsDeleted = false ORDER BY Id)"


def case_query(layout: Layout, window: Window, *, subqueries: bool, extra: str = "", ordered: bool = True) -> str:
    """The main incremental query: cases in the window, ordered by cursor field then Id.

    `ordered=False` for Bulk API 2.0: Salesforce documents that ORDER BY disables PK chunking for a
    Bulk 2.0 query and risks query timeouts ("Troubleshooting Query Timeouts", Bulk API 2.0 guide),
    so the source orders those rows itself (`salesforce_bulk.CaseSpool`).
    """
    fields = case_fields(layout)
    if subqueries:
        fields += [child_subquery(layout, role) for role in CHILD_ROLES]
    order = f" ORDER BY {window.cursor_field}, Id" if ordered else ""
    return f"SELECT {', '.join(fields)} FROM {layout.objects['case']}{_where(window.condition(), extra)}{order}"


def count_query(layout: Layout, window: Window) -> str:
    return f"SELECT COUNT() FROM {layout.objects['case']}{_where(window.condition())}"


def cases_by_id_query(layout: Layout, ids: Iterable[str], *, before: datetime | None, cursor_field: str, subqueries: bool) -> str:
    """Cases whose related records changed: by Id, only those the main window will not read anyway."""
    fields = case_fields(layout)
    if subqueries:
        fields += [child_subquery(layout, role) for role in CHILD_ROLES]
    id_list = ", ".join(soql_string(i) for i in ids)
    older = f"{cursor_field} <= {soql_datetime(before)}" if before is not None else ""  # the main window reads the rest
    return f"SELECT {', '.join(fields)} FROM {layout.objects['case']}{_where(f'Id IN ({id_list})', older)} ORDER BY {cursor_field}, Id"


def children_by_case_query(layout: Layout, role: str, case_ids: Iterable[str]) -> str:
    """One child object's rows for a chunk of cases (the keyed alternative to subqueries)."""
    ref = layout.actual(role, CHILD_ROLES[role][1]) or CHILD_ROLES[role][1]
    id_list = ", ".join(soql_string(i) for i in case_ids)
    return f"SELECT {', '.join(child_fields(layout, role))} FROM {layout.objects[role]} WHERE {ref} IN ({id_list}) AND IsDeleted = false ORDER BY {ref}, Id"


def children_in_window_query(layout: Layout, role: str, window: Window) -> str:
    """One child object's rows for every case of the window (Bulk: a semi-join, no subqueries, no ORDER BY)."""
    ref = layout.actual(role, CHILD_ROLES[role][1]) or CHILD_ROLES[role][1]
    inner = f"SELECT Id FROM {layout.objects['case']}{_where(window.condition())}"
    return f"SELECT {', '.join(child_fields(layout, role))} FROM {layout.objects[role]} WHERE {ref} IN ({inner}) AND IsDeleted = false"


def changed_children_query(layout: Layout, role: str, since: datetime, upper: datetime | None, cursor_field: str, strict: bool = False) -> str:
    """Case Ids of child rows changed (or deleted: run with queryAll) since `since`."""
    ref = layout.actual(role, CHILD_ROLES[role][1]) or CHILD_ROLES[role][1]
    bounds = [f"{cursor_field} {'>' if strict else '>='} {soql_datetime(since)}"]
    if upper is not None:
        bounds.append(f"{cursor_field} <= {soql_datetime(upper)}")
    return f"SELECT {ref} FROM {layout.objects[role]}{_where(*bounds)}"


def changed_contacts_query(layout: Layout, since: datetime, upper: datetime | None, cursor_field: str, strict: bool = False) -> str:
    """Ids of cases whose victim Contact changed since `since` (the Case itself did not)."""
    bounds = [f"Contact.{cursor_field} {'>' if strict else '>='} {soql_datetime(since)}"]
    if upper is not None:
        bounds.append(f"Contact.{cursor_field} <= {soql_datetime(upper)}")
    return f"SELECT Id FROM {layout.objects['case']}{_where(*bounds)}"


def orphan_contacts_query(layout: Layout) -> str:
    """Contacts with a gender or nationality (person records) that no Case points to."""
    gender = layout.actual("contact", "Gender__c") or "Gender__c"
    connected = layout.actual("connected", "Connected_Contact__c") or "Connected_Contact__c"
    return (
        f"SELECT COUNT() FROM {layout.objects['contact']} WHERE {gender} != null AND Id NOT IN (SELECT ContactId FROM {layout.objects['case']})"
        f" AND Id NOT IN (SELECT {connected} FROM {layout.objects['connected']})"
    )
