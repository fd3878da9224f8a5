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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

# role -> conventional object API name
OBJECTS = {
    "case": "Case",
    "contact": "Contact",
    "connected": "Connected_Person_or_Organisation__c",
    "event": "Event",
    "support_plan": "Support_Plan__c",
}
# child role -> (conventional child relationship name on Case, reference field to the Case, raw key)
CHILD_ROLES = {
    "connected": ("Connected_Persons_or_Organisations__r", "Case__c", "perpetrators"),
    "event": ("Events", "WhatId", "events"),
    "support_plan": ("Support_Plans__r", "Case__c", "support_plans"),
}
# role -> [(conventional API name, package label, required by the mapping)]
FIELDS: dict[str, list[tuple[str, str, bool]]] = {
    "case": [
        ("Id", "Case ID", True),
        ("CaseNumber", "Case Number", True),
        ("IsDeleted", "Deleted", True),
        ("CreatedDate", "Created Date", True),
        ("LastModifiedDate", "Last Modified Date", True),
        ("SystemModstamp", "System Modstamp", True),
        ("ContactId", "Contact ID", True),
        ("Status", "Status", True),
        ("Agreement_to_Manage_Personal_Data__c", "Agreement to Manage Personal Data", True),
        ("Trafficking_Status__c", "Trafficking Status", True),
        ("Trafficking_Status_Decision_Making_Org__c", "Trafficking Status Decision Making Organisation", True),
        ("Relationship_to_Trafficker__c", "Relationship to Trafficker", True),
        ("Method_of_Recruitment__c", "Method of Recruitment", True),
        ("Methods_of_Control__c", "Methods of Control", True),
        ("Type_of_Exploitation__c", "Type of Exploitation", True),
        ("Type_of_Sex_Exploitation__c", "Type of Sex Exploitation", True),
        ("Forced_Labour_Industry__c", "Forced Labour Industry", True),
        ("Incoming_Referral_Date__c", "Incoming Referral Date", True),
        ("Reason_for_Incoming_Referral__c", "Reason for Incoming Referral", True),
        ("Incoming_Referral_Details__c", "Incoming Referral Details", True),
        ("Referring_Organisation__c", "Referring Organisation", True),
        ("Referring_Primary_Case_Worker__c", "Referring Primary Case Worker", True),
        ("Outgoing_Referral_Date__c", "Outgoing Referral Date", True),
        ("Reason_for_Outgoing_Referral__c", "Reason for Outgoing Referral", True),
        ("Outgoing_Referral_Details__c", "Outgoing Referral Details", True),
        ("Referred_Organisation__c", "Referred Organisation", True),
        ("Referred_Primary_Case_Worker__c", "Referred Primary Case Worker", True),
        ("Reason_for_Case_Closure__c", "Reason for Case Closure", True),
        ("Vulnerabilities__c", "Vulnerabilities", False),
        ("Recruitment_Websites_and_Apps__c", "Recruitment Websites and Apps", False),
        ("Exploitation_Websites_and_Apps__c", "Exploitation Websites and Apps", False),
    ],
    "contact": [
        ("Id", "Contact ID", True),
        ("SystemModstamp", "System Modstamp", True),
        ("Salutation", "Salutation", True),
        ("FirstName", "First Name", True),
        ("LastName", "Last Name", True),
        ("Title", "Title", True),
        ("Birthdate", "Birthdate", True),
        ("Email", "Email", True),
        ("MobilePhone", "Mobile Phone", True),
        ("HomePhone", "Home Phone", True),
        ("MailingStreet", "Mailing Street", True),
        ("MailingCity", "Mailing City", True),
        ("MailingState", "Mailing State/Province", True),
        ("MailingPostalCode", "Mailing Zip/Postal Code", True),
        ("MailingCountry", "Mailing Country", True),
        ("Gender__c", "Gender", True),
        ("Nationality__c", "Nationality", True),
        ("Identity_Number__c", "Identity Number", True),
        ("Deceased__c", "Deceased", False),
    ],
    "connected": [
        ("Id", "Record ID", True),
        ("Case__c", "Case", True),
        ("Type__c", "Type", True),
        ("Role_in_Process__c", "Role in Process", True),
        ("Connected_Contact__c", "Connected Contact", False),
        ("Connected_Organistion__c", "Connected Organistion", False),
    ],
    "event": [
        ("Id", "Activity ID", True),
        ("WhatId", "Related To ID", True),
        ("Type__c", "Type", True),
        ("Country__c", "Country", True),
        ("City__c", "City", True),
        ("Date__c", "Date", True),
        ("State__c", "State", False),
    ],
    "support_plan": [
        ("Id", "Record ID", True),
        ("Case__c", "Case", True),
        ("Type__c", "Type", True),
        ("Planned_End_Date__c", "Planned End Date", True),
        ("Actual_End_Date__c", "Actual End Date", False),
        ("Objectives__c", "Objectives", False),
    ],
}
OWNER_NAME = "Owner.Name"  # the case owner's name, through the standard Owner relationship
VICTIM_TYPE = "victim"  # a connected person row of this Type__c is a further victim


