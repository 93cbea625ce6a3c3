"""What every source reader shares: code systems, code and date checks, unit conversion, the
store a load writes into, and the batched writer that keeps memory flat.

A load replaces the canonical tables' contents with the extract, in one transaction: on any
error the transaction rolls back and the store is left exactly as it was.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, delete, event

from agent.sources.schema import TABLES, events, medications, metadata, patients
from protocol.catalogue import CodeSystem

SYSTEMS: frozenset[str] = frozenset(get_args(CodeSystem))

# FHIR system URIs (and the names extracts commonly use) -> fedqi code systems.
SYSTEM_ALIASES: dict[str, str] = {
    "http://snomed.info/sct": "snomedct",
    "http://loinc.org": "loinc",
    "https://dmd.nhs.uk": "dmd",
    "http://dmd.nhs.uk": "dmd",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "rxnorm",
    "http://hl7.org/fhir/sid/cvx": "cvx",
    "http://hl7.org/fhir/sid/icd-10": "icd10",
    "http://hl7.org/fhir/sid/icd-10-uk": "icd10",
    "https://fhir-terminology.ohdsi.org": "omop",
    "snomed": "snomedct",
    "snomed ct": "snomedct",
    "sct": "snomedct",
    "dm+d": "dmd",
    "icd-10": "icd10",
}
# The reverse, for exporters: one URI per system.
SYSTEM_URIS: dict[str, str] = {
    "snomedct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "dmd": "https://dmd.nhs.uk",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "cvx": "http://hl7.org/fhir/sid/cvx",
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    # No FHIR-registered URI for OMOP concept ids: fedqi uses the OHDSI terminology server's.
    "omop": "https://fhir-terminology.ohdsi.org",
}

CODE_RE = re.compile(r"^[A-Za-z0-9.\-]{1,32}$")  # as protocol.catalogue.Code
MAX_UNIT = 16  # agent.sources.schema events.unit

# HbA1c codes whose values may arrive as NGSP/DCCT percentages. Values with unit "%" are
# converted to IFCC mmol/mol (what QOF thresholds use) with the NGSP master equation
# NGSP = 0.09148 * IFCC + 2.152 (ngsp.org/ifcc.asp).
HBA1C_CODES: frozenset[tuple[str, str]] = frozenset(
    {
        ("loinc", "4548-4"),  # Hemoglobin A1c/Hemoglobin.total in Blood
        ("loinc", "17856-6"),  # ... by HPLC
        ("loinc", "4549-2"),  # ... by Electrophoresis
        ("loinc", "59261-8"),  # ... by IFCC protocol
        ("snomedct", "999791000000106"),  # Haemoglobin A1c level - IFCC standardised
        ("snomedct", "1003671000000109"),  # Haemoglobin A1c level
        ("snomedct", "43396009"),  # Hemoglobin A1c measurement
    }
)


def system_of(name: str) -> str | None:
    """The fedqi code system a system name or URI stands for, or None if fedqi does not read it."""
    key = name.strip()
    if key in SYSTEMS:
        return key
    return SYSTEM_ALIASES.get(key.rstrip("/")) or SYSTEM_ALIASES.get(key.lower())


def ngsp_to_ifcc(percent: float) -> float:
    """HbA1c NGSP % -> IFCC mmol/mol, to one decimal place."""
    return round((percent - 2.152) / 0.09148, 1)


def normalise_value(
    system: str, code: str, value: float | None, unit: str | None
) -> tuple[float | None, str | None]:
    """Convert units the indicators need in one scale (HbA1c % -> mmol/mol)."""
    if (
        value is not None
        and unit is not None
        and unit.strip() == "%"
        and ((system, code) in HBA1C_CODES)
    ):
        return ngsp_to_ifcc(value), "mmol/mol"
    return value, unit


# --- dates ----------------------------------------------------------------------------------

# ASCII digits only ([0-9], not \d, which matches any script's digits: int() and date() read
# them, so an Arabic-Indic date would load as a Western one).
ISO_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
UK_DATE_RE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")
DATE_FORMATS = ("iso", "uk")


def parse_date(text: str, date_format: str) -> dt.date:
    """Parse an extract's date strictly; ValueError says which format was expected, or which
    part is impossible, never the text (a patient's date: the caller names the file, line and
    column)."""
    iso = date_format == "iso"
    m = (ISO_DATE_RE if iso else UK_DATE_RE).fullmatch(text)
    if m is None:
        form = "an ISO date (YYYY-MM-DD)" if iso else "a UK day-first date (DD/MM/YYYY)"
        raise ValueError(f"not {form}")
    first, month, last = (int(g) for g in m.groups())
    year, day = (first, last) if iso else (last, first)
    if not 1 <= month <= 12:
        raise ValueError("not a valid date (its month is not 1 to 12)")
    if year < 1:
        raise ValueError("not a valid date (its year is 0)")
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError("not a valid date (its day is not in its month)")
    return dt.date(year, month, day)


# --- what a load reports --------------------------------------------------------------------


class LoadReport(BaseModel):
    """What a load found. Counts only: no patient-level values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    patients: int
    events: int
    medications: int
    # e.g. {"Condition: entered-in-error": 2, "coding in an unread system": 14}
    skipped: dict[str, int] = {}
    # FHIR resource types fedqi does not read, and how many of each.
    unknown_resource_types: dict[str, int] = {}
    # Rows kept but changed on the way in (e.g. "HbA1c % converted to mmol/mol").
    converted: dict[str, int] = {}

    def lines(self) -> list[str]:
        out = [
            f"loaded from {self.source}: {self.patients} patients, {self.events} events, "
            f"{self.medications} medications"
        ]
        for title, counts in (
            ("converted", self.converted),
            ("skipped", self.skipped),
            ("resource types not read", self.unknown_resource_types),
        ):
            for key, n in sorted(counts.items()):
                out.append(f"  {title}: {key}: {n}")
        return out


