"""Synthetic GP practices in the canonical schema (agent/sources/schema.py), for tests, demos and benchmarks.

``generate_practice(target, patients=N, seed=S)`` writes one practice: a UK-like registered
population (age-sex pyramid, joiners, leavers, deaths), long-term conditions at realistic
age-dependent prevalences, ten years of coded events (blood pressure and HbA1c values, weights,
smoking status, reviews, screening, vaccinations, and filler codes to reach realistic volume) and
repeat medication issues. Recording and control rates depend on a practice ``quality`` in [0, 1],
so practices generated with different seeds differ the way real practices do.

Deterministic: each patient draws from its own ``random.Random`` seeded by (seed, patient id),
the practice from ``Random(seed)``; the same seed and arguments give identical rows. Pure Python
(no numpy): the generator is a per-patient state machine whose branches numpy would not speed up,
and the stdlib Mersenne Twister keeps the output stable across installs.

Numbers come from shared/reference/indicators.md section 3 (prevalences, consultation rates) and
are described in docs/synthetic.md. Codes come from the default catalogue's codelists, so every
default indicator has patients to count; filler codes are common SNOMED CT concepts in no codelist.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import multiprocessing
import os
import queue as queue_module
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from agent.errors import AgentError, AgentUserError, SourceError
from agent.sources import schema, store
from agent.sources.kinds import DUCKDB_SUFFIXES, SQLITE_SUFFIXES

DEFAULT_PERIOD_END = dt.date(2026, 3, 31)
#: At most this many patients (docs/synthetic.md): ten times the largest practices, about 230
#: million events, where --patients 99999999999 would run until the disk is full.
MAX_PATIENTS = 1_000_000
#: The period ends a practice can be written for: its patients' births and histories reach a
#: century and more before the end, and the calendar stops at 9999.
FIRST_END, LAST_END = dt.date(1900, 1, 1), dt.date(9999, 12, 31)
BATCH_ROWS = 200_000

# fmt: off
# --- population --------------------------------------------------------------------------------

# Share of an English GP list by 5-year age band (0-4 ... 85-89, 90+), approximately; registered
# lists run slightly older and have more young adults than the census.
AGE_BAND_WEIGHTS = (
    5.3, 5.9, 6.1, 5.8, 6.0, 6.8, 7.2, 7.0, 6.6, 6.1, 6.6, 6.6, 5.9, 5.0, 4.8, 3.7, 2.5, 1.4, 0.8,
)
# Share of males by the same bands (women outlive men).
MALE_SHARE = (
    0.51, 0.51, 0.51, 0.51, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49, 0.49, 0.47, 0.47,
    0.44, 0.38, 0.30,
)
# Of all patient rows: registered on the period end, moved away during the window, died in it.
CURRENT_SHARE, LEFT_SHARE = 0.76, 0.17
UNKNOWN_SEX_SHARE = 0.001


def _curve(points: tuple[tuple[float, float], ...], scale: float = 1.0) -> Callable[[float], float]:
    """Piecewise-linear function of age through (age, value) points, times ``scale``."""
    points = tuple((a, v * scale) for a, v in points)

    def f(age: float) -> float:
        if age <= points[0][0]:
            return points[0][1]
        for (a0, v0), (a1, v1) in zip(points, points[1:], strict=False):
            if age <= a1:
                return v0 + (v1 - v0) * (age - a0) / (a1 - a0)
        return points[-1][1]

    return f


# Probability of being on each register at a given age (before sex, smoking and practice factors).
# Calibrated so the whole-list prevalences land near England's recorded figures (hypertension
# ~15%, diabetes ~7% of 17+, CHD ~3%, AF ~2%, COPD ~2%, stroke/TIA ~1.8%, asthma ~6.5% of 6+,
# CKD 3-5 ~4% of 18+); docs/synthetic.md lists the figures a generated practice reaches.
P_HYP = _curve(
    ((17, 0), (30, 0.012), (40, 0.045), (50, 0.12), (60, 0.25), (70, 0.41), (80, 0.56), (90, 0.62)),
    1.13,
)
P_DM = _curve(
    ((0, 0.001), (17, 0.003), (30, 0.011), (40, 0.025), (50, 0.055), (60, 0.09), (70, 0.125),
     (80, 0.13), (95, 0.10)),
    1.3,
)
P_CHD = _curve(((35, 0), (45, 0.008), (55, 0.026), (65, 0.062), (75, 0.11), (85, 0.16), (95, 0.17)))
P_AF = _curve(((40, 0), (50, 0.005), (60, 0.016), (70, 0.047), (80, 0.10), (90, 0.16)), 1.1)
P_STIA = _curve(((40, 0), (50, 0.007), (60, 0.018), (70, 0.042), (80, 0.078), (90, 0.10)), 1.2)
P_COPD = _curve(((35, 0), (45, 0.004), (55, 0.014), (65, 0.031), (75, 0.048), (85, 0.05)), 1.4)
P_ASTHMA = _curve(((2, 0), (6, 0.07), (15, 0.085), (30, 0.08), (60, 0.075), (90, 0.065)), 1.0)
# Heart failure: about 1% of the list, rising steeply with age (NHS Digital QOF HF register).
P_HF = _curve(((40, 0), (50, 0.004), (60, 0.011), (70, 0.028), (80, 0.065), (90, 0.10)))
P_CKD = _curve(
    ((18, 0), (30, 0.002), (40, 0.005), (50, 0.012), (60, 0.03), (70, 0.075), (80, 0.17),
     (90, 0.26)),
    1.05,
)
P_SMOKER = _curve(((15, 0.05), (20, 0.16), (35, 0.19), (50, 0.16), (65, 0.11), (80, 0.05)))
P_EXSMOKER = _curve(((15, 0.01), (25, 0.08), (40, 0.18), (60, 0.32), (80, 0.38)))
# GP/nurse consultations per person-year by age (CPRD: ~5 overall, highest under 5 and over 85).
CONSULTS = _curve(
    ((0, 6.5), (5, 3.0), (15, 3.2), (25, 4.3), (45, 4.8), (65, 6.6), (80, 8.8), (90, 9.5))
)

# --- codes -------------------------------------------------------------------------------------
# Clinical codes are drawn at random from the full codelists of the default catalogue (the
# national clusters vendored in protocol/catalogues/codelists/), so every member of a cluster
# turns up in generated records and the engine is exercised on real coding. Blood pressure
# readings use the O/E codes most practices record half the time, other clinic codes otherwise.

SCT = "snomedct"
DMD = "dmd"


def _codes(codelist_id: str) -> tuple[str, ...]:
    from agent.library import load_default_catalogue

    return tuple(c.code for c in load_default_catalogue().codelist(codelist_id).codes)


HYP_CODES = _codes("hyp")
HYP_RES = _codes("hyp_res")
DM_CODES = _codes("dm")
DM_RES = _codes("dm_res")
_OE_SYSTOLIC, _OE_DIASTOLIC = "163030003", "163031004"  # On examination - systolic/diastolic BP
SBP_CODES = (_OE_SYSTOLIC,) * len(_codes("sbp")) + _codes("sbp")
DBP_CODES = (_OE_DIASTOLIC,) * len(_codes("dbp")) + _codes("dbp")
HBA1C_CODES = _codes("hba1c")
AF_CODES = _codes("af")
HF_CODES = _codes("hf")
CHD_CODES = _codes("chd")
STIA_CODES = _codes("stroke") + _codes("tia")
CKD_CODES = _codes("ckd35")
CKD_RESOLVING = _codes("ckd12") + _codes("ckd_res")
ASTHMA_CODES = _codes("asthma")
ASTHMA_RES = _codes("asthma_res")
COPD_CODES = _codes("copd")
COPD_RES = _codes("copd_res")
ASTHMA_REVIEW = _codes("asthma_review")
COPD_REVIEW = _codes("copd_review")
SMOKER_CODES = _codes("smoker")
EXSMOKER_CODES = _codes("ex_smoker")
FLU_CODES = _codes("flu_vacc")
FLU_DRUGS = _codes("flu_drug")
STATINS = _codes("statin")
DOACS = _codes("doac")
WARFARIN = _codes("vka")
INHALERS = _codes("asthma_drug")

# Codes in no codelist of the catalogue, for realistic volume (a test checks they stay out):
NEVER_SMOKED = "266919005"  # Never smoked tobacco (NSMOK_COD is not public)
CERVICAL_CODES = ("171149006", "413087003")  # cervical screening (its clusters are not public)
WEIGHT, HEIGHT, BMI = "27113001", "50373000", "60621009"
EGFR = "1011481000000105"
CHOLESTEROL = "1005671000000105"

# Antihypertensives (dm+d AMPs from the NHS ANTIHYP_COD drug refset as mirrored in
# opensafely/zostavax-dementia): amlodipine 5mg, ramipril 2.5mg, bisoprolol 5mg,
# indapamide 2.5mg, lisinopril 10mg. No default indicator uses them; they add realistic volume.
ANTIHYPERTENSIVES = (
    "10378211000001106", "10412211000001105", "10385311000001102", "10380011000001106",
    "10386411000001100",
)

# Filler: common primary care SNOMED CT concepts in no codelist (encounters, then symptoms and
# minor illness), repeated to weight the common ones.
ENCOUNTERS = ("185317003",) * 4 + ("390906007",) * 2 + ("185349003", "308335008", "439708006")
PROBLEMS = (
    "49727002", "25064002", "21522001", "22253000", "161891005", "267036007", "386661006",
    "271807003", "57676002", "68962001", "84229001", "54150009", "68566005", "195662009",
    "65363002", "9826008", "197480006", "62315008", "422587007", "182836005",
)


# fmt: on

# --- the practice ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate_practice`` wrote."""

    target: str
    backend: str
    seed: int
    quality: float
    period_end: dt.date
    years: int
    patients: int
    registered: int
    events: int
    medications: int
    seconds: float
    bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "seed": self.seed,
            "quality": round(self.quality, 4),
            "period_end": self.period_end.isoformat(),
            "years": self.years,
            "patients": self.patients,
            "registered": self.registered,
            "events": self.events,
            "medications": self.medications,
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class _Rates:
    """Practice-level recording and control rates (quality plus a little practice noise)."""

    bp_ltc: float  # BP measured in a year, long-term condition patients
    bp_other: float  # BP measured in a year, others aged 40+
    bp_controlled: float  # share of treated patients whose usual BP is controlled
    hba1c: float  # HbA1c measured in a half-year, diabetes
    hba1c_controlled: float
    statin_secondary: float
    statin_diabetes: float
    anticoag: float
    asthma_review: float
    copd_review: float
    smoking_ltc: float  # smoking status recorded in a year, long-term conditions
    cervical: float  # woman attends screening when due
    flu_65: float
    prevalence: float  # practice prevalence multiplier (case-finding and deprivation)
    deprivation: float  # extra multiplier on diabetes, COPD and smoking


