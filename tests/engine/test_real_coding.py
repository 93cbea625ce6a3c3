"""Every default indicator, on a practice coded with random members of the full national clusters,
equals counts computed here by plain Python, written out per indicator from its QOF rule.

The expectation shares nothing with the engine or with the reference evaluator: it does not read
the catalogue's rule trees (only its code sets, which tests/library checks against the vendored
files), it has its own month arithmetic and its own definition of every register and target.
So a rule written wrongly in the catalogue, a codelist wired to the wrong rule, or an engine
fault all show here as a difference, named by indicator, stratum and count.

The practice is made for the test: dates crowd round the window edges (the period end, 3, 6, 7,
9, 12 and 60 months before it, a day either side), codes are drawn uniformly from each full
cluster, and there are rows that must not count (codes of no list, the home and ambulatory BP
codes the clinic lists leave out, a drug code in the events table, codes dated after the period
end). ``FEDQI_LONG=1`` runs more practices.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agent.engine.reference import Patient, Practice, Row
from agent.library import load_default_catalogue
from protocol.catalogue import Catalogue

E = dt.date(2026, 3, 31)
SEEDS = [11, 12, 13, 14, 15, 16] if os.environ.get("FEDQI_LONG") else [11]
PATIENTS = 900

# Codes in no codelist of the default catalogue (a test below checks it).
NOT_IN_ANY_LIST = ("185317003", "21522001", "27113001", "266919005", "1011481000000105")


def months_before(day: dt.date, months: int) -> dt.date:
    """``day`` less ``months`` months, the day of month clipped to the month's length."""
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def age_on(birth: dt.date, day: dt.date) -> int:
    years = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        years -= 1
    return years


# --- generation --------------------------------------------------------------------------------


def _edge_dates() -> list[dt.date]:
    out = []
    for months in (0, 3, 6, 7, 9, 12, 60):
        edge = months_before(E, months)
        out += [edge - dt.timedelta(days=1), edge, edge + dt.timedelta(days=1)]
    return out


EDGES = _edge_dates()


def _date(rng: random.Random, earliest: dt.date) -> dt.date:
    """Mostly a window edge, else any day from ``earliest`` to a little after E."""
    if rng.random() < 0.45:
        day = rng.choice(EDGES)
    else:
        span = (E + dt.timedelta(days=30) - earliest).days
        day = earliest + dt.timedelta(days=rng.randrange(max(span, 1)))
    return max(day, earliest)


def make_practice(catalogue: Catalogue, seed: int) -> Practice:
    rng = random.Random(seed)
    codes = {cl.id: [c.code for c in cl.codes] for cl in catalogue.codelists}
    left_out_bp = [
        code
        for cl in (catalogue.codelist("sbp"), catalogue.codelist("dbp"))
        for code in _derivation_codes(cl.source.derivation or "")
    ]
    assert left_out_bp, "the BP lists name the home and ambulatory codes they leave out"
    patients, events, meds = [], [], []
    for pid in range(1, PATIENTS + 1):
        birth = E - dt.timedelta(days=rng.randrange(0, 100 * 365))
        if rng.random() < 0.05:  # birthdays on the period end's edges
            birth = dt.date(E.year - rng.choice((17, 40, 65, 75, 80)), E.month, E.day)
        start = max(birth, E - dt.timedelta(days=rng.choice((20, 80, 200, 260, 275, 300, 4000))))
        if rng.random() < 0.1:
            start = months_before(E, rng.choice((3, 9))) + dt.timedelta(days=rng.choice((-1, 0, 1)))
        start = max(start, birth)
        end = died = None
        r = rng.random()
        if r < 0.05:
            end = E - dt.timedelta(days=rng.randrange(0, 300))
        elif r < 0.08:
            died = end = E + dt.timedelta(days=rng.choice((0, 1, -5)))
        sex = rng.choices("FMU", weights=(48, 48, 4))[0]
        patients.append(Patient(pid, birth, sex, start, end, died, f"T{pid}"))

        def ev(cl: str, value: float | None = None, pid: int = pid, birth: dt.date = birth) -> None:
            events.append((pid, Row(_date(rng, birth), "snomedct", rng.choice(codes[cl]), value)))

        def med(cl: str, pid: int = pid, birth: dt.date = birth) -> None:
            meds.append((pid, Row(_date(rng, birth), "dmd", rng.choice(codes[cl]))))

        # Each condition with a high enough chance that every indicator has patients.
        for cl, p in (
            ("hyp", 0.35), ("dm", 0.25), ("af", 0.15), ("chd", 0.15), ("stroke", 0.08),
            ("tia", 0.08), ("ckd35", 0.12), ("asthma", 0.15), ("copd", 0.1), ("hf", 0.08),
        ):  # fmt: skip
            for _ in range(rng.choice((0, 0, 1, 1, 2)) if rng.random() < p * 2 else 0):
                ev(cl)
        for cl, p in (
            ("hyp_res", 0.05), ("dm_res", 0.04), ("ckd12", 0.05), ("ckd_res", 0.03),
            ("asthma_res", 0.04), ("copd_res", 0.03), ("asthma_review", 0.4),
            ("copd_review", 0.3), ("smoker", 0.2), ("ex_smoker", 0.2), ("bp", 0.3),
            ("flu_vacc", 0.2),
        ):  # fmt: skip
            if rng.random() < p:
                ev(cl)
        for _ in range(rng.choice((0, 1, 2, 3))):
            ev("sbp", float(rng.randrange(110, 170)))
            ev("dbp", float(rng.randrange(60, 100)))
        if rng.random() < 0.2:  # home/ambulatory readings: in the published lists, not counted
            day = _date(rng, birth)
            events.append((pid, Row(day, "snomedct", rng.choice(left_out_bp), 120.0)))
        for _ in range(rng.choice((0, 1, 2))):
            ev("hba1c", float(rng.randrange(40, 80)))
        for cl, p in (
            ("statin", 0.3), ("doac", 0.12), ("vka", 0.05), ("asthma_drug", 0.5),
            ("flu_drug", 0.1),
        ):  # fmt: skip
            for _ in range(rng.choice((1, 2, 3)) if rng.random() < p else 0):
                med(cl)
        # Rows that must not count: codes of no list, a statin in the events table, a value row
        # of a BP code under the wrong system.
        for _ in range(rng.randrange(3)):
            events.append((pid, Row(_date(rng, birth), "snomedct", rng.choice(NOT_IN_ANY_LIST))))
        if rng.random() < 0.05:
            events.append((pid, Row(_date(rng, birth), "dmd", rng.choice(codes["statin"]))))
        if rng.random() < 0.05:
            events.append((pid, Row(_date(rng, birth), "dmd", rng.choice(codes["sbp"]), 120.0)))
    return Practice.build(patients, events, meds)


