"""Reproducible, realistic and deliberately messy trafficking cases: the one source of test truth.

Every sandbox (the Excel demo, the Salesforce, ODK Central and KoboToolbox servers) serves cases made
here, and every end-to-end test compares what came out of the pipeline with `expected_fields` and
`expected_rejections` of the same cases. So the clean truth (`GeneratedCase.victim`, `.case`, ...)
and the mess a source must apply when it renders a value (`GeneratedCase.mess`, `render`) live
together, and no source invents its own data.

Use:
    cases = generate_cases(1000, seed=7)
    later = evolve(cases, seed=8)            # edits, new cases, deletions

Where the joint distributions come from (rough shapes, not estimates; fake people throughout):
- UNODC Global Report on Trafficking in Persons 2022/2024: detected victims are mostly women and
  girls for sexual exploitation, mostly men for forced labour; children are about a third of
  detected victims worldwide (we use ~23 %, closer to CTDC's case-management data).
- ILO / Walk Free / IOM, Global Estimates of Modern Slavery 2022: forced labour concentrated in
  agriculture/fishing, construction, manufacturing, domestic work and hospitality; forced commercial
  sexual exploitation about four in five women and girls; debt bondage and withheld wages the most
  common means of coercion.
- CTDC global k-anonymized dataset (IOM, 2021): means-of-control multi-selects of 2-4 items, a
  large share of domestic cases, recruiter relations (intimate partner, friend, family, other).
- Perpetrators and duration (CTDC global victim-perpetrator data and UNODC GLOTIP 2022 in rough
  shape): most recruiters are men in their thirties or forties, of the victim's own citizenship
  when they are family, partners or friends; family recruiters often sell the person on and
  intimate partners control them; money changes hands mostly where someone is sold, bought or
  brokered. Forced marriage and domestic servitude last longest, then labour, then sexual
  exploitation; begging and organ removal are short.
- US TIP Report country narratives for the corridors: UA->PL, NG->IT (via NE/LY), PH->SA, ET->SA
  (domestic work), MM->TH and KH->TH (fishing, agriculture, construction), RO->GB, VN->GB
  (cannabis farms, nail bars), VE->CO, NP->IN, SY->TR, and domestic cases in US, PH (online sexual
  exploitation of children), IN (bonded labour), NG, UA, TH.

Determinism: everything is drawn from one `random.Random(seed)`; no global random state, no clock.
The perpetrators' person details are drawn from a second generator seeded by the case's own
values, so adding them did not shift any earlier draw (every older value is as it was).
Mess that a source applies at render time is a pure function of (case id, field), so two sources
rendering the same case produce the same messy text.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import random
import unicodedata
import zlib
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, Iterable

# -- mess ---------------------------------------------------------------------------------------

SPACES_CASE = "spaces_case"
DATE_FORMAT = "date_format"
BLANK = "blank"
UNKNOWN_CODE = "unknown_code"
FREE_TEXT = "free_text"
MESS_KINDS = (SPACES_CASE, DATE_FORMAT, BLANK, UNKNOWN_CODE, FREE_TEXT)

_CODED = (SPACES_CASE, BLANK, UNKNOWN_CODE, FREE_TEXT)
# Which fields a source may mess up, and how. Keys are common-schema field names; the country of
# exploitation is rendered from the first Exploitation event under `vic_LocationOfExploitation`.
# `cas_IncomingReferralDate` only changes format: it is the registration date of sources without
# a creation time (the Excel template), so it must survive mapping.
MESSABLE: dict[str, tuple[str, ...]] = {
    "prs_Gender": _CODED,
    "prs_Citizenship": (SPACES_CASE, BLANK, UNKNOWN_CODE),
    "prs_MailingCountry": (SPACES_CASE, BLANK, UNKNOWN_CODE),
    "prs_Birthdate": (DATE_FORMAT, BLANK, FREE_TEXT),
    "con_Consent": (SPACES_CASE, BLANK, FREE_TEXT),
    "vic_TraffickingStatus": _CODED,
    "vic_TraffickingStatusDecisionMakingOrg": _CODED,
    "vic_MethodOfRecruitment": _CODED,
    "vic_MethodsOfControl": _CODED,
    "vic_TypeOfExploitation": _CODED,
    "vic_ForcedLabourIndustry": _CODED,
    "vic_TypeOfSexExploitation": _CODED,
    "vic_RelationshipToTrafficker": _CODED,
    "vic_LocationOfExploitation": (SPACES_CASE, BLANK, UNKNOWN_CODE),
    "cas_Status": _CODED,
    "cas_ReasonForIncomingReferral": _CODED,
    "cas_ReasonForOutgoingReferral": _CODED,
    "cas_IncomingReferralDate": (DATE_FORMAT,),
    "cas_OutgoingReferralDate": (DATE_FORMAT, BLANK),
}
MULTI_FIELDS = frozenset(
    {"prs_Citizenship", "vic_MethodOfRecruitment", "vic_MethodsOfControl", "vic_TypeOfExploitation", "vic_TypeOfSexExploitation"}
)
DATE_FIELDS = frozenset({"prs_Birthdate", "cas_IncomingReferralDate", "cas_OutgoingReferralDate"})
COUNTRY_FIELDS = frozenset({"prs_Citizenship", "prs_MailingCountry", "vic_LocationOfExploitation"})

VICTIM_FIELDS = (
    "prs_Salutation", "prs_FirstName", "prs_SecondName", "prs_Birthdate", "prs_Gender", "prs_Citizenship",
    "prs_Email", "prs_HomePhone", "prs_MobilePhone", "prs_MailingStreet", "prs_MailingCity", "prs_MailingState",
    "prs_MailingPostalCode", "prs_MailingCountry", "prs_Title", "prs_IdentityNumber",
)  # fmt: skip
CASE_FIELDS = (
    "con_Consent", "vic_TraffickingStatus", "vic_TraffickingStatusDecisionMakingOrg", "vic_MethodOfRecruitment",
    "vic_MethodsOfControl", "vic_TypeOfExploitation", "vic_ForcedLabourIndustry", "vic_TypeOfSexExploitation",
    "vic_RelationshipToTrafficker", "cas_Status", "cas_IncomingReferralDate", "cas_ReasonForIncomingReferral",
    "cas_ReasonForOutgoingReferral", "cas_OutgoingReferralDate", "cas_CaseOwner", "cas_ReferringPrimaryCaseWorker",
    "cas_ReferredPrimaryCaseWorker", "cas_IncomingReferralDetails", "cas_OutgoingReferralDetails",
    "cas_ReasonForCaseClosure", "cas_ReferringOrganisation", "cas_ReferredOrganisation",
)  # fmt: skip
FREE_TEXT_FIELDS = ("cas_IncomingReferralDetails", "cas_OutgoingReferralDetails", "cas_ReasonForCaseClosure")
DIRECT_IDENTIFIERS = (
    "prs_FirstName", "prs_SecondName", "prs_Email", "prs_HomePhone", "prs_MobilePhone", "prs_MailingStreet",
    "prs_IdentityNumber",
)  # fmt: skip
STAFF_FIELDS = ("cas_CaseOwner", "cas_ReferringPrimaryCaseWorker", "cas_ReferredPrimaryCaseWorker")

# -- labels (as on the 'validation' sheet of the HTCDS Excel template; gender from the standard) ----

LABELS: dict[str, dict[str, str]] = {
    "prs_Gender": {
        "Feminine": "Feminine", "Masculine": "Masculine", "TransgenderFeminine": "Transgender Feminine",
        "TransgenderMasculine": "Transgender Masculine", "NonConforming": "Non-Conforming",
        "NonSpecifiedUnknown": "Not Specified/Unknown",
    },
    "vic_TraffickingStatus": {
        "PossibleVictimOfTrafficking": "Possible victim of trafficking",
        "ActualVictimOfTrafficking": "Actual victim of trafficking",
        "NotAVictimOfTrafficking": "Not a victim of trafficking",
    },
    "vic_TraffickingStatusDecisionMakingOrg": {
        "Police": "Police", "NGO": "NGO", "CourtOrProsecution": "Court or prosecution",
        "NonPoliceGovernmentalOrganization": "Non-police governmental organization", "Other": "Other",
    },
    "vic_MethodOfRecruitment": {
        "AtAPlaceOfBusiness": "At a place of business", "AtAnEducationalInstitution": "At an educational institution",
        "AtWork": "At work", "ThroughOnlineSocialNetworks": "Through online social networks",
        "ThroughAnOnlineAdvertisement": "Through an online advertisement",
        "ThroughATelevisionAdvert": "Through a television advert", "ThroughANewspaperAdvert": "Through a newspaper advert",
        "ThroughFamilyOrFamilyEvents": "Through family or family events",
        "ThroughFriendsOrSocialEvents": "Through friends or social events", "Other": "Other",
    },
    "vic_MethodsOfControl": {
        "PhysicalThreats": "Physical threats", "ThreatsLawEnforcement": "Threats of law enforcement",
        "ThreatensChildrenFamily": "Threatens children/family", "DebtBondage": "Debt bondage ",
        "FalsePromises": "False promises", "PhysicalAbuse": "Physical abuse", "SexualAbuse": "Sexual abuse",
        "TakesEarnings": "Takes earnings", "RestrictsFinancialAccess": "Restricts financial access",
        "RestrictsMedicalCare": "Restricts medical care", "WithholdsNecessities": "Withholds necessities",
        "PsychologicalAbuse": "Psychological abuse", "PsychoactiveSubstance": "Psychoactive substance",
        "ExcessiveWorkingHours": "Excessive working hours", "WithholdsDocuments": "Withholds documents", "Other": "Other",
    },
    "vic_TypeOfExploitation": {
        "ForcedLabour": "Forced labour", "SexualExploitation": "Sexual exploitation", "ChildLabour": "Child labour",
        "ForcedMarriage": "Forced marriage", "Servitude": "Servitude",
        "ForcedMilitaryByNonStateActors": "Forced military (by non-state actors)", "OrganRemoval": "Organ removal",
        "ForcedBegging": "Forced begging", "ForcedAdoption": "Forced adoption", "Surrogacy": "Surrogacy", "Other": "Other",
    },
    "vic_ForcedLabourIndustry": {
        "A_AgricultureForestryAndFishing": "Agriculture, forestry and fishing",
        "B_MiningAndQuarrying": "Mining and quarrying", "C_Manufacturing": "Manufacturing",
        "F_Construction": "Construction",
        "G_WholesaleAndRetailTradeRepairOfMotorVehicles": "Wholesale and retail trade; repair of motor vehicles and motorcycles",
        "H_TransportationAndStorage": "Transportation and storage",
        "I_AccommodationAndFoodServiceActivities": "Accommodation and food service activities",
        "S_OtherServiceActivities": "Other service activities",
        "T_ActivitiesOfHouseholdsAsEmployers": "Activities of households as employers; undifferentiated goods- and services- producing activities of households for own use",
    },
    "vic_TypeOfSexExploitation": {
        "Prostitution": "Prostitution", "Pornography": "Pornography",
        "RemoteInteractiveServices": "Remote Interactive Services", "PrivateSexualServices": "Private Sexual Services",
    },
    "vic_RelationshipToTrafficker": {"Familial": "Familial", "Acquainted": "Acquainted", "Unaquainted": "Unaquainted"},
    "cas_Status": {"Active": "Active", "FollowUp": "Follow up", "Closed": "Closed", "ClosedReferred": "Closed Referred"},
    "cas_ReasonForIncomingReferral": {
        "AdditionalServicesRequired": "Additional Services Required",
        "MigrationOrChangeOfLocation": "Migration Or Change Of Location", "Other": "Other",
    },
}  # fmt: skip
LABELS["cas_ReasonForOutgoingReferral"] = LABELS["cas_ReasonForIncomingReferral"]

# -- countries, corridors and people ------------------------------------------------------------


@dataclass(frozen=True)
class Country:
    name: str  # ISO 3166 English short name, as on the template's validation sheet
    culture: str
    phone: str
    cities: tuple[str, ...]
    streets: tuple[str, ...]
    native_share: float = 0.0  # share of names written in the native script


COUNTRIES: dict[str, Country] = {
    "UA": Country("Ukraine", "uk", "380", ("Kyiv", "Lviv", "Odesa", "Kharkiv"), ("vul. Shevchenka", "vul. Franka"), 0.35),
    "PL": Country("Poland", "pl", "48", ("Warszawa", "Kraków", "Wrocław", "Poznań"), ("ul. Polna", "ul. Długa")),
    "NG": Country("Nigeria", "ng", "234", ("Benin City", "Lagos", "Ibadan", "Kano"), ("Airport Road", "Sapele Road")),
    "IT": Country("Italy", "it", "39", ("Palermo", "Torino", "Castel Volturno", "Roma"), ("Via Roma", "Via Garibaldi")),
    "PH": Country("Philippines", "ph", "63", ("Manila", "Cebu City", "Davao City", "Angeles"), ("Rizal Avenue", "Mabini Street")),
    "SA": Country("Saudi Arabia", "ar", "966", ("Riyadh", "Jeddah", "Dammam"), ("King Fahd Road", "Tahlia Street"), 0.3),
    "MM": Country("Myanmar", "my", "95", ("Yangon", "Mawlamyine", "Mandalay"), ("Bogyoke Road", "Strand Road"), 0.45),
    "TH": Country("Thailand", "th", "66", ("Samut Sakhon", "Bangkok", "Songkhla", "Chiang Mai"), ("Soi Sukhumvit 4", "Rama IV Road"), 0.45),
    "RO": Country("Romania", "ro", "40", ("Bucharest", "Craiova", "Iași", "Constanța"), ("Strada Mihai Eminescu", "Bulevardul Unirii")),
    "GB": Country("United Kingdom of Great Britain and Northern Ireland", "en", "44", ("London", "Birmingham", "Manchester", "Glasgow"), ("Station Road", "Mill Lane")),
    "VE": Country("Venezuela (Bolivarian Republic of)", "es", "58", ("Caracas", "Maracaibo", "San Cristóbal"), ("Avenida Bolívar", "Calle Sucre")),
    "CO": Country("Colombia", "es", "57", ("Cúcuta", "Bogotá", "Medellín", "Cartagena"), ("Carrera 7", "Calle 10")),
    "KH": Country("Cambodia", "kh", "855", ("Phnom Penh", "Battambang", "Siem Reap"), ("Street 271", "Norodom Boulevard"), 0.4),
    "ET": Country("Ethiopia", "et", "251", ("Addis Ababa", "Dessie", "Jimma"), ("Bole Road", "Churchill Avenue"), 0.4),
    "VN": Country("Viet Nam", "vn", "84", ("Nghệ An", "Hà Tĩnh", "Hải Phòng", "Hà Nội"), ("Phố Huế", "Đường Lê Lợi")),
    "NP": Country("Nepal", "np", "977", ("Kathmandu", "Sindhupalchok", "Makwanpur"), ("Durbar Marg", "Ring Road"), 0.35),
    "IN": Country("India", "in", "91", ("Kolkata", "Mumbai", "Delhi", "Bhiwandi"), ("MG Road", "Station Road")),
    "SY": Country("Syrian Arab Republic", "ar", "963", ("Aleppo", "Idlib", "Homs"), ("Baron Street", "Shukri al-Quwatli Street"), 0.5),
    "TR": Country("Turkey", "tr", "90", ("Istanbul", "Gaziantep", "Şanlıurfa", "Izmir"), ("Atatürk Caddesi", "İstiklal Caddesi")),
    "US": Country("United States of America", "en", "1", ("Houston", "Atlanta", "Los Angeles", "Newark"), ("Main Street", "Oak Avenue")),
    "LY": Country("Libya", "ar", "218", ("Tripoli", "Sabha", "Zuwara"), ("Omar Mukhtar Street", "Zawiya Road"), 0.5),
    "NE": Country("Niger", "ng", "227", ("Agadez", "Niamey"), ("Route de Tahoua", "Boulevard de la Liberté")),
}

# culture -> (female first names, male first names, family names); each name is (latin, native script or None)
_N = tuple[tuple[str, str | None], ...]
NAMES: dict[str, tuple[_N, _N, _N]] = {
    "uk": (
        (("Olena", "Олена"), ("Iryna", "Ірина"), ("Nataliia", "Наталія"), ("Oksana", "Оксана"), ("Tetiana", "Тетяна")),
        (("Andrii", "Андрій"), ("Oleksandr", "Олександр"), ("Serhii", "Сергій"), ("Dmytro", "Дмитро"), ("Taras", "Тарас")),
        (("Kovalenko", "Коваленко"), ("Shevchenko", "Шевченко"), ("Bondarenko", "Бондаренко"), ("Melnyk", "Мельник"), ("Tkachenko", "Ткаченко")),
    ),
    "pl": (
        (("Katarzyna", None), ("Agnieszka", None), ("Małgorzata", None)),
        (("Piotr", None), ("Tomasz", None), ("Krzysztof", None)),
        (("Nowak", None), ("Kowalski", None), ("Wiśniewski", None), ("Wójcik", None)),
    ),
    "ng": (
        (("Blessing", None), ("Precious", None), ("Favour", None), ("Chioma", None), ("Joyce", None)),
        (("Emeka", None), ("Chinedu", None), ("Tunde", None), ("Ibrahim", None), ("Samuel", None)),
        (("Okafor", None), ("Adeyemi", None), ("Okonkwo", None), ("Nwosu", None), ("Bello", None), ("Osagie", None)),
    ),
    "it": (
        (("Giulia", None), ("Francesca", None), ("Chiara", None)),
        (("Marco", None), ("Luca", None), ("Giuseppe", None)),
        (("Rossi", None), ("Bianchi", None), ("Esposito", None), ("Romano", None)),
    ),
    "ph": (
        (("Maricel", None), ("Jocelyn", None), ("Rowena", None), ("Analyn", None), ("Cristina", None)),
        (("Jomar", None), ("Rodel", None), ("Arnel", None), ("Jericho", None)),
        (("Santos", None), ("Reyes", None), ("Dela Cruz", None), ("Bautista", None), ("Villanueva", None)),
    ),
    "ar": (
        (("Fatima", "فاطمة"), ("Amal", "أمل"), ("Rania", "رانيا"), ("Noor", "نور")),
        (("Ahmad", "أحمد"), ("Omar", "عمر"), ("Khaled", "خالد"), ("Yusuf", "يوسف")),
        (("Haddad", "حداد"), ("Khalil", "خليل"), ("Mansour", "منصور"), ("Darwish", "درويش")),
    ),
    "my": (
        (("Thandar", "သန္တာ"), ("Khin Myat", "ခင်မြတ်"), ("Hnin Wai", "နှင်းဝေ")),
        (("Kyaw Zaw", "ကျော်ဇော"), ("Min Htet", "မင်းထက်"), ("Zaw Lin", "ဇော်လင်း")),
        (("Myint", "မြင့်"), ("Naing", "နိုင်"), ("Thein", "သိန်း"), ("Aung", "အောင်")),
    ),
    "th": (
        (("Siriporn", "ศิริพร"), ("Nattaya", "ณัฐธยา"), ("Kanya", "กัญญา")),
        (("Somchai", "สมชาย"), ("Anan", "อนันต์"), ("Prasert", "ประเสริฐ")),
        (("Srisuk", "ศรีสุข"), ("Boonmee", "บุญมี"), ("Chaiyaporn", "ชัยพร")),
    ),
    "ro": (
        (("Ioana", None), ("Elena", None), ("Andreea", None), ("Mihaela", None)),
        (("Andrei", None), ("Mihai", None), ("Ionuț", None), ("Florin", None)),
        (("Popescu", None), ("Ionescu", None), ("Dumitru", None), ("Constantin", None)),
    ),
    "en": (
        (("Emily", None), ("Sarah", None), ("Jessica", None), ("Megan", None)),
        (("James", None), ("Daniel", None), ("Michael", None), ("Tyler", None)),
        (("Smith", None), ("Jones", None), ("Walker", None), ("Taylor", None), ("Johnson", None)),
    ),
    "es": (
        (("Yuleidy", None), ("Daniela", None), ("Mariana", None), ("Andreína", None)),
        (("Jesús", None), ("José Luis", None), ("Carlos", None), ("Wilmer", None)),
        (("González", None), ("Rodríguez", None), ("Pérez", None), ("Hernández", None), ("Márquez", None)),
    ),
    "kh": (
        (("Sokha", "សុខា"), ("Srey Mom", "ស្រីមុំ"), ("Chanthy", "ចន្ធី")),
        (("Dara", "ដារ៉ា"), ("Vuthy", "វុទ្ធី"), ("Sokun", "សុគន្ធ")),
        (("Chhim", "ឈឹម"), ("Meas", "មាស"), ("Touch", "ទូច"), ("Pheap", "ភាព")),
    ),
    "et": (
        (("Tigist", "ትዕግስት"), ("Meron", "ሜሮን"), ("Hiwot", "ሕይወት"), ("Selam", "ሰላም")),
        (("Dawit", "ዳዊት"), ("Yonas", "ዮናስ"), ("Abebe", "አበበ")),
        (("Tesfaye", "ተስፋዬ"), ("Bekele", "በቀለ"), ("Girma", "ግርማ"), ("Haile", "ኃይሌ")),
    ),
    "vn": (
        (("Thị Lan", None), ("Thu Hà", None), ("Ngọc Anh", None)),
        (("Văn Minh", None), ("Đức Anh", None), ("Quang Huy", None)),
        (("Nguyễn", None), ("Trần", None), ("Phạm", None), ("Hoàng", None), ("Đặng", None)),
    ),
    "np": (
        (("Sita", "सीता"), ("Gita", "गीता"), ("Sunita", "सुनिता"), ("Puja", "पूजा")),
        (("Ramesh", "रमेश"), ("Bikash", "बिकास"), ("Suman", "सुमन")),
        (("Tamang", "तामाङ"), ("Gurung", "गुरुङ"), ("Shrestha", "श्रेष्ठ"), ("Thapa", "थापा")),
    ),
    "in": (
        (("Priya", None), ("Lakshmi", None), ("Kavita", None), ("Sunita", None)),
        (("Rajesh", None), ("Suresh", None), ("Arjun", None), ("Manoj", None)),
        (("Kumar", None), ("Sharma", None), ("Yadav", None), ("Singh", None)),
    ),
    "tr": (
        (("Ayşe", None), ("Elif", None), ("Zeynep", None)),
        (("Mehmet", None), ("Mustafa", None), ("Emre", None)),
        (("Yılmaz", None), ("Kaya", None), ("Demir", None), ("Şahin", None)),
    ),
}  # fmt: skip

# Exploitation profiles: S sexual, L forced/child labour, D domestic servitude, M forced marriage,
# B forced begging, O other (organ removal, other).
_PROFILES = ("S", "L", "D", "M", "B", "O")


@dataclass(frozen=True)
class Corridor:
    citizenship: str
    exploitation: str
    weight: float
    minor_share: float
    profile: dict[str, float]
    industries: dict[str, float] | None = None
    transit: tuple[str, ...] = ()


_DEFAULT_INDUSTRIES = {
    "A_AgricultureForestryAndFishing": 0.3, "F_Construction": 0.2, "C_Manufacturing": 0.15,
    "I_AccommodationAndFoodServiceActivities": 0.15, "T_ActivitiesOfHouseholdsAsEmployers": 0.1, "S_OtherServiceActivities": 0.1,
}  # fmt: skip
CORRIDORS: tuple[Corridor, ...] = (
    Corridor("UA", "PL", 10, 0.10, {"S": 0.25, "L": 0.65, "D": 0.05, "O": 0.05},
             {"F_Construction": 0.35, "A_AgricultureForestryAndFishing": 0.3, "C_Manufacturing": 0.25, "H_TransportationAndStorage": 0.1}),
    Corridor("NG", "IT", 10, 0.15, {"S": 0.85, "L": 0.08, "B": 0.04, "O": 0.03},
             {"A_AgricultureForestryAndFishing": 0.8, "S_OtherServiceActivities": 0.2}, ("NE", "LY")),
    Corridor("PH", "SA", 8, 0.05, {"D": 0.75, "L": 0.2, "S": 0.05},
             {"T_ActivitiesOfHouseholdsAsEmployers": 0.6, "I_AccommodationAndFoodServiceActivities": 0.2, "F_Construction": 0.2}),
    Corridor("MM", "TH", 9, 0.20, {"L": 0.85, "S": 0.1, "O": 0.05},
             {"A_AgricultureForestryAndFishing": 0.6, "C_Manufacturing": 0.25, "F_Construction": 0.15}),
    Corridor("RO", "GB", 8, 0.12, {"S": 0.45, "L": 0.4, "B": 0.1, "O": 0.05},
             {"F_Construction": 0.3, "A_AgricultureForestryAndFishing": 0.3, "G_WholesaleAndRetailTradeRepairOfMotorVehicles": 0.2, "I_AccommodationAndFoodServiceActivities": 0.2}),
    Corridor("VE", "CO", 7, 0.25, {"S": 0.7, "L": 0.2, "B": 0.1},
             {"A_AgricultureForestryAndFishing": 0.5, "G_WholesaleAndRetailTradeRepairOfMotorVehicles": 0.5}),
    Corridor("KH", "TH", 7, 0.25, {"L": 0.75, "B": 0.15, "S": 0.1},
             {"A_AgricultureForestryAndFishing": 0.5, "F_Construction": 0.5}),
    Corridor("ET", "SA", 6, 0.10, {"D": 0.8, "L": 0.15, "S": 0.05},
             {"T_ActivitiesOfHouseholdsAsEmployers": 0.7, "A_AgricultureForestryAndFishing": 0.3}),
    Corridor("VN", "GB", 6, 0.35, {"L": 0.8, "S": 0.2},
             {"A_AgricultureForestryAndFishing": 0.5, "S_OtherServiceActivities": 0.4, "I_AccommodationAndFoodServiceActivities": 0.1}),
    Corridor("NP", "IN", 6, 0.45, {"S": 0.6, "L": 0.2, "M": 0.1, "D": 0.1},
             {"C_Manufacturing": 0.5, "B_MiningAndQuarrying": 0.2, "T_ActivitiesOfHouseholdsAsEmployers": 0.3}),
    Corridor("SY", "TR", 4, 0.50, {"L": 0.6, "M": 0.2, "B": 0.15, "S": 0.05},
             {"C_Manufacturing": 0.6, "A_AgricultureForestryAndFishing": 0.4}),
    Corridor("US", "US", 6, 0.30, {"S": 0.75, "L": 0.25}),
    Corridor("PH", "PH", 5, 0.60, {"S": 0.8, "L": 0.2}),
    Corridor("IN", "IN", 5, 0.35, {"L": 0.8, "S": 0.1, "M": 0.1},
             {"B_MiningAndQuarrying": 0.35, "A_AgricultureForestryAndFishing": 0.35, "C_Manufacturing": 0.3}),
    Corridor("UA", "UA", 2, 0.20, {"L": 0.5, "S": 0.5}),
    Corridor("NG", "NG", 3, 0.50, {"D": 0.4, "L": 0.4, "S": 0.2}),
    Corridor("TH", "TH", 2, 0.40, {"S": 0.6, "L": 0.4}),
)  # fmt: skip

_GENDER_BY_PROFILE = {
    "S": {"Feminine": 0.88, "Masculine": 0.07, "TransgenderFeminine": 0.03, "NonConforming": 0.01, "NonSpecifiedUnknown": 0.01},
    "L": {"Masculine": 0.7, "Feminine": 0.28, "NonSpecifiedUnknown": 0.02},
    "D": {"Feminine": 0.9, "Masculine": 0.1},
    "M": {"Feminine": 0.97, "Masculine": 0.03},
    "B": {"Masculine": 0.55, "Feminine": 0.45},
    "O": {"Masculine": 0.6, "Feminine": 0.4},
}  # fmt: skip
_CONTROL = {  # base weights, then profile boosts
    "FalsePromises": 8, "TakesEarnings": 6, "PsychologicalAbuse": 6, "PhysicalThreats": 4, "ThreatensChildrenFamily": 3,
    "DebtBondage": 4, "WithholdsDocuments": 3, "RestrictsFinancialAccess": 3, "PhysicalAbuse": 3, "WithholdsNecessities": 2,
    "ExcessiveWorkingHours": 2, "ThreatsLawEnforcement": 2, "SexualAbuse": 1, "PsychoactiveSubstance": 1,
    "RestrictsMedicalCare": 1, "Other": 1,
}  # fmt: skip
_CONTROL_BOOST = {
    "S": {"SexualAbuse": 6, "PsychoactiveSubstance": 4, "PhysicalAbuse": 3},
    "L": {"DebtBondage": 6, "ExcessiveWorkingHours": 6, "WithholdsDocuments": 4, "TakesEarnings": 3},
    "D": {"WithholdsDocuments": 7, "ExcessiveWorkingHours": 6, "WithholdsNecessities": 4, "RestrictsMedicalCare": 2},
}
_RECRUITMENT = {
    "S": {"ThroughOnlineSocialNetworks": 5, "ThroughFriendsOrSocialEvents": 4, "ThroughFamilyOrFamilyEvents": 2, "ThroughAnOnlineAdvertisement": 2, "Other": 1},
    "L": {"ThroughAnOnlineAdvertisement": 3, "AtWork": 3, "ThroughFriendsOrSocialEvents": 3, "AtAPlaceOfBusiness": 2, "ThroughANewspaperAdvert": 1, "ThroughFamilyOrFamilyEvents": 1},
    "D": {"AtAPlaceOfBusiness": 4, "ThroughFriendsOrSocialEvents": 3, "ThroughAnOnlineAdvertisement": 2, "ThroughATelevisionAdvert": 1},
    "M": {"ThroughFamilyOrFamilyEvents": 8, "Other": 1},
    "B": {"ThroughFamilyOrFamilyEvents": 4, "ThroughFriendsOrSocialEvents": 2, "Other": 1},
    "O": {"ThroughFriendsOrSocialEvents": 2, "ThroughAnOnlineAdvertisement": 2, "Other": 2},
}  # fmt: skip
_RELATION = {
    "S": {"IntimatePartner": 25, "Friend": 20, "Family": 10, "Other": 30, "Unknown": 15},
    "M": {"Family": 70, "Other": 20, "Unknown": 10},
    "minor": {"Family": 35, "Friend": 15, "Other": 35, "Unknown": 15},
    "default": {"Other": 50, "Friend": 15, "Family": 10, "Unknown": 25},
}  # fmt: skip
_RELATIONSHIP_TO_TRAFFICKER = {"Family": "Familial", "IntimatePartner": "Acquainted", "Friend": "Acquainted", "Other": "Unaquainted"}
_OTHER_ROLES = {
    "Exploiter": 6, "Transporter": 3, "ControlledIndividual": 3, "BrokerTravelAgent": 2, "Smuggler": 2, "Abuser": 2,
    "HarbouredIndividual": 1, "BoughtIndividual": 1, "SoldIndividual": 1, "ReceivedIndividual": 1, "TravellingPartner": 1,
    "Kidnapper": 1, "Other": 1,
}  # fmt: skip
# profile -> factor on the days from the start of exploitation to registration (see the docstring)
_DURATION_SCALE = {"S": 0.8, "L": 1.0, "D": 1.6, "M": 2.0, "B": 0.6, "O": 0.3}
_MONEY_ROLES = {"SoldIndividual", "BoughtIndividual", "BrokerTravelAgent", "ReceivedIndividual", "TransferredIndividual"}
LATE_EVENT_SHARE = 0.1  # of mess_rate: cases whose exploitation event is (by a typo) dated after registration
_DECISION_ORG = {"Police": 30, "NGO": 35, "CourtOrProsecution": 10, "NonPoliceGovernmentalOrganization": 20, "Other": 5}
_TITLES = ("Domestic worker", "Farm worker", "Student", "Seamstress", "Waitress", "Construction worker", "Fisherman", "Nail technician")
_ORGS = ("Safe Haven Shelter", "Migrant Rights Centre", "City Police Anti-Trafficking Unit", "Labour Inspectorate",
         "Hope Legal Aid", "IOM Field Office", "Children's Protection Network", "Red Cross Branch")  # fmt: skip
_NEEDS = ("safe accommodation", "legal advice", "medical care", "return assistance", "psychosocial support", "a work permit")
_SUPPORT = {"S": "SexualExploitationRehabilitation", "L": "LabourExploitationRehabilitation", "D": "LabourExploitationRehabilitation"}
_OTHER_SUPPORT = ("Health", "Legal", "Financial", "Livelihood", "SocialCare", "Education", "RightsBasedTraining")

START = datetime(2015, 1, 1, tzinfo=timezone.utc)
END = datetime(2025, 12, 31, tzinfo=timezone.utc)
FUTURE_BIRTH_YEARS = (2031, 2040)  # "future" birth dates: after any registration and after today


def _cum(weights: dict[str, float]) -> tuple[tuple[str, ...], list[float]]:
    return tuple(weights), list(accumulate(weights.values()))


def _pick(rng: random.Random, table: tuple[tuple[str, ...], list[float]]) -> str:
    keys, cum = table
    return keys[bisect.bisect_right(cum, rng.random() * cum[-1])]


def _ri(rng: random.Random, low: int, high: int) -> int:
    """`rng.randrange(low, high)`, three times faster (its exact bits do not matter here)."""
    return low + int(rng.random() * (high - low))


def _ch(rng: random.Random, items: tuple | list) -> Any:
    return items[int(rng.random() * len(items))]


def _sample(rng: random.Random, table: tuple[tuple[str, ...], list[float]], k: int) -> list[str]:
    """k distinct keys, drawn with probability proportional to weight (successive draws, repeats redrawn)."""
    out: list[str] = []
    k = min(k, len(table[0]))
    while len(out) < k:
        key = _pick(rng, table)
        if key not in out:
            out.append(key)
    return out


_CORRIDOR_TABLE = _cum({str(i): c.weight for i, c in enumerate(CORRIDORS)})
_PROFILE_TABLES = [_cum(c.profile) for c in CORRIDORS]
_INDUSTRY_TABLES = [_cum(c.industries or _DEFAULT_INDUSTRIES) for c in CORRIDORS]
_GENDER_TABLES = {p: _cum(w) for p, w in _GENDER_BY_PROFILE.items()}
_RELATION_TABLES = {k: _cum(w) for k, w in _RELATION.items()}
_DECISION_TABLE = _cum(_DECISION_ORG)
_ROLE_TABLE = _cum(_OTHER_ROLES)
_CONTROL_TABLES = {p: _cum({k: v + _CONTROL_BOOST.get(p, {}).get(k, 0) for k, v in _CONTROL.items()}) for p in _PROFILES}
_RECRUITMENT_TABLES = {p: _cum(w) for p, w in _RECRUITMENT.items()}
_STATUS_TABLE = _cum({"ActualVictimOfTrafficking": 55, "PossibleVictimOfTrafficking": 40, "NotAVictimOfTrafficking": 5})
_IN_REASON_TABLE = _cum({"AdditionalServicesRequired": 5, "MigrationOrChangeOfLocation": 3, "Other": 2})
_OUT_REASON_TABLE = _cum({"AdditionalServicesRequired": 6, "MigrationOrChangeOfLocation": 3, "Other": 1})
_YEAR_TABLE = _cum({str(y): 1.0 + 0.12 * (y - 2015) for y in range(2015, 2026)})  # case loads grow over time


# -- the case -----------------------------------------------------------------------------------


@dataclass
class GeneratedCase:
    """One fake case: the clean truth in HTCDS codes, plus the mess a source applies when rendering it.

    `victim` and `case` hold clean values (codes, ISO2 countries, `date`s, lists for multi-selects);
    `mess` says, per field, what a source must do to its own rendering of that value (see `render`).
    """

    case_id: str
    created_at: datetime
    updated_at: datetime
    deleted: bool
    victim: dict[str, Any]
    case: dict[str, Any]
    perpetrators: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    support_plans: list[dict] = field(default_factory=list)
    mess: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=None)
def _ascii(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if c.isascii() and c.isalnum())


def _person(rng: random.Random, country: str, gender: str | None, native_ok: bool = True) -> tuple[str, str, str]:
    """(first, second, latin 'first.second' for emails) for a fake person of `country`'s culture."""
    meta = COUNTRIES[country]
    female, male, family = NAMES[meta.culture]
    firsts = female if gender in ("Feminine", "TransgenderFeminine") else male if gender else (female if rng.random() < 0.5 else male)
    first = firsts[int(rng.random() * len(firsts))]
    second = family[int(rng.random() * len(family))]
    native = native_ok and meta.native_share and first[1] and second[1] and rng.random() < meta.native_share
    latin = f"{_ascii(first[0])}.{_ascii(second[0])}".lower()
    if native:
        return first[1], second[1], latin  # type: ignore[return-value]
    return first[0], second[0], latin


