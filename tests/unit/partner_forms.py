"""Three case forms written as partners write them, none of them the HTCDS template: their own
question names, English, French and Spanish labels, their own choice codes. Each question and
choice carries the common-schema field and code a person would map it to (None: nothing fits),
so a test can measure how much of it `mapping suggest` gets right.

    path, truth = write_form(tmp_path, FORMS[0])
"""

from __future__ import annotations

from pathlib import Path

import openpyxl

# (type, name, label, expected field) and choices {list: [(name, label, expected code)]}
SHELTER_EN = {
    "form_id": "shelter_intake",
    "label_column": "label",
    "survey": [
        ("start", "start", None, None),
        ("today", "today", None, None),
        ("date", "intake_date", "Date of interview", "ext_RegistrationDate"),
        ("begin_group", "survivor", "About the survivor", None),
        ("text", "given_name", "Given name", "prs_FirstName"),
        ("text", "surname", "Surname", "prs_SecondName"),
        ("date", "dob", "Date of birth", "prs_Birthdate"),
        ("select_one sex", "sex", "Gender of the survivor", "prs_Gender"),
        ("select_one countries", "nationality", "Nationality", "prs_Citizenship"),
        ("select_one marital", "marital", "Marital status", "prs_MaritalStatus"),
        ("integer", "kids", "Number of children", "prs_NumberOfChildren"),
        ("text", "phone", "Phone number", "prs_MobilePhone"),
        ("end_group", None, None, None),
        ("begin_group", "exploitation", "Exploitation", None),
        ("select_multiple exploit", "exploit_type", "What forms of exploitation did the survivor experience?", "vic_TypeOfExploitation"),
        ("select_multiple control", "control", "Means of control used by the traffickers", "vic_MethodsOfControl"),
        ("select_one countries", "where_exploited", "Country of exploitation", "ext_CountryOfExploitation"),
        ("select_multiple recruit", "recruited_how", "How was the survivor recruited?", "vic_MethodOfRecruitment"),
        ("end_group", None, None, None),
        ("select_one status", "case_state", "Case status", "cas_Status"),
        ("select_one yn", "consent", "Consent given for data sharing", "con_Consent"),
        ("text", "favourite_food", "Favourite food (for the shelter kitchen)", None),
        ("text", "staff_notes", "Notes by the staff member", None),
    ],
    "choices": {
        "sex": [("f", "Female", "Feminine"), ("m", "Male", "Masculine"), ("tw", "Trans woman", "TransgenderFeminine"), ("u", "Unknown", "NonSpecifiedUnknown")],
        "countries": [("ng", "Nigeria", "NG"), ("gr", "Greece", "GR"), ("al", "Albania", "AL"), ("sy", "Syria", "SY"), ("oth", "Somewhere else", None)],
        "marital": [("single", "Single", "Single"), ("married", "Married", "Married"), ("widow", "Widow", "Widowed")],
        "exploit": [("sexual", "Sexual exploitation", "SexualExploitation"), ("labour", "Forced labour", "ForcedLabour"), ("begging", "Begging", "ForcedBegging"), ("marriage", "Forced marriage", "ForcedMarriage"), ("other", "Other", "Other")],
        "control": [("debt", "Debt bondage", "DebtBondage"), ("violence", "Physical violence", "PhysicalAbuse"), ("docs", "Passport confiscated", "WithholdsDocuments"), ("threats", "Threats", "PhysicalThreats"), ("juju", "Juju oath", None)],
        "recruit": [("friend", "Through a friend", "ThroughFriendsOrSocialEvents"), ("family", "Family member", "ThroughFamilyOrFamilyEvents"), ("online", "Social media", "ThroughOnlineSocialNetworks"), ("agency", "Recruitment agency", None)],
        "status": [("open", "Open", "Active"), ("closed", "Closed", "Closed"), ("fu", "Follow-up", "FollowUp")],
        "yn": [("yes", "Yes", None), ("no", "No", None)],
    },
}

