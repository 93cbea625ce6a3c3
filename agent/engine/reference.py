"""The reference evaluator: the catalogue's semantics, patient by patient, in plain Python.

Obviously correct and slow on purpose: it is the oracle the SQL engine is tested against. It
follows the module docstring of ``protocol.catalogue`` line by line and shares no code with the
engine (not even its date arithmetic: windows here use ``dateutil.relativedelta``, ages are
counted from birthdays).

    load_practice(engine) -> Practice          # the three canonical tables as Python objects
    evaluate(practice, catalogue, period_end, indicators=None) -> list[RawCell]
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from dateutil.relativedelta import relativedelta

from agent.sources import schema
from protocol.catalogue import (
    Age,
    All,
    Any_,
    Catalogue,
    FirstCode,
    HasCode,
    Indicator,
    LatestCode,
    LatestValue,
    Not,
    OnRegister,
    RegisteredFor,
    Rule,
    Score,
    SexIs,
    Window,
)
from protocol.disclosure import RawCell


@dataclass(frozen=True)
class Patient:
    patient_id: int
    birth_date: dt.date
    sex: str
    registration_start: dt.date
    registration_end: dt.date | None = None
    death_date: dt.date | None = None
    local_ref: str | None = None


@dataclass(frozen=True)
class Row:
    """One coded row of ``events`` or ``medications``."""

    date: dt.date
    system: str
    code: str
    value: float | None = None


@dataclass
class Practice:
    patients: list[Patient]
    events: dict[int, list[Row]] = field(default_factory=dict)
    medications: dict[int, list[Row]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        patients: Iterable[Patient],
        events: Iterable[tuple[int, Row]] = (),
        medications: Iterable[tuple[int, Row]] = (),
    ) -> Practice:
        ev: dict[int, list[Row]] = defaultdict(list)
        md: dict[int, list[Row]] = defaultdict(list)
        for pid, row in events:
            ev[pid].append(row)
        for pid, row in medications:
            md[pid].append(row)
        return cls(list(patients), dict(ev), dict(md))


def load_practice(engine: sa.Engine) -> Practice:
    """Read the canonical tables into memory (fine for tests and small practices)."""
    p, e, m = schema.patients, schema.events, schema.medications
    with engine.connect() as conn:
        patients = [
            Patient(
                patient_id=int(r.patient_id),
                birth_date=r.birth_date,
                sex=r.sex,
                registration_start=r.registration_start,
                registration_end=r.registration_end,
                death_date=r.death_date,
                local_ref=r.local_ref,
            )
            for r in conn.execute(sa.select(p))
        ]
        events = [
            (int(r.patient_id), Row(r.date, r.system, r.code, r.value))
            for r in conn.execute(sa.select(e))
        ]
        medications = [
            (int(r.patient_id), Row(r.date, r.system, r.code)) for r in conn.execute(sa.select(m))
        ]
    return Practice.build(patients, events, medications)


# --- semantics ---------------------------------------------------------------------------------


def age_on(birth: dt.date, day: dt.date) -> int:
    """Completed years: the birthday this year is reached unless (month, day) is still ahead
    (so a 29 February birthday is reached on 1 March in a common year)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def window_start(end: dt.date, window: Window) -> dt.date:
    start: dt.date = end - relativedelta(
        months=window.months
    )  # keeps the day, clipped to month end
    return start


def in_window(date: dt.date, end: dt.date, window: Window | None) -> bool:
    if date > end:
        return False
    return window is None or date > window_start(end, window)


def in_base(p: Patient, end: dt.date) -> bool:
    return (
        p.birth_date <= end
        and p.registration_start <= end
        and (p.registration_end is None or p.registration_end > end)
        and (p.death_date is None or p.death_date > end)
    )


@dataclass
class _Subject:
    patient: Patient
    events: list[Row]
    medications: list[Row]
    end: dt.date
    catalogue: Catalogue
    codes: dict[str, frozenset[tuple[str, str]]]

    def rows(self, table: str, codelist: str) -> list[Row]:
        """Rows of the table with a code in the codelist, dated on or before E."""
        pairs = self.codes[codelist]
        source = self.events if table == "events" else self.medications
        return [r for r in source if r.date <= self.end and (r.system, r.code) in pairs]


def _compare(left: float, op: str, right: float) -> bool:
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "==":
        return left == right
    raise ValueError(f"unknown comparison {op!r}")


def codes_by_list(catalogue: Catalogue) -> dict[str, frozenset[tuple[str, str]]]:
    return {cl.id: cl.pairs() for cl in catalogue.codelists}