def _staff_name(rng: random.Random, country: str) -> str:
    first, second, _ = _person(rng, country, None, native_ok=False)
    return f"{first} {second}"


def _phone(rng: random.Random, country: str) -> str:
    return f"+{COUNTRIES[country].phone}{_ri(rng, 10**8, 10**9)}"


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def age_on(birth: date, on: date) -> int:
    """Whole years from `birth` to `on`: the age every source's truth uses (a form asks it as a number)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _new_case(rng: random.Random, created_at: datetime, mess_rate: float) -> GeneratedCase:
    ci = int(_pick(rng, _CORRIDOR_TABLE))
    corridor = CORRIDORS[ci]
    cit, coe = corridor.citizenship, corridor.exploitation
    registered = created_at.date()
    minor = rng.random() < corridor.minor_share
    profile = _pick(rng, _PROFILE_TABLES[ci])
    if profile == "M" and not minor and rng.random() < 0.5:
        minor = True  # forced marriage: about half are girls (UNODC)
    gender: str | None = _pick(rng, _GENDER_TABLES[profile])
    if minor and profile == "L" and rng.random() < 0.2:
        gender = "Feminine" if gender == "Masculine" else gender  # child labour is less male-dominated

    # age and birth date
    if minor:
        age = 17 - min(int(rng.expovariate(0.35)), 15)  # mostly 14-17
    else:
        age = 18 + min(int(rng.expovariate(1 / 11)), 52)  # mostly 18-35
    birth: date | None = registered - timedelta(days=365 * age + _ri(rng, 1, 360))
    while age_on(birth, registered) != age:  # correct leap-year drift so the age is exact
        birth += timedelta(days=1 if age_on(birth, registered) > age else -1)
    if rng.random() < 0.08:
        birth = None  # unknown birth date
    elif rng.random() < mess_rate / 10:
        birth = date(_ri(rng, *FUTURE_BIRTH_YEARS), _ri(rng, 1, 13), _ri(rng, 1, 29))  # typo: future
    if rng.random() < 0.02:
        gender = None

    # exploitation
    types: list[str]
    if profile == "S":
        types = ["SexualExploitation"]
    elif profile == "L":
        types = (["ChildLabour", "ForcedLabour"] if rng.random() < 0.3 else ["ChildLabour"]) if minor else ["ForcedLabour"]
    elif profile == "D":
        types = ["ChildLabour" if minor else "ForcedLabour", "Servitude"]
    elif profile == "M":
        types = ["ForcedMarriage"] + (["SexualExploitation"] if rng.random() < 0.2 else [])
    elif profile == "B":
        types = ["ForcedBegging"] + (["ChildLabour"] if minor else [])
    else:
        types = ["OrganRemoval"] if rng.random() < 0.3 else ["Other"]
    if profile in ("L", "D") and gender == "Feminine" and rng.random() < 0.08:
        types.append("SexualExploitation")
    elif profile == "S" and rng.random() < 0.06:
        types.append("ChildLabour" if minor else "ForcedLabour")
    labour = "ForcedLabour" in types or "ChildLabour" in types
    industry = None
    if labour:
        industry = "T_ActivitiesOfHouseholdsAsEmployers" if profile == "D" else _pick(rng, _INDUSTRY_TABLES[ci])
        if rng.random() < 0.1:
            industry = None  # not recorded
    sex_types: list[str] = []
    if "SexualExploitation" in types:
        remote = 0.5 if (cit, coe) == ("PH", "PH") else 0.08
        sex_types = ["RemoteInteractiveServices"] if rng.random() < remote else ["Prostitution"]
        if rng.random() < 0.2:
            sex_types.append("Pornography" if rng.random() < 0.6 else "PrivateSexualServices")
        sex_types = sorted(set(sex_types))

    k = 1 + min(int(rng.expovariate(0.9)), 3) if rng.random() < 0.15 else _ch(rng, (2, 2, 3, 3, 4))
    controls = _sample(rng, _CONTROL_TABLES[profile], k)
    recruitment = _sample(rng, _RECRUITMENT_TABLES[profile], 1 if rng.random() < 0.8 else 2)

    # perpetrators: the first is always a recruiter
    relation_key = "minor" if minor and profile not in ("M",) else profile if profile in ("S", "M") else "default"
    perpetrators = []
    for i in range(1 + (rng.random() < 0.45) + (rng.random() < 0.2)):
        roles = ["RecruiterOrIntermediary"] if i == 0 else [_pick(rng, _ROLE_TABLE)]
        if rng.random() < 0.35:
            roles.append(_pick(rng, _ROLE_TABLE))
        relation = _pick(rng, _RELATION_TABLES[relation_key]) if i == 0 else ("Other" if rng.random() < 0.7 else "Unknown")
        p_gender = "Masculine" if rng.random() < 0.65 else "Feminine"
        home_country = cit if rng.random() < 0.6 else coe
        first, second, _ = _person(rng, home_country, p_gender)
        perpetrators.append(
            {"per_RoleInProcess": sorted(set(roles)), "relation": relation, "prs_FirstName": first, "prs_SecondName": second, "prs_Gender": p_gender,
             "home": home_country}
        )

    # events: recruitment at home, maybe transit, exploitation abroad (or at home)
    exploit_start = registered - timedelta(days=max(7, int(_ri(rng, 7, 900) * _DURATION_SCALE[profile])))
    recruit_date = exploit_start - timedelta(days=_ri(rng, 1, 120))
    events = [{"hte_Type": "Recruitment", "hte_Country": cit, "hte_Date": recruit_date, "hte_City": _ch(rng, COUNTRIES[cit].cities)}]
    for j, transit in enumerate(corridor.transit):
        if rng.random() < 0.6:
            events.append({"hte_Type": "Transit", "hte_Country": transit, "hte_Date": recruit_date + timedelta(days=5 + 10 * j), "hte_City": _ch(rng, COUNTRIES[transit].cities)})
    events.append({"hte_Type": "Exploitation", "hte_Country": coe, "hte_Date": exploit_start, "hte_City": _ch(rng, COUNTRIES[coe].cities)})

    # the person
    first, second, latin = _person(rng, cit, gender)
    home = coe if rng.random() < 0.7 else cit
    citizenship = [cit] + (["RO" if cit == "UA" else "PL"] if rng.random() < 0.02 and cit in ("UA", "PL") else [])
    salutation = None
    if not minor and rng.random() < 0.6:
        salutation = {"Feminine": "Ms.", "Masculine": "Mr."}.get(gender or "", "Mx.")
    has_address = rng.random() < 0.6
    victim = {
        "prs_Salutation": salutation,
        "prs_FirstName": first,
        "prs_SecondName": second,
        "prs_Birthdate": birth,
        "prs_Gender": gender,
        "prs_Citizenship": sorted(citizenship),
        "prs_Email": f"{latin}{_ri(rng, 10, 99)}@example.{_ch(rng, ('org', 'com', 'net'))}" if rng.random() < 0.5 else None,
        "prs_HomePhone": _phone(rng, home) if rng.random() < 0.3 else None,
        "prs_MobilePhone": _phone(rng, home) if rng.random() < 0.8 else None,
        "prs_MailingStreet": f"{_ri(rng, 1, 240)} {_ch(rng, COUNTRIES[home].streets)}" if has_address else None,
        "prs_MailingCity": _ch(rng, COUNTRIES[home].cities) if has_address else None,
        "prs_MailingState": None,
        "prs_MailingPostalCode": f"{_ri(rng, 10000, 99999)}" if has_address and rng.random() < 0.8 else None,
        "prs_MailingCountry": home if has_address else None,
        "prs_Title": _ch(rng, _TITLES) if rng.random() < 0.2 else None,
        "prs_IdentityNumber": f"{cit}{_ri(rng, 10**8, 10**9)}" if rng.random() < 0.7 else None,
    }

    # the case
    status = _case_status(rng, registered)
    owner = _staff_name(rng, coe)
    referring_worker = _staff_name(rng, coe)
    referring_org = _ch(rng, _ORGS)
    need = _ch(rng, _NEEDS)
    city = events[-1]["hte_City"]
    case = {
        "con_Consent": rng.random() < 0.92,
        "vic_TraffickingStatus": _pick(rng, _STATUS_TABLE),
        "vic_TraffickingStatusDecisionMakingOrg": _pick(rng, _DECISION_TABLE) if rng.random() < 0.9 else None,
        "vic_MethodOfRecruitment": sorted(recruitment),
        "vic_MethodsOfControl": sorted(controls),
        "vic_TypeOfExploitation": sorted(types),
        "vic_ForcedLabourIndustry": industry,
        "vic_TypeOfSexExploitation": sex_types,
        "vic_RelationshipToTrafficker": _RELATIONSHIP_TO_TRAFFICKER.get(perpetrators[0]["relation"]),
        "cas_Status": status,
        "cas_IncomingReferralDate": registered,
        "cas_ReasonForIncomingReferral": _pick(rng, _IN_REASON_TABLE),
        "cas_ReasonForOutgoingReferral": None,
        "cas_OutgoingReferralDate": None,
        "cas_CaseOwner": owner,
        "cas_ReferringPrimaryCaseWorker": referring_worker,
        "cas_ReferredPrimaryCaseWorker": None,
        "cas_IncomingReferralDetails": (
            f"Referred by {referring_worker} of {referring_org}. {first} {second} was met in {city} "
            f"(phone {victim['prs_MobilePhone'] or 'unknown'}) and needs {need}." if rng.random() < 0.7 else None
        ),
        "cas_OutgoingReferralDetails": None,
        "cas_ReasonForCaseClosure": None,
        "cas_ReferringOrganisation": referring_org,
        "cas_ReferredOrganisation": None,
    }
    if status == "ClosedReferred" or (status != "Closed" and rng.random() < 0.15):
        _refer_out(rng, case, victim, registered, coe)
    if status in ("Closed", "ClosedReferred"):
        case["cas_ReasonForCaseClosure"] = _closure_text(rng, victim, city)

    plans = []
    for _ in range(_ch(rng, (0, 1, 1, 2, 3))):
        kind = _SUPPORT.get(profile) if not plans and profile in _SUPPORT else _ch(rng, _OTHER_SUPPORT)
        plans.append({
            "spl_Type": kind,
            "spl_PlannedEndDate": registered + timedelta(days=_ri(rng, 30, 400)),
            "spl_Objectives": f"Help {first} {second} with {_ch(rng, _NEEDS)} near {victim['prs_MailingCity'] or city}.",
        })  # fmt: skip
    updated = min(created_at + timedelta(minutes=_ri(rng, 0, 60 * 24 * 120)), END)
    sub = random.Random(zlib.crc32(f"{first}|{second}|{recruit_date}|{created_at.isoformat()}".encode()))
    _perpetrator_details(sub, perpetrators, cit, registered)
    if sub.random() < mess_rate * LATE_EVENT_SHARE:
        events[-1]["hte_Date"] = min(registered + timedelta(days=_ri(sub, 1, 60)), END.date())  # a typo: after registration
    generated = GeneratedCase("", created_at, max(updated, created_at), False, victim, case, perpetrators, events, plans)
    generated.mess = _choose_mess(rng, generated, mess_rate)
    return generated


def _perpetrator_details(rng: random.Random, perpetrators: list[dict], cit: str, registered: date) -> None:
    """Birth date, citizenship, money paid, and the roles that go with the relation (in place)."""
    for perp in perpetrators:
        relation = perp["relation"]
        close = relation in ("Family", "IntimatePartner", "Friend")
        roles = set(perp["per_RoleInProcess"])
        if relation == "Family" and rng.random() < 0.3:
            roles.add("SoldIndividual")
        elif relation == "IntimatePartner" and rng.random() < 0.4:
            roles.add("ControlledIndividual")
        perp["per_RoleInProcess"] = sorted(roles)
        perp["citizenship"] = cit if close and rng.random() < 0.9 else perp.pop("home", cit)
        perp.pop("home", None)
        age = (45 if relation == "Family" else 28 if relation in ("IntimatePartner", "Friend") else 36) + int(rng.gauss(0, 8))
        perp["prs_Birthdate"] = None if rng.random() < 0.25 else registered - timedelta(days=365 * max(age, 16) + _ri(rng, 1, 360))
        if rng.random() < 0.3:
            perp["money_paid"] = None  # not recorded
        else:
            perp["money_paid"] = rng.random() < (0.7 if roles & _MONEY_ROLES else 0.15)


def _case_status(rng: random.Random, registered: date) -> str:
    age_days = (END.date() - registered).days
    closed = min(0.9, age_days / 1500)  # older cases are mostly closed
    roll = rng.random()
    if roll < closed * 0.75:
        return "Closed"
    if roll < closed:
        return "ClosedReferred"
    return "Active" if rng.random() < 0.65 else "FollowUp"


def _refer_out(rng: random.Random, case: dict, victim: dict, registered: date, coe: str) -> None:
    worker = _staff_name(rng, coe)
    org = _ch(rng, _ORGS)
    contact = victim["prs_Email"] or victim["prs_MobilePhone"] or "no contact details"
    case["cas_ReasonForOutgoingReferral"] = _pick(rng, _OUT_REASON_TABLE)
    case["cas_OutgoingReferralDate"] = min(registered + timedelta(days=_ri(rng, 3, 200)), max(END.date(), registered))
    case["cas_ReferredOrganisation"] = org
    case["cas_ReferredPrimaryCaseWorker"] = worker
    case["cas_OutgoingReferralDetails"] = (
        f"{victim['prs_FirstName']} {victim['prs_SecondName']} referred to {worker} at {org} for {_ch(rng, _NEEDS)}; contact {contact}."
    )


def _closure_text(rng: random.Random, victim: dict, city: str) -> str:
    name = f"{victim['prs_FirstName']} {victim['prs_SecondName']}"
    return _ch(rng, (
        f"{name} returned home from {city} and no longer needs support.",
        f"Lost contact with {name}; last phone {victim['prs_MobilePhone'] or 'none'}.",
        f"{name} declined further assistance.",
    ))  # fmt: skip


def _choose_mess(rng: random.Random, case: GeneratedCase, mess_rate: float) -> dict[str, str]:
    """Mess each present, messable value with probability `mess_rate`, kind uniform among its kinds."""
    mess: dict[str, str] = {}
    if mess_rate <= 0:
        return mess
    for name, kinds in MESSABLE.items():
        roll = rng.random()  # drawn for every field, so one field's value does not shift the others' mess
        if roll < mess_rate and _clean_value(case, name) not in (None, []):
            mess[name] = kinds[int(roll / mess_rate * len(kinds))]
    return mess


def _clean_value(case: GeneratedCase, name: str) -> Any:
    if name == "vic_LocationOfExploitation":
        return exploitation_country(case)
    if name in case.victim:
        return case.victim[name]
    return case.case.get(name)


def exploitation_country(case: GeneratedCase) -> str | None:
    """ISO2 of the first Exploitation event: what the template's vic_LocationOfExploitation holds."""
    for event in case.events:
        if event["hte_Type"] == "Exploitation":
            return event["hte_Country"]
    return None


