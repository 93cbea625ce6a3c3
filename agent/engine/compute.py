"""Opening the practice's records and running the engine on them, for the CLI.

The only place the path out of the practice touches patient rows: it hands the engine a
database and gets back :class:`protocol.disclosure.RawCell` aggregates, which go straight to
:mod:`agent.outbound.release` for disclosure control. Nothing here logs or returns a patient row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentUserError, SourceError
from agent.home.settings import AgentSettings
from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell

if TYPE_CHECKING:  # SQLAlchemy loads only where an engine is opened (see compute_raw_cells)
    from sqlalchemy.engine import Engine

    from . import clean

DIALECT_KINDS = {"sqlite": "sqlite", "duckdb": "duckdb", "postgresql": "postgresql"}


#: A SQLite or DuckDB URL whose database is a relative path (three slashes, not four).
_RELATIVE_FILE_URL = re.compile(r"^((?:sqlite|duckdb)(?:\+\w+)?:///)(?!/)(?!:memory:)([^?]+)(.*)$")


def relative_file_url(text: str) -> tuple[str, str, str] | None:
    """A SQLite or DuckDB URL whose database is a relative path, as (the URL up to the path,
    the path, any query after it); None for any other URL."""
    m = _RELATIVE_FILE_URL.match(text)
    return None if m is None else (m[1], m[2], m[3])


@dataclass(frozen=True)
class Computed:
    """What the engine computed: raw cells, the source kind for the provenance, and the date
    of the newest dated record (event or medication issue; None when there is none), a
    practice-level date that :func:`agent.periods.stale_source` compares with the period."""

    cells: list[RawCell]
    kind: str
    newest: dt.date | None


def newest_record(engine: Engine) -> dt.date | None:
    """The date of the practice's newest event or medication issue, or None if it has none."""
    import sqlalchemy as sa

    from agent.sources import schema

    parts = [
        sa.select(sa.func.max(t.c.date).label("d")) for t in (schema.events, schema.medications)
    ]
    both = sa.union_all(*parts).subquery()
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(both.c.d))).scalar()
    if isinstance(value, str):  # SQLite through a subquery: the ISO text
        value = dt.date.fromisoformat(value[:10])
    if isinstance(value, dt.datetime):
        value = value.date()
    return value


def source_target(settings: AgentSettings) -> str:
    """The configured practice database: a URL, or a path. A relative path, as a path or as a
    SQLite or DuckDB URL's database (``duckdb:///p.duckdb``), is relative to the agent home,
    not to the directory a command happens to run in (a timer's is not the user's)."""
    settings.require("source.url")
    text = str(settings.source.url)
    if "://" in text:
        parts = relative_file_url(text)
        if parts is None:
            return text
        prefix, database, rest = parts
        return f"{prefix}{settings.home / Path(database).expanduser()}{rest}"
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (settings.home / path))


def source_kind(settings: AgentSettings, engine: Engine) -> str:
    """What the provenance records: the configured kind, else the database's dialect."""
    if settings.source.kind is not None:
        return settings.source.kind
    return DIALECT_KINDS.get(engine.dialect.name, "sqlite")


def open_source(settings: AgentSettings, *, refuse_before_birth: bool = True) -> Engine:
    """A read-only engine on the practice database; one line naming it if it cannot be read.
    A database with rows dated before their patient's birth (an OMOP database, or one in the
    canonical tables: :mod:`agent.sources.birth`) is refused, unless ``refuse_before_birth``
    is false (``check-source``, which counts them)."""
    import sqlalchemy as sa

    from agent.sources import schema
    from agent.sources.store import open_practice

    target = source_target(settings)
    if settings.source.kind == "omop":
        # An OMOP CDM database is read in place, through temporary views (docs/sources.md).
        from agent.sources.omop import open_omop
        from agent.sources.store import practice_url

        url = practice_url(target).render_as_string(hide_password=False)
        return open_omop(
            url, codes=settings.source.omop_codes, refuse_before_birth=refuse_before_birth
        )
    where = _display(target)
    # Before the file is opened: opening a SQLite file in WAL mode makes its -wal file now,
    # which would make its identity too recent ever to be recorded (agent/engine/clean.py).
    ident = _identity(target) if refuse_before_birth else None
    try:
        engine = open_practice(target, read_only=True)
    except SourceError as exc:  # says what is wrong with the database: name the setting too
        raise SourceError(f"source.url: {exc}") from None
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            missing = [t for t in schema.TABLES if not inspector.has_table(t)]
    except Exception as exc:  # drivers raise their own errors for a file that is not a database
        engine.dispose()
        raise SourceError.cannot_open(where, exc) from None
    if missing:
        engine.dispose()
        raise SourceError.missing_tables(where, missing)
    if refuse_before_birth:
        _refuse_before_birth(engine, where, settings.home, ident)
    return engine


