"""agent.sources.store: opening practice databases by path or URL, creating tables, bulk loading."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from agent.errors import SourceError
from agent.sources import schema
from agent.sources.store import bulk_insert, create_tables, open_practice, practice_url

PATIENTS = [
    (1, 'ref, with "quotes"', dt.date(1950, 2, 28), "F", dt.date(2000, 1, 1), None, None),
    (2, None, dt.date(2004, 2, 29), "U", dt.date(2010, 5, 6), dt.date(2024, 1, 1), None),
    (3, "", dt.date(1930, 12, 31), "M", dt.date(1990, 1, 1), None, dt.date(2023, 7, 9)),
    # Text a staged CSV file could read as NULL, or as more than one row (DuckDB's fast path).
    (4, "\\N", dt.date(1960, 1, 1), "F", dt.date(1990, 1, 1), None, None),
    (5, "NULL", dt.date(1960, 1, 1), "F", dt.date(1990, 1, 1), None, None),
    (6, 'two\nlines,\r\n"x"', dt.date(1960, 1, 1), "F", dt.date(1990, 1, 1), None, None),
]
EVENTS = [
    (1, dt.date(2024, 1, 1), "snomedct", "72313002", 138.25, "mm[Hg]"),
    (1, dt.date(2024, 1, 2), "snomedct", "38341003", None, None),
    (2, dt.date(2023, 3, 31), "loinc", "4548-4", -0.5, "%"),
    # not exact in a 4-byte float: values must be stored as doubles on every engine
    (3, dt.date(2023, 4, 1), "snomedct", "1022191000000100", 4.6, "mmol/L"),
    (4, dt.date(2023, 4, 2), "snomedct", "1022191000000100", 5.0, "\\N"),
    (5, dt.date(2023, 4, 3), "snomedct", "1022191000000100", 5.0, ""),
]
MEDS = [(3, dt.date(2022, 2, 2), "dmd", "42382111000001102")]


def roundtrip(engine: sa.Engine) -> None:
    create_tables(engine)
    with engine.begin() as conn:
        assert bulk_insert(conn, "patients", PATIENTS) == len(PATIENTS)
        assert bulk_insert(conn, schema.events, iter(EVENTS)) == len(EVENTS)
        assert bulk_insert(conn, "medications", MEDS) == 1
        assert bulk_insert(conn, "events", []) == 0
    with engine.connect() as conn:
        got = [tuple(r) for r in conn.execute(sa.select(schema.patients).order_by("patient_id"))]
        assert got == PATIENTS
        got = [tuple(r) for r in conn.execute(sa.select(schema.events).order_by("date"))]
        assert got == sorted(EVENTS, key=lambda r: r[1])
        assert [tuple(r) for r in conn.execute(sa.select(schema.medications))] == MEDS


@pytest.mark.parametrize("suffix", [".sqlite", ".duckdb"])
def test_bulk_insert_roundtrips_embedded(tmp_path, suffix):
    engine = open_practice(tmp_path / f"p{suffix}")
    roundtrip(engine)
    engine.dispose()
    # Reopened read-only by its header, whatever its name.
    renamed = tmp_path / "practice.data"
    (tmp_path / f"p{suffix}").rename(renamed)
    engine = open_practice(renamed, read_only=True)
    assert engine.dialect.name == suffix[1:]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar() == len(
            EVENTS
        )
    engine.dispose()


@pytest.mark.postgres
def test_bulk_insert_roundtrips_postgresql(pg_database_factory):
    url = pg_database_factory()
    engine = open_practice(url.replace("postgresql+psycopg://", "postgresql://"))
    assert engine.dialect.driver == "psycopg"
    roundtrip(engine)
    engine.dispose()


def test_bulk_insert_is_all_or_nothing(tmp_path):
    engine = open_practice(tmp_path / "p.sqlite")
    create_tables(engine)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        bulk_insert(conn, "patients", PATIENTS[:1])
        bulk_insert(conn, "patients", PATIENTS[:1])  # duplicate key
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.patients)).scalar() == 0


def test_unknown_targets_are_named(tmp_path):
    with pytest.raises(SourceError, match="unknown kind"):
        practice_url(tmp_path / "practice.xyz")
    other = tmp_path / "notes.db.txt"
    other.write_text("hello")
    with pytest.raises(SourceError, match="neither a SQLite nor a DuckDB file"):
        practice_url(other)
    with pytest.raises(SourceError, match="unsupported backend"):
        practice_url("mysql://user@host/db")
    with pytest.raises(SourceError, match="no such file"):
        open_practice(tmp_path / "absent.duckdb", read_only=True)


def test_urls_and_suffixes():
    assert practice_url("x.duckdb").drivername == "duckdb"
    assert practice_url("x.sqlite3").drivername == "sqlite"
    assert practice_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert practice_url("sqlite:///x.db").database == "x.db"
