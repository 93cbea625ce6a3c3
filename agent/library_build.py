"""Authoring source of the default indicator catalogue (``protocol/catalogues/default.json``).

The catalogue ships as data; this module is where it is written, because Python lets each rule
and code carry its provenance next to it. ``python -m agent.library_build`` rewrites the JSON;
a test asserts the committed file equals :func:`catalogue_json` so the two never drift.

Every code names where it came from (``source``). Clusters the research notes
(``shared/reference/indicators.md`` section 2) lacked were looked up in public code (OpenCodelists
mirrors in OpenSAFELY study repositories, NHS dm+d identifiers in public code); each list here is
a small demonstration subset of the full NHS cluster, as docs/indicators.md says.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocol.catalogue import (
    Age,
    AgeBand,
    All,
    Any_,
    Catalogue,
    CodeEntry,
    Codelist,
    CountRule,
    DisclosurePolicy,
    FirstCode,
    HasCode,
    Indicator,
    LatestValue,
    Not,
    OnRegister,
    RegisteredFor,
    Rule,
    SexIs,
    Window,
)

CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "protocol" / "catalogues" / "default.json"

# --- where codes came from ---------------------------------------------------------------------

_REF = "shared/reference/indicators.md s2"
SRC_HYP = f"OpenCodelists nhsd-primary-care-domain-refsets/hyp_cod via opensafely/disparities-comparison ({_REF})"
SRC_HYPRES = f"HYPRES_COD code seen in endeavourhealth-discovery/IMQuery code files ({_REF})"
SRC_DM_T1 = f"gm-sde conditions/diabetes-type-i/1 snomed list ({_REF})"
SRC_DM_T2 = f"gm-sde conditions/diabetes-type-ii snomed list ({_REF})"
SRC_DM = f"DM_COD parent concept seen in public code ({_REF})"
SRC_DMRES = f"DMRES_COD code in ehrQL test data ({_REF})"
SRC_SBP = f"SNOMED CT observable used by FHIR BP profiles ({_REF})"
SRC_DBP = f"opensafely/hypertension-sro codelists/user-milanwiedemann-diastolic-blood-pressure-qof.csv, built on BP_COD ({_REF})"
SRC_HBA1C = f"OpenCodelists nhsd-primary-care-domain-refsets/ifcchbam_cod via milanwiedemann/phc-coding-club, complete cluster ({_REF})"
SRC_AF = f"OpenCodelists nhsd-primary-care-domain-refsets/afib_cod via opensafely/zostavax-dementia ({_REF})"
SRC_CHD = f"tecnomod-um/SK-FHIR-IG stroke risk factor value set ({_REF})"
SRC_CKD3 = f"gm-sde conditions/ckd-stage-3 snomed list ({_REF})"
SRC_CKD45 = f"gm-sde conditions/ckd-stage-4 and ckd-stage-5 snomed lists ({_REF})"
SRC_ASTHMA = f"gm-sde conditions/asthma snomed list ({_REF})"
SRC_COPD = f"OpenCodelists nhsd-primary-care-domain-refsets/copd_cod via opensafely/zostavax-dementia ({_REF})"
SRC_LSMOK = f"OpenCodelists nhsd-primary-care-domain-refsets/lsmok_cod via opensafely/zostavax-dementia ({_REF})"
SRC_EXSMOK = f"OpenCodelists nhsd-primary-care-domain-refsets/exsmok_cod via opensafely/zostavax-dementia ({_REF})"
SRC_NEVER = f"SNOMED CT never-smoked concept used in FHIR value sets ({_REF})"
SRC_FLU = f"NHS immunisation code for seasonal influenza vaccination ({_REF})"
SRC_APIXABAN = "opensafely/doacs-covid19 codelists/opensafely-direct-acting-oral-anticoagulants-doac.csv (dm+d VMP)"
SRC_ANTICOAG_VMP = (
    "dm+d VMP id in a public anticoagulant migration (m170908_141900_tag_known_anticoagulant_meds); "
    "prefix agrees with opensafely/doacs-covid19 doac.csv"
)
SRC_WARFARIN = (
    "dm+d VMP id in a public anticoagulant migration (m170908_141900_tag_known_anticoagulant_meds)"
)
SRC_STAT = "OpenCodelists nhs-drug-refsets/stat_cod via opensafely/zostavax-dementia codelists/nhs-drug-refsets-stat_cod.csv"
SRC_AST_DRUG = (
    "opensafely/qof-utilities codelists/opensafely-asthma-related-drug-treatment-codes.csv"
)
SRC_AST_REVIEW = "QOF asthma review SNOMED list in a public CPRD Aurum asthma-review study script; term from public asthma QOF rule code"
SRC_COPD_REVIEW = "OpenCodelists nhsd-primary-care-domain-refsets/copdrvw_cod (20260630), as quoted in a public QOF look-for audit"
SRC_CERVICAL = "SNOMED CT cervical screening codes in a public quality-measure implementation (SCREENING_SNOMED_CODES)"
# Equivalents for FHIR / OMOP data (added with agent/sources; see docs/sources.md).
SRC_LOINC_BP = (
    "FHIR R4 Blood Pressure profile (hl7.org/fhir/R4B/bp.html): BP panel 85354-9 components"
)
SRC_LOINC_HBA1C = (
    "HL7 Vulcan RWD IG ValueSet ExampleHbA1cTestCodes (LOINC); NGSP % values are converted to "
    "IFCC mmol/mol on load"
)
SRC_CVX_FLU = "CDC CDSi supporting data: influenza vaccine CVX codes (cdsframework.atlassian.net)"
SRC_RXNORM_STATIN = "RxNorm SCD with this display in Synthea FHIR output (shared/data/fhir-bulk-10)"
SRC_CHA2DS2VASC = (
    "OHDSI vocabulary release notes: OMOP concept 42536432 (standard concept, SNOMED vocabulary)"
)


def _c(system: str, code: str, term: str, source: str) -> CodeEntry:
    return CodeEntry(system=system, code=code, term=term, source=source)  # type: ignore[arg-type]


def _sct(code: str, term: str, source: str) -> CodeEntry:
    return _c("snomedct", code, term, source)


def _dmd(code: str, term: str, source: str) -> CodeEntry:
    return _c("dmd", code, term, source)


CODELISTS: tuple[Codelist, ...] = (
    Codelist(
        id="hyp",
        title="Hypertension diagnosis (HYP_COD, demo subset)",
        codes=(
            _sct("38341003", "Hypertensive disorder, systemic arterial", SRC_HYP),
            _sct("59621000", "Essential hypertension", SRC_HYP),
            _sct("1201005", "Benign essential hypertension", SRC_HYP),
            _sct("843821000000102", "Stage 1 hypertension (NICE 2011)", SRC_HYP),
            _sct("846371000000103", "Stage 2 hypertension (NICE 2011)", SRC_HYP),
        ),
    ),
    Codelist(
        id="hyp_res",
        title="Hypertension resolved (HYPRES_COD, demo subset)",
        codes=(_sct("162659009", "Hypertension resolved", SRC_HYPRES),),
    ),
    Codelist(
        id="dm",
        title="Diabetes mellitus diagnosis (DM_COD, demo subset)",
        codes=(
            _sct("73211009", "Diabetes mellitus", SRC_DM),
            _sct("46635009", "Diabetes mellitus type 1", SRC_DM_T1),
            _sct("313435000", "Type I diabetes mellitus without complication", SRC_DM_T1),
            _sct("44054006", "Diabetes mellitus type 2", SRC_DM_T2),
            _sct("313436004", "Type II diabetes mellitus without complication", SRC_DM_T2),
        ),
    ),
    Codelist(
        id="dm_res",
        title="Diabetes resolved (DMRES_COD, demo subset)",
        codes=(_sct("315051004", "Diabetes resolved", SRC_DMRES),),
    ),
    Codelist(
        id="sbp",
        title="Systolic blood pressure reading (from BP_COD, demo subset)",
        codes=(
            _sct("271649006", "Systolic blood pressure", SRC_SBP),
            _sct("72313002", "Systolic arterial pressure", SRC_SBP),
            _c("loinc", "8480-6", "Systolic blood pressure", SRC_LOINC_BP),
        ),
    ),
    Codelist(
        id="dbp",
        title="Diastolic blood pressure reading (from BP_COD, demo subset)",
        codes=(
            _sct("271650006", "Diastolic blood pressure", SRC_DBP),
            _sct("1091811000000102", "Diastolic arterial pressure", SRC_DBP),
            _sct("163031004", "O/E - diastolic BP reading", SRC_DBP),
            _c("loinc", "8462-4", "Diastolic blood pressure", SRC_LOINC_BP),
        ),
    ),
    Codelist(
        id="hba1c",
        title="IFCC HbA1c, mmol/mol (IFCCHBAM_COD, complete)",
        codes=(
            _sct("999791000000106", "Haemoglobin A1c level - IFCC standardised", SRC_HBA1C),
            _sct(
                "1049301000000100",
                "HbA1c level (DCCT aligned) / IFCC - diagnostic reference range",
                SRC_HBA1C,
            ),
            _sct(
                "1049321000000109",
                "HbA1c level (DCCT aligned) / IFCC - monitoring ranges",
                SRC_HBA1C,
            ),
            _c("loinc", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", SRC_LOINC_HBA1C),
            _c(
                "loinc",
                "17856-6",
                "Hemoglobin A1c/Hemoglobin.total in Blood by HPLC",
                SRC_LOINC_HBA1C,
            ),
            _c(
                "loinc",
                "59261-8",
                "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol",
                SRC_LOINC_HBA1C,
            ),
        ),
    ),
    Codelist(
        id="af",
        title="Atrial fibrillation or flutter (AFIB_COD, demo subset)",
        codes=(
            _sct("49436004", "Atrial fibrillation", SRC_AF),
            _sct("282825002", "Paroxysmal atrial fibrillation", SRC_AF),
            _sct("440028005", "Permanent atrial fibrillation", SRC_AF),
            _sct("440059007", "Persistent atrial fibrillation", SRC_AF),
            _sct("5370000", "Atrial flutter", SRC_AF),
        ),
    ),
    Codelist(
        id="cha2ds2vasc",
        title="CHA2DS2-VASc score (value recorded)",
        codes=(
            _c(
                "omop",
                "42536432",
                "CHA2DS2-VASc (congestive heart failure, hypertension, age 2, diabetes mellitus, stroke 2, vascular disease, age, sex category) score",
                SRC_CHA2DS2VASC,
            ),
        ),
    ),
    Codelist(
        id="doac",
        title="Direct-acting oral anticoagulants (dm+d VMPs, demo subset)",
        codes=(
            _dmd("703907006", "Apixaban 2.5mg tablets", SRC_APIXABAN),
            _dmd("703908001", "Apixaban 5mg tablets", SRC_APIXABAN),
            _dmd("14254711000001104", "Rivaroxaban 10mg tablets", SRC_ANTICOAG_VMP),
            _dmd("19842111000001101", "Rivaroxaban 15mg tablets", SRC_ANTICOAG_VMP),
            _dmd("19842211000001107", "Rivaroxaban 20mg tablets", SRC_ANTICOAG_VMP),
            _dmd("13532911000001104", "Dabigatran etexilate 75mg capsules", SRC_ANTICOAG_VMP),
            _dmd("13532811000001109", "Dabigatran etexilate 110mg capsules", SRC_ANTICOAG_VMP),
            _dmd("19469811000001101", "Dabigatran etexilate 150mg capsules", SRC_ANTICOAG_VMP),
        ),
    ),
    Codelist(
        id="vka",
        title="Vitamin K antagonist: warfarin (dm+d VMPs, demo subset)",
        codes=(
            _dmd("319736008", "Warfarin 500microgram tablets", SRC_WARFARIN),
            _dmd("319733000", "Warfarin 1mg tablets", SRC_WARFARIN),
            _dmd("319734006", "Warfarin 3mg tablets", SRC_WARFARIN),
            _dmd("319735007", "Warfarin 5mg tablets", SRC_WARFARIN),
        ),
    ),
    Codelist(
        id="statin",
        title="Statins (STAT_COD dm+d refset, demo subset)",
        codes=(
            _dmd("42381911000001105", "Simvastatin 10mg tablets", SRC_STAT),
            _dmd("42382111000001102", "Simvastatin 20mg tablets", SRC_STAT),
            _dmd("42382311000001100", "Simvastatin 40mg tablets", SRC_STAT),
            _dmd("42297711000001107", "Simvastatin 80mg tablets", SRC_STAT),
            _dmd("42381811000001105", "Rosuvastatin 5mg tablets", SRC_STAT),
            _dmd("42297211000001100", "Rosuvastatin 10mg tablets", SRC_STAT),
            _dmd("42297311000001108", "Rosuvastatin 20mg tablets", SRC_STAT),
            _dmd("42379911000001103", "Pravastatin 20mg tablets", SRC_STAT),
            _dmd("42380011000001102", "Pravastatin 40mg tablets", SRC_STAT),
            _dmd("42849311000001102", "Atorvastatin 20mg tablets (Sandoz Ltd) (AMP)", SRC_STAT),
            _dmd("42850211000001100", "Atorvastatin 40mg tablets (Sandoz Ltd) (AMP)", SRC_STAT),
            _dmd("42850411000001101", "Atorvastatin 80mg tablets (Sandoz Ltd) (AMP)", SRC_STAT),
            _c("rxnorm", "314231", "Simvastatin 10 MG Oral Tablet", SRC_RXNORM_STATIN),
            _c("rxnorm", "312961", "Simvastatin 20 MG Oral Tablet", SRC_RXNORM_STATIN),
        ),
    ),
    Codelist(
        id="chd",
        title="Coronary heart disease (CHD_COD, demo subset)",
        codes=(
            _sct("53741008", "Coronary arteriosclerosis", SRC_CHD),
            _sct("22298006", "Myocardial infarction", SRC_CHD),
        ),
    ),
    Codelist(
        id="stroke_tia",
        title="Stroke or transient ischaemic attack (STRK_COD and TIA_COD, demo subset)",
        codes=(
            _sct("230690007", "Cerebrovascular accident", SRC_CHD),
            _sct("422504002", "Ischemic stroke", SRC_CHD),
            _sct("266257000", "Transient ischemic attack", SRC_CHD),
        ),
    ),
    Codelist(
        id="ckd35",
        title="Chronic kidney disease stages 3a to 5 (CKD_COD, demo subset)",
        codes=(
            _sct("433144002", "Chronic kidney disease stage 3", SRC_CKD3),
            _sct("700378005", "Chronic kidney disease stage 3A", SRC_CKD3),
            _sct("700379002", "Chronic kidney disease stage 3B", SRC_CKD3),
            _sct("431857002", "Chronic kidney disease stage 4", SRC_CKD45),
            _sct("433146000", "Chronic kidney disease stage 5", SRC_CKD45),
            _sct("714152005", "Chronic kidney disease stage 5 on dialysis", SRC_CKD45),
        ),
    ),
    Codelist(
        id="asthma",
        title="Asthma diagnosis (AST_COD, demo subset)",
        codes=(
            _sct("195967001", "Asthma", SRC_ASTHMA),
            _sct("401193004", "Asthma confirmed", SRC_ASTHMA),
        ),
    ),
    Codelist(
        id="asthma_drug",
        title="Asthma-related drug treatment (dm+d, demo subset)",
        codes=(
            _dmd(
                "39113611000001102", "Salbutamol 100micrograms/dose inhaler CFC free", SRC_AST_DRUG
            ),
        ),
    ),
    Codelist(
        id="asthma_review",
        title="Asthma review (QOF asthma review codes, demo subset)",
        codes=(
            _sct("394700004", "Asthma annual review", SRC_AST_REVIEW),
            _sct("270442000", "Asthma monitoring check done", SRC_AST_REVIEW),
            _sct("394720003", "Asthma medication review", SRC_AST_REVIEW),
        ),
    ),
    Codelist(
        id="copd",
        title="Chronic obstructive pulmonary disease (COPD_COD, demo subset)",
        codes=(
            _sct("13645005", "Chronic obstructive pulmonary disease", SRC_COPD),
            _sct("313296004", "Mild chronic obstructive pulmonary disease", SRC_COPD),
            _sct("313297008", "Moderate chronic obstructive pulmonary disease", SRC_COPD),
            _sct("313299006", "Severe chronic obstructive pulmonary disease", SRC_COPD),
        ),
    ),
    Codelist(
        id="copd_review",
        title="COPD review (COPDRVW_COD)",
        codes=(
            _sct(
                "394703002", "Chronic obstructive pulmonary disease annual review", SRC_COPD_REVIEW
            ),
            _sct(
                "760601000000107",
                "Chronic obstructive pulmonary disease 3 monthly review",
                SRC_COPD_REVIEW,
            ),
            _sct(
                "760621000000103",
                "Chronic obstructive pulmonary disease 6 monthly review",
                SRC_COPD_REVIEW,
            ),
        ),
    ),
    Codelist(
        id="smoking_status",
        title="Smoking status: current, ex- or never smoker (SMOK_COD, demo subset)",
        codes=(
            _sct("77176002", "Smoker", SRC_LSMOK),
            _sct("65568007", "Cigarette smoker", SRC_LSMOK),
            _sct("449868002", "Smokes tobacco daily", SRC_LSMOK),
            _sct("8517006", "Ex-smoker", SRC_EXSMOK),
            _sct("281018007", "Ex-cigarette smoker", SRC_EXSMOK),
            _sct("160617001", "Stopped smoking", SRC_EXSMOK),
            _sct("266919005", "Never smoked tobacco", SRC_NEVER),
        ),
    ),
    Codelist(
        id="cervical_screen",
        title="Cervical screening done (SMEAR_COD-like, demo subset)",
        codes=(
            _sct("171149006", "Screening for malignant neoplasm of cervix", SRC_CERVICAL),
            _sct("413087003", "Cervical smear taken", SRC_CERVICAL),
        ),
    ),
    Codelist(
        id="flu_vacc",
        title="Seasonal influenza vaccination given",
        codes=(
            _sct("822851000000102", "Seasonal influenza vaccination", SRC_FLU),
            *(
                _c("cvx", code, term, SRC_CVX_FLU)
                for code, term in (
                    ("88", "Influenza, unspecified formulation"),
                    ("135", "Influenza, high dose, seasonal"),
                    ("140", "Influenza, seasonal, injectable, preservative free"),
                    ("141", "Influenza, seasonal, injectable"),
                    ("150", "Influenza, injectable, quadrivalent, preservative free"),
                    ("153", "Influenza, injectable, MDCK, preservative free"),
                    ("155", "Influenza, recombinant, injectable, preservative free"),
                    ("158", "Influenza, injectable, quadrivalent"),
                    ("161", "Influenza, injectable, quadrivalent, preservative free, pediatric"),
                    ("171", "Influenza, injectable, MDCK, preservative free, quadrivalent"),
                    ("185", "Influenza, recombinant, quadrivalent, injectable, preservative free"),
                    ("186", "Influenza, injectable, MDCK, quadrivalent, preservative"),
                    ("197", "Influenza, high dose, quadrivalent"),
                )
            ),
        ),
    ),
)

# --- rule building blocks ----------------------------------------------------------------------

EVERYONE = Age(min=0)
HYP_REG = OnRegister(codelist="hyp", resolved="hyp_res")
DM_REG = All(of=(OnRegister(codelist="dm", resolved="dm_res"), Age(min=17)))
AF_REG = OnRegister(codelist="af")
CHD_REG = OnRegister(codelist="chd")
STIA_REG = OnRegister(codelist="stroke_tia")
CKD_REG = All(of=(OnRegister(codelist="ckd35"), Age(min=18)))
AST_REG = All(
    of=(
        OnRegister(codelist="asthma"),
        Age(min=6),
        HasCode(codelist="asthma_drug", table="medications", window=Window(months=12)),
    )
)
COPD_REG = OnRegister(codelist="copd")

W12 = Window(months=12)


def _bp_at_most(systolic: int, diastolic: int) -> Rule:
    return All(
        of=(
            LatestValue(codelist="sbp", window=W12, op="<=", value=systolic),
            LatestValue(codelist="dbp", window=W12, op="<=", value=diastolic),
        )
    )


def _new_to_register(codelist: str, months: int) -> Rule:
    """QOF's "diagnosed or registered in the last N months" exclusion."""
    return Any_(
        of=(
            FirstCode(codelist=codelist, window=Window(months=months)),
            Not(rule=RegisteredFor(months=months)),
        )
    )


