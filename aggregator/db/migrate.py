"""Alembic, run programmatically: the scripts live in ``aggregator/migrations``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import DatabaseNotReadyError
from .session import Database, driver_words, normalise_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # '%' would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def upgrade(url: str, revision: str = "head") -> str:
    """Migrate the database to ``revision``; returns the revision it is at afterwards."""
    return _migrate(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> str:
    """Migrate the database back to ``revision`` (each migration's downgrade moves stored data
    back too); returns the revision it is at afterwards."""
    return _migrate(url, command.downgrade, revision)


def _migrate(url: str, step: Callable[[Config, str], None], revision: str) -> str:
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg, revision)
        return current_revision(db) or "base"
    except OperationalError as exc:
        raise DatabaseNotReadyError(
            f"cannot reach database {_redact(url)}: {driver_words(exc)}"
        ) from None
    finally:
        db.dispose()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_migrated(db: Database) -> None:
    """Raise :class:`DatabaseNotReadyError` unless the database answers and is at head. A SQLite
    file that does not exist is named as such and left uncreated: only ``db upgrade`` makes one."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(db.url)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not str(parsed.database).startswith("file:")
        and not Path(str(parsed.database)).exists()
    ):
        raise DatabaseNotReadyError(
            f"database {_redact(db.url)}: there is no file {parsed.database}; "
            "`fedqi-aggregator db upgrade --db URL` creates and migrates it"
        )
    try:
        current = current_revision(db)
    except SQLAlchemyError as exc:
        raise DatabaseNotReadyError(
            f"cannot reach database {_redact(db.url)}: {driver_words(exc)}"
        ) from None
    head = head_revision()
    if current != head:
        raise DatabaseNotReadyError(
            f"database {_redact(db.url)} is not migrated (at {current or 'no revision'}, "
            f"needs {head}): run `fedqi-aggregator db upgrade --db URL` first"
        )


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"