ACCUEIL_FR = {
    "form_id": "accueil_victimes",
    "label_column": "label::Français (fr)",
    "survey": [
        ("start", "start", None, None),
        ("date", "date_entretien", "Date de l'entretien", "ext_RegistrationDate"),
        ("text", "prenom", "Prénom", "prs_FirstName"),
        ("text", "nom_famille", "Nom de famille", "prs_SecondName"),
        ("date", "date_naissance", "Date de naissance", "prs_Birthdate"),
        ("select_one sexe", "sexe", "Sexe de la personne", "prs_Gender"),
        ("select_one pays", "nationalite", "Nationalité", "prs_Citizenship"),
        ("select_one etat", "etat_civil", "État civil", "prs_MaritalStatus"),
        ("select_one statut", "statut_victime", "Statut de victime", "vic_TraffickingStatus"),
        ("select_multiple formes", "formes_exploitation", "Forme d'exploitation subie", "vic_TypeOfExploitation"),
        ("select_multiple moyens", "moyens_controle", "Moyens de contrôle utilisés", "vic_MethodsOfControl"),
        ("select_one pays", "pays_exploitation", "Pays d'exploitation", "ext_CountryOfExploitation"),
        ("select_one dossier", "statut_dossier", "Statut du dossier", "cas_Status"),
        ("text", "couleur_preferee", "Couleur préférée", None),
        ("text", "remarques", "Remarques de l'intervenant", None),
    ],
    "choices": {
        "sexe": [("femme", "Femme", "Feminine"), ("homme", "Homme", "Masculine"), ("nb", "Non binaire", "NonConforming"), ("inconnu", "Inconnu", "NonSpecifiedUnknown")],
        "pays": [("nga", "Nigéria", "NG"), ("fra", "France", "FR"), ("civ", "Côte d'Ivoire", "CI"), ("rou", "Roumanie", "RO"), ("autre", "Autre pays", None)],
        "etat": [("celib", "Célibataire", "Single"), ("marie", "Marié(e)", "Married"), ("divorce", "Divorcé(e)", "Divorced"), ("veuf", "Veuf / veuve", "Widowed")],
        "statut": [("presumee", "Victime présumée", "PossibleVictimOfTrafficking"), ("identifiee", "Victime identifiée", "ActualVictimOfTrafficking"), ("non", "Pas une victime", "NotAVictimOfTrafficking")],
        "formes": [("sexuelle", "Exploitation sexuelle", "SexualExploitation"), ("travail", "Travail forcé", "ForcedLabour"), ("mendicite", "Mendicité forcée", "ForcedBegging"), ("domestique", "Servitude domestique", "Servitude"), ("delinquance", "Contrainte à commettre des délits", None)],
        "moyens": [("dette", "Servitude pour dettes", "DebtBondage"), ("violence", "Violence physique", "PhysicalAbuse"), ("papiers", "Confiscation des documents", "WithholdsDocuments"), ("promesses", "Fausses promesses", "FalsePromises"), ("isolement", "Isolement", None)],
        "dossier": [("ouvert", "Ouvert", "Active"), ("suivi", "Suivi", "FollowUp"), ("ferme", "Fermé", "Closed")],
    },
}

