"""Build the default indicator catalogue (``protocol/catalogues/default.json``) from indicator
definitions and published codelist files.

    python -m protocol.catalogues.build            # rebuild; versions go up where content changed
    python -m protocol.catalogues.build --check    # exit 1 if the committed catalogue is stale

Codes are never typed here. Every codelist is read from a file in
``protocol/catalogues/codelists/``: OpenCodelists CSV downloads of the NHS England primary care
domain and drug refsets, vendored unchanged, with ``MANIFEST.csv`` giving each file's cluster,
OpenCodelists id and version, the public repository and commit it was copied from, and its
OpenCodelists content hash. The build checks each file against that hash, reads it (a malformed
row fails the build naming file and line), applies the stated derivation where one is declared
(the BP lists leave home and ambulatory readings out) and carries the codes into the catalogue
with their provenance and ``codes_sha256``.

Versions are derived, not typed: an indicator's version goes up when its definition or the codes
of any codelist it uses change, and the catalogue's version goes up when anything in it changes,
compared with the catalogue committed before (so a code change shows as a series break in the
benchmarks, which split trends by indicator version).

A build tool kept beside the data it builds, not protocol code: it reads and writes files, so no
protocol module imports it (tests/test_layout.py checks both).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.catalogue import (
    Age,
    AgeBand,
    All,
    Any_,
    Catalogue,
    CodeEntry,
    Codelist,
    CodelistSource,
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
    Score,
    ScoreTerm,
    SexIs,
    Window,
    codes_sha256,
)

HERE = Path(__file__).resolve().parent
CATALOGUE_PATH = HERE / "default.json"
CODELIST_DIR = HERE / "codelists"
MANIFEST_NAME = "MANIFEST.csv"


class CatalogueBuildError(Exception):
    """A codelist file or the manifest cannot be used: the message names the file and line."""


# --- codelists ---------------------------------------------------------------------------------

# Home, ambulatory and self-measured readings: QOF holds them to other thresholds (135/85 under
# 80, 145/85 at 80 and over), which the rule language does not apply per reading, so they are
# left out of the clinic BP lists (docs/indicators.md lists the codes).
_HOME_OR_AMBULATORY = re.compile(
    r"home|ambulatory|self[ -]?(reported|measured)|24 hour|day interval|night interval", re.I
)


@dataclass(frozen=True)
class CodelistSpec:
    """One codelist of the catalogue: which vendored file, which code system, and an optional
    derivation (codes whose term matches ``leave_out`` are left out, for the stated reason)."""

    id: str
    file: str
    system: str
    title: str
    leave_out: re.Pattern[str] | None = None
    why: str | None = None


_PC = "nhsd-primary-care-domain-refsets-{}_cod.csv"
_DRUG = "nhs-drug-refsets-{}_cod.csv"

SPECS: tuple[CodelistSpec, ...] = (
    CodelistSpec("hyp", _PC.format("hyp"), "snomedct", "Hypertension diagnosis (HYP_COD)"),
    CodelistSpec("hyp_res", _PC.format("hypres"), "snomedct", "Hypertension resolved (HYPRES_COD)"),
    CodelistSpec("dm", _PC.format("dm"), "snomedct", "Diabetes mellitus diagnosis (DM_COD)"),
    CodelistSpec("dm_res", _PC.format("dmres"), "snomedct", "Diabetes resolved (DMRES_COD)"),
    CodelistSpec(
        "sbp",
        _PC.format("sysbp"),
        "snomedct",
        "Systolic blood pressure, clinic readings (SYSBP_COD less home and ambulatory codes)",
        leave_out=_HOME_OR_AMBULATORY,
        why="home, ambulatory and self-measured readings left out: QOF holds them to other "
        "thresholds, which these indicators do not apply",
    ),
    CodelistSpec(
        "dbp",
        "user-milanwiedemann-diastolic-blood-pressure-qof.csv",
        "snomedct",
        "Diastolic blood pressure, clinic readings (stands in for DIASBP_COD, which is not public)",
        leave_out=_HOME_OR_AMBULATORY,
        why="home, ambulatory and self-measured readings left out: QOF holds them to other "
        "thresholds, which these indicators do not apply",
    ),
    CodelistSpec("bp", _PC.format("bp"), "snomedct", "Blood pressure recording (BP_COD)"),
    CodelistSpec(
        "hba1c", _PC.format("ifcchbam"), "snomedct", "IFCC HbA1c, mmol/mol (IFCCHBAM_COD)"
    ),
    CodelistSpec("af", _PC.format("afib"), "snomedct", "Atrial fibrillation (AFIB_COD)"),
    CodelistSpec("hf", _PC.format("hf"), "snomedct", "Heart failure (HF_COD)"),
    CodelistSpec("chd", _PC.format("chd"), "snomedct", "Coronary heart disease (CHD_COD)"),
    CodelistSpec("stroke", _PC.format("strk"), "snomedct", "Stroke (STRK_COD)"),
    CodelistSpec("tia", _PC.format("tia"), "snomedct", "Transient ischaemic attack (TIA_COD)"),
    CodelistSpec(
        "ckd35", _PC.format("ckd"), "snomedct", "Chronic kidney disease stage 3a-5 (CKD_COD)"
    ),
    CodelistSpec(
        "ckd12",
        _PC.format("ckd1and2"),
        "snomedct",
        "Chronic kidney disease stage 1-2 (CKD1AND2_COD)",
    ),
    CodelistSpec(
        "ckd_res", _PC.format("ckdres"), "snomedct", "Chronic kidney disease resolved (CKDRES_COD)"
    ),
    CodelistSpec("asthma", _PC.format("ast"), "snomedct", "Asthma diagnosis (AST_COD)"),
    CodelistSpec("asthma_res", _PC.format("astres"), "snomedct", "Asthma resolved (ASTRES_COD)"),
    CodelistSpec(
        "asthma_drug",
        "opensafely-asthma-related-drug-treatment-codes.csv",
        "dmd",
        "Asthma-related drug treatment, dm+d (stands in for ASTTRT_COD, which is not public)",
    ),
    CodelistSpec("asthma_review", _PC.format("rev"), "snomedct", "Asthma review (REV_COD)"),
    CodelistSpec(
        "copd", _PC.format("copd"), "snomedct", "Chronic obstructive pulmonary disease (COPD_COD)"
    ),
    CodelistSpec("copd_res", _PC.format("copdres"), "snomedct", "COPD resolved (COPDRES_COD)"),
    CodelistSpec("copd_review", _PC.format("copdrvw"), "snomedct", "COPD review (COPDRVW_COD)"),
    CodelistSpec("smoker", _PC.format("lsmok"), "snomedct", "Current smoker (LSMOK_COD)"),
    CodelistSpec("ex_smoker", _PC.format("exsmok"), "snomedct", "Ex-smoker (EXSMOK_COD)"),
    CodelistSpec(
        "flu_vacc", _PC.format("flu"), "snomedct", "Seasonal influenza vaccination given (FLU_COD)"
    ),
    CodelistSpec(
        "flu_drug", _DRUG.format("fludrug"), "dmd", "Influenza vaccine products, dm+d (FLUDRUG_COD)"
    ),
    CodelistSpec("statin", _DRUG.format("stat"), "dmd", "Statins, dm+d (STAT_COD)"),
    CodelistSpec(
        "doac",
        "opensafely-direct-acting-oral-anticoagulants-doac.csv",
        "dmd",
        "Direct-acting oral anticoagulants, dm+d (OpenSAFELY list; not an NHS refset)",
    ),
    CodelistSpec(
        "vka",
        "opensafely-warfarin.csv",
        "dmd",
        "Warfarin, dm+d (OpenSAFELY list; not an NHS refset)",
    ),
)


def content_sha1(data: bytes) -> str:
    """OpenCodelists' content hash of a codelist file: SHA-1 of its lines joined by ``\\n``
    (so line endings do not matter)."""
    return hashlib.sha1(b"\n".join(data.splitlines())).hexdigest()


_MANIFEST_HASH = re.compile(r"content_sha1\(hash_bytes\)=([0-9a-f]{40})")
_MANIFEST_COLUMNS = (
    "file",
    "cluster",
    "opencodelists_id",
    "version",
    "source_repo",
    "source_commit",
    "rows",
    "notes",
)


def read_manifest(directory: Path) -> dict[str, dict[str, str]]:
    """``MANIFEST.csv`` by file name; each row must name its content hash in ``notes``."""
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueBuildError(f"{path}: cannot read the codelist manifest: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in _MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogueBuildError(f"{path}:1: manifest lacks column(s) {', '.join(missing)}")
    out: dict[str, dict[str, str]] = {}
    for line, row in enumerate(reader, start=2):
        match = _MANIFEST_HASH.search(row.get("notes") or "")
        if not match:
            raise CatalogueBuildError(f"{path}:{line}: no content_sha1(hash_bytes)=... in notes")
        out[row["file"]] = {**row, "sha1": match.group(1)}
    return out


_CODE = re.compile(r"^[1-9][0-9]{5,17}$")  # SNOMED CT and dm+d identifiers


def read_codelist_file(path: Path, system: str) -> list[CodeEntry]:
    """The rows of an OpenCodelists CSV (``code`` first, ``term`` second, possibly unnamed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueBuildError(f"{path}: cannot read: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "code":
        raise CatalogueBuildError(f"{path}:1: the header must start with a 'code' column")
    entries: list[CodeEntry] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            raise CatalogueBuildError(f"{path}:{line}: empty row")
        code = row[0].strip()
        if not _CODE.fullmatch(code):
            raise CatalogueBuildError(
                f"{path}:{line}: {code[:40]!r} is not a SNOMED CT or dm+d identifier"
            )
        if code in seen:
            raise CatalogueBuildError(f"{path}:{line}: code {code} appears twice")
        seen.add(code)
        term = row[1].strip() if len(row) > 1 and row[1].strip() else None
        if term is not None and len(term) > 200:
            raise CatalogueBuildError(f"{path}:{line}: term longer than 200 characters")
        entries.append(CodeEntry(system=system, code=code, term=term))
    if not entries:
        raise CatalogueBuildError(f"{path}: no codes")
    return entries


def build_codelist(
    spec: CodelistSpec, directory: Path, manifest: Mapping[str, Mapping[str, str]]
) -> Codelist:
    path = directory / spec.file
    meta = manifest.get(spec.file)
    if meta is None:
        raise CatalogueBuildError(f"{directory / MANIFEST_NAME}: no row for {spec.file}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CatalogueBuildError(f"{path}: cannot read: {exc}") from exc
    actual = content_sha1(data)
    if actual != meta["sha1"]:
        raise CatalogueBuildError(
            f"{path}: content hash {actual} is not the manifest's {meta['sha1']} "
            "(the file was changed after it was vendored; vendor the new release with its row)"
        )
    published = read_codelist_file(path, spec.system)
    if int(meta["rows"]) != len(published):
        raise CatalogueBuildError(
            f"{path}: {len(published)} codes, the manifest says {meta['rows']}"
        )
    codes = published
    derivation = None
    if spec.leave_out is not None:
        left = [c for c in published if c.term and spec.leave_out.search(c.term)]
        codes = [c for c in published if c not in left]
        derivation = (
            f"{len(left)} of {len(published)} published codes {spec.why}: "
            + ", ".join(f"{c.code} {c.term}" for c in left)
        )[:2000]
    source = CodelistSource(
        cluster=meta["cluster"][:200],
        publisher_id=f"opencodelists:{meta['opencodelists_id']}",
        version=meta["version"],
        file=spec.file,
        file_sha1=meta["sha1"],
        repository=meta["source_repo"],
        commit=meta["source_commit"],
        rows=len(published),
        derivation=derivation,
    )
    return Codelist.of(spec.id, spec.title, codes, source)


def build_codelists(directory: Path = CODELIST_DIR) -> tuple[Codelist, ...]:
    manifest = read_manifest(directory)
    return tuple(build_codelist(spec, directory, manifest) for spec in SPECS)


# --- rule building blocks ----------------------------------------------------------------------

EVERYONE = Age(min=0)
W12 = Window(months=12)
HYP_REG = OnRegister(codelist="hyp", resolved="hyp_res")
DM_ON_REGISTER = OnRegister(codelist="dm", resolved="dm_res")
DM_REG = All(of=(DM_ON_REGISTER, Age(min=17)))
AF_REG = OnRegister(codelist="af")
CHD_REG = OnRegister(codelist="chd")
# QOF's stroke/TIA register: the latest STRK_COD or TIA_COD code (neither has a resolved code).
STIA_REG = Any_(of=(OnRegister(codelist="stroke"), OnRegister(codelist="tia")))
# QOF's CKD register: the latest CKD stage 3a-5 code, not followed by a stage 1-2 code or a
# CKD resolved code.
CKD_REG = All(
    of=(
        OnRegister(codelist="ckd35", resolved="ckd12"),
        OnRegister(codelist="ckd35", resolved="ckd_res"),
        Age(min=18),
    )
)
AST_REG = All(
    of=(
        OnRegister(codelist="asthma", resolved="asthma_res"),
        Age(min=6),
        HasCode(codelist="asthma_drug", table="medications", window=W12),
    )
)
COPD_REG = OnRegister(codelist="copd", resolved="copd_res")


def _ever(*codelists: str) -> Rule:
    rules = tuple(HasCode(codelist=c) for c in codelists)
    return rules[0] if len(rules) == 1 else Any_(of=rules)


def _first_in_window(codelists: tuple[str, ...], months: int) -> Rule:
    """The earliest code of the union of ``codelists`` falls in the last ``months`` months:
    some code exists, and every list's earliest code (where it has one) is in the window."""
    window = Window(months=months)
    if len(codelists) == 1:
        return FirstCode(codelist=codelists[0], window=window)
    return All(
        of=(
            _ever(*codelists),
            *(
                Any_(of=(FirstCode(codelist=c, window=window), Not(rule=HasCode(codelist=c))))
                for c in codelists
            ),
        )
    )


def _new_to_register(codelists: tuple[str, ...], months: int) -> Rule:
    """QOF's "diagnosed or registered in the last N months" exclusion (the earliest diagnosis
    code of the register's clusters)."""
    return Any_(of=(_first_in_window(codelists, months), Not(rule=RegisteredFor(months=months))))


def _bp_at_most(systolic: int, diastolic: int) -> Rule:
    return All(
        of=(
            LatestValue(codelist="sbp", window=W12, op="<=", value=systolic),
            LatestValue(codelist="dbp", window=W12, op="<=", value=diastolic),
        )
    )


def _statin_in(months: int) -> Rule:
    return HasCode(codelist="statin", table="medications", window=Window(months=months))


# CHA2DS2-VASc computed at the period end from coded components (no public cluster holds a
# recorded score): congestive heart failure 1, hypertension 1, age 75+ 2, diabetes 1,
# stroke/TIA 2, vascular disease 1, age 65-74 1, female 1.
CHA2DS2_VASC_2_OR_MORE = Score(
    terms=(
        ScoreTerm(weight=1, rule=_ever("hf")),
        ScoreTerm(weight=1, rule=HYP_REG),
        ScoreTerm(weight=2, rule=Age(min=75)),
        ScoreTerm(weight=1, rule=DM_ON_REGISTER),
        ScoreTerm(weight=2, rule=_ever("stroke", "tia")),
        ScoreTerm(weight=1, rule=_ever("chd")),
        ScoreTerm(weight=1, rule=Age(min=65, max=74)),
        ScoreTerm(weight=1, rule=SexIs(values=("F",))),
    ),
    op=">=",
    value=2,
)

_BP_SIMPLE = (
    "Systolic and diastolic are each taken as the latest reading of its own list in the 12 "
    "months (QOF takes the lowest systolic and lowest diastolic of the latest date; here each "
    "takes its own latest date, which differs only when the two are recorded on different days). "
    "Clinic readings only: home and ambulatory codes are left out of the BP lists (QOF judges them "
    "against 135/85 or 145/85), so a patient whose only reading is a home reading is not counted "
    "as controlled. The diastolic list is a published QOF-based list standing in for DIASBP_COD, "
    "which is not public. Personalised care adjustments (maximal tolerated therapy, unsuitable, "
    "declined, two invitations) are not modelled; the only exclusion is a diagnosis or "
    "registration in the last 9 months."
)
_NO_RESOLVED = "No resolved code is public for this cluster, so the register is never resolved."


def _ind(**kwargs: Any) -> Indicator:
    # The version is a placeholder: versions are derived from the previous catalogue in build().
    return Indicator(version=1, **kwargs)


INDICATORS: tuple[Indicator, ...] = (
    _ind(
        id="HYP_REG",
        title="Hypertension register (prevalence)",
        qof="HYP001",
        rationale="Recorded hypertension prevalence on the whole list; a low figure against peers suggests undiagnosed hypertension.",
        population=EVERYONE,
        numerator=HYP_REG,
        simplifications="None beyond the register rule: the latest HYP_COD code not followed by HYPRES_COD.",
    ),
    _ind(
        id="HYP_BP_U80",
        title="Hypertension aged 79 or under: last BP 140/90 or less",
        qof="HYP008",
        rationale="Blood pressure control in hypertension reduces stroke and heart attack; the QOF target for patients aged 79 or under is 140/90 mmHg.",
        population=All(of=(HYP_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register(("hyp",), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="HYP_BP_80",
        title="Hypertension aged 80 or over: last BP 150/90 or less",
        qof="HYP009",
        rationale="Blood pressure control in older patients with hypertension; QOF's target at 80 and over is 150/90 mmHg.",
        population=All(of=(HYP_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register(("hyp",), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="DM_REG",
        title="Diabetes register, aged 17 or over (prevalence)",
        qof="DM017",
        rationale="Recorded diabetes prevalence among patients aged 17 or over, the QOF register denominator.",
        population=Age(min=17),
        numerator=DM_REG,
        simplifications="Type 1 and type 2 are not told apart (QOF's register does not either).",
    ),
    _ind(
        id="DM_HBA1C",
        title="Diabetes: last HbA1c 58 mmol/mol or less in 12 months",
        qof="DM020",
        rationale="Glycaemic control in diabetes reduces microvascular complications; QOF's target for patients without moderate or severe frailty is 58 mmol/mol.",
        population=DM_REG,
        numerator=LatestValue(codelist="hba1c", window=W12, op="<=", value=58),
        exclusions=_new_to_register(("dm",), 9),
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
        exclusions=_new_to_register(("dm",), 9),
        simplifications="Frailty is not modelled (QOF's DM019 covers patients without moderate or severe frailty). "
        + _BP_SIMPLE,
    ),
    _ind(
        id="DM_STATIN",
        title="Diabetes aged 40 or over without CHD or stroke: statin issued in 6 months",
        qof="DM022",
        rationale="Statins lower cardiovascular risk in diabetes; QOF's DM022 (DM034 from 2025/26) rewards a statin issued to patients aged 40 or over without cardiovascular disease.",
        population=All(of=(DM_REG, Age(min=40), Not(rule=CHD_REG), Not(rule=STIA_REG))),
        numerator=_statin_in(6),
        exclusions=_new_to_register(("dm",), 9),
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
        simplifications="AFIBRES_COD (AF resolved) is not public, so the register is never resolved.",
    ),
    _ind(
        id="AF_ANTICOAG",
        title="AF with CHA2DS2-VASc 2 or more: oral anticoagulant issued in 6 months",
        qof="AF008",
        rationale="Anticoagulation prevents most AF-related strokes; QOF rewards a DOAC (or a vitamin K antagonist where a DOAC is unsuitable) for patients whose CHA2DS2-VASc is 2 or more.",
        population=All(of=(AF_REG, CHA2DS2_VASC_2_OR_MORE)),
        numerator=Any_(
            of=(
                HasCode(codelist="doac", table="medications", window=Window(months=6)),
                HasCode(codelist="vka", table="medications", window=Window(months=6)),
            )
        ),
        exclusions=_new_to_register(("af",), 3),
        simplifications=(
            "QOF reads the latest recorded CHA2DS2-VASc score (CHADVAS_COD, not public); here the "
            "score is computed on the period end from coded components: heart failure (any "
            "HF_COD code) 1, on the hypertension register 1, age 75 or over 2, on the diabetes "
            "register 1, stroke or TIA (any STRK_COD or TIA_COD code) 2, vascular disease (any "
            "CHD_COD code; peripheral arterial disease and aortic plaque are not public lists) 1, "
            "age 65-74 1, recorded female 1. Anticoagulants are OpenSAFELY's DOAC and warfarin "
            "dm+d lists, not the NHS refset. Warfarin counts without QOF's conditions (DOAC "
            "declined or contraindicated, antiphospholipid syndrome, time in therapeutic range); "
            "mechanical valves and CHADS2 scores before April 2015 are not modelled. AFIBRES_COD "
            "is not public. The 3-month diagnosis or registration exclusion follows AF006."
        ),
    ),
    _ind(
        id="CHD_REG",
        title="Coronary heart disease register (prevalence)",
        qof="CHD001",
        rationale="Recorded CHD prevalence on the whole list.",
        population=EVERYONE,
        numerator=CHD_REG,
        simplifications=_NO_RESOLVED,
    ),
    _ind(
        id="CHD_BP_U80",
        title="CHD aged 79 or under: last BP 140/90 or less",
        qof="CHD015",
        rationale="Blood pressure control in coronary heart disease reduces further events.",
        population=All(of=(CHD_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register(("chd",), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="CHD_BP_80",
        title="CHD aged 80 or over: last BP 150/90 or less",
        qof="CHD016",
        rationale="Blood pressure control in older patients with coronary heart disease.",
        population=All(of=(CHD_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register(("chd",), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="CHD_STATIN",
        title="CHD: statin issued in 6 months",
        qof="CHOL003",
        rationale="Statins are secondary prevention after coronary heart disease; QOF CHOL003 (formerly CHOL001) rewards lipid-lowering therapy.",
        population=CHD_REG,
        numerator=_statin_in(6),
        exclusions=_new_to_register(("chd",), 9),
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
        simplifications="The register is the latest STRK_COD or TIA_COD code; " + _NO_RESOLVED,
    ),
    _ind(
        id="STIA_BP_U80",
        title="Stroke/TIA aged 79 or under: last BP 140/90 or less",
        qof="STIA014",
        rationale="Blood pressure control after stroke or TIA reduces recurrence.",
        population=All(of=(STIA_REG, Age(max=79))),
        numerator=_bp_at_most(140, 90),
        exclusions=_new_to_register(("stroke", "tia"), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="STIA_BP_80",
        title="Stroke/TIA aged 80 or over: last BP 150/90 or less",
        qof="STIA015",
        rationale="Blood pressure control in older patients after stroke or TIA.",
        population=All(of=(STIA_REG, Age(min=80))),
        numerator=_bp_at_most(150, 90),
        exclusions=_new_to_register(("stroke", "tia"), 9),
        simplifications=_BP_SIMPLE,
    ),
    _ind(
        id="STIA_STATIN",
        title="Stroke/TIA: statin issued in 6 months",
        qof="CHOL003",
        rationale="Statins are secondary prevention after ischaemic stroke or TIA.",
        population=STIA_REG,
        numerator=_statin_in(6),
        exclusions=_new_to_register(("stroke", "tia"), 9),
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
        simplifications=(
            "The latest CKD_COD (stage 3a-5) code, not followed by a CKD1AND2_COD (stage 1-2) or "
            "CKDRES_COD code; a stage 1-2 or resolved code on the same day as the stage 3-5 code "
            "removes the patient."
        ),
    ),
    _ind(
        id="AST_REG",
        title="Asthma register aged 6 or over with asthma treatment in 12 months (prevalence)",
        qof="AST005",
        rationale="Recorded active asthma: a diagnosis and asthma-related drug treatment in the last 12 months.",
        population=Age(min=6),
        numerator=AST_REG,
        simplifications=(
            "ASTTRT_COD is not public: OpenSAFELY's asthma-related drug treatment list (dm+d) "
            "stands in for it."
        ),
    ),
    _ind(
        id="AST_REVIEW",
        title="Asthma: review in the last 12 months",
        qof="AST007",
        rationale="An annual asthma review (control, inhaler technique, written plan) reduces attacks.",
        population=AST_REG,
        numerator=HasCode(codelist="asthma_review", window=W12),
        exclusions=_new_to_register(("asthma",), 3),
        simplifications=(
            "A review code (REV_COD) alone counts: the control questionnaire, exacerbation count "
            "and written personalised action plan that QOF requires are not checked. Personalised "
            "care adjustments are not modelled; newly diagnosed or registered patients (3 months) "
            "are excluded."
        ),
    ),
    _ind(
        id="COPD_REG",
        title="COPD register (prevalence)",
        qof="COPD015",
        rationale="Recorded COPD prevalence on the whole list.",
        population=EVERYONE,
        numerator=COPD_REG,
        simplifications="QOF's spirometry confirmation for patients diagnosed from April 2023 is not modelled.",
    ),
    _ind(
        id="COPD_REVIEW",
        title="COPD: review in the last 12 months",
        qof="COPD010",
        rationale="An annual COPD review with exacerbation count and breathlessness grade.",
        population=COPD_REG,
        numerator=HasCode(codelist="copd_review", window=W12),
        exclusions=_new_to_register(("copd",), 3),
        simplifications=(
            "A review code (COPDRVW_COD) alone counts: the exacerbation count and MRC dyspnoea "
            "grade QOF also requires are not checked. Personalised care adjustments are not "
            "modelled."
        ),
    ),
    _ind(
        id="SMOK_STATUS",
        title="Long-term conditions aged 15 or over: smoker or ex-smoker status recorded in 12 months",
        qof="SMOK002",
        rationale="Recording smoking status is the first step to offering support to stop in people with long-term conditions.",
        population=All(
            of=(
                Age(min=15),
                Any_(of=(CHD_REG, STIA_REG, HYP_REG, DM_REG, COPD_REG, CKD_REG, AST_REG)),
            )
        ),
        numerator=Any_(
            of=(
                HasCode(codelist="smoker", window=W12),
                HasCode(codelist="ex_smoker", window=W12),
            )
        ),
        simplifications=(
            "SMOK_COD and NSMOK_COD (never smoked) are not public: LSMOK_COD (current smoker) and "
            "EXSMOK_COD (ex-smoker) stand in, so a never-smoker's recorded status does not count "
            "and the rate is lower than QOF's by the share of never-smokers asked. The long-term "
            "conditions are CHD, stroke/TIA, hypertension, diabetes, COPD, CKD and asthma; severe "
            "mental illness and PAD are not included. QOF's rule that an ex-smoker recorded after "
            "25 need not be asked again is not modelled."
        ),
    ),
    _ind(
        id="BP_5Y",
        title="Aged 45 or over: blood pressure recorded in the last 5 years",
        qof="BP002",
        rationale="Case-finding for hypertension: everyone aged 45 or over should have a blood pressure recorded every five years.",
        population=Age(min=45),
        numerator=HasCode(codelist="bp", window=Window(months=60)),
        simplifications="Any BP_COD code counts, as in QOF; the 5 years are taken as 60 months.",
    ),
    _ind(
        id="FLU_65",
        title="Aged 65 or over: seasonal flu vaccination in the last 7 months",
        qof=None,
        rationale="Flu vaccination uptake in people aged 65 or over (national uptake about 75%). Not a QOF indicator: flu vaccination left QOF and is paid through the vaccination programme.",
        population=Age(min=65),
        numerator=Any_(
            of=(
                HasCode(codelist="flu_vacc", window=Window(months=7)),
                HasCode(codelist="flu_drug", table="medications", window=Window(months=7)),
            )
        ),
        simplifications=(
            "Not a QOF indicator. A vaccination code (FLU_COD) or a flu vaccine product issued "
            "(FLUDRUG_COD) counts. The season is taken as the 7 months up to the period end (for "
            "a 31 March period end: 1 September to 31 March); vaccinations given elsewhere count "
            "only if coded in the practice record."
        ),
    ),
)

# Cervical screening (CS005, CS006) is left out of the default catalogue: no public copy of its
# clusters exists, and codes are never invented (docs/indicators.md).
UNAVAILABLE: tuple[tuple[str, str], ...] = (
    ("CS005", "cervical screening, women 25-49: the cervical screening clusters are not public"),
    ("CS006", "cervical screening, women 50-64: the cervical screening clusters are not public"),
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
    # Exclusions as a whole-practice total only: a review's few exclusions in one stratum,
    # next to strata released as zeros, were the exact total, and the guard withheld the
    # review's denominator to protect them (docs/disclosure.md, "What the guard costs at
    # realistic sizes").
    exclusions_by_stratum=False,
)

CATALOGUE_ID = "fedqi-default"
CATALOGUE_TITLE = (
    "fedqi default indicators: QOF-style cardiovascular, diabetes, respiratory and prevention"
)


# --- versions ----------------------------------------------------------------------------------


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def _codes_of(raw_codelist: Mapping[str, Any]) -> str:
    return codes_sha256((c["system"], c["code"]) for c in raw_codelist["codes"])


def _indicator_digests(raw: Mapping[str, Any]) -> dict[str, str]:
    """Per indicator: a digest of its definition (version left out) and of the codes of every
    codelist it refers to. Works on the JSON of any earlier catalogue format."""
    by_id = {cl["id"]: _codes_of(cl) for cl in raw.get("codelists", [])}
    out: dict[str, str] = {}
    for ind in raw.get("indicators", []):
        definition = {k: v for k, v in ind.items() if k != "version"}
        used = sorted(
            set(re.findall(r'"(?:codelist|resolved|family)": "([a-z0-9_]+)"', json.dumps(ind)))
        )
        out[ind["id"]] = _digest([definition, [(c, by_id.get(c)) for c in used]])
    return out


def _dump(catalogue: Catalogue) -> dict[str, Any]:
    return catalogue.model_dump(mode="json", exclude_none=True)


def build_catalogue(
    codelist_dir: Path = CODELIST_DIR, previous: Mapping[str, Any] | None = None
) -> Catalogue:
    """The default catalogue built from the codelist files, with versions derived from
    ``previous`` (the JSON of the catalogue published before; None: every version 1)."""
    codelists = build_codelists(codelist_dir)
    draft = Catalogue(
        id=CATALOGUE_ID,
        version=1,
        title=CATALOGUE_TITLE,
        age_bands=AGE_BANDS,
        disclosure=DISCLOSURE,
        codelists=codelists,
        indicators=INDICATORS,
    )
    if previous is None:
        return draft
    old = _indicator_digests(previous)
    old_versions = {i["id"]: int(i["version"]) for i in previous.get("indicators", [])}
    new = _indicator_digests(_dump(draft))
    indicators = []
    for ind in draft.indicators:
        if ind.id not in old_versions:
            version = 1
        elif old.get(ind.id) == new[ind.id]:
            version = old_versions[ind.id]
        else:
            version = old_versions[ind.id] + 1
        indicators.append(ind.model_copy(update={"version": version}))
    versioned = draft.model_copy(update={"indicators": tuple(indicators)})
    content = {k: v for k, v in _dump(versioned).items() if k != "version"}
    old_content = {k: v for k, v in previous.items() if k != "version"}
    version = int(previous.get("version", 0))
    if _digest(content) != _digest(old_content):
        version += 1
    # Validate the whole once more (model_copy does not).
    return Catalogue.model_validate({**_dump(versioned), "version": max(version, 1)})


def committed_json() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def catalogue_json(catalogue: Catalogue | None = None) -> str:
    """Pretty-printed JSON of the catalogue, as committed (None fields left out: they are the
    models' defaults, so parsing gives back an equal model)."""
    cat = catalogue if catalogue is not None else build_catalogue(previous=committed_json())
    return json.dumps(_dump(cat), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print("usage: python -m protocol.catalogues.build [--check]", file=sys.stderr)
        return 2
    try:
        text = catalogue_json()
    except CatalogueBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    current = CATALOGUE_PATH.read_text(encoding="utf-8") if CATALOGUE_PATH.exists() else ""
    if args == ["--check"]:
        if text != current:
            print(
                f"{CATALOGUE_PATH} is stale: run python -m protocol.catalogues.build",
                file=sys.stderr,
            )
            return 1
        print(f"{CATALOGUE_PATH} is current")
        return 0
    tmp = CATALOGUE_PATH.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(CATALOGUE_PATH)
    cat = Catalogue.model_validate_json(text)
    print(
        f"wrote {CATALOGUE_PATH}: {cat.id} v{cat.version}, {len(cat.indicators)} indicators, "
        f"{len(cat.codelists)} codelists, {sum(len(c.codes) for c in cat.codelists)} codes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
