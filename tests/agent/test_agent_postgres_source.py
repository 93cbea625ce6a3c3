"""The agent reads a practice held in PostgreSQL: the same payload cells as from SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.sources.synth import generate_practice
from protocol.submission import Submission


@pytest.mark.postgres
def test_preview_from_postgresql_matches_sqlite(
    pg_database_factory: Callable[[], str],
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    url = pg_database_factory()
    generate_practice(url, patients=150, seed=3)
    sqlite = tmp_path / "same.db"
    generate_practice(sqlite, patients=150, seed=3)

    def cells(source: str) -> tuple[object, ...]:
        r = cli(
            "preview",
            "--home",
            str(agent_home),
            "--period",
            "2026-03",
            "--json",
            env={"FEDQI_AGENT_SOURCE__URL": source},
        )
        assert r.code == 0, r.err
        sub = Submission.from_bytes(r.out.strip().encode())
        return sub.cells

    from_pg = cells(url)
    assert from_pg == cells(str(sqlite))
    assert any(c.numerator.status != "zero" for c in from_pg)


@pytest.mark.postgres
def test_preview_refuses_a_postgresql_practice_with_a_record_before_birth(
    pg_database_factory: Callable[[], str],
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    """The before-birth check on a practice database in PostgreSQL (the SQLite one:
    tests/agent/test_agent_cli_local.py): preview stops (exit 4) naming the table, column and
    counts, and the database by its URL without the password."""
    import sqlalchemy as sa

    url = pg_database_factory()
    generate_practice(url, patients=150, seed=3)
    preview = ("preview", "--home", str(agent_home), "--period", "2026-03", "--local")
    assert cli(*preview, env={"FEDQI_AGENT_SOURCE__URL": url}).code == 0
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:  # a death the day before birth
        conn.exec_driver_sql(
            "UPDATE patients SET death_date = birth_date - 1 "
            "WHERE patient_id = (SELECT min(patient_id) FROM patients)"
        )
    engine.dispose()
    r = cli(*preview, env={"FEDQI_AGENT_SOURCE__URL": url})
    where = sa.make_url(url).render_as_string(hide_password=True)
    assert r.code == 4 and r.out == "" and r.err.count("\n") == 1, r.err
    assert r.err.startswith(
        f"error: source.url: the practice database {where} has rows dated before their "
        "patient's birth (patients.birth_date): patients.death_date 1 row(s) of 1 person(s). "
    )
