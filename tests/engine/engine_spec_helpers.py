"""Builders for engine spec tests: tiny inline practices and catalogues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from agent.engine.reference import Patient, Practice, Row
from agent.sources import store
from protocol.catalogue import (
    AgeBand,
    Catalogue,
    Codelist,
    DisclosurePolicy,
    Indicator,
    Rule,
)
from protocol.disclosure import RawCell
from tests.catalogue_helpers import make_codelist

E = dt.date(2024, 3, 31)
D = dt.date

BANDS = (
    AgeBand(label="0-17", min=0, max=17),
    AgeBand(label="18-64", min=18, max=64),
    AgeBand(label="65+", min=65),
)


def codelist(cl_id: str, *codes: str, system: str = "snomedct") -> Codelist:
    return make_codelist(cl_id, [(system, c) for c in codes])


def indicator(
    population: Rule,
    numerator: Rule,
    exclusions: Rule | None = None,
    *,
    ind_id: str = "TT",
    strata: tuple[str, ...] = ("age_band", "sex"),
) -> Indicator:
    return Indicator(
        id=ind_id,
        version=1,
        title=f"indicator {ind_id}",
        rationale="spec test",
        population=population,
        numerator=numerator,
        exclusions=exclusions,
        strata=strata,
    )


def catalogue(
    *indicators: Indicator,
    codelists: Sequence[Codelist] = (),
    bands: tuple[AgeBand, ...] = BANDS,
) -> Catalogue:
    return Catalogue(
        id="spec",
        version=1,
        title="spec tests",
        age_bands=bands,
        disclosure=DisclosurePolicy(name="spec"),
        codelists=tuple(codelists),
        indicators=indicators,
    )


def patient(
    pid: int,
    born: dt.date = D(1970, 6, 15),
    sex: str = "F",
    start: dt.date = D(2000, 1, 1),
    end: dt.date | None = None,
    died: dt.date | None = None,
    ref: str | None = None,
) -> Patient:
    return Patient(pid, born, sex, start, end, died, ref if ref is not None else f"ref{pid}")


def ev(pid: int, date: dt.date, code: str, value: float | None = None, system: str = "snomedct"):
    return (pid, Row(date, system, code, value))


def med(pid: int, date: dt.date, code: str, system: str = "dmd"):
    return (pid, Row(date, system, code))


def practice(patients, events=(), medications=()) -> Practice:
    return Practice.build(patients, events, medications)


def total(cells: Sequence[RawCell], ind_id: str = "TT") -> tuple[int, int, int]:
    return cell(cells, "all", "all", ind_id)


def cell(cells: Sequence[RawCell], band: str, sex: str, ind_id: str = "TT") -> tuple[int, int, int]:
    (found,) = [c for c in cells if (c.indicator, c.age_band, c.sex) == (ind_id, band, sex)]
    return found.denominator, found.numerator, found.exclusions


def load(engine: sa.Engine, practice: Practice) -> None:
    store.create_tables(engine)
    with engine.begin() as conn:
        store.bulk_insert(
            conn,
            "patients",
            [
                (
                    p.patient_id,
                    p.local_ref,
                    p.birth_date,
                    p.sex,
                    p.registration_start,
                    p.registration_end,
                    p.death_date,
                )
                for p in practice.patients
            ],
        )
        store.bulk_insert(
            conn,
            "events",
            [
                (pid, r.date, r.system, r.code, r.value, None)
                for pid, rows in practice.events.items()
                for r in rows
            ],
        )
        store.bulk_insert(
            conn,
            "medications",
            [
                (pid, r.date, r.system, r.code)
                for pid, rows in practice.medications.items()
                for r in rows
            ],
        )
