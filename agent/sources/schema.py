"""The canonical practice data model: the only shape the agent's engine reads.

Three tables (every source, SQLite / DuckDB / PostgreSQL / CSV / FHIR / OMOP, is mapped onto
them; see docs/data-model.md):

* ``patients``: one row per patient. ``patient_id`` is a pseudonymous integer key;
  ``local_ref`` is the practice's own reference for the patient (shown only in local worklists,
  never sent); ``sex`` is F, M or U (unknown / indeterminate); a registration end or death date
  is the first day the patient is no longer registered.
* ``events``: coded clinical events: date, code system, code, optional numeric value and unit.
* ``medications``: medication issues: date, code system, code.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Double,
    Index,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

patients = Table(
    "patients",
    metadata,
    Column("patient_id", BigInteger, primary_key=True, autoincrement=False),
    Column("local_ref", String(64), nullable=True),
    Column("birth_date", Date, nullable=False),
    Column("sex", String(1), nullable=False),
    Column("registration_start", Date, nullable=False),
    Column("registration_end", Date, nullable=True),
    Column("death_date", Date, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("patient_id", BigInteger, nullable=False),
    Column("date", Date, nullable=False),
    Column("system", String(16), nullable=False),
    Column("code", String(32), nullable=False),
    Column("value", Double, nullable=True),
    Column("unit", String(16), nullable=True),
)

medications = Table(
    "medications",
    metadata,
    Column("patient_id", BigInteger, nullable=False),
    Column("date", Date, nullable=False),
    Column("system", String(16), nullable=False),
    Column("code", String(32), nullable=False),
)

Index("ix_events_code", events.c.code, events.c.patient_id, events.c.date)
Index("ix_medications_code", medications.c.code, medications.c.patient_id, medications.c.date)

SEXES = ("F", "M", "U")
TABLES = {"patients": patients, "events": events, "medications": medications}
