"""Engines and sessions for the two supported stores: a SQLite file (the embedded default) and
PostgreSQL (production). Dialect differences live here and in :func:`lock_sequencer`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError
from .models import LogState, table_of

# A constant key for PostgreSQL's transaction-scoped advisory lock: the log's one sequencer.
SEQUENCER_LOCK_KEY = 0x66656471  # "fedq"
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` (meaning psycopg 3) and plain file paths for SQLite."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--db {url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        elif backend == "postgresql":
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
        else:
            raise ConfigError(f"--db {url!r}: only sqlite and postgresql URLs are supported")
    except NoSuchModuleError:
        raise ConfigError(f"--db {url!r}: no driver for this URL") from None
    return engine


def driver_words(exc: BaseException) -> str:
    """A database error in the driver's own words, on one line (psycopg's messages run over
    several, with a tab-indented hint; SQLAlchemy's own text adds the statement and a link)."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """An engine plus a session factory."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads: closing it ends the transaction and detaches (but keeps) the
        objects loaded."""
        with self.sessionmaker() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("select 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def lock_sequencer(session: Session) -> None:
    """Take the log's single sequencer for the rest of this transaction.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write to ``log_state`` takes the
    database write lock (the connection then holds it until commit or rollback).
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(_ADVISORY_LOCK, {"k": SEQUENCER_LOCK_KEY})
    else:
        t = table_of(LogState)
        conn.execute(t.update().where(t.c.id == 1).values(size=t.c.size))