def _refuse_before_birth(
    engine: Engine, where: str, home: Path, ident: clean.Identity | None
) -> None:
    """Fail, naming each table and date column and how many rows, when the practice database
    holds a value not in its form (agent/sources/form.py: a date that is none, a sex outside
    F, M and U, a value that is no finite number) or a row dated before its patient's birth, as
    load-csv and load-fhir refuse such a record (a database the practice supplies itself was
    never loaded, so nothing checked it). Counts only: no row, patient or value is named.

    A SQLite or DuckDB file whose identity ``ident``, read before the file was opened, is the
    one recorded in ``home`` as found clean is not checked again (agent/engine/clean.py);
    PostgreSQL (``ident`` None) always is."""
    from sqlalchemy.exc import SQLAlchemyError

    from agent.sources.birth import practice_before_birth, practice_error
    from agent.sources.form import form_error, malformed

    from . import clean

    def check() -> None:
        try:
            with engine.connect() as conn:
                # Values not in their form first: a date that is none compares as text, so
                # "before birth" would not mean what it says.
                problems = malformed(conn.dialect.name, lambda q: conn.exec_driver_sql(q).all())
                error = form_error(f"source.url: the practice database {where} has ", problems)
                if error is None:
                    error = practice_error(where, practice_before_birth(conn))
        except SQLAlchemyError as exc:
            engine.dispose()
            raise SourceError.cannot_read(exc, where) from None
        if error is not None:
            engine.dispose()
            raise error

    clean.refuse_unless_clean(home, ident, check)


def _identity(target: str) -> clean.Identity | None:
    """The identity (agent/engine/clean.py) of the SQLite or DuckDB file ``target`` names, or
    None (another database, an in-memory one, or a SQLite ``file:`` URI, which may name
    options as well as a file)."""
    from agent.sources.store import practice_url

    from . import clean

    try:
        url = practice_url(target)
    except Exception:  # a target that is no URL: open_practice says what is wrong with it
        return None
    kind, database = url.get_backend_name(), url.database
    if kind not in ("sqlite", "duckdb") or not database:
        return None
    if database == ":memory:" or database.startswith("file:") or "uri" in url.query:
        return None
    return clean.identity(Path(database), kind)


def _display(target: str) -> str:
    if "://" not in target:
        return target
    import sqlalchemy as sa

    try:
        return sa.make_url(target).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        return "(unparseable URL)"


@contextmanager
def _reading(settings: AgentSettings) -> Iterator[Engine]:
    """The practice database, opened for the engine: a read error becomes one SourceError line,
    and the connection is closed whatever happens."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = open_source(settings)
    try:
        yield engine
    except AgentUserError:
        raise
    except SQLAlchemyError as exc:
        raise SourceError.cannot_read(exc) from None
    finally:
        engine.dispose()


def compute_raw_cells(
    settings: AgentSettings,
    catalogue: Catalogue,
    period_end: dt.date,
    indicators: Sequence[str] | None = None,
) -> Computed:
    """The engine's raw cells for the period, the source kind for the provenance and the
    newest record's date.

    A DuckDB practice file runs the catalogue's stored statement (agent/engine/stored.py),
    compiling and storing it first if the agent home has none for this catalogue and code;
    any other source is compiled and run through SQLAlchemy."""
    path = _duckdb_file(settings)
    if path is not None:
        from agent.engine import stored

        key = stored.statement_key(catalogue, indicators)
        statement = stored.load(settings.home, key)
        if statement is None:
            with _reading(settings) as engine:
                try:
                    statement = stored.compile_statement(engine, catalogue, indicators, key)
                except ValueError:  # not storable (tests show the catalogues are): compile
                    from agent.engine import compute_cells

                    cells = compute_cells(engine, catalogue, period_end, indicators)
                    return Computed(
                        list(cells), source_kind(settings, engine), newest_record(engine)
                    )
            stored.save(settings.home, statement)
        cells, newest = stored.run(
            path,
            statement,
            catalogue,
            period_end,
            # Checked again, as the file is open under DuckDB's lock: after a compile, which
            # checked and recorded the file (open_source), only a comparison of its identity
            # with the record, unless something wrote to it in between.
            refuse_before_birth=True,
            home=settings.home,
        )
        return Computed(cells, settings.source.kind or "duckdb", newest)
    from agent.engine import compute_cells

    with _reading(settings) as engine:
        cells = compute_cells(engine, catalogue, period_end, indicators)
        kind = source_kind(settings, engine)
        newest = newest_record(engine)
    return Computed(list(cells), kind, newest)


def _duckdb_file(settings: AgentSettings) -> Path | None:
    """The practice database's path when it is an existing DuckDB file given as a path or a
    plain ``duckdb:///`` URL (the embedded default), else None."""
    if settings.source.kind == "omop" or settings.source.url is None:
        return None
    from agent.sources.kinds import DUCKDB_PREFIX, sniff

    target = source_target(settings)
    if "://" in target:
        if not target.startswith(DUCKDB_PREFIX) or "?" in target or "%" in target:
            return None
        target = target[len(DUCKDB_PREFIX) :]
        if not target:
            return None
    path = Path(target)
    return path if path.is_file() and sniff(path) == "duckdb" else None


def compute_raw_cells_for_periods(
    settings: AgentSettings,
    catalogue: Catalogue,
    period_ends: Sequence[dt.date],
) -> tuple[dict[dt.date, list[RawCell]], str, dt.date | None]:
    """The engine's raw cells for several period ends from one query (a backfill in one pass),
    the source kind for the provenance and the newest record's date."""
    from agent.engine import compute_periods

    with _reading(settings) as engine:
        cells = compute_periods(engine, catalogue, period_ends)
        kind = source_kind(settings, engine)
        newest = newest_record(engine)
    return cells, kind, newest