CASOS_ES = {
    "form_id": "registro_casos",
    "label_column": "label::Español (es)",
    "survey": [
        ("date", "fecha_registro", "Fecha de registro", "ext_RegistrationDate"),
        ("begin_group", "datos_persona", "Datos de la persona", None),
        ("text", "nombres", "Nombres", "prs_FirstName"),
        ("text", "apellidos", "Apellidos", "prs_SecondName"),
        ("date", "fecha_nac", "Fecha de nacimiento", "prs_Birthdate"),
        ("select_one genero", "genero", "Género", "prs_Gender"),
        ("select_one paises", "nacionalidad", "Nacionalidad", "prs_Citizenship"),
        ("select_one civil", "estado_civil", "Estado civil", "prs_MaritalStatus"),
        ("end_group", None, None, None),
        ("select_multiple tipos", "tipo_explotacion", "Tipo de explotación", "vic_TypeOfExploitation"),
        ("select_multiple medios", "medios_control", "Medios de control", "vic_MethodsOfControl"),
        ("select_multiple reclut", "como_reclutada", "¿Cómo fue reclutada la persona?", "vic_MethodOfRecruitment"),
        ("select_one paises", "pais_explotacion", "País de explotación", "ext_CountryOfExploitation"),
        ("select_one estado", "estado_caso", "Estado del caso", "cas_Status"),
        ("select_one sino", "consentimiento", "Consentimiento informado", "con_Consent"),
        ("text", "observaciones", "Observaciones", None),
        ("text", "equipo_favorito", "Equipo de fútbol favorito", None),
    ],
    "choices": {
        "genero": [("1", "Mujer", "Feminine"), ("2", "Hombre", "Masculine"), ("3", "Mujer trans", "TransgenderFeminine"), ("9", "Prefiere no decir", "NonSpecifiedUnknown")],
        "paises": [("co", "Colombia", "CO"), ("ve", "Venezuela", "VE"), ("pe", "Perú", "PE"), ("ec", "Ecuador", "EC"), ("otro", "Otro país", None)],
        "civil": [("s", "Soltera/o", "Single"), ("c", "Casada/o", "Married"), ("u", "Unión libre", "RegisteredPartnership")],
        "tipos": [("sexual", "Explotación sexual", "SexualExploitation"), ("laboral", "Trabajo forzoso", "ForcedLabour"), ("matrimonio", "Matrimonio forzado", "ForcedMarriage"), ("mendicidad", "Mendicidad", "ForcedBegging")],
        "medios": [("deuda", "Deuda", "DebtBondage"), ("amenazas", "Amenazas", "PhysicalThreats"), ("violencia_sexual", "Violencia sexual", "SexualAbuse"), ("documentos", "Retención de documentos", "WithholdsDocuments")],
        "reclut": [("amigos", "Por amigos", "ThroughFriendsOrSocialEvents"), ("redes", "Redes sociales", "ThroughOnlineSocialNetworks"), ("anuncio", "Anuncio en periódico", "ThroughANewspaperAdvert"), ("agencia", "Agencia de empleo", None)],
        "estado": [("abierto", "Abierto", "Active"), ("seguimiento", "En seguimiento", "FollowUp"), ("cerrado", "Cerrado", "Closed")],
        "sino": [("si", "Sí", None), ("no", "No", None)],
    },
}

FORMS = [SHELTER_EN, ACCUEIL_FR, CASOS_ES]


def write_form(directory: Path, form: dict) -> tuple[Path, dict]:
    """Write the form as an .xlsx XLSForm; return its path and the truth {fields: {name: field}, choices: {(question, choice): code}}."""
    workbook = openpyxl.Workbook()
    survey = workbook.active
    survey.title = "survey"
    survey.append(("type", "name", form["label_column"], "required"))
    truth_fields: dict[str, str | None] = {}
    truth_choices: dict[tuple[str, str], str | None] = {}
    for kind, name, label, expected in form["survey"]:
        survey.append((kind, name, label, "yes" if expected else None))
        if name and not kind.startswith(("begin", "end")) and kind not in ("start", "end", "today"):
            truth_fields[name] = expected
            if kind.startswith("select") and expected:
                for choice, _label, code in form["choices"][kind.split()[1]]:
                    truth_choices[(name, choice)] = code
    choices = workbook.create_sheet("choices")
    choices.append(("list_name", "name", form["label_column"]))
    for list_name, items in form["choices"].items():
        for name, label, _code in items:
            choices.append((list_name, name, label))
    settings = workbook.create_sheet("settings")
    settings.append(("form_id", "version", "default_language"))
    settings.append((form["form_id"], "3", form["label_column"].partition("::")[2] or "English"))
    path = directory / f"{form['form_id']}.xlsx"
    workbook.save(path)
    return path, {"fields": truth_fields, "choices": truth_choices}
