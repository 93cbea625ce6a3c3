"""Opening a practice database, creating the canonical tables, loading rows fast.

    open_practice(target) -> sqlalchemy.Engine   # a URL or a path (SQLite, DuckDB, PostgreSQL)
    create_tables(engine)                        # the tables of agent/sources/schema.py, with indexes
    bulk_insert(engine_or_conn, table, rows)     # rows are tuples in the table's column order

Paths: ``*.duckdb`` / ``*.ddb`` open with DuckDB (duckdb-engine), ``*.sqlite`` / ``*.sqlite3``
/ ``*.db`` with SQLite; an existing file is recognised by its header whatever its name.
URLs: ``sqlite:///...``, ``duckdb:///...``, ``postgresql://...`` (psycopg 3 is used).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent.errors import SourceError, hide_password
from agent.sources import schema
from agent.sources.kinds import DUCKDB_SUFFIXES, SQLITE_SUFFIXES, sniff


def practice_url(target: str | os.PathLike[str]) -> sa.URL:
    """The SQLAlchemy URL for a URL or a path; SourceError naming the target if neither."""
    text = os.fspath(target)
    if "://" in text:
        try:
            url = sa.make_url(text)
        except sa.exc.ArgumentError as exc:
            raise SourceError(f"practice database {text!r}: not a database URL ({exc})") from None
        except ValueError:  # a port that is no number (SQLAlchemy's int() of it)
            raise SourceError(
                f"practice database {hide_password(text)!r}: not a database URL (the port after "
                "the host is not a number)"
            ) from None
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() not in ("sqlite", "duckdb", "postgresql"):
            raise SourceError(
                f"practice database {url.render_as_string(hide_password=True)}: unsupported "
                "backend (use sqlite, duckdb or postgresql)"
            )
        if url.get_backend_name() == "sqlite":
            _refuse_unread_sqlite_options(url)
        return url
    path = Path(text)
    kind = sniff(path) if path.is_file() else None
    if kind is None:
        suffix = path.suffix.lower()
        if suffix in DUCKDB_SUFFIXES:
            kind = "duckdb"
        elif suffix in SQLITE_SUFFIXES:
            kind = "sqlite"
        elif path.is_dir():
            raise SourceError(f"practice database {path}: a folder, not a SQLite or DuckDB file")
        elif path.exists():
            raise SourceError(f"practice database {path}: neither a SQLite nor a DuckDB file")
        else:
            raise SourceError(
                f"practice database {path}: unknown kind (name it *.duckdb or *.sqlite, or give "
                "a URL)"
            )
    return sa.URL.create(kind, database=str(path))


#: The query options SQLAlchemy hands the sqlite3 driver; any other it drops with a warning.
SQLITE_DRIVER_OPTIONS = (
    "uri",
    "timeout",
    "isolation_level",
    "detect_types",
    "check_same_thread",
    "cached_statements",
)
#: SQLite's own URI options, read only with uri=true (www.sqlite.org/uri.html).
SQLITE_URI_OPTIONS = ("vfs", "mode", "cache", "psow", "nolock", "immutable")


def _refuse_unread_sqlite_options(url: sa.URL) -> None:
    """A SQLite URL's query option that nothing reads (``?mode=ro&foo=bar``: SQLAlchemy drops
    both without ``uri=true``, SQLite ignores ``foo`` with it) is an error naming it, not a
    warning and an option silently not in effect. DuckDB and PostgreSQL refuse an unknown
    option themselves."""
    uri = str(url.query.get("uri", "")).lower() in ("true", "1", "yes", "on", "t", "y")
    known = SQLITE_DRIVER_OPTIONS + (SQLITE_URI_OPTIONS if uri else ())
    unread = sorted(k for k in url.query if k not in known)
    if not unread:
        return
    hint = f"SQLite reads {', '.join(SQLITE_DRIVER_OPTIONS)}" + (
        f" and {', '.join(SQLITE_URI_OPTIONS)}"
        if uri
        else f"; {', '.join(SQLITE_URI_OPTIONS)} only with uri=true"
    )
    raise SourceError(
        f"practice database {url.render_as_string(hide_password=True)}: query option(s) "
        f"{', '.join(unread)} would be ignored ({hint})"
    )


def open_practice(target: str | os.PathLike[str], *, read_only: bool = False) -> sa.Engine:
    """An engine on the practice database (SQLite files get read-friendly pragmas)."""
    url = practice_url(target)
    backend = url.get_backend_name()
    if backend in ("sqlite", "duckdb") and read_only:
        path = Path(url.database or "")
        if not path.is_file():
            raise SourceError(f"practice database {path}: no such file")
    if backend == "duckdb":
        config: dict[str, Any] = {"access_mode": "READ_ONLY"} if read_only else {}
        return sa.create_engine(url, connect_args={"config": config} if config else {})
    engine = sa.create_engine(url)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # A large page cache and memory-mapped reads: the engine scans the coded rows once per
    # run, and temp b-trees for GROUP BY stay in memory.
    cur.execute("PRAGMA cache_size = -262144")  # 256 MiB
    cur.execute("PRAGMA mmap_size = 1073741824")
    cur.execute("PRAGMA temp_store = MEMORY")
    cur.close()


def create_tables(engine: sa.Engine) -> None:
    """Create the canonical tables (and their indexes) if they are absent."""
    schema.metadata.create_all(engine)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def bulk_insert(
    target: sa.Engine | sa.Connection,
    table: str | sa.Table,
    rows: Iterable[Sequence[Any]],
) -> int:
    """Insert rows (tuples in the table's column order, dates as ``datetime.date``) by the
    backend's fastest path: SQLite ``executemany``, DuckDB a columnar scan of the rows,
    PostgreSQL ``COPY``. Returns the number of rows. All or nothing within the transaction."""
    tbl = schema.TABLES[table] if isinstance(table, str) else table
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            return bulk_insert(conn, tbl, rows)
    try:
        return _bulk_insert(target, tbl, rows)
    except target.dialect.loaded_dbapi.Error as exc:
        # The driver's own error, raised as SQLAlchemy's matching class (IntegrityError, ...)
        raise sa.exc.DBAPIError.instance(
            f"bulk insert into {tbl.name}", None, exc, target.dialect.loaded_dbapi.Error
        ) from exc


def _bulk_insert(conn: sa.Connection, tbl: sa.Table, rows: Iterable[Sequence[Any]]) -> int:
    backend = conn.dialect.name
    names = [c.name for c in tbl.columns]
    raw = conn.connection.driver_connection
    if backend == "sqlite":
        placeholders = ", ".join("?" for _ in names)
        statement = f'INSERT INTO "{tbl.name}" ({", ".join(names)}) VALUES ({placeholders})'
        cur = raw.cursor()  # type: ignore[union-attr]
        count = 0

        def converted() -> Iterable[tuple[Any, ...]]:
            nonlocal count
            for row in rows:
                count += 1
                yield tuple(_iso(v) for v in row)

        cur.executemany(statement, converted())
        cur.close()
        return count
    if backend == "duckdb":
        return _duckdb_insert(raw, tbl, names, rows)
    if backend == "postgresql":
        count = 0
        with raw.cursor() as cur:  # type: ignore[union-attr]
            cols = ", ".join(names)
            with cur.copy(f'COPY "{tbl.name}" ({cols}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count
    # Any other backend: SQLAlchemy's executemany.
    batch = [dict(zip(names, row, strict=True)) for row in rows]
    if batch:
        conn.execute(tbl.insert(), batch)
    return len(batch)


def _duckdb_insert(raw: Any, tbl: sa.Table, names: list[str], rows: Iterable[Sequence[Any]]) -> int:
    # DuckDB's executemany goes row by row; its CSV reader is parallel and fast, so stage the
    # rows in a temporary CSV file. Every text value is quoted and NULL is an empty field left
    # unquoted (read with allow_quoted_nulls off, and no sniffing), so any text, "\N", "NULL",
    # "" or one holding a quote, comma or line break, is read back exactly as it was.
    count = 0
    with tempfile.TemporaryDirectory(prefix="fedqi-load-") as tmp:
        path = Path(tmp) / f"{tbl.name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            for row in rows:
                fh.write(",".join([_staged(v) for v in row]))
                fh.write("\n")
                count += 1
        if count:
            types = {c.name: duckdb_type(c.type) for c in tbl.columns}
            columns = "{" + ", ".join(f"'{n}': '{types[n]}'" for n in names) + "}"
            raw.execute(
                f'INSERT INTO "{tbl.name}" ({", ".join(names)}) '
                f"SELECT * FROM read_csv(?, header = false, columns = {columns}, "
                "delim = ',', quote = '\"', escape = '\"', nullstr = '', "
                "allow_quoted_nulls = false, auto_detect = false)",
                [str(path)],
            )
    return count


def _staged(value: Any) -> str:
    """One value as :func:`_duckdb_insert` stages it: NULL empty, text always quoted."""
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def duckdb_type(t: sa.types.TypeEngine[Any]) -> str:
    """The DuckDB column type of a canonical column, for DDL and ``read_csv`` column lists."""
    if isinstance(t, sa.Date):
        return "DATE"
    if isinstance(t, sa.Float):
        return "DOUBLE"
    if isinstance(t, sa.BigInteger | sa.Integer):
        return "BIGINT"
    return "VARCHAR"