def recruitment_country(case: GeneratedCase) -> str | None:
    """ISO2 of the first Recruitment event: what the template's vic_LocationOfRecruitment holds."""
    for event in case.events:
        if event["hte_Type"] == "Recruitment":
            return event["hte_Country"]
    return None


def generate_cases(n: int, seed: int = 0, mess_rate: float = 0.05) -> list[GeneratedCase]:
    """`n` cases registered 2015-2025, ids C000001... in registration order, the same for a seed.

    About `mess_rate / 5` of them are duplicates: the same person registered again later under a
    new id (same victim values, a new case). About `mess_rate / 10` have a future birth date.
    """
    rng = random.Random(seed)
    span = (END - START).total_seconds()
    cases: list[GeneratedCase] = []
    year_span = 365 * 24 * 3600
    for _ in range(n):
        if cases and rng.random() < mess_rate / 5:
            original = cases[int(rng.random() * len(cases))]
            created = min(original.created_at + timedelta(days=_ri(rng, 1, 200), seconds=_ri(rng, 0, 86400)), END)
            twin = _new_case(rng, created, mess_rate)
            twin.victim = dict(original.victim)
            for name in ("vic_TypeOfExploitation", "vic_ForcedLabourIndustry", "vic_TypeOfSexExploitation", "vic_MethodsOfControl"):
                twin.case[name] = original.case[name]  # the same story, registered again
            twin.events, twin.perpetrators = [dict(e) for e in original.events], [dict(p) for p in original.perpetrators]
            twin.case["vic_RelationshipToTrafficker"] = original.case["vic_RelationshipToTrafficker"]
            twin.mess = _choose_mess(rng, twin, mess_rate)
            cases.append(twin)
            continue
        year = int(_pick(rng, _YEAR_TABLE))
        offset = (year - 2015) * year_span + rng.random() * year_span
        created = START + timedelta(seconds=min(offset, span - 1))
        cases.append(_new_case(rng, created.replace(microsecond=0), mess_rate))
    cases.sort(key=lambda c: c.created_at)
    for i, case in enumerate(cases, 1):
        case.case_id = f"C{i:06d}"
    return cases


