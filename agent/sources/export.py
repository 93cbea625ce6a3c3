"""Write a canonical practice store out as a CSV extract, a FHIR R4 bulk export (ndjson) or an
OMOP CDM 5.4 database: the inverse of the readers, used by the round-trip tests, the load
benchmark and the demo. Synthetic practices only: these are test tools, not an export path
(nothing here is ever sent anywhere).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from agent.sources.schema import events, medications, patients

from .common import SYSTEM_URIS
from .fhir import REGISTRATION_EXTENSION
from .omop import FEMALE, MALE, VOCABULARIES

SYSTOLIC = {("snomedct", "271649006"), ("snomedct", "72313002"), ("loinc", "8480-6")}
DIASTOLIC = {
    ("snomedct", "271650006"),
    ("snomedct", "1091811000000102"),
    ("snomedct", "163031004"),
    ("loinc", "8462-4"),
}
EHR = 32817  # OMOP type concept "EHR"


def _rows(engine: Engine, select: sa.Select[Any]) -> Iterator[sa.Row[Any]]:
    with engine.connect() as conn:
        yield from conn.execution_options(yield_per=10_000).execute(select)


def _fmt(date: dt.date | None, date_format: str) -> str:
    if date is None:
        return ""
    return date.isoformat() if date_format == "iso" else date.strftime("%d/%m/%Y")


# --- CSV --------------------------------------------------------------------------------------


def export_csv(
    engine: Engine, directory: Path, *, date_format: str = "iso", sex_style: str = "letter"
) -> None:
    """``patients.csv``, ``events.csv``, ``medications.csv`` in ``directory``. ``sex_style``:
    ``letter`` (F/M/U), ``word`` (Female/Male/Unknown) or ``nhs`` (2/1/9)."""
    directory.mkdir(parents=True, exist_ok=True)
    sexes = {
        "letter": {"F": "F", "M": "M", "U": "U"},
        "word": {"F": "Female", "M": "Male", "U": "Unknown"},
        "nhs": {"F": "2", "M": "1", "U": "9"},
    }[sex_style]
    with (directory / "patients.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["patient_id", "local_ref", "birth_date", "sex", "registration_start",
             "registration_end", "death_date"]
        )  # fmt: skip
        for r in _rows(engine, sa.select(patients).order_by(patients.c.patient_id)):
            w.writerow(
                [r.patient_id, r.local_ref or "", _fmt(r.birth_date, date_format), sexes[r.sex],
                 _fmt(r.registration_start, date_format), _fmt(r.registration_end, date_format),
                 _fmt(r.death_date, date_format)]
            )  # fmt: skip
    with (directory / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "date", "system", "code", "value", "unit"])
        for r in _rows(engine, sa.select(events)):
            value = "" if r.value is None else repr(float(r.value))
            w.writerow(
                [r.patient_id, _fmt(r.date, date_format), r.system, r.code, value, r.unit or ""]
            )
    with (directory / "medications.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "date", "system", "code"])
        for r in _rows(engine, sa.select(medications)):
            w.writerow([r.patient_id, _fmt(r.date, date_format), r.system, r.code])


# --- FHIR ndjson ------------------------------------------------------------------------------


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEM_URIS[system], "code": code}]}


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
        q["system"] = "http://unitsofmeasure.org"
        q["code"] = unit
    return q


def export_fhir(engine: Engine, directory: Path) -> dict[str, int]:
    """A bulk-export folder (one ndjson file per resource type). Events with a value become
    Observations (systolic and diastolic pairs on one date become a blood-pressure panel with
    components), CVX codes Immunizations, the rest Conditions; medications become
    MedicationRequests. Returns the number of resources of each type written."""
    directory.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    files: dict[str, Any] = {}

    def write(resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        if rtype not in files:
            files[rtype] = (directory / f"{rtype}.000.ndjson").open("w")
        n = counts.get(rtype, 0) + 1
        counts[rtype] = n
        resource["id"] = f"{rtype[:3].lower()}-{n}"
        files[rtype].write(json.dumps(resource, separators=(",", ":")) + "\n")

    try:
        for r in _rows(engine, sa.select(patients).order_by(patients.c.patient_id)):
            period: dict[str, str] = {"start": r.registration_start.isoformat()}
            if r.registration_end is not None:
                period["end"] = (r.registration_end - dt.timedelta(days=1)).isoformat()
            res: dict[str, Any] = {
                "resourceType": "Patient",
                "gender": {"F": "female", "M": "male", "U": "unknown"}[r.sex],
                "birthDate": r.birth_date.isoformat(),
                "extension": [
                    {
                        "url": REGISTRATION_EXTENSION,
                        "extension": [{"url": "registrationPeriod", "valuePeriod": period}],
                    }
                ],
            }
            if r.death_date is not None:
                res["deceasedDateTime"] = r.death_date.isoformat()
            write(res)
            # Patient ids: "pat-<n>" in patient order; remember the map for references.
        ids = {
            r.patient_id: f"Patient/pat-{i}"
            for i, r in enumerate(
                _rows(engine, sa.select(patients.c.patient_id).order_by(patients.c.patient_id)),
                start=1,
            )
        }
        ordered = sa.select(events).order_by(events.c.patient_id, events.c.date)
        for (pid, date), group in groupby(
            _rows(engine, ordered), key=lambda r: (r.patient_id, r.date)
        ):
            rows = list(group)
            subject = {"reference": ids[pid]}
            when = date.isoformat()
            sys_rows = [r for r in rows if (r.system, r.code) in SYSTOLIC and r.value is not None]
            dia_rows = [r for r in rows if (r.system, r.code) in DIASTOLIC and r.value is not None]
            paired = list(zip(sys_rows, dia_rows, strict=False))
            used = {id(r) for pair in paired for r in pair}
            for s, d in paired:
                write(
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": _coding("loinc", "85354-9"),
                        "subject": subject,
                        "effectiveDateTime": when,
                        "component": [
                            {"code": _coding(s.system, s.code), "valueQuantity": _quantity(s.value, s.unit)},
                            {"code": _coding(d.system, d.code), "valueQuantity": _quantity(d.value, d.unit)},
                        ],
                    }
                )  # fmt: skip
            for r in rows:
                if id(r) in used:
                    continue
                if r.value is not None:
                    write(
                        {
                            "resourceType": "Observation",
                            "status": "final",
                            "code": _coding(r.system, r.code),
                            "subject": subject,
                            "effectiveDateTime": when,
                            "valueQuantity": _quantity(r.value, r.unit),
                        }
                    )
                elif r.system == "cvx":
                    write(
                        {
                            "resourceType": "Immunization",
                            "status": "completed",
                            "vaccineCode": _coding(r.system, r.code),
                            "patient": subject,
                            "occurrenceDateTime": when,
                        }
                    )
                else:
                    write(
                        {
                            "resourceType": "Condition",
                            "code": _coding(r.system, r.code),
                            "subject": subject,
                            "onsetDateTime": when,
                        }
                    )
        for r in _rows(engine, sa.select(medications)):
            write(
                {
                    "resourceType": "MedicationRequest",
                    "status": "completed",
                    "intent": "order",
                    "medicationCodeableConcept": _coding(r.system, r.code),
                    "subject": {"reference": ids[r.patient_id]},
                    "authoredOn": r.date.isoformat(),
                }
            )
    finally:
        for fh in files.values():
            fh.close()
    return counts


# --- OMOP CDM 5.4 -----------------------------------------------------------------------------


def omop_metadata(schema: str | None = None) -> sa.MetaData:
    """The CDM 5.4 tables the reader uses (their required columns and the ones it reads)."""
    md = sa.MetaData(schema=schema)
    C, Int, B, D, S = sa.Column, sa.Integer, sa.BigInteger, sa.Date, sa.String
    sa.Table(
        "person", md, C("person_id", B, primary_key=True, autoincrement=False),
        C("gender_concept_id", Int, nullable=False), C("year_of_birth", Int, nullable=False),
        C("month_of_birth", Int), C("day_of_birth", Int), C("birth_datetime", sa.DateTime),
        C("race_concept_id", Int, nullable=False), C("ethnicity_concept_id", Int, nullable=False),
        C("person_source_value", S(50)),
    )  # fmt: skip
    sa.Table(
        "observation_period", md,
        C("observation_period_id", B, primary_key=True, autoincrement=False),
        C("person_id", B, nullable=False), C("observation_period_start_date", D, nullable=False),
        C("observation_period_end_date", D, nullable=False),
        C("period_type_concept_id", Int, nullable=False),
    )  # fmt: skip
    sa.Table(
        "death", md, C("person_id", B, nullable=False), C("death_date", D, nullable=False),
        C("death_type_concept_id", Int),
    )  # fmt: skip
    for table, (concept, source_concept, source_value, date) in {
        "condition_occurrence": ("condition_concept_id", "condition_source_concept_id",
                                 "condition_source_value", "condition_start_date"),
        "measurement": ("measurement_concept_id", "measurement_source_concept_id",
                        "measurement_source_value", "measurement_date"),
        "observation": ("observation_concept_id", "observation_source_concept_id",
                        "observation_source_value", "observation_date"),
        "drug_exposure": ("drug_concept_id", "drug_source_concept_id", "drug_source_value",
                          "drug_exposure_start_date"),
    }.items():  # fmt: skip
        type_col = {"condition_occurrence": "condition_type_concept_id",
                    "drug_exposure": "drug_type_concept_id"}.get(
            table, f"{table}_type_concept_id")  # fmt: skip
        cols: list[sa.Column[Any]] = [
            C(f"{table}_id", B, primary_key=True, autoincrement=False),
            C("person_id", B, nullable=False),
            C(concept, Int, nullable=False),
            C(date, D, nullable=False),
            C(type_col, Int, nullable=False),
            C(source_value, S(50)),
            C(source_concept, Int),
        ]
        if table in ("measurement", "observation"):
            cols += [
                C("value_as_number", sa.Numeric(asdecimal=False)),
                C("unit_source_value", S(50)),
            ]
        if table == "drug_exposure":
            cols.append(C("drug_exposure_end_date", D, nullable=False))
        sa.Table(table, md, *cols)
    sa.Table(
        "concept", md, C("concept_id", Int, primary_key=True, autoincrement=False),
        C("concept_name", S(255), nullable=False), C("domain_id", S(20), nullable=False),
        C("vocabulary_id", S(20), nullable=False), C("concept_class_id", S(20), nullable=False),
        C("standard_concept", S(1)), C("concept_code", S(50), nullable=False),
        C("valid_start_date", D, nullable=False), C("valid_end_date", D, nullable=False),
        C("invalid_reason", S(1)),
    )  # fmt: skip
    return md


def export_omop(
    engine: Engine,
    target: Engine,
    *,
    schema: str | None = None,
    extract_date: dt.date = dt.date(2099, 12, 31),
) -> dict[tuple[str, str], int]:
    """Create the CDM tables in ``target`` and fill them from the canonical store. Each
    (system, code) becomes a concept (ids from 2,000,000,000 up, outside Athena's range).
    Events with a value go to ``measurement``, CVX codes to ``observation``, the rest to
    ``condition_occurrence``; medications to ``drug_exposure``. An open registration's
    observation period ends on ``extract_date``. Returns the concept ids given."""
    md = omop_metadata(schema)
    t = md.tables
    key = (lambda n: f"{schema}.{n}") if schema else (lambda n: n)
    vocab = {s: v for v, s in VOCABULARIES.items()}
    concepts: dict[tuple[str, str], int] = {}

    def concept_of(system: str, code: str) -> int:
        if system == "omop":
            return int(code)  # already a concept id
        if (system, code) not in concepts:
            concepts[(system, code)] = 2_000_000_000 + len(concepts)
        return concepts[(system, code)]

    with target.begin() as out:
        md.create_all(out)
        batch: dict[str, list[dict[str, Any]]] = {}

        def add(table: str, row: dict[str, Any]) -> None:
            rows = batch.setdefault(table, [])
            rows.append(row)
            if len(rows) >= 5000:
                out.execute(t[key(table)].insert(), rows)
                rows.clear()

        gender = {"M": MALE, "F": FEMALE, "U": 0}
        for r in _rows(engine, sa.select(patients)):
            add("person", {
                "person_id": r.patient_id, "gender_concept_id": gender[r.sex],
                "year_of_birth": r.birth_date.year, "month_of_birth": r.birth_date.month,
                "day_of_birth": r.birth_date.day, "race_concept_id": 0,
                "ethnicity_concept_id": 0, "person_source_value": r.local_ref,
            })  # fmt: skip
            end = (
                r.registration_end - dt.timedelta(days=1)
                if r.registration_end is not None
                else extract_date
            )
            add("observation_period", {
                "observation_period_id": r.patient_id, "person_id": r.patient_id,
                "observation_period_start_date": r.registration_start,
                "observation_period_end_date": end, "period_type_concept_id": EHR,
            })  # fmt: skip
            if r.death_date is not None:
                add("death", {"person_id": r.patient_id, "death_date": r.death_date,
                              "death_type_concept_id": EHR})  # fmt: skip
        for n, r in enumerate(_rows(engine, sa.select(events)), start=1):
            cid = concept_of(r.system, r.code)
            if r.value is not None:
                add("measurement", {
                    "measurement_id": n, "person_id": r.patient_id, "measurement_concept_id": cid,
                    "measurement_date": r.date, "measurement_type_concept_id": EHR,
                    "value_as_number": r.value, "unit_source_value": r.unit,
                    "measurement_source_value": r.code, "measurement_source_concept_id": cid,
                })  # fmt: skip
            elif r.system == "cvx":
                add("observation", {
                    "observation_id": n, "person_id": r.patient_id, "observation_concept_id": cid,
                    "observation_date": r.date, "observation_type_concept_id": EHR,
                    "observation_source_value": r.code, "observation_source_concept_id": cid,
                })  # fmt: skip
            else:
                add("condition_occurrence", {
                    "condition_occurrence_id": n, "person_id": r.patient_id,
                    "condition_concept_id": cid, "condition_start_date": r.date,
                    "condition_type_concept_id": EHR, "condition_source_value": r.code,
                    "condition_source_concept_id": cid,
                })  # fmt: skip
        for n, r in enumerate(_rows(engine, sa.select(medications)), start=1):
            cid = concept_of(r.system, r.code)
            add("drug_exposure", {
                "drug_exposure_id": n, "person_id": r.patient_id, "drug_concept_id": cid,
                "drug_exposure_start_date": r.date, "drug_exposure_end_date": r.date,
                "drug_type_concept_id": EHR, "drug_source_value": r.code,
                "drug_source_concept_id": cid,
            })  # fmt: skip
        for (system, code), cid in concepts.items():
            add("concept", {
                "concept_id": cid, "concept_name": f"{system} {code}", "domain_id": "Observation",
                "vocabulary_id": vocab.get(system, system), "concept_class_id": "Clinical Finding",
                "standard_concept": "S", "concept_code": code,
                "valid_start_date": dt.date(1970, 1, 1), "valid_end_date": dt.date(2099, 12, 31),
            })  # fmt: skip
        for table, rows in batch.items():
            if rows:
                out.execute(t[key(table)].insert(), rows)
    return concepts
