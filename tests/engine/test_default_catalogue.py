"""The shipped catalogue on a generated practice: every engine agrees with the reference."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from engine_spec_helpers import load

from agent.engine import compute_cells, reference, worklist_patients
from agent.library import load_default_catalogue
from agent.sources.store import open_practice
from agent.sources.synth import DEFAULT_PERIOD_END, generate_practice


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("practice") / "p.duckdb"
    generate_practice(path, patients=300, seed=11)
    engine = open_practice(path, read_only=True)
    practice = reference.load_practice(engine)
    engine.dispose()
    return path, practice


@pytest.mark.parametrize("backend", ["duckdb", "sqlite", "postgresql"])
def test_default_catalogue_matches_reference(generated, backend, request):
    path, practice = generated
    catalogue = load_default_catalogue()
    if backend == "duckdb":
        engine = open_practice(path, read_only=True)
    elif backend == "sqlite":
        engine = open_practice(path.with_suffix(".sqlite"))
        load(engine, practice)
    else:
        engine = sa.create_engine(request.getfixturevalue("pg_database_factory")())
        load(engine, practice)
    try:
        expected = reference.evaluate(practice, catalogue, DEFAULT_PERIOD_END)
        got = compute_cells(engine, catalogue, DEFAULT_PERIOD_END)
        assert got == expected
        # The practice is not trivial: most indicators have a non-empty denominator.
        totals = [c for c in got if (c.age_band, c.sex) == ("all", "all")]
        assert sum(c.denominator > 0 for c in totals) >= len(totals) * 2 // 3
        for ind in catalogue.indicators[:5]:
            assert worklist_patients(
                engine, catalogue, ind.id, DEFAULT_PERIOD_END
            ) == reference.worklist(practice, catalogue, ind.id, DEFAULT_PERIOD_END)
    finally:
        engine.dispose()