def evolve(
    cases: list[GeneratedCase],
    seed: int,
    *,
    edit_share: float = 0.1,
    new: int | None = None,
    delete_share: float = 0.02,
    at: datetime | None = None,
    mess_rate: float = 0.05,
) -> list[GeneratedCase]:
    """A later state of `cases`: some edited, some deleted (deleted=True), `new` more appended.

    The input is not changed: edited and deleted cases are copies, untouched cases are the same
    objects. `at` (default: 30 days after the latest `updated_at`) is the time of the changes; every
    changed case gets an `updated_at` in (its old updated_at, at]. `new` defaults to 5 % of the
    live cases. Deleted cases stay deleted; edits and deletions only touch live cases.
    """
    rng = random.Random(seed)
    if at is None:
        latest = max((c.updated_at for c in cases), default=END)
        at = latest + timedelta(days=30)
    live = [i for i, c in enumerate(cases) if not c.deleted]
    n_new = max(1, round(len(live) * 0.05)) if new is None else new
    out = list(cases)
    touched = rng.sample(live, min(len(live), round(len(live) * (edit_share + delete_share))))
    n_delete = round(len(live) * delete_share)
    for j, i in enumerate(touched):
        old = cases[i]
        when = max(old.updated_at + timedelta(seconds=1), at - timedelta(seconds=_ri(rng, 0, 7 * 86400)))
        when = min(when, at)
        if j < n_delete:
            out[i] = dataclasses.replace(old, deleted=True, updated_at=when)
        else:
            out[i] = _edit(rng, old, when)
    last = max((int(c.case_id[1:]) for c in cases), default=0)
    start = max((c.created_at for c in cases), default=START)
    for k in range(n_new):
        created = start + (at - start) * rng.random()
        fresh = _new_case(rng, created.replace(microsecond=0), mess_rate)
        fresh.updated_at = min(max(fresh.updated_at, created), at)
        fresh.case_id = f"C{last + k + 1:06d}"
        out.append(fresh)
    return out