def _rates(quality: float, rng: random.Random) -> _Rates:
    def r(base: float, span: float, noise: float = 0.03) -> float:
        return min(0.99, max(0.01, base + span * quality + rng.gauss(0, noise)))

    deprivation = math.exp(rng.gauss(0, 0.12))
    return _Rates(
        bp_ltc=r(0.78, 0.17),
        bp_other=r(0.20, 0.15),
        bp_controlled=r(0.55, 0.30, 0.04),
        hba1c=r(0.72, 0.22),
        hba1c_controlled=r(0.50, 0.25, 0.04),
        statin_secondary=r(0.74, 0.18),
        statin_diabetes=r(0.60, 0.22),
        anticoag=r(0.76, 0.18),
        asthma_review=r(0.40, 0.38, 0.05),
        copd_review=r(0.62, 0.28, 0.04),
        smoking_ltc=r(0.70, 0.25),
        cervical=r(0.60, 0.22),
        flu_65=r(0.62, 0.22),
        prevalence=math.exp(rng.gauss(0, 0.08)) * (0.92 + 0.16 * quality),
        deprivation=deprivation,
    )


def _shift_years(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February
        return d.replace(year=d.year - years, day=28)


class _Generator:
    """Generates one patient at a time into row lists (tuples in the schema's column order)."""

    def __init__(self, seed: int, quality: float, period_end: dt.date, years: int) -> None:
        self.seed = seed
        self.quality = quality
        self.rates = _rates(quality, random.Random(seed))
        self.end = period_end.toordinal()  # E, inclusive
        self.start = _shift_years(period_end, years).toordinal() + 1  # first day with events
        self.base = _shift_years(period_end, 112).toordinal()
        self.iso = [dt.date.fromordinal(o).isoformat() for o in range(self.base, self.end + 1)]
        total = sum(AGE_BAND_WEIGHTS)
        acc = 0.0
        self.band_cdf = []
        for w in AGE_BAND_WEIGHTS:
            acc += w / total
            self.band_cdf.append(acc)

    # -- helpers -----------------------------------------------------------------------------

    def _age_band(self, u: float) -> int:
        for i, c in enumerate(self.band_cdf):
            if u <= c:
                return i
        return len(self.band_cdf) - 1

    def patient(  # noqa: C901 (one patient's records, generated in order; tests pin the output)
        self, pid: int, events: list[tuple[Any, ...]], meds: list[tuple[Any, ...]]
    ) -> tuple[Any, ...]:
        rng = random.Random(self.seed * 4_294_967_296 + pid)
        rnd = rng.random
        R = self.rates
        E, W0, base, iso = self.end, self.start, self.base, self.iso
        ev = events.append
        md = meds.append
        n_enc, n_prob = len(ENCOUNTERS), len(PROBLEMS)

        reg_end = death = None
        status = rnd()
        if status >= CURRENT_SHARE + LEFT_SHARE:
            # Died during the window, at the ages people die (mean about 81).
            death = W0 + 30 + int(rnd() * (E - W0 - 30))
            age_death = min(105.0, max(35.0, rng.gauss(81, 11)))
            u = rnd()
            sex = "U" if u < UNKNOWN_SEX_SHARE else ("M" if u < 0.48 else "F")
            birth = max(base + 1, death - int(age_death * 365.25))
            if rnd() < 0.85:
                start = max(birth, W0 - int(rnd() * 30 * 365.25))
            else:
                start = W0 + int(rnd() * (death - 30 - W0))
            reg_end = death
        else:
            # Age on the period end from the list's pyramid; sex by age band.
            band = self._age_band(rnd())
            if band == len(AGE_BAND_WEIGHTS) - 1:
                age_e = 90 + min(int(rng.expovariate(0.25)), 15)
            else:
                age_e = band * 5 + int(rnd() * 5)
            u = rnd()
            sex = "U" if u < UNKNOWN_SEX_SHARE else ("M" if u < MALE_SHARE[band] else "F")
            birth = max(base + 1, E - int((age_e + rnd()) * 365.25))
            # Registration: most joined before the window; some during it (babies at birth).
            if birth >= W0 or rnd() < 0.35:
                lo = max(birth, W0)
                if birth >= W0 and rnd() < 0.8:
                    start = lo + int(rnd() * 42)
                else:
                    start = lo + int(rnd() * (E - lo))
            else:
                start = max(birth, W0 - int(rnd() * min(30, age_e + 1) * 365.25))
            start = min(start, E)
            if status >= CURRENT_SHARE and start < E - 60:
                # Moved away some time after joining.
                lo = max(start, W0) + 30
                reg_end = lo + int(rnd() * (E - lo))
        a = max(start, W0)  # events from here
        b = reg_end if reg_end is not None else E + 1  # exclusive
        age_ref = ((b - 1) - birth) / 365.25

        male = sex == "M"
        female = sex == "F"

        # Smoking.
        if age_ref >= 15:
            u = rnd() / R.deprivation
            smoker = (
                2
                if u < P_SMOKER(age_ref)
                else (1 if u < P_SMOKER(age_ref) + P_EXSMOKER(age_ref) else 0)
            )
        else:
            smoker = 0

        # Conditions: the day of diagnosis, or None.
        prev = R.prevalence

        def onset(p: float, min_age: float, mean_years: float) -> int | None:
            if rnd() >= p or age_ref < min_age:
                return None
            years = min(rng.expovariate(1 / mean_years), age_ref - min_age)
            return min(b - 1, max(birth + int(min_age * 365.25), (b - 1) - int(years * 365.25)))

        hyp = onset(P_HYP(age_ref) * prev, 18, 9)
        dm = onset(P_DM(age_ref) * prev * R.deprivation, 1 if age_ref < 17 else 17, 8)
        sex_chd = 1.45 if male else 0.62
        chd = onset(P_CHD(age_ref) * prev * sex_chd * (1.4 if dm is not None else 1.0), 30, 8)
        stia = onset(P_STIA(age_ref) * prev * (1.3 if hyp is not None else 0.9), 30, 6)
        af = onset(P_AF(age_ref) * prev * (1.2 if male else 0.85), 30, 6)
        smoke_factor = (2.6, 1.9, 0.35)[2 - smoker] if smoker else 0.35
        copd = onset(P_COPD(age_ref) * prev * smoke_factor * R.deprivation, 35, 7)
        asthma = onset(P_ASTHMA(age_ref) * prev, 2, 12)
        comorbid = dm is not None or hyp is not None
        ckd = onset(P_CKD(age_ref) * prev * (1.25 if comorbid else 0.85), 18, 6)
        cardiac = chd is not None or hyp is not None or af is not None
        hf = onset(P_HF(age_ref) * prev * (1.6 if cardiac else 0.6), 40, 5)
        ltc = sum(x is not None for x in (hyp, dm, chd, stia, af, copd, asthma, ckd))

        def code(
            d: int, c: str, value: float | None = None, unit: str | None = None, system: str = SCT
        ) -> None:
            ev((pid, iso[d - base], system, c, value, unit))

        def pick(codes: tuple[str, ...]) -> str:
            return codes[int(rnd() * len(codes))]

        # Register codes; a few hypertension and diabetes diagnoses are later resolved.
        for diag, codes in (
            (hyp, HYP_CODES),
            (dm, DM_CODES),
            (chd, CHD_CODES),
            (stia, STIA_CODES),
            (af, AF_CODES),
            (copd, COPD_CODES),
            (asthma, ASTHMA_CODES),
            (ckd, CKD_CODES),
            (hf, HF_CODES),
        ):
            if diag is not None:
                code(diag, pick(codes))
                if rnd() < 0.2:  # a second code of the cluster later (a review, a refinement)
                    code(diag + int(rnd() * (b - diag)), pick(codes))

        def resolved(diag: int | None, p: float, codes: tuple[str, ...]) -> int | None:
            """A later resolved code with probability p; None if the condition resolved."""
            if diag is not None and rnd() < p and diag < b - 60:
                code(diag + 30 + int(rnd() * (b - diag - 31)), pick(codes))
                return None
            return diag

        hyp = resolved(hyp, 0.05, HYP_RES)
        dm = resolved(dm, 0.02, DM_RES)
        ckd = resolved(ckd, 0.04, CKD_RESOLVING)
        asthma = resolved(asthma, 0.06, ASTHMA_RES)
        copd = resolved(copd, 0.01, COPD_RES)

        patient_row = (
            pid,
            f"SYN{pid:07d}",
            iso[birth - base],
            sex,
            iso[start - base],
            None if reg_end is None else iso[reg_end - base],
            None if death is None else iso[death - base],
        )
        if a >= b:
            return patient_row

        cardio = (
            hyp is not None
            or dm is not None
            or chd is not None
            or stia is not None
            or ckd is not None
        )
        bp_ok = rnd() < R.bp_controlled
        a1c_ok = rnd() < R.hba1c_controlled

        # Medications: repeat issues from a start day to the end of registration (some stop).
        def repeat(c: str, first: int, coverage: float) -> None:
            first = max(first, a)
            if first >= b or rnd() >= coverage:
                return
            stop = b if rnd() < 0.9 else first + int(rnd() * (b - first))
            interval = 28 if rnd() < 0.6 else 56
            d = first + int(rnd() * interval)
            while d < stop:
                md((pid, iso[d - base], DMD, c))
                d += interval + int(rnd() * 7) - 3

        secondary = chd if chd is not None else stia
        if secondary is not None:
            repeat(pick(STATINS), secondary + 14, R.statin_secondary)
        elif dm is not None and age_ref >= 40:
            repeat(pick(STATINS), dm + 90, R.statin_diabetes)
        elif hyp is not None and age_ref >= 50:
            repeat(pick(STATINS), hyp + 180, 0.3)
        elif age_ref >= 60:
            repeat(pick(STATINS), b - int(rnd() * 3000), 0.06)
        if hyp is not None:
            n = 1 if rnd() < 0.55 else 2
            for c in rng.sample(ANTIHYPERTENSIVES, n):
                repeat(c, hyp + 30, 0.88)
        if asthma is not None:
            repeat(pick(INHALERS), asthma, 0.82)
        elif copd is not None:
            repeat(pick(INHALERS), copd, 0.75)

        # AF: anticoagulation, more likely the higher the CHA2DS2-VASc score (from the same
        # components the indicator reads; the score itself is not recorded).
        if af is not None:
            score = (
                (hf is not None)
                + (hyp is not None)
                + (dm is not None)
                + 2 * (stia is not None)
                + (chd is not None)
                + female
                + (2 if age_ref >= 75 else (1 if age_ref >= 65 else 0))
            )
            if score >= 2 or rnd() < 0.2:
                drug = pick(WARFARIN) if rnd() < 0.15 else pick(DOACS)
                repeat(drug, af + 20, R.anticoag)

        # Year by year, counted back from the end of registration (so years match QOF years).
        seg_end = b
        first_year = True
        while seg_end > a:
            seg_start = max(a, seg_end - 365)
            span = seg_end - seg_start
            age = (seg_start - birth) / 365.25

            def day(lo: int = seg_start, n: int = span) -> int:
                return lo + int(rnd() * n)

            # Consultations with filler codes (encounter + 1-4 problem or admin codes).
            lam = (
                1.25
                * CONSULTS(age)
                * (1.12 if female and 16 <= age <= 60 else 1.0)
                * (1 + 0.22 * ltc)
            )
            lam *= span / 365
            n = int(rng.gauss(lam, math.sqrt(lam) * 1.2 + 0.5) + 0.5)
            for _ in range(n):
                ds = iso[seg_start + int(rnd() * span) - base]
                ev((pid, ds, SCT, ENCOUNTERS[int(rnd() * n_enc)], None, None))
                for _ in range(1 + int(rnd() * 5.2)):
                    ev((pid, ds, SCT, PROBLEMS[int(rnd() * n_prob)], None, None))

            # Blood pressure.
            adult = age >= 16
            if adult:
                p_bp = R.bp_ltc if cardio else (R.bp_other if age >= 40 else 0.07)
                readings = 0
                if rnd() < p_bp * span / 365:
                    readings = 1 + (cardio and rnd() < 0.6) + (cardio and rnd() < 0.25)
                for _ in range(readings):
                    d = day()
                    ok = bp_ok if rnd() < 0.85 else not bp_ok
                    if cardio and not ok:
                        sbp, dbp = rng.gauss(151, 11), rng.gauss(88, 8)
                    elif cardio:
                        sbp, dbp = rng.gauss(128, 8), rng.gauss(74, 6)
                    else:
                        sbp, dbp = rng.gauss(124 + 0.35 * max(0, age - 40), 12), rng.gauss(77, 8)
                    code(d, pick(SBP_CODES), float(round(sbp)), "mm[Hg]")
                    code(d, pick(DBP_CODES), float(round(dbp)), "mm[Hg]")
                    if rnd() < 0.1:  # a repeat reading the same day, usually lower
                        code(d, SBP_CODES[0], float(round(sbp - 4 - rnd() * 8)), "mm[Hg]")
                        code(d, DBP_CODES[0], float(round(dbp - rnd() * 5)), "mm[Hg]")

                # Weight (and sometimes height and BMI).
                if rnd() < (0.75 if ltc else 0.25):
                    d = day()
                    kg = rng.gauss(84 if male else 72, 14)
                    code(d, WEIGHT, float(round(kg, 1)), "kg")
                    if rnd() < 0.4:
                        m = rng.gauss(1.76 if male else 1.63, 0.07)
                        code(d, HEIGHT, float(round(m * 100)), "cm")
                        code(d, BMI, float(round(kg / (m * m), 1)), "kg/m2")

                # Smoking status.
                p_smok = R.smoking_ltc if ltc else 0.12
                if first_year and start >= W0:
                    p_smok = max(p_smok, 0.8)  # new patient check
                if age >= 15 and rnd() < p_smok:
                    if smoker == 2:
                        c = pick(SMOKER_CODES)
                    elif smoker == 1:
                        c = pick(EXSMOKER_CODES)
                    else:
                        c = NEVER_SMOKED
                    code(day(), c)

                # Bloods for long-term conditions: eGFR and cholesterol.
                if cardio and rnd() < 0.7:
                    d = day()
                    code(d, EGFR, float(round(rng.gauss(42 if ckd else 78, 10))), "mL/min/1.73m2")
                    code(d, CHOLESTEROL, float(round(rng.gauss(4.6, 0.9), 1)), "mmol/L")

            # HbA1c twice a year in diabetes; occasional screening otherwise.
            if dm is not None and seg_end > dm:
                for _half in range(2):
                    if rnd() < R.hba1c * span / 365:
                        ok = a1c_ok if rnd() < 0.85 else not a1c_ok
                        v = rng.gauss(51, 5) if ok else rng.gauss(70, 10)
                        code(day(), pick(HBA1C_CODES), float(round(max(30.0, v))), "mmol/mol")
            elif adult and rnd() < 0.03:
                code(day(), HBA1C_CODES[0], float(round(rng.gauss(38, 3))), "mmol/mol")

            # Reviews.
            if asthma is not None and seg_end > asthma and rnd() < R.asthma_review:
                code(day(), pick(ASTHMA_REVIEW))
            if copd is not None and seg_end > copd and rnd() < R.copd_review:
                code(day(), pick(COPD_REVIEW))

            # Flu vaccination: the autumn in this segment (1 September to 31 December).
            flu_day = dt.date.fromordinal(seg_end - 1)
            autumn = dt.date(
                flu_day.year if flu_day.month >= 9 else flu_day.year - 1, 9, 1
            ).toordinal()
            if seg_start <= autumn < seg_end:
                p_flu = R.flu_65 if age >= 65 else (0.45 if ltc else 0.02)
                if rnd() < p_flu:
                    d = min(autumn + int(rng.expovariate(1 / 35)), seg_end - 1)
                    if rnd() < 0.25:  # recorded as the vaccine product issued
                        md((pid, iso[d - base], DMD, pick(FLU_DRUGS)))
                    else:
                        code(d, pick(FLU_CODES))

            seg_end = seg_start
            first_year = False

        # Cervical screening: women 25-64, every 3 years (under 50) or 5 years, if they attend.
        if female and rnd() < R.cervical:
            d = a + int(rnd() * 3 * 365)
            while d < b:
                age_d = (d - birth) / 365.25
                if 25 <= age_d < 65:
                    code(d, pick(CERVICAL_CODES))
                d += (3 if age_d < 50 else 5) * 365 + int(rng.gauss(0, 60))
        return patient_row


# --- writers -----------------------------------------------------------------------------------


class _Writer:
    def write(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def _ddl(dialect: sa.Dialect) -> tuple[list[str], list[str]]:
    tables = [str(CreateTable(t).compile(dialect=dialect)) for t in schema.metadata.sorted_tables]
    indexes = [
        str(CreateIndex(ix).compile(dialect=dialect))
        for t in schema.metadata.sorted_tables
        for ix in sorted(t.indexes, key=lambda i: i.name or "")
    ]
    return tables, indexes


class _SqliteWriter(_Writer):
    """Raw sqlite3: one transaction, executemany, indexes built after the load."""

    def __init__(self, path: Path, indexes: bool, analyze: bool = True) -> None:
        from sqlalchemy.dialects import sqlite

        self.analyze = analyze
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(
            "PRAGMA journal_mode = OFF"
        )  # a fresh temporary file: nothing to roll back to
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("PRAGMA cache_size = -262144")
        self.tables, self.indexes = _ddl(sqlite.dialect())
        if not indexes:
            self.indexes = []
        self.conn.execute("BEGIN")
        for ddl in self.tables:
            self.conn.execute(ddl)

    def write(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in table.columns)
        self.conn.executemany(f'INSERT INTO "{table.name}" VALUES ({marks})', rows)

    def merge(self, parts: list[Path]) -> None:
        """Append the rows of part databases written by generator processes, in order (SQLite
        copies them in C, about 0.1 us a row)."""
        for i, part in enumerate(parts):
            self.conn.execute(f"ATTACH DATABASE ? AS part{i}", [str(part)])
            for t in schema.metadata.sorted_tables:
                self.conn.execute(f'INSERT INTO main."{t.name}" SELECT * FROM part{i}."{t.name}"')
        self.conn.execute("COMMIT")
        for i in range(len(parts)):
            self.conn.execute(f"DETACH DATABASE part{i}")
        self.conn.execute("BEGIN")

    def finish(self) -> None:
        for ddl in self.indexes:
            self.conn.execute(ddl)
        self.conn.execute("COMMIT")
        if self.analyze:
            # Sampled statistics (SQLite 3.32+) are enough for the planner and skip a full
            # pass over the 7-million-row index.
            self.conn.execute("PRAGMA analysis_limit = 1000")
            self.conn.execute("ANALYZE")
        self.conn.close()

    def abort(self) -> None:
        self.conn.close()


class _CsvSink(_Writer):
    """CSV staging files ``<table>.<part>.csv`` in a directory (None written as empty)."""

    def __init__(self, directory: Path, part: int) -> None:
        self.directory = directory
        self.part = part
        self.files: dict[str, Any] = {}
        self.writers: dict[str, Any] = {}

    @staticmethod
    def path(directory: Path, table: str, part: int) -> Path:
        return directory / f"{table}.{part}.csv"

    def write(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        if table.name not in self.writers:
            fh = open(self.path(self.directory, table.name, self.part), "w", newline="")  # noqa: SIM115
            self.files[table.name] = fh
            self.writers[table.name] = csv.writer(fh)
        self.writers[table.name].writerows(rows)

    def finish(self) -> None:
        for fh in self.files.values():
            fh.close()

    def abort(self) -> None:
        self.finish()


class _DuckdbWriter(_Writer):
    """Stages rows in CSV files and loads each table with one parallel ``read_csv``."""

    def __init__(self, path: Path, indexes: bool) -> None:
        import duckdb
        import duckdb_engine

        self.duckdb = duckdb
        self.path = path
        self.tmp = tempfile.TemporaryDirectory(prefix="fedqi-synth-", dir=path.parent)
        self.staging = Path(self.tmp.name)
        self.sink = _CsvSink(self.staging, 0)
        self.parts = 1
        _, self.indexes = _ddl(duckdb_engine.Dialect())
        # Own table DDL, without the schema's indexes (DuckDB's scans do not use them).
        self.tables = [_duckdb_create_table(t) for t in schema.metadata.sorted_tables]
        if not indexes:
            self.indexes = []

    def write(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        self.sink.write(table, rows)

    def use_parts(self, parts: int) -> None:
        """Generator processes wrote ``parts`` CSV parts into :attr:`staging` (part 0 first)."""
        self.sink.finish()
        self.parts = parts

    def finish(self) -> None:
        self.sink.finish()
        con = self.duckdb.connect(str(self.path))
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute("BEGIN")
            for ddl in self.tables:
                con.execute(ddl)
            for t in schema.metadata.sorted_tables:
                files = [
                    str(f)
                    for i in range(self.parts)
                    if (f := _CsvSink.path(self.staging, t.name, i)).exists()
                ]
                if not files:
                    continue
                columns = ", ".join(f"'{c.name}': '{store.duckdb_type(c.type)}'" for c in t.columns)
                con.execute(
                    f'INSERT INTO "{t.name}" SELECT * FROM read_csv(?, header = false, '
                    f"columns = {{{columns}}}, nullstr = '', quote = '\"')",
                    [files],
                )
            for ddl in self.indexes:
                con.execute(ddl)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        finally:
            con.close()
            self.tmp.cleanup()

    def abort(self) -> None:
        self.sink.abort()
        self.tmp.cleanup()


def _duckdb_create_table(table: sa.Table) -> str:
    cols = [
        f'"{c.name}" {store.duckdb_type(c.type)}' + ("" if c.nullable else " NOT NULL")
        for c in table.columns
    ]
    pk = [c.name for c in table.primary_key.columns]
    if pk:
        cols.append(f"PRIMARY KEY ({', '.join(pk)})")
    return f'CREATE TABLE "{table.name}" ({", ".join(cols)})'


class _ServerWriter(_Writer):
    """A database server (PostgreSQL): one transaction, tables created, COPY via store.bulk_insert."""

    def __init__(self, engine: sa.Engine, force: bool, indexes: bool) -> None:
        self.engine = engine
        self.indexes = indexes
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        existing = [t for t in schema.TABLES if sa.inspect(self.conn).has_table(t)]
        if existing and not force:
            self.tx.rollback()
            self.conn.close()
            raise AgentUserError(
                f"{_safe_url(engine.url)} already has table(s) {', '.join(existing)}; "
                "use --force to replace them"
            )
        schema.metadata.drop_all(self.conn)
        for t in schema.metadata.sorted_tables:
            self.conn.execute(CreateTable(t))

    def write(self, table: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        store.bulk_insert(self.conn, table, rows)

    def finish(self) -> None:
        for t in schema.metadata.sorted_tables:
            for ix in t.indexes if self.indexes else ():
                self.conn.execute(CreateIndex(ix))
        self.tx.commit()
        self.conn.close()
        self.engine.dispose()

    def abort(self) -> None:
        self.tx.rollback()
        self.conn.close()
        self.engine.dispose()


def _remove(tmp: Path) -> None:
    """Delete a temporary database file and any write-ahead log beside it."""
    for p in (tmp, tmp.with_name(tmp.name + ".wal"), tmp.with_name(tmp.name + "-journal")):
        p.unlink(missing_ok=True)


def _safe_url(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


# --- entry point -------------------------------------------------------------------------------


def practice_quality(seed: int) -> float:
    """The practice quality a seed implies when none is given: Beta(4, 3), mean about 0.57."""
    return random.Random(f"fedqi-quality-{seed}").betavariate(4, 3)


Batch = tuple[int, list[Any], list[Any], list[Any]]


def _rows(gen: _Generator, patients: int, first: int = 1) -> Iterator[Batch]:
    """Batches for patient ids ``first`` .. ``patients``, each tagged with its last id."""
    pats: list[Any] = []
    evs: list[Any] = []
    mds: list[Any] = []
    for pid in range(first, patients + 1):
        pats.append(gen.patient(pid, evs, mds))
        if len(evs) + len(mds) >= BATCH_ROWS or pid == patients:
            yield pid, pats, evs, mds
            pats, evs, mds = [], [], []


def _registered(pats: list[tuple[Any, ...]], end_iso: str) -> int:
    return sum(1 for p in pats if p[4] <= end_iso and (p[5] is None or p[5] > end_iso))


def _write_part(
    kind: str, where: str, part: int, args: tuple[Any, ...], first: int, last: int, queue: Any
) -> None:
    """Child process: generate patients ``first``..``last`` straight into a part (a SQLite file,
    or CSV staging files) and report counts; ("error", text) on failure."""
    try:
        sink: _Writer = (
            _SqliteWriter(Path(where), indexes=False, analyze=False)
            if kind == "sqlite"
            else _CsvSink(Path(where), part)
        )
        end_iso = args[2].isoformat()
        for _, pats, evs, mds in _rows(_Generator(*args), last, first):
            sink.write(schema.patients, pats)
            sink.write(schema.events, evs)
            sink.write(schema.medications, mds)
            queue.put(("rows", len(pats), len(evs), len(mds), _registered(pats, end_iso)))
        sink.finish()
        queue.put(("done", part))
    except BaseException as exc:  # reported to the parent, which raises
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _generate_in_parts(
    writer: _SqliteWriter | _DuckdbWriter,
    args: tuple[Any, ...],
    patients: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int, int]:
    """Split the patients into contiguous ranges, one generator process each, every one writing
    its own part without passing rows through this process; then merge the parts in order.
    Returns (events, medications, registered)."""
    kind = "sqlite" if isinstance(writer, _SqliteWriter) else "csv"
    bounds = [1 + i * patients // workers for i in range(workers + 1)]
    bounds[-1] = patients + 1
    if kind == "sqlite":
        wheres = [str(writer.path.with_name(f"{writer.path.name}.part{i}")) for i in range(workers)]
    else:
        assert isinstance(writer, _DuckdbWriter)
        wheres = [str(writer.staging)] * workers
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_write_part,
            args=(kind, wheres[i], i, args, bounds[i], bounds[i + 1] - 1, queue),
            daemon=True,
        )
        for i in range(workers)
    ]
    done = events = meds = registered = finished = 0
    try:
        for proc in procs:
            proc.start()
        while finished < workers:
            try:
                msg = queue.get(timeout=5)
            except queue_module.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise AgentError(
                        f"synthetic practice generator process exited with code {dead[0].exitcode}"
                    ) from None
                continue
            if msg[0] == "error":
                raise AgentError(f"synthetic practice generator failed: {msg[1]}")
            if msg[0] == "done":
                finished += 1
                continue
            _, n_pats, n_evs, n_mds, n_reg = msg
            done += n_pats
            events += n_evs
            meds += n_mds
            registered += n_reg
            if progress is not None:
                progress(done, patients)
        for proc in procs:
            proc.join()
        if isinstance(writer, _SqliteWriter):
            writer.merge([Path(w) for w in wheres])
        else:
            writer.use_parts(workers)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        queue.close()
        if kind == "sqlite":
            for w in wheres:
                _remove(Path(w))
    return events, meds, registered


def _produce(queue: Any, args: tuple[Any, ...], patients: int) -> None:
    """Child process: generate batches into the queue; None when done, a string on failure."""
    try:
        for batch in _rows(_Generator(*args), patients):
            queue.put(batch)
        queue.put(None)
    except BaseException as exc:  # reported to the parent, which raises
        queue.put(f"{type(exc).__name__}: {exc}")


def _batches(args: tuple[Any, ...], patients: int, parallel: bool) -> Iterator[Batch]:
    """Batches in patient order. In parallel mode a child process generates while this process
    writes (generation and the database load each take about half the time); the rows are the
    same either way, since every patient draws from its own seeded generator."""
    if not parallel:
        yield from _rows(_Generator(*args), patients)
        return
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=3)
    proc = ctx.Process(target=_produce, args=(queue, args, patients), daemon=True)
    proc.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                break
            if isinstance(item, str):
                raise AgentError(f"synthetic practice generator failed: {item}")
            yield item
        proc.join()
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join()
        queue.close()


def generate_practice(  # noqa: C901 (the target kinds and runners, chosen in one place)
    target: str | os.PathLike[str],
    *,
    patients: int,
    seed: int,
    quality: float | None = None,
    period_end: dt.date = DEFAULT_PERIOD_END,
    years: int = 10,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    parallel: bool | None = None,
    indexes: bool | None = None,
) -> SynthSummary:
    """Write a synthetic practice to ``target`` (a ``.db``/``.sqlite`` or ``.duckdb`` path, or a
    SQLAlchemy URL: sqlite, duckdb or postgresql). A file target is written to a temporary file
    and renamed into place, so a failure leaves nothing half-written; an existing file needs
    ``force``. ``progress(done, total)`` is called as patients are generated. ``parallel``
    (default: from 5,000 patients on a machine with 2 or more CPUs) splits the patients between
    2-4 generator processes: for a file each writes its own part (a SQLite file or CSV staging
    files) and this process merges them in order; for a server one child generates while this
    process copies. The output is identical either way. ``indexes`` (default: yes, except on DuckDB,
    whose scans do not use them and where building them on 7 million rows costs 20 s) builds
    the schema's indexes after the load."""
    if not 1 <= patients <= MAX_PATIENTS:
        raise AgentUserError(
            f"--patients must be from 1 to {MAX_PATIENTS:,} (got {patients:,}); the largest "
            "practices have about 100,000"
        )
    if seed < 0:
        raise AgentUserError(f"--seed must be 0 or more (got {seed})")
    if quality is not None and not 0.0 <= quality <= 1.0:
        raise AgentUserError(f"--quality must be between 0 and 1 (got {quality})")
    if not 1 <= years <= 50:
        raise AgentUserError(f"--years must be between 1 and 50 (got {years})")
    if not FIRST_END <= period_end <= LAST_END:
        raise AgentUserError(
            f"--period-end must be from {FIRST_END} to {LAST_END} (got {period_end})"
        )
    q = practice_quality(seed) if quality is None else float(quality)
    try:
        url = store.practice_url(target)
    except SourceError:
        # A bad --out is a bad argument (exit 2), not a practice database that cannot be read.
        raise AgentUserError(
            f"--out {target}: not a synthetic practice target; name a "
            f"{'/'.join(sorted(SQLITE_SUFFIXES))} (SQLite) or "
            f"{'/'.join(sorted(DUCKDB_SUFFIXES))} (DuckDB) file, or give a SQLAlchemy URL "
            "(sqlite:///..., duckdb:///..., postgresql://...)"
        ) from None
    backend = url.get_backend_name()
    started = time.perf_counter()

    path: Path | None = None
    tmp: Path | None = None
    if backend in ("sqlite", "duckdb"):
        path = Path(url.database or "")
        if not url.database or str(path) == ":memory:":
            raise AgentUserError(f"synthetic practice target {target}: give a file path")
        if path.is_dir():
            raise AgentUserError(f"{path} is a directory")
        if path.exists() and not force:
            raise AgentUserError(f"{path} already exists; use --force to replace it")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise AgentUserError(f"cannot write {path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise AgentUserError(f"cannot write {path}: directory {parent} is not writable")
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(name)
        tmp.unlink()  # the writers create the file themselves
        with_ix = indexes if indexes is not None else backend != "duckdb"
        try:
            writer: _Writer = (
                _SqliteWriter(tmp, with_ix) if backend == "sqlite" else _DuckdbWriter(tmp, with_ix)
            )
        except BaseException:
            _remove(tmp)
            raise
    else:
        try:
            engine = sa.create_engine(url)
            writer = _ServerWriter(engine, force, indexes is not False)
        except sa.exc.OperationalError as exc:
            raise AgentUserError(f"cannot connect to {_safe_url(url)}: {exc.orig}") from None

    if parallel is None:
        parallel = patients >= 5000 and (os.cpu_count() or 1) >= 2
    n_events = n_meds = registered = 0
    end_iso = period_end.isoformat()
    args = (seed, q, period_end, years)
    try:
        if parallel and isinstance(writer, _SqliteWriter | _DuckdbWriter):
            workers = max(2, min(4, os.cpu_count() or 2))
            n_events, n_meds, registered = _generate_in_parts(
                writer, args, patients, workers, progress
            )
        else:
            for done, pats, evs, mds in _batches(args, patients, parallel):
                registered += _registered(pats, end_iso)
                writer.write(schema.patients, pats)
                writer.write(schema.events, evs)
                writer.write(schema.medications, mds)
                n_events += len(evs)
                n_meds += len(mds)
                if progress is not None:
                    progress(done, patients)
        writer.finish()
        if path is not None and tmp is not None:
            os.replace(tmp, path)
    except BaseException:
        writer.abort()
        if tmp is not None:
            _remove(tmp)
        raise
    size = path.stat().st_size if path is not None else None
    return SynthSummary(
        target=str(path) if path is not None else _safe_url(url),
        backend=backend,
        seed=seed,
        quality=q,
        period_end=period_end,
        years=years,
        patients=patients,
        registered=registered,
        events=n_events,
        medications=n_meds,
        seconds=time.perf_counter() - started,
        bytes=size,
    )
