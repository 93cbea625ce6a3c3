"""source.kind = "omop": the agent computes from an OMOP CDM database read in place, and sends
the same cells as from the canonical store it was exported from."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from agent.sources.export import export_omop
from agent.sources.store import open_practice
from protocol.submission import Submission


def test_preview_from_omop_matches_the_canonical_store(
    practice_db: Path,
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    omop = tmp_path / "omop.sqlite"
    source, target = (
        open_practice(practice_db, read_only=True),
        sa.create_engine(f"sqlite:///{omop}"),
    )
    export_omop(source, target)
    source.dispose()
    target.dispose()
    before = omop.read_bytes()

    def payload(env: dict[str, str]) -> Submission:
        r = cli("preview", "--home", str(agent_home), "--period", "2026-03", "--json", env=env)
        assert r.code == 0, r.err
        return Submission.from_bytes(r.out.strip().encode())

    canonical = payload({})
    via_omop = payload({"FEDQI_AGENT_SOURCE__URL": str(omop), "FEDQI_AGENT_SOURCE__KIND": "omop"})
    assert via_omop.cells == canonical.cells
    assert via_omop.provenance.source == "omop" and canonical.provenance.source == "sqlite"
    assert omop.read_bytes() == before  # read in place: nothing written


def test_preview_from_a_missing_omop_file_names_it_and_creates_nothing(
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    missing = tmp_path / "nothere.sqlite"
    env = {"FEDQI_AGENT_SOURCE__URL": str(missing), "FEDQI_AGENT_SOURCE__KIND": "omop"}
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03", env=env)
    assert r.code == 4 and f"omop source {missing}: no such file" in r.err, r.err
    assert not missing.exists()
    r = cli("check-source", "--omop", f"duckdb:///{tmp_path / 'nothere.duckdb'}")
    assert r.code == 4 and "nothere.duckdb: no such file" in r.err, r.err
    assert not (tmp_path / "nothere.duckdb").exists()
