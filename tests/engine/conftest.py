"""One fixture, every engine: the reference evaluator, SQLite, DuckDB and PostgreSQL; and
DuckDB through a stored statement (agent/engine/stored.py: compiled once for no particular
period end, then run on a plain ``duckdb`` connection with the period's date bounds).

``compute(practice, catalogue, period_end, indicators=None)`` loads the inline practice into a
fresh database of the engine under test (PostgreSQL: a fresh schema in the session's test
database) and returns its cells; ``worklist(...)`` likewise.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from engine_spec_helpers import load

from agent.engine import compute_cells, reference, stored, worklist_patients
from agent.engine.reference import Practice
from protocol.catalogue import Catalogue

ENGINES = ["reference", "sqlite", "duckdb", "duckdb-stored", "postgresql"]


@dataclass
class Runner:
    """Runs the engine under test on inline practices."""

    name: str
    make_engine: Callable[[], sa.Engine] | None
    stored: bool = False

    def _engine(self, practice: Practice) -> sa.Engine:
        assert self.make_engine is not None
        engine = self.make_engine()
        load(engine, practice)
        return engine

    def compute(
        self,
        practice: Practice,
        catalogue: Catalogue,
        period_end: dt.date,
        indicators: list[str] | None = None,
    ):
        if self.make_engine is None:
            return reference.evaluate(practice, catalogue, period_end, indicators)
        engine = self._engine(practice)
        if self.stored:
            statement = stored.compile_statement(engine, catalogue, indicators, key="test")
            engine.dispose()  # the statement runs on a connection of its own
            # As compute_cells on the other engines, which is given a database, not a source to
            # open: a spec practice may hold dates a source is refused for (a registration
            # before birth), to pin the engine's edges (tests/engine/test_stored_statement.py
            # has the refusal).
            path = Path(str(engine.url.database))
            cells, _ = stored.run(path, statement, catalogue, period_end, refuse_before_birth=False)
            return cells
        return compute_cells(engine, catalogue, period_end, indicators)

    def worklist(self, practice: Practice, catalogue: Catalogue, ind: str, period_end: dt.date):
        if self.make_engine is None:
            return reference.worklist(practice, catalogue, ind, period_end)
        return worklist_patients(self._engine(practice), catalogue, ind, period_end)


@pytest.fixture
def pg_schema_engine(request: pytest.FixtureRequest) -> Iterator[Callable[[], sa.Engine]]:
    """Engines on fresh schemas of the session's PostgreSQL test database."""
    url: str = request.getfixturevalue("pg_url")
    admin = sa.create_engine(url)
    made: list[tuple[str, sa.Engine]] = []

    def make() -> sa.Engine:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.execute(sa.schema.CreateSchema(name))
        engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={name}"})
        made.append((name, engine))
        return engine

    yield make
    for name, engine in made:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
    admin.dispose()


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def runner(engine_name: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[Runner]:
    engines: list[sa.Engine] = []

    def embedded(url: str) -> Callable[[], sa.Engine]:
        def make() -> sa.Engine:
            engine = sa.create_engine(url.format(n=len(engines)))
            engines.append(engine)
            return engine

        return make

    if engine_name == "reference":
        yield Runner(engine_name, None)
    elif engine_name == "sqlite":
        yield Runner(engine_name, embedded(f"sqlite:///{tmp_path}/p{{n}}.sqlite"))
    elif engine_name == "duckdb":
        yield Runner(engine_name, embedded(f"duckdb:///{tmp_path}/p{{n}}.duckdb"))
    elif engine_name == "duckdb-stored":
        yield Runner(engine_name, embedded(f"duckdb:///{tmp_path}/p{{n}}.duckdb"), stored=True)
    else:
        yield Runner(engine_name, request.getfixturevalue("pg_schema_engine"))
    for engine in engines:
        engine.dispose()