def _edit(rng: random.Random, old: GeneratedCase, when: datetime) -> GeneratedCase:
    """What case workers change later: status, trafficking status, means of control, referrals."""
    case = dict(old.case)
    victim = dict(old.victim)
    mess = dict(old.mess)
    roll = rng.random()
    if roll < 0.4 and case["cas_Status"] in ("Active", "FollowUp"):
        case["cas_Status"] = "Closed"
        case["cas_ReasonForCaseClosure"] = _closure_text(rng, victim, old.events[-1]["hte_City"])
        mess.pop("cas_Status", None)
    elif roll < 0.6 and case["vic_TraffickingStatus"] == "PossibleVictimOfTrafficking":
        case["vic_TraffickingStatus"] = "ActualVictimOfTrafficking"
        mess.pop("vic_TraffickingStatus", None)
    elif roll < 0.8:
        extra = [c for c in _CONTROL if c not in case["vic_MethodsOfControl"]]
        case["vic_MethodsOfControl"] = sorted(case["vic_MethodsOfControl"] + [_ch(rng, extra)])
        mess.pop("vic_MethodsOfControl", None)
    else:
        country = old.events[-1]["hte_Country"]
        victim["prs_MobilePhone"] = _phone(rng, country if country in COUNTRIES else "GB")
    return dataclasses.replace(old, case=case, victim=victim, mess=mess, updated_at=when)