def _derivation_codes(text: str) -> list[str]:
    return [word for word in text.replace(",", " ").split() if word.isdigit() and len(word) >= 6]


# --- the expectation, in plain Python ------------------------------------------------------------


@dataclass
class Person:
    """One patient's rows on or before E, by codelist, and the facts the indicators need."""

    patient: Patient
    age: int
    by_list: dict[str, list[Row]] = field(default_factory=dict)

    def dates(self, cl: str) -> list[dt.date]:
        return [r.date for r in self.by_list.get(cl, [])]

    def last(self, cl: str) -> dt.date | None:
        return max(self.dates(cl), default=None)

    def ever(self, *lists: str) -> bool:
        return any(self.dates(cl) for cl in lists)

    def within(self, cl: str, months: int) -> bool:
        start = months_before(E, months)
        return any(start < d <= E for d in self.dates(cl))

    def register(self, cl: str, *resolving: str) -> bool:
        latest = self.last(cl)
        if latest is None:
            return False
        return all(d < latest for res in resolving for d in self.dates(res))

    def new_to_register(self, lists: tuple[str, ...], months: int) -> bool:
        start = months_before(E, months)
        first = min((d for cl in lists for d in self.dates(cl)), default=None)
        return (first is not None and first > start) or self.patient.registration_start > start

    def latest_value(self, cl: str, months: int = 12) -> float | None:
        start = months_before(E, months)
        rows = [r for r in self.by_list.get(cl, []) if r.value is not None and start < r.date]
        if not rows:
            return None
        day = max(r.date for r in rows)
        return min(r.value for r in rows if r.date == day and r.value is not None)

    def bp_at_most(self, systolic: int, diastolic: int) -> bool:
        s, d = self.latest_value("sbp"), self.latest_value("dbp")
        return s is not None and d is not None and s <= systolic and d <= diastolic

    # registers
    @property
    def hyp(self) -> bool:
        return self.register("hyp", "hyp_res")

    @property
    def dm_any_age(self) -> bool:
        return self.register("dm", "dm_res")

    @property
    def dm(self) -> bool:
        return self.dm_any_age and self.age >= 17

    @property
    def af(self) -> bool:
        return self.register("af")

    @property
    def chd(self) -> bool:
        return self.register("chd")

    @property
    def stia(self) -> bool:
        return self.register("stroke") or self.register("tia")

    @property
    def ckd(self) -> bool:
        return self.register("ckd35", "ckd12", "ckd_res") and self.age >= 18

    @property
    def asthma(self) -> bool:
        return (
            self.register("asthma", "asthma_res")
            and self.age >= 6
            and self.within("asthma_drug", 12)
        )

    @property
    def copd(self) -> bool:
        return self.register("copd", "copd_res")

    def cha2ds2_vasc(self) -> int:
        female = self.patient.sex == "F"
        return (
            self.ever("hf")
            + self.hyp
            + (2 if self.age >= 75 else 1 if self.age >= 65 else 0)
            + self.dm_any_age
            + 2 * self.ever("stroke", "tia")
            + self.ever("chd")
            + female
        )