def holds(rule: Rule, s: _Subject) -> bool:  # noqa: C901 (one case per rule kind: the oracle reads as the spec)
    end = s.end
    match rule:
        case All():
            return all(holds(child, s) for child in rule.of)
        case Any_():
            return any(holds(child, s) for child in rule.of)
        case Not():
            return not holds(rule.rule, s)
        case Age():
            age = age_on(s.patient.birth_date, end)
            return (rule.min is None or age >= rule.min) and (rule.max is None or age <= rule.max)
        case SexIs():
            return s.patient.sex in rule.values
        case RegisteredFor():
            return bool(s.patient.registration_start <= end - relativedelta(months=rule.months))
        case HasCode():
            return any(
                in_window(r.date, end, rule.window) for r in s.rows(rule.table, rule.codelist)
            )
        case OnRegister():
            register = s.rows("events", rule.codelist)
            if not register:
                return False
            latest = max(r.date for r in register)
            if rule.resolved is None:
                return True
            return not any(r.date >= latest for r in s.rows("events", rule.resolved))
        case LatestValue():
            valued = [
                r
                for r in s.rows("events", rule.codelist)
                if r.value is not None and in_window(r.date, end, rule.window)
            ]
            if not valued:
                return False
            latest = max(r.date for r in valued)
            value = min(r.value for r in valued if r.date == latest and r.value is not None)
            return _compare(value, rule.op, rule.value)
        case LatestCode():
            family = [
                r for r in s.rows("events", rule.family) if in_window(r.date, end, rule.window)
            ]
            if not family:
                return False
            latest = max(r.date for r in family)
            target = s.codes[rule.codelist]
            return any((r.system, r.code) in target for r in family if r.date == latest)
        case FirstCode():
            rows = s.rows("events", rule.codelist)
            if not rows:
                return False
            return in_window(min(r.date for r in rows), end, rule.window)
        case Score():
            total = 0
            for term in rule.terms:
                if holds(term.rule, s):
                    total += term.weight
            return _compare(total, rule.op, rule.value)
    raise TypeError(f"unknown rule node {type(rule).__name__}")


def _indicators(catalogue: Catalogue, ids: Sequence[str] | None) -> list[Indicator]:
    if ids is None:
        return list(catalogue.indicators)
    wanted = set(ids)
    return [i for i in catalogue.indicators if i.id in wanted]


def age_band(catalogue: Catalogue, age: int) -> str:
    for band in catalogue.age_bands:
        if age >= band.min and (band.max is None or age <= band.max):
            return band.label
    raise ValueError(f"no age band for age {age}")


def classify(indicator: Indicator, s: _Subject) -> tuple[bool, bool, bool]:
    """(in denominator, in numerator, excluded) for one base-population patient."""
    if not holds(indicator.population, s):
        return False, False, False
    achieved = holds(indicator.numerator, s)
    # Achievers first: an exclusion never removes a patient who meets the target.
    excluded = not achieved and indicator.exclusions is not None and holds(indicator.exclusions, s)
    return not excluded, achieved, excluded


def evaluate(
    practice: Practice,
    catalogue: Catalogue,
    period_end: dt.date,
    indicators: Sequence[str] | None = None,
) -> list[RawCell]:
    """Counts per stratum (``Catalogue.strata_for``), patient by patient."""
    chosen = _indicators(catalogue, indicators)
    codes = codes_by_list(catalogue)
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for patient in practice.patients:
        if not in_base(patient, period_end):
            continue
        s = _Subject(
            patient,
            practice.events.get(patient.patient_id, []),
            practice.medications.get(patient.patient_id, []),
            period_end,
            catalogue,
            codes,
        )
        band = age_band(catalogue, age_on(patient.birth_date, period_end))
        for ind in chosen:
            den, num, exc = classify(ind, s)
            for stratum in catalogue.strata_for(ind):
                if _in_stratum(stratum, band, patient.sex):
                    acc = counts[(ind.id, *stratum)]
                    acc[0] += den
                    acc[1] += num
                    acc[2] += exc
    return [
        RawCell(ind.id, band, sex, *counts.get((ind.id, band, sex), (0, 0, 0)))
        for ind in chosen
        for band, sex in catalogue.strata_for(ind)
    ]


def _in_stratum(stratum: tuple[str, str], band: str, sex: str) -> bool:
    want_band, want_sex = stratum
    return want_band in ("all", band) and want_sex in ("all", sex)


def worklist(
    practice: Practice, catalogue: Catalogue, indicator_id: str, period_end: dt.date
) -> list[tuple[int, str | None]]:
    """Denominator but not numerator, by patient_id (the oracle for ``worklist_patients``)."""
    ind = catalogue.indicator(indicator_id)
    codes = codes_by_list(catalogue)
    out = []
    for patient in sorted(practice.patients, key=lambda p: p.patient_id):
        if not in_base(patient, period_end):
            continue
        s = _Subject(
            patient,
            practice.events.get(patient.patient_id, []),
            practice.medications.get(patient.patient_id, []),
            period_end,
            catalogue,
            codes,
        )
        den, num, _ = classify(ind, s)
        if den and not num:
            out.append((patient.patient_id, patient.local_ref))
    return out