# -- rendering and expectations -----------------------------------------------------------------


def _hash(case: GeneratedCase, name: str) -> int:
    return zlib.crc32(f"{case.case_id}:{name}".encode())


def mess_free_text(case: GeneratedCase, name: str) -> str:
    """The free text a case worker typed into a coded or date field (contains personal details)."""
    first, second = case.victim["prs_FirstName"], case.victim["prs_SecondName"]
    h = _hash(case, name)
    if name in DATE_FIELDS:
        return (f"around summer, ask {first} {second}", f"{first} not sure, maybe {2000 + h % 20}")[h % 2]
    return (f"see notes on {first} {second}", f"{first} said it was different, call {case.victim['prs_MobilePhone'] or 'her'}",
            f"unclear - {second} family")[h % 3]  # fmt: skip


def render(case: GeneratedCase, field: str, text: str | None) -> str | None:
    """Apply `case.mess[field]` to a source's own rendering `text` of the clean value.

    Each source renders a value its own way (labels or codes, ISO2 or a country name, ';' or ' '
    between selections, an ISO date `YYYY-MM-DD`) and then calls this, so every sandbox shows the
    same kinds of mess on the same fields of the same cases. Without mess the text is returned as
    it is. `date_format` expects an ISO date (or date-time) text and rewrites it unambiguously:
    '13/02/2019' (day-first only when the day is over 12), '2019.02.13' or 'Feb 13 2019'.
    """
    kind = case.mess.get(field)
    if kind is None or text is None:
        return text
    h = _hash(case, field)
    if kind == BLANK:
        return None if h % 2 else ""
    if kind == UNKNOWN_CODE:
        if field in COUNTRY_FIELDS:
            return ("XQ", "Atlantis")[h % 2]
        return f"Legacy{10 + h % 90}"
    if kind == FREE_TEXT:
        return mess_free_text(case, field)
    if kind == SPACES_CASE:
        variant = h % 3
        body = text.upper() if variant == 0 else text.lower() if variant == 1 else text.swapcase()
        if field in MULTI_FIELDS:
            body = " ;  ".join(part.strip() for part in body.split(";"))
        return ("  " if h & 8 else " ") + body + (" " if h & 16 else "   ")
    if kind == DATE_FORMAT:
        try:
            day = date.fromisoformat(text.strip()[:10])
        except ValueError:
            return text
        if day.day > 12 and h % 3 == 0:
            return day.strftime("%d/%m/%Y")
        return day.strftime("%Y.%m.%d") if h % 2 else f"{day.strftime('%b')} {day.day} {day.year}"
    return text


