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