Expectation = Callable[[Person], tuple[bool, bool, bool]]  # population, numerator, exclusion


def _bp_target(register: str, lists: tuple[str, ...], old: bool) -> Expectation:
    def f(p: Person) -> tuple[bool, bool, bool]:
        on = getattr(p, register) and (p.age >= 80 if old else p.age <= 79)
        target = (150, 90) if old else (140, 90)
        return on, p.bp_at_most(*target), p.new_to_register(lists, 9)

    return f


def _statin(register: str, lists: tuple[str, ...]) -> Expectation:
    return lambda p: (getattr(p, register), p.within("statin", 6), p.new_to_register(lists, 9))


STIA = ("stroke", "tia")
EXPECTED: dict[str, Expectation] = {
    "HYP_REG": lambda p: (True, p.hyp, False),
    "HYP_BP_U80": _bp_target("hyp", ("hyp",), old=False),
    "HYP_BP_80": _bp_target("hyp", ("hyp",), old=True),
    "DM_REG": lambda p: (p.age >= 17, p.dm, False),
    "DM_HBA1C": lambda p: (
        p.dm,
        (v := p.latest_value("hba1c")) is not None and v <= 58,
        p.new_to_register(("dm",), 9),
    ),
    "DM_BP": lambda p: (p.dm, p.bp_at_most(140, 80), p.new_to_register(("dm",), 9)),
    "DM_STATIN": lambda p: (
        p.dm and p.age >= 40 and not p.chd and not p.stia,
        p.within("statin", 6),
        p.new_to_register(("dm",), 9),
    ),
    "AF_REG": lambda p: (True, p.af, False),
    "AF_ANTICOAG": lambda p: (
        p.af and p.cha2ds2_vasc() >= 2,
        p.within("doac", 6) or p.within("vka", 6),
        p.new_to_register(("af",), 3),
    ),
    "CHD_REG": lambda p: (True, p.chd, False),
    "CHD_BP_U80": _bp_target("chd", ("chd",), old=False),
    "CHD_BP_80": _bp_target("chd", ("chd",), old=True),
    "CHD_STATIN": _statin("chd", ("chd",)),
    "STIA_REG": lambda p: (True, p.stia, False),
    "STIA_BP_U80": _bp_target("stia", STIA, old=False),
    "STIA_BP_80": _bp_target("stia", STIA, old=True),
    "STIA_STATIN": _statin("stia", STIA),
    "CKD_REG": lambda p: (p.age >= 18, p.ckd, False),
    "AST_REG": lambda p: (p.age >= 6, p.asthma, False),
    "AST_REVIEW": lambda p: (
        p.asthma,
        p.within("asthma_review", 12),
        p.new_to_register(("asthma",), 3),
    ),
    "COPD_REG": lambda p: (True, p.copd, False),
    "COPD_REVIEW": lambda p: (
        p.copd,
        p.within("copd_review", 12),
        p.new_to_register(("copd",), 3),
    ),
    "SMOK_STATUS": lambda p: (
        p.age >= 15 and (p.chd or p.stia or p.hyp or p.dm or p.copd or p.ckd or p.asthma),
        p.within("smoker", 12) or p.within("ex_smoker", 12),
        False,
    ),
    "BP_5Y": lambda p: (p.age >= 45, p.within("bp", 60), False),
    "FLU_65": lambda p: (p.age >= 65, p.within("flu_vacc", 7) or p.within("flu_drug", 7), False),
}