def is_future_birth(case: GeneratedCase) -> bool:
    birth = case.victim.get("prs_Birthdate")
    return birth is not None and birth > case.created_at.date()


def _normal(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    if isinstance(value, list):
        return sorted(value) or None
    return value


def expected_fields(case: GeneratedCase) -> dict[str, Any]:
    """The truth after mapping, in `CaseRecord` normalised form (codes, sorted lists, ISO dates, None).

    Covers the person and case fields plus the derived `ext_` fields. A source whose mapping does
    not produce a field (the Excel template has no perpetrators, so no `ext_RecruiterRelation` or
    `ext_PerpetratorRoles`) compares only the keys its mapping produces. Values under `blank`,
    `unknown_code` and `free_text` mess are None; `spaces_case` and `date_format` do not change the
    truth. A future birth date is None (and a rejection), and so are the age and majority from it.
    Registration is `created_at`'s date, which is also `cas_IncomingReferralDate`.
    """
    out: dict[str, Any] = {}
    for name in VICTIM_FIELDS + CASE_FIELDS:
        value = case.victim[name] if name in case.victim else case.case.get(name)
        out[name] = None if case.mess.get(name) in (BLANK, UNKNOWN_CODE, FREE_TEXT) else _normal(value)
    if is_future_birth(case):
        out["prs_Birthdate"] = None
    registered = case.created_at.date()
    out["ext_RegistrationDate"] = registered.isoformat()
    age = age_on(date.fromisoformat(out["prs_Birthdate"]), registered) if out["prs_Birthdate"] else None
    out["ext_AgeAtRegistration"] = age
    out["ext_MajorityStatus"] = None if age is None else ("Minor" if age < 18 else "Adult")
    coe = exploitation_country(case)
    out["ext_CountryOfExploitation"] = None if case.mess.get("vic_LocationOfExploitation") in (BLANK, UNKNOWN_CODE, FREE_TEXT) else coe
    relations = {p["relation"] for p in case.perpetrators if "RecruiterOrIntermediary" in p["per_RoleInProcess"]}
    out["ext_RecruiterRelation"] = sorted(relations) or None
    out["ext_PerpetratorRoles"] = sorted({r for p in case.perpetrators for r in p["per_RoleInProcess"]}) or None
    out["ext_Perpetrators"] = _entries([
        {
            "per_RoleInProcess": sorted(p["per_RoleInProcess"]) or None,
            "per_Gender": p.get("prs_Gender"),
            "per_AgeAtRegistration": age_on(p["prs_Birthdate"], registered) if p.get("prs_Birthdate") else None,
            "per_Citizenship": p.get("citizenship"),
            "per_RelationshipToVictim": p.get("relation"),
            "per_MoneyPaid": p.get("money_paid"),
        }
        for p in case.perpetrators
    ], PERPETRATOR_ITEMS)
    out["ext_TraffickingEvents"] = _entries([
        {"hte_Date": _normal(e["hte_Date"]), "hte_Type": e["hte_Type"], "hte_Country": e["hte_Country"]}
        for e in case.events
    ], EVENT_ITEMS)
    if out["ext_TraffickingEvents"] and out["ext_CountryOfExploitation"] is None and coe is not None:
        for entry in out["ext_TraffickingEvents"]:  # the messed country lives on the first Exploitation event
            if entry["hte_Type"] == "Exploitation" and entry["hte_Country"] == coe:
                entry["hte_Country"] = None
                break
        out["ext_TraffickingEvents"] = _entries(out["ext_TraffickingEvents"], EVENT_ITEMS)
    out["ext_TraffickMonths"] = traffick_months_truth(case)
    return out


PERPETRATOR_ITEMS = ("per_RoleInProcess", "per_Gender", "per_AgeAtRegistration", "per_Citizenship", "per_RelationshipToVictim", "per_MoneyPaid")
EVENT_ITEMS = ("hte_Date", "hte_Type", "hte_Country")


def _entries(entries: list[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """A records field as the mapping stores it: sorted by the values in `items` order; None if empty."""
    key = lambda e: [json.dumps(e.get(k), sort_keys=True, default=str) for k in order]  # noqa: E731
    return sorted(entries, key=key) or None


def has_late_event(case: GeneratedCase) -> bool:
    """An event dated after registration: the duration is unknown and `hte_Date` is rejected."""
    return any(e["hte_Date"] > case.created_at.date() for e in case.events)


def traffick_months_truth(case: GeneratedCase) -> int | None:
    """Whole months from the earliest Recruitment or Exploitation event to registration."""
    registered = case.created_at.date()
    if has_late_event(case):
        return None
    starts = [e["hte_Date"] for e in case.events if e["hte_Type"] in ("Recruitment", "Exploitation")]
    if not starts:
        return None
    start = min(starts)
    return (registered.year - start.year) * 12 + registered.month - start.month - (registered.day < start.day)


def expected_rejections(case: GeneratedCase, *, events: bool = False) -> set[str]:
    """Fields whose rendered value mapping must reject: unknown codes, free text, a future birth date.

    `vic_LocationOfExploitation` mess is reported under `ext_CountryOfExploitation`, the field it feeds.
    `events=True` for a source whose mapping reads the events themselves (`ext_TraffickingEvents`):
    that messed country is then rejected as `hte_Country` too, and an event dated after
    registration as `hte_Date`.
    """
    fields = {name for name, kind in case.mess.items() if kind in (UNKNOWN_CODE, FREE_TEXT)}
    if "vic_LocationOfExploitation" in fields:
        fields.discard("vic_LocationOfExploitation")
        fields.add("ext_CountryOfExploitation")
        if events:
            fields.add("hte_Country")
    if events and has_late_event(case):
        fields.add("hte_Date")
    if is_future_birth(case) and case.mess.get("prs_Birthdate") not in (BLANK, FREE_TEXT):
        fields.add("prs_Birthdate")
    return fields


def personal_values(cases: Iterable[GeneratedCase]) -> set[str]:
    """Every fake direct identifier and free text of `cases`, for scans that must find none of them.

    Names (victims, perpetrators, staff), emails, phones, streets, identity numbers, the free-text
    fields, support plan objectives and the free text typed into coded fields. Not included: cities,
    postal codes and dates, which are not unique enough to scan for.
    """
    values: set[str] = set()
    for case in cases:
        for name in DIRECT_IDENTIFIERS:
            if case.victim.get(name):
                values.add(case.victim[name])
        values.add(f"{case.victim['prs_FirstName']} {case.victim['prs_SecondName']}")
        for name in STAFF_FIELDS + FREE_TEXT_FIELDS:
            if case.case.get(name):
                values.add(case.case[name])
        for person in case.perpetrators:
            values.update((person["prs_FirstName"], person["prs_SecondName"], f"{person['prs_FirstName']} {person['prs_SecondName']}"))
        for plan in case.support_plans:
            values.add(plan["spl_Objectives"])
        for name, kind in case.mess.items():
            if kind == FREE_TEXT:
                values.add(mess_free_text(case, name))
    return values


__all__ = [
    "GeneratedCase",
    "LABELS",
    "age_on",
    "COUNTRIES",
    "CORRIDORS",
    "MESSABLE",
    "MESS_KINDS",
    "evolve",
    "expected_fields",
    "expected_rejections",
    "exploitation_country",
    "has_late_event",
    "traffick_months_truth",
    "generate_cases",
    "personal_values",
    "recruitment_country",
    "render",
]
