"""Fixtures for the benchmark tests: a migrated SQLite file and (where a server answers) a fresh
PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bench_store import Store

from aggregator.db.migrate import upgrade
from aggregator.db.session import Database


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'agg.db'}"
    upgrade(url)
    db = Database(url)
    yield Store(db)
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'agg.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        url = factory()
    upgrade(url)
    db = Database(url)
    yield Store(db)
    db.dispose()
