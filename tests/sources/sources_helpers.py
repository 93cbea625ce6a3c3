"""Helpers for the source tests: a small synthetic practice that exercises every codelist of
the default catalogue, a store dump for "the store is unchanged" checks, and file writers."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent.sources import schema
from agent.sources.common import open_store
from protocol.catalogue import Catalogue, HasCode, LatestValue, iter_rules

PERIOD_END = dt.date(2025, 3, 31)

VALUE_RANGES = {"sbp": (105, 175), "dbp": (60, 100), "hba1c": (38, 95), "cha2ds2vasc": (0, 6)}


def _codelist_roles(catalogue: Catalogue) -> tuple[set[str], set[str]]:
    valued: set[str] = set()
    meds: set[str] = set()
    for ind in catalogue.indicators:
        for rule in (ind.population, ind.numerator, ind.exclusions):
            if rule is None:
                continue
            for node in iter_rules(rule):
                if isinstance(node, LatestValue):
                    valued.add(node.codelist)
                if isinstance(node, HasCode) and node.table == "medications":
                    meds.add(node.codelist)
    return valued, meds


def boundary_dates(catalogue: Catalogue) -> list[dt.date]:
    """Dates where an off-by-one day would change a count: the period end, the day after, and
    both sides of every window's start."""
    from agent.engine.dates import months_before

    months = {0}  # 0: the period end itself
    for ind in catalogue.indicators:
        for rule in (ind.population, ind.numerator, ind.exclusions):
            for node in iter_rules(rule) if rule is not None else ():
                window = getattr(node, "window", None)
                if window is not None:
                    months.add(window.months)
                if hasattr(node, "months") and not hasattr(node, "codelist"):
                    months.add(node.months)  # RegisteredFor
    one = dt.timedelta(days=1)
    out = []
    for m in sorted(months):
        start = months_before(PERIOD_END, m) if m else PERIOD_END
        out += [start - one, start, start + one]
    return out


def _day(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange(max(1, (end - start).days)))


def synthetic_rows(
    catalogue: Catalogue, n_patients: int, seed: int = 7
) -> dict[str, list[dict[str, Any]]]:
    """A practice of ``n_patients`` with codes from every codelist (and some no codelist
    uses), dated mostly within the three years before PERIOD_END, never before birth."""
    rng = random.Random(seed)
    edges = boundary_dates(catalogue)
    valued, meds = _codelist_roles(catalogue)
    lists = {cl.id: [(c.system, c.code) for c in cl.codes] for cl in catalogue.codelists}
    event_lists = [k for k in lists if k not in meds]
    noise_events = [("snomedct", "160903007"), ("loinc", "29463-7"), ("cvx", "08")]
    noise_meds = [("rxnorm", "205923"), ("dmd", "39720311000001101")]
    patients: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    medications: list[dict[str, Any]] = []
    for i in range(n_patients):
        pid = 1000 + 3 * i  # not 1..n, so readers that renumber are exercised
        birth = _day(rng, dt.date(1925, 1, 1), dt.date(2020, 12, 31))
        if rng.random() < 0.1:  # a birthday on the period end's side of an age bound
            birth = PERIOD_END.replace(year=rng.randint(1930, 2005)) + rng.choice(
                [-dt.timedelta(days=1), dt.timedelta(0), dt.timedelta(days=1)]
            )
        start = _day(rng, birth, dt.date(2025, 1, 1))
        if rng.random() < 0.1:
            start = max(birth, rng.choice(edges))
        end = None
        if rng.random() < 0.08:
            end = _day(rng, start + dt.timedelta(days=1), dt.date(2026, 1, 1))
        elif rng.random() < 0.05:
            end = max(start + dt.timedelta(days=1), rng.choice(edges[:3]))
        death = _day(rng, start, dt.date(2026, 1, 1)) if rng.random() < 0.03 else None
        if death is None and rng.random() < 0.03:
            death = max(start, rng.choice(edges[:3]))
        sex = rng.choices(["F", "M", "U"], weights=[49, 49, 2])[0]
        patients.append(
            {
                "patient_id": pid,
                "local_ref": f"P{pid}",
                "birth_date": birth,
                "sex": sex,
                "registration_start": start,
                "registration_end": end,
                "death_date": death,
            }
        )
        for _ in range(rng.randrange(0, 14)):
            cl = rng.choice(event_lists)
            system, code = rng.choice(lists[cl])
            date = _day(rng, dt.date(2020, 1, 1), dt.date(2025, 9, 30))
            if rng.random() < 0.2:
                date = rng.choice(edges)
            date = max(date, birth)  # nothing is recorded before birth (the FHIR load refuses it)
            value = unit = None
            if cl in valued:
                lo, hi = VALUE_RANGES.get(cl, (0, 100))
                value = float(rng.randint(lo, hi))
                unit = "mmol/mol" if cl == "hba1c" else "mm[Hg]" if cl in ("sbp", "dbp") else None
            events.append(
                {"patient_id": pid, "date": date, "system": system, "code": code,
                 "value": value, "unit": unit}
            )  # fmt: skip
            if cl == "sbp" and rng.random() < 0.8:  # usually with a diastolic the same day
                dsys, dcode = rng.choice(lists["dbp"])
                events.append(
                    {"patient_id": pid, "date": date, "system": dsys, "code": dcode,
                     "value": float(rng.randint(60, 100)), "unit": "mm[Hg]"}
                )  # fmt: skip
        if rng.random() < 0.3:
            system, code = rng.choice(noise_events)
            events.append(
                {"patient_id": pid, "date": _day(rng, birth, PERIOD_END), "system": system,
                 "code": code, "value": None, "unit": None}
            )  # fmt: skip
        for _ in range(rng.randrange(0, 5)):
            cl = rng.choice(sorted(meds))
            system, code = rng.choice(lists[cl])
            medications.append(
                {"patient_id": pid, "date": max(birth, rng.choice(
                    [_day(rng, dt.date(2023, 1, 1), dt.date(2025, 6, 30)), rng.choice(edges)])),
                 "system": system, "code": code}
            )  # fmt: skip
        if rng.random() < 0.2:
            system, code = rng.choice(noise_meds)
            medications.append(
                {"patient_id": pid, "date": _day(rng, start, PERIOD_END), "system": system,
                 "code": code}
            )  # fmt: skip
    return {"patients": patients, "events": events, "medications": medications}


def write_store(path: Path, rows: dict[str, list[dict[str, Any]]]) -> sa.Engine:
    engine = open_store(path)
    with engine.begin() as conn:
        schema.metadata.create_all(conn)
        for name in ("patients", "events", "medications"):
            if rows.get(name):
                conn.execute(schema.TABLES[name].insert(), rows[name])
    return engine


def dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the canonical tables (sorted), or {} if the store has no tables."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("patients"):
            return {}
        return {
            name: sorted(
                conn.execute(sa.select(table)).all(), key=lambda r: tuple(str(v) for v in r)
            )
            for name, table in schema.TABLES.items()
        }


def write_csv(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.csv").write_text(text)


def write_ndjson(directory: Path, name: str, resources: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path