def expected_counts(
    practice: Practice, catalogue: Catalogue
) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """(indicator, age band, sex) -> (denominator, numerator, exclusions), totals included."""
    event_lists = {}
    med_lists = {}
    for cl in catalogue.codelists:
        pairs = {(c.system, c.code) for c in cl.codes}
        # Which table a list is read from: medications for dm+d lists, events for SNOMED CT.
        (med_lists if cl.codes[0].system == "dmd" else event_lists)[cl.id] = pairs
    bands = [(b.label, b.min, b.max) for b in catalogue.age_bands]
    out: dict[tuple[str, str, str], list[int]] = {}
    for patient in practice.patients:
        registered = (
            patient.birth_date <= E
            and patient.registration_start <= E
            and (patient.registration_end is None or patient.registration_end > E)
            and (patient.death_date is None or patient.death_date > E)
        )
        if not registered:
            continue
        person = Person(patient, age_on(patient.birth_date, E))
        for table, lists in (("events", event_lists), ("medications", med_lists)):
            rows = getattr(practice, table).get(patient.patient_id, [])
            for cl, pairs in lists.items():
                person.by_list[cl] = [
                    r for r in rows if r.date <= E and (r.system, r.code) in pairs
                ]
        band = next(
            label
            for label, lo, hi in bands
            if person.age >= lo and (hi is None or person.age <= hi)
        )
        for ind_id, rule in EXPECTED.items():
            pop, num, exc = rule(person)
            counts = (
                int(pop and (num or not exc)),
                int(pop and num),
                int(pop and not num and exc),
            )
            for key in ((ind_id, "all", "all"), (ind_id, band, patient.sex)):
                acc = out.setdefault(key, [0, 0, 0])
                for i in range(3):
                    acc[i] += counts[i]
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


# --- the tests -----------------------------------------------------------------------------------


def test_every_default_indicator_has_an_independent_expectation() -> None:
    catalogue = load_default_catalogue()
    assert set(EXPECTED) == {i.id for i in catalogue.indicators}


def test_filler_codes_are_in_no_list() -> None:
    catalogue = load_default_catalogue()
    every = {c.code for cl in catalogue.codelists for c in cl.codes}
    assert not set(NOT_IN_ANY_LIST) & every


@pytest.mark.parametrize("seed", SEEDS)
def test_engine_counts_equal_plain_python_on_real_coding(runner, seed: int) -> None:
    catalogue = load_default_catalogue()
    practice = make_practice(catalogue, seed)
    expected = expected_counts(practice, catalogue)
    cells = runner.compute(practice, catalogue, E)
    assert {c.indicator for c in cells} == set(EXPECTED)
    differences = []
    for c in cells:
        want = expected.get((c.indicator, c.age_band, c.sex), (0, 0, 0))
        got = (c.denominator, c.numerator, c.exclusions)
        if got != want:
            differences.append(f"{c.indicator} {c.age_band}/{c.sex}: engine {got}, expected {want}")
    assert not differences, "\n".join(differences[:20])
    # Not vacuous: every indicator counts somebody in its denominator and its numerator, and
    # the exclusion rules fire somewhere.
    for ind_id in EXPECTED:
        den, num, _ = expected[(ind_id, "all", "all")]
        assert den > 0 and num > 0, ind_id
    assert sum(expected[(i, "all", "all")][2] for i in EXPECTED) > 0


def test_check_source_counts_patients_per_cluster(tmp_path) -> None:
    """``check-source``'s patients per cluster equal a plain count over the generated rows."""
    import sqlalchemy as sa
    from engine_spec_helpers import load

    from agent.sources.check import check_source

    catalogue = load_default_catalogue()
    practice = make_practice(catalogue, 7)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.sqlite'}")
    load(engine, practice)
    result = check_source(engine, catalogue, E)
    engine.dispose()
    for cl in catalogue.codelists:
        pairs = {(c.system, c.code) for c in cl.codes}
        want = {
            pid
            for table in (practice.events, practice.medications)
            for pid, rows in table.items()
            if any((r.system, r.code) in pairs for r in rows)
        }
        (got,) = [c for c in result.codelists if c.id == cl.id]
        assert got.patients == len(want) > 0, cl.id
    unused = {(c.system, c.code) for c in result.unused_codes}
    assert {("snomedct", code) for code in NOT_IN_ANY_LIST} <= unused


@pytest.mark.parametrize("url", ["duckdb:///{d}/p.duckdb", "sqlite:///{d}/p.sqlite"])
def test_in_lists_give_the_same_counts_as_the_code_table(tmp_path, url: str) -> None:
    """The two ways of matching codes (bench/agent_compute.py --code-match) agree."""
    import sqlalchemy as sa
    from engine_spec_helpers import load

    from agent.engine import compute_cells

    catalogue = load_default_catalogue()
    practice = make_practice(catalogue, 5)
    engine = sa.create_engine(url.format(d=tmp_path))
    load(engine, practice)
    try:
        joined = compute_cells(engine, catalogue, E, code_match="join")
        listed = compute_cells(engine, catalogue, E, code_match="in")
    finally:
        engine.dispose()
    assert joined == listed
    assert sum(c.numerator for c in joined) > 0
