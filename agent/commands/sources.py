"""``load-csv``, ``load-fhir`` and ``check-source``: reading the records practices really have.

The loads replace the practice store's contents (``--into``, else ``source.url``) in one
transaction; ``check-source`` reports what a source holds against the catalogue's codelists.
See docs/sources.md.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from agent.cli import app
from agent.errors import AgentUserError, ConfigError, SourceError, hide_password
from agent.home.settings import AgentSettings
from agent.sources.common import LoadReport, open_store

from ._common import HomeOption, JsonOption, console, emit_json, one_line_errors, settings_for

IntoOption = Annotated[
    str | None,
    typer.Option(
        "--into",
        help="the practice store to load into: a path (*.sqlite, *.duckdb) or a database URL "
        "(default: source.url from the agent config)",
        show_default=False,
    ),
]


def _store_target(into: str | None, home: Path | None) -> str:
    if into:
        return into
    # source.url may come from the environment, with no agent home; else the home must exist.
    settings = settings_for(home, need_home=False)
    if not settings.source.url or settings.source.kind == "omop":
        settings.require_home()
        raise ConfigError(
            "no store to load into: pass --into PATH (e.g. practice.sqlite) or set source.url "
            f"to a practice store in {settings.config_file}"
        )
    from agent.engine.compute import source_target

    return source_target(settings)


def _store_file(target: str) -> Path | None:
    """The file a SQLite or DuckDB store lives in, whether ``target`` names it by path or by
    URL (``sqlite:///new.db``); None for a server database or an in-memory one."""
    from agent.sources.store import practice_url

    url = practice_url(target)
    database = url.database or ""
    if url.get_backend_name() not in ("sqlite", "duckdb") or database in ("", ":memory:"):
        return None
    if url.query.get("uri") in ("true", "1") or database.startswith("file:"):
        return None  # an SQLite URI filename: not a plain path to check or remove
    return Path(database)


def _store_name(target: str) -> str:
    """The store as errors name it: its path, or its URL without the password."""
    return hide_password(target) if "://" in target else target


def _run_load(target: str, load: Callable[[Engine], LoadReport], as_json: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    store_file = _store_file(target)
    # The store file this load creates (named by path or by URL), removed if the load fails.
    created = store_file if store_file is not None and not store_file.exists() else None
    engine = open_store(target)
    try:
        report = load(engine)
    except BaseException as exc:
        engine.dispose()
        # A store this load created and could not fill is removed: nothing half-made remains.
        if created is not None:
            created.unlink(missing_ok=True)
        # The driver's own error where a load writes through the raw connection (the CSV
        # load's SQLite batches): named by the store, as SQLAlchemy's are.
        if isinstance(exc, SQLAlchemyError | sqlite3.Error):
            raise SourceError.cannot_write(exc, _store_name(target)) from None
        raise
    engine.dispose()
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        out = console()
        for line in report.lines():
            out.print(line, markup=False)
        out.print(f"into {target}", markup=False)


@app.command("load-csv")
@one_line_errors
def load_csv_command(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIRECTORY", help="folder with patients.csv, events.csv, medications.csv"
        ),
    ],
    into: IntoOption = None,
    date_format: Annotated[
        str, typer.Option("--date-format", help="iso (YYYY-MM-DD) or uk (DD/MM/YYYY)")
    ] = "iso",
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a CSV extract into the practice store (replacing its contents, all or nothing)."""
    from agent.sources.csv_extract import load_csv

    if date_format not in ("iso", "uk"):
        raise AgentUserError(f"--date-format {date_format!r}: use iso or uk")
    target = _store_target(into, home)
    _run_load(target, lambda engine: load_csv(directory, engine, date_format=date_format), as_json)


@app.command("load-fhir")
@one_line_errors
def load_fhir_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="a FHIR bulk-export folder (ndjson), an ndjson file or a Bundle"
        ),
    ],
    into: IntoOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load FHIR R4 data into the practice store (replacing its contents, all or nothing)."""
    from agent.sources.fhir import load_fhir

    target = _store_target(into, home)
    _run_load(target, lambda engine: load_fhir(path, engine), as_json)


#: What ``check-source --omop-codes`` takes (source.omop_codes' values).
OMOP_CODES = ("standard", "source", "concept_id")
#: What ``check-source --omop`` takes, said in each of its errors.
OMOP_FORMS = (
    "--omop takes a database URL (sqlite:///omop.sqlite relative, sqlite:////data/omop.sqlite "
    "absolute, duckdb:///omop.duckdb, postgresql://user@host/omop) or the path of an OMOP "
    "SQLite or DuckDB file"
)
# A database URL missing its "//" (sqlite:omop.sqlite): a mistyped URL, not a file name.
_URL_WITHOUT_SLASHES = re.compile(r"^(sqlite|duckdb|postgres|postgresql)(\+\w+)?:", re.IGNORECASE)


def omop_url(value: str) -> str:
    """``--omop``'s value as the URL :func:`agent.sources.omop.open_omop` reads: a database URL
    as given, or a path to an existing SQLite or DuckDB file (recognised by its header, as
    ``source.url`` is) as that file's URL. A value that is neither is a usage error naming the
    option and the forms it takes (exit 2); a path to nothing, or to a file that is not such a
    database, cannot be read (exit 4), as with the URL form."""
    import sqlalchemy as sa

    from agent.sources.kinds import sniff

    if "://" in value:
        try:
            url = sa.make_url(value)
        except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
            why = " (its port is not a number)" if isinstance(exc, ValueError) else ""
            raise AgentUserError(
                f"--omop {value!r}: not a database URL{why}; {OMOP_FORMS}"
            ) from None
        backend = url.get_backend_name()
        if backend == "postgres":
            raise AgentUserError(
                f"--omop {value!r}: the URL's scheme is postgresql://, not postgres://; "
                f"{OMOP_FORMS}"
            )
        if backend not in ("sqlite", "duckdb", "postgresql"):
            raise AgentUserError(
                f"--omop {value!r}: {backend} is not a database fedqi reads; {OMOP_FORMS}"
            )
        return value
    if _URL_WITHOUT_SLASHES.match(value):
        raise AgentUserError(
            f"--omop {value!r}: not a database URL (a URL has :// after the database name); "
            f"{OMOP_FORMS}"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise SourceError(f"--omop {path}: {what}; {OMOP_FORMS}")
    kind = sniff(path)
    if kind is None:
        raise SourceError(f"--omop {path}: neither a SQLite nor a DuckDB file; {OMOP_FORMS}")
    return sa.URL.create(kind, database=str(path.resolve())).render_as_string()


def open_checked_source(
    settings: AgentSettings, db: str | None, omop: str | None, omop_codes: str
) -> Engine:
    """The canonical tables to check: an OMOP database through its views, or a store. A
    database with rows dated before their person's birth opens (preview and submit refuse it):
    the report counts them."""
    from agent.sources.store import open_practice

    if omop:
        from agent.sources.omop import open_omop

        return open_omop(omop, codes=omop_codes, refuse_before_birth=False)
    if db:
        return open_practice(db, read_only=True)
    from agent.engine.compute import open_source

    return open_source(settings, refuse_before_birth=False)


def _checked_name(settings: AgentSettings, db: str | None, omop: str | None) -> str | None:
    """The practice database check-source reads, as its errors name it (None: an OMOP one)."""
    if db:
        return _store_name(db)
    if omop or settings.source.kind == "omop" or not settings.source.url:
        return None
    from agent.engine.compute import source_target

    return f"{_store_name(source_target(settings))} (source.url)"


@app.command("check-source")
@one_line_errors
def check_source_command(
    db: Annotated[
        str | None,
        typer.Option("--db", help="a practice store (path or URL) instead of source.url"),
    ] = None,
    omop: Annotated[
        str | None,
        typer.Option(
            "--omop",
            help="an OMOP CDM database: a URL (e.g. sqlite:///omop.sqlite) or the path of a "
            "SQLite or DuckDB file; read in place, read-only",
        ),
    ] = None,
    omop_codes: Annotated[
        str | None,
        typer.Option(
            "--omop-codes",
            help="with --omop: the OMOP codes to match, standard, source or concept_id "
            "(default standard)",
            show_default=False,
        ),
    ] = None,
    catalogue_file: Annotated[
        Path | None,
        typer.Option("--catalogue", help="a catalogue JSON file (default: the agent's catalogue)"),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Report, in plain words, what the source holds (patients, date ranges, rows, patients per
    list), what is missing (lists no patient has a code of, codes on no list) and what to do.
    Per table, it counts rows dated before their person's birth, which preview and submit
    refuse; on OMOP, persons whose observation period ends with no death (gone from the list).
    Counts only; nothing is sent."""
    from sqlalchemy.exc import SQLAlchemyError

    from agent.home.catalogue_cache import load_catalogue, read_catalogue_file
    from agent.sources.check import check_source

    if db is not None and omop is not None:
        raise AgentUserError(
            "--db and --omop: give one (--db a practice store, --omop an OMOP CDM database)"
        )
    if omop_codes is not None and omop_codes not in OMOP_CODES:
        raise AgentUserError(f"--omop-codes {omop_codes!r}: use one of {', '.join(OMOP_CODES)}")
    if omop_codes is not None and omop is None:
        raise AgentUserError(
            "--omop-codes applies only with --omop (an OMOP source in the agent config is "
            "matched by source.omop_codes)"
        )
    if omop is not None:
        omop = omop_url(omop)  # before anything is read or fetched
    # --db or --omop and --catalogue name everything read; else the home must exist.
    settings = settings_for(home, need_home=False)
    if catalogue_file is not None:
        catalogue = read_catalogue_file(catalogue_file)
    else:
        catalogue = load_catalogue(settings)
    engine = open_checked_source(settings, db, omop, omop_codes or "standard")
    where = _checked_name(settings, db, omop)
    try:
        kind = "omop" if omop or (not db and settings.source.kind == "omop") else None
        result = check_source(engine, catalogue, dt.date.today(), source_kind=kind, where=where)
    except (SQLAlchemyError, sqlite3.Error) as exc:  # not a database, or not one it can open
        raise SourceError.cannot_read(exc, where) from None
    finally:
        engine.dispose()
    if as_json:
        emit_json(result.model_dump(mode="json"))
    else:
        out = console()
        for line in result.lines():
            out.print(line, markup=False)