# --- the store ------------------------------------------------------------------------------


def open_store(target: str | Path) -> Engine:
    """An engine on the practice store a load writes into (a path or URL, as
    :func:`agent.sources.store.open_practice` reads it), with transactional DDL on SQLite."""
    from agent.sources.store import open_practice

    engine = open_practice(target)
    if engine.dialect.name == "sqlite":
        _sqlite_transactional_ddl(engine)
    elif engine.dialect.name == "duckdb":
        _duckdb_bounded_memory(engine)
    return engine


DUCKDB_LOAD_MEMORY = "512MB"


def _duckdb_bounded_memory(engine: Engine) -> None:
    # DuckDB keeps a transaction's rows in memory up to its limit (80% of RAM by default)
    # before spilling: cap it so a large load spills to disk instead of taking the machine;
    # insertion order does not matter to the engine, and keeping it costs memory.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"SET memory_limit = '{DUCKDB_LOAD_MEMORY}'")
        dbapi_connection.execute("SET preserve_insertion_order = false")


def _sqlite_transactional_ddl(engine: Engine) -> None:
    # pysqlite's legacy transaction handling runs DDL outside a transaction; begin explicitly
    # so creating the tables rolls back with a failed load (SQLAlchemy's documented recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # A load writes once and reads little: a bounded page cache, no memory map, and
        # index sorts spilled to temporary files keep its memory flat whatever the extract
        # (agent.sources.store tunes SQLite for the engine's repeated reads instead).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA mmap_size = 0")
        cursor.execute("PRAGMA temp_store = FILE")
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


@contextmanager
def replacing(engine: Engine) -> Iterator[Connection]:
    """One transaction that creates the canonical tables if absent and empties them; commits
    only if the body finishes, so a failed load leaves the store as it was."""
    duckdb = engine.dialect.name == "duckdb"
    with engine.begin() as conn:
        metadata.create_all(conn, checkfirst=True)
        # Rebuilding an index once is far cheaper than keeping it up to date row by row.
        indexes = [ix for t in (events, medications) for ix in t.indexes]
        for ix in indexes:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {ix.name}")
        for table in (medications, events, patients):
            conn.execute(delete(table))
        yield conn
        # The engine's query on DuckDB is hash joins over column scans, which these indexes do
        # not serve, and building DuckDB's ART indexes holds every key in memory: a DuckDB
        # store is left without them.
        if not duckdb:
            for ix in indexes:
                ix.create(conn)


class BatchWriter:
    """Inserts rows in batches (by the store's fastest path, :func:`agent.sources.store.bulk_insert`)
    so memory stays flat however big the extract."""

    def __init__(
        self, conn: Connection, batch_size: int | None = None, *, iso_dates: bool = False
    ) -> None:
        """``iso_dates``: the rows carry dates as ISO text already (the CSV reader's)."""
        self.conn = conn
        self.iso_dates = iso_dates
        # DuckDB loads through a staged file: fewer, larger batches.
        self.batch_size = batch_size or (100_000 if conn.dialect.name == "duckdb" else 10_000)
        self._columns = {name: [c.name for c in t.columns] for name, t in TABLES.items()}
        self.pending: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        self.counts: Counter[str] = Counter()

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        self.add_tuple(table, tuple(row.get(c) for c in self._columns[table]))

    def add_tuple(self, table: str, row: tuple[Any, ...]) -> None:
        """A row in the table's column order (:data:`agent.sources.schema.TABLES`)."""
        rows = self.pending[table]
        rows.append(row)
        if len(rows) >= self.batch_size:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        from agent.sources.store import bulk_insert

        for name in [table] if table else list(self.pending):
            rows = self.pending[name]
            if not rows:
                continue
            if self.iso_dates and self.conn.dialect.name == "sqlite":
                # Rows already hold what SQLite stores (ISO date text, numbers, None): skip the
                # generic path's per-value conversion.
                cols = self._columns[name]
                cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(
                    f'INSERT INTO "{name}" ({", ".join(cols)}) '
                    f"VALUES ({', '.join('?' for _ in cols)})",
                    rows,
                )
                cursor.close()
                self.counts[name] += len(rows)
            else:
                self.counts[name] += bulk_insert(self.conn, name, rows)
            rows.clear()
