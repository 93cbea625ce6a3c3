"""Shared fixtures.

PostgreSQL: tests that need it take ``pg_url`` (a fresh database made for this test run and
dropped at its end) or ``pg_database_factory`` (a fresh database per call). They skip only where
no server answers at FEDQI_TEST_PG (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

PG_ADMIN_URL = os.environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # any failure to answer means "no server here"
        return f"no PostgreSQL server answers at {PG_ADMIN_URL}: {exc}"


_PG_SKIP: str | None | bool = False  # False = not probed yet


def _pg_skip_reason() -> str | None:
    global _PG_SKIP
    if _PG_SKIP is False:
        _PG_SKIP = _pg_available()
    return _PG_SKIP  # type: ignore[return-value]


def _sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{dbname}"


@pytest.fixture(scope="session")
def pg_database_factory() -> Iterator[Callable[[], str]]:
    """Call it to get the SQLAlchemy URL of a new, empty PostgreSQL database; every database
    made is dropped when the session ends."""
    reason = _pg_skip_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    made: list[str] = []

    def make() -> str:
        name = f"fedqi_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return _sqlalchemy_url(name)

    yield make

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(pg_database_factory: Callable[[], str]) -> str:
    """One fresh PostgreSQL database for the whole test run (dropped at the end)."""
    return pg_database_factory()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real sample data lives beside the repository)")
    return SHARED_DATA