@dataclass
class Layout:
    """The org's actual object, relationship and field names for each conventional one.

    `fields[role]` maps conventional name -> actual API name (only fields the org has and the user
    can read); `missing[role]` lists conventional names found nowhere; `types[role]` holds the
    describe type of each actual field (to read Bulk CSV strings back into JSON types).
    """

    objects: dict[str, str] = field(default_factory=lambda: dict(OBJECTS))
    relationships: dict[str, str] = field(default_factory=lambda: {role: spec[0] for role, spec in CHILD_ROLES.items()})
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    found_by_label: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    types: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def conventional(cls) -> "Layout":
        layout = cls()
        for role, specs in FIELDS.items():
            layout.fields[role] = {name: name for name, _, _ in specs}
            layout.types[role] = {}
        return layout

    def resolve(self, role: str, describe: dict[str, Any], overrides: dict[str, str]) -> None:
        """Match the wanted fields of `role` against its describe result (readable fields only)."""
        by_name = {f["name"].lower(): f for f in describe.get("fields", [])}
        by_label: dict[str, list[dict[str, Any]]] = {}
        for f in describe.get("fields", []):
            by_label.setdefault(str(f.get("label", "")).lower(), []).append(f)
        obj = self.objects[role]
        self.fields[role] = {}
        self.missing[role] = []
        self.found_by_label[role] = []
        self.types[role] = {f["name"]: f.get("type", "string") for f in describe.get("fields", [])}
        for name, label, _ in FIELDS[role]:
            wanted = overrides.get(f"{obj}.{name}") or overrides.get(f"{OBJECTS[role]}.{name}") or name
            found = by_name.get(wanted.lower())
            if found is None and wanted == name:
                candidates = [f for f in by_label.get(label.lower(), []) if f.get("custom") == name.endswith("__c")]
                if len(candidates) == 1:
                    found = candidates[0]
                    self.found_by_label[role].append((name, found["name"]))
            if found is None:
                self.missing[role].append(name)
            else:
                self.fields[role][name] = found["name"]
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
        """actual API name (lower case) -> conventional name, to rename raw values."""
        return {actual.lower(): name for name, actual in self.fields[role].items()}

    def required_missing(self) -> list[tuple[str, str]]:
        wanted = {role: {name for name, _, required in specs if required} for role, specs in FIELDS.items()}
        return [(self.objects[role], name) for role, names in self.missing.items() for name in names if name in wanted[role]]


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


@dataclass(frozen=True)
class Cursor:
    """Where the last stored page ended: the cursor field's value and the Id, as `{"ts", "id"}`."""

    ts: datetime
    id: str = ""

    def dumps(self) -> str:
        return json.dumps({"ts": soql_datetime(self.ts), "id": self.id}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> "Cursor | None":
        if not text:
            return None
        data = json.loads(text)
        return cls(parse_sf_datetime(data["ts"]), data.get("id", ""))


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
    fields = layout.select("case") + layout.select("contact", "Contact.")
    if with_owner:
        fields.append(OWNER_NAME)
    return fields


def child_subquery(layout: Layout, role: str) -> str:
    return f"(SELECT {', '.join(layout.select(role))} FROM {layout.relationships[role]} ORDER BY Id)"


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
    return f"SELECT {', '.join(layout.select(role))} FROM {layout.objects[role]} WHERE {ref} IN ({id_list}) ORDER BY {ref}, Id"


def children_in_window_query(layout: Layout, role: str, window: Window) -> str:
    """One child object's rows for every case of the window (Bulk: a semi-join, no subqueries, no ORDER BY)."""
    ref = layout.actual(role, CHILD_ROLES[role][1]) or CHILD_ROLES[role][1]
    inner = f"SELECT Id FROM {layout.objects['case']}{_where(window.condition())}"
    return f"SELECT {', '.join(layout.select(role))} FROM {layout.objects[role]} WHERE {ref} IN ({inner})"


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