def _statin_in(months: int) -> Rule:
    return HasCode(codelist="statin", table="medications", window=Window(months=months))


_BP_SIMPLE = (
    "Systolic and diastolic are each taken as the latest reading of its own code in the 12 months "
    "(not necessarily the same reading); on one day the lowest value counts. Clinic readings only: "
    "home and ambulatory thresholds are not modelled. Personalised care adjustments (maximal "
    "tolerated therapy, unsuitable, declined, two invitations) are not modelled; the only "
    "exclusion is a diagnosis or registration in the last 9 months."
)
_REGISTER_SIMPLE = (
    "Register codes are a demonstration subset of the NHS cluster, so real practices with other "
    "codes in use will under-count until the full cluster is loaded."
)


def _ind(**kwargs: object) -> Indicator:
    return Indicator(version=1, **kwargs)  # type: ignore[arg-type]


INDICATORS: tuple[Indicator, ...] = (
    _ind(
        id="HYP_REG",
        title="Hypertension register (prevalence)",
        qof="HYP001",
        rationale="Recorded hypertension prevalence on the whole list; a low figure against peers suggests undiagnosed hypertension.",
        population=EVERYONE,
        numerator=HYP_REG,
        simplifications=_REGISTER_SIMPLE,
    ),
    _ind(
        id="HYP_BP_U80",
        title="Hypertension aged 79 or under: last BP 140/90 or less",
        qof="HYP008",
        rationale="Blood pressure control in hypertension reduces stroke and heart attack; the QOF target for patients aged 79 or under is 140/90 mmHg.",
        population=All(of=(HYP_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register("hyp", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="HYP_BP_80",
        title="Hypertension aged 80 or over: last BP 150/90 or less",
        qof="HYP009",
        rationale="Blood pressure control in older patients with hypertension; QOF's target at 80 and over is 150/90 mmHg.",
        population=All(of=(HYP_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register("hyp", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="DM_REG",
        title="Diabetes register, aged 17 or over (prevalence)",
        qof="DM017",
        rationale="Recorded diabetes prevalence among patients aged 17 or over, the QOF register denominator.",
        population=Age(min=17),
        numerator=DM_REG,
        simplifications=_REGISTER_SIMPLE + " Type 1 and type 2 are not told apart.",
    ),
    _ind(
        id="DM_HBA1C",
        title="Diabetes: last HbA1c 58 mmol/mol or less in 12 months",
        qof="DM020",
        rationale="Glycaemic control in diabetes reduces microvascular complications; QOF's target for patients without moderate or severe frailty is 58 mmol/mol.",
        population=DM_REG,
        numerator=LatestValue(codelist="hba1c", window=W12, op="<=", value=58),
        exclusions=_new_to_register("dm", 9),
        simplifications=(
            "Frailty is not modelled: every patient on the register is held to the 58 mmol/mol "
            "target (QOF's DM020 excludes moderate or severe frailty, which DM021 holds to "
            "75 mmol/mol). Fructosamine, maximal therapy, declined and invitation adjustments are "
            "not modelled; the only exclusion is a diagnosis or registration in the last 9 months."
        ),
    ),
    _ind(
        id="DM_BP",
        title="Diabetes: last BP 140/80 or less in 12 months",
        qof="DM019",
        rationale="Blood pressure control in diabetes reduces cardiovascular and kidney complications; QOF's target is 140/80 mmHg.",
        population=DM_REG,
        numerator=_bp_at_most(140, 80),
        exclusions=_new_to_register("dm", 9),
        simplifications="Frailty is not modelled (QOF's DM019 covers patients without moderate or severe frailty). "
        + _BP_SIMPLE,
    ),
    _ind(
        id="DM_STATIN",
        title="Diabetes aged 40 or over without CHD or stroke: statin issued in 6 months",
        qof="DM034",
        rationale="Statins lower cardiovascular risk in diabetes; QOF (DM022, now DM034) rewards a statin issued to patients aged 40 or over without cardiovascular disease.",
        population=All(of=(DM_REG, Age(min=40), Not(rule=CHD_REG), Not(rule=STIA_REG))),
        numerator=_statin_in(6),
        exclusions=_new_to_register("dm", 9),
        simplifications=(
            "Cardiovascular disease is taken as CHD or stroke/TIA only (peripheral arterial "
            "disease, familial hypercholesterolaemia and CKD are not excluded). Alternative "
            "lipid-lowering therapy after statin intolerance, the QRISK below 10% exclusion and "
            "frailty are not modelled."
        ),
    ),
    _ind(
        id="AF_REG",
        title="Atrial fibrillation register (prevalence)",
        qof="AF001",
        rationale="Recorded AF prevalence on the whole list; AF is under-diagnosed and drives stroke risk.",
        population=EVERYONE,
        numerator=AF_REG,
        simplifications=_REGISTER_SIMPLE + " An AF resolved code is not modelled.",
    ),
    _ind(
        id="AF_ANTICOAG",
        title="AF with CHA2DS2-VASc 2 or more: oral anticoagulant issued in 6 months",
        qof="AF008",
        rationale="Anticoagulation prevents most AF-related strokes; QOF rewards a DOAC (or a vitamin K antagonist where a DOAC is unsuitable) for patients whose latest CHA2DS2-VASc is 2 or more.",
        population=All(of=(AF_REG, LatestValue(codelist="cha2ds2vasc", op=">=", value=2))),
        numerator=Any_(
            of=(
                HasCode(codelist="doac", table="medications", window=Window(months=6)),
                HasCode(codelist="vka", table="medications", window=Window(months=6)),
            )
        ),
        exclusions=_new_to_register("af", 3),
        simplifications=(
            "Warfarin counts without the QOF conditions (DOAC declined or contraindicated, "
            "antiphospholipid syndrome, time in therapeutic range 65% or more); mechanical valves "
            "and CHADS2 scores before April 2015 are not modelled. The CHA2DS2-VASc list carries "
            "only the OMOP concept id: the UK SNOMED CT id could not be confirmed from the sources "
            "at hand. The 3-month diagnosis or registration exclusion follows AF006."
        ),
    ),
    _ind(
        id="CHD_REG",
        title="Coronary heart disease register (prevalence)",
        qof="CHD001",
        rationale="Recorded CHD prevalence on the whole list.",
        population=EVERYONE,
        numerator=CHD_REG,
        simplifications=_REGISTER_SIMPLE,
    ),
    _ind(
        id="CHD_BP_U80",
        title="CHD aged 79 or under: last BP 140/90 or less",
        qof="CHD015",
        rationale="Blood pressure control in coronary heart disease reduces further events.",
        population=All(of=(CHD_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register("chd", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="CHD_BP_80",
        title="CHD aged 80 or over: last BP 150/90 or less",
        qof="CHD016",
        rationale="Blood pressure control in older patients with coronary heart disease.",
        population=All(of=(CHD_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register("chd", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="CHD_STATIN",
        title="CHD: statin issued in 6 months",
        qof="CHOL003",
        rationale="Statins are secondary prevention after coronary heart disease; QOF CHOL003 (formerly CHOL001) rewards lipid-lowering therapy.",
        population=CHD_REG,
        numerator=_statin_in(6),
        exclusions=_new_to_register("chd", 9),
        simplifications=(
            "Statins only: other lipid-lowering therapy after statin intolerance is not counted. "
            "QOF's CHOL003 population also includes PAD, stroke/TIA and CKD and leaves out diabetes "
            "aged 17 or over; here it is the CHD register alone."
        ),
    ),
    _ind(
        id="STIA_REG",
        title="Stroke or TIA register (prevalence)",
        qof="STIA001",
        rationale="Recorded stroke and TIA prevalence on the whole list.",
        population=EVERYONE,
        numerator=STIA_REG,
        simplifications=_REGISTER_SIMPLE,
    ),
    _ind(
        id="STIA_BP_U80",
        title="Stroke/TIA aged 79 or under: last BP 140/90 or less",
        qof="STIA014",
        rationale="Blood pressure control after stroke or TIA reduces recurrence.",
        population=All(of=(STIA_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register("stroke_tia", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="STIA_BP_80",
        title="Stroke/TIA aged 80 or over: last BP 150/90 or less",
        qof="STIA015",
        rationale="Blood pressure control in older patients after stroke or TIA.",
        population=All(of=(STIA_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register("stroke_tia", 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="STIA_STATIN",
        title="Stroke/TIA: statin issued in 6 months",
        qof="CHOL003",
        rationale="Statins are secondary prevention after ischaemic stroke or TIA.",
        population=STIA_REG,
        numerator=_statin_in(6),
        exclusions=_new_to_register("stroke_tia", 9),
        simplifications=(
            "Haemorrhagic stroke is not told apart (QOF excludes it from 2024/25). Statins only; "
            "the population is the stroke/TIA register alone, not QOF's combined CHOL register."
        ),
    ),
    _ind(
        id="CKD_REG",
        title="Chronic kidney disease stages 3a-5 register, aged 18 or over (prevalence)",
        qof="CKD005",
        rationale="Recorded CKD prevalence among adults; CKD is under-recorded relative to eGFR results.",
        population=Age(min=18),
        numerator=CKD_REG,
        simplifications=_REGISTER_SIMPLE
        + " A later CKD stage 1-2 code or CKD resolved code does not remove the patient.",
    ),
    _ind(
        id="AST_REG",
        title="Asthma register aged 6 or over with asthma treatment in 12 months (prevalence)",
        qof="AST005",
        rationale="Recorded active asthma: a diagnosis and asthma-related drug treatment in the last 12 months.",
        population=Age(min=6),
        numerator=AST_REG,
        simplifications=_REGISTER_SIMPLE
        + " The asthma resolved code is not modelled; the treatment list is one salbutamol inhaler.",
    ),
    _ind(
        id="AST_REVIEW",
        title="Asthma: review in the last 12 months",
        qof="AST007",
        rationale="An annual asthma review (control, inhaler technique, written plan) reduces attacks.",
        population=AST_REG,
        numerator=HasCode(codelist="asthma_review", window=W12),
        exclusions=_new_to_register("asthma", 3),
        simplifications=(
            "A review code alone counts: the control questionnaire, exacerbation count and written "
            "personalised action plan that QOF requires are not checked. Personalised care "
            "adjustments are not modelled; newly diagnosed or registered patients (3 months) are "
            "excluded."
        ),
    ),
    _ind(
        id="COPD_REG",
        title="COPD register (prevalence)",
        qof="COPD015",
        rationale="Recorded COPD prevalence on the whole list.",
        population=EVERYONE,
        numerator=COPD_REG,
        simplifications=_REGISTER_SIMPLE
        + " QOF's spirometry confirmation and COPD resolved codes are not modelled.",
    ),
    _ind(
        id="COPD_REVIEW",
        title="COPD: review in the last 12 months",
        qof="COPD010",
        rationale="An annual COPD review with exacerbation count and breathlessness grade.",
        population=COPD_REG,
        numerator=HasCode(codelist="copd_review", window=W12),
        exclusions=_new_to_register("copd", 3),
        simplifications=(
            "A review code alone counts: the exacerbation count and MRC dyspnoea grade QOF also "
            "requires are not checked. Personalised care adjustments are not modelled."
        ),
    ),
    _ind(
        id="SMOK_STATUS",
        title="Long-term conditions aged 15 or over: smoking status recorded in 12 months",
        qof="SMOK002",
        rationale="Recording smoking status is the first step to offering support to stop in people with long-term conditions.",
        population=All(
            of=(
                Age(min=15),
                Any_(of=(CHD_REG, STIA_REG, HYP_REG, DM_REG, COPD_REG, CKD_REG, AST_REG)),
            )
        ),
        numerator=HasCode(codelist="smoking_status", window=W12),
        simplifications=(
            "The long-term conditions are CHD, stroke/TIA, hypertension, diabetes, COPD, CKD and "
            "asthma; severe mental illness and PAD are not included. QOF's rule that an ex-smoker "
            "recorded after 25 need not be asked again is not modelled."
        ),
    ),
    _ind(
        id="BP_5Y",
        title="Aged 45 or over: blood pressure recorded in the last 5 years",
        qof="BP002",
        rationale="Case-finding for hypertension: everyone aged 45 or over should have a blood pressure recorded every five years.",
        population=Age(min=45),
        numerator=Any_(
            of=(
                HasCode(codelist="sbp", window=Window(months=60)),
                HasCode(codelist="dbp", window=Window(months=60)),
            )
        ),
        simplifications="A systolic or a diastolic reading counts; paired BP codes are not in the demo lists.",
    ),
    _ind(
        id="CS_25_49",
        title="Women aged 25-49: cervical screening in the last 3.5 years",
        qof="CS005",
        rationale="Cervical screening coverage for women aged 25 to 49 (screened every three years).",
        population=All(of=(SexIs(values=("F",)), Age(min=25, max=49))),
        numerator=HasCode(codelist="cervical_screen", window=Window(months=42)),
        simplifications=(
            "Only women recorded as female are counted; no-cervix (hysterectomy) exclusions, "
            "declined and unsuitable codes are not modelled. The window is 42 months as a "
            "stand-in for QOF's three and a half years."
        ),
    ),
    _ind(
        id="CS_50_64",
        title="Women aged 50-64: cervical screening in the last 5.5 years",
        qof="CS006",
        rationale="Cervical screening coverage for women aged 50 to 64 (screened every five years).",
        population=All(of=(SexIs(values=("F",)), Age(min=50, max=64))),
        numerator=HasCode(codelist="cervical_screen", window=Window(months=66)),
        simplifications=(
            "Only women recorded as female are counted; no-cervix exclusions, declined and "
            "unsuitable codes are not modelled."
        ),
    ),
    _ind(
        id="FLU_65",
        title="Aged 65 or over: seasonal flu vaccination in the last 7 months",
        qof=None,
        rationale="Flu vaccination uptake in people aged 65 or over (national uptake about 75%). Not a QOF indicator: flu vaccination left QOF and is paid through the vaccination programme.",
        population=Age(min=65),
        numerator=HasCode(codelist="flu_vacc", window=Window(months=7)),
        simplifications=(
            "Not a QOF indicator. The season is taken as the 7 months up to the period end (for a "
            "31 March period end: 1 September to 31 March); vaccinations given elsewhere and "
            "declines are counted only if coded in the practice record."
        ),
    ),
)

AGE_BANDS = (
    AgeBand(label="0-39", min=0, max=39),
    AgeBand(label="40-59", min=40, max=59),
    AgeBand(label="60-79", min=60, max=79),
    AgeBand(label="80+", min=80),
)

DISCLOSURE = DisclosurePolicy(
    name="default",
    stratified=CountRule(suppress_at_or_below=7, round_to=5),
    totals=CountRule(suppress_at_or_below=0, round_to=1),
    secondary_suppression=True,
)


def build_catalogue() -> Catalogue:
    """The default catalogue as a model (validated on construction)."""
    return Catalogue(
        id="fedqi-default",
        version=1,
        title="fedqi default indicators: QOF-style cardiovascular, diabetes, respiratory and prevention",
        age_bands=AGE_BANDS,
        disclosure=DISCLOSURE,
        codelists=CODELISTS,
        indicators=INDICATORS,
    )


def catalogue_json(catalogue: Catalogue | None = None) -> str:
    """Pretty-printed JSON of the catalogue, as committed (None fields left out: they are the
    models' defaults, so parsing gives back an equal model)."""
    cat = catalogue if catalogue is not None else build_catalogue()
    data = cat.model_dump(mode="json", exclude_none=True)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    CATALOGUE_PATH.write_text(catalogue_json(), encoding="utf-8")
    print(f"wrote {CATALOGUE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
