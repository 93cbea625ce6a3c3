"""source.kind = "omop": the agent computes from an OMOP CDM database read in place, and sends
the same cells as from the canonical store it was exported from."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from agent.sources.export import export_omop
from agent.sources.store import open_practice
from protocol.submission import Submission


def _omop_file(practice_db: Path, tmp_path: Path) -> Path:
    """The practice exported to an OMOP CDM SQLite file (tmp_path/omop.sqlite)."""
    omop = tmp_path / "omop.sqlite"
    source, target = (
        open_practice(practice_db, read_only=True),
        sa.create_engine(f"sqlite:///{omop}"),
    )
    export_omop(source, target)
    source.dispose()
    target.dispose()
    return omop


def test_preview_from_omop_matches_the_canonical_store(
    practice_db: Path,
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    omop = _omop_file(practice_db, tmp_path)
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


def test_preview_and_submit_refuse_an_omop_source_with_a_record_before_birth(
    practice_db: Path,
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """One record dated before its person's birth: preview and submit stop (exit 4) naming
    the table and the count, not the person or the date; nothing is signed or queued, as
    load-csv and load-fhir load nothing. The OMOP database is not written to."""
    import agent.outbound.submitter as submitter
    from agent.home.keystore import PinnedKey, Trust, save_trust
    from agent.library import load_default_catalogue
    from agent.outbound.outbox import Outbox
    from agent.sources.export import omop_metadata
    from protocol.keys import SigningKey

    omop = _omop_file(practice_db, tmp_path)
    engine = sa.create_engine(f"sqlite:///{omop}")
    person = omop_metadata().tables["person"]
    with engine.begin() as conn:
        pid, year = conn.execute(
            sa.select(person.c.person_id, person.c.year_of_birth).limit(1)
        ).one()
        conn.exec_driver_sql(
            "INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id, "
            "drug_exposure_start_date, drug_exposure_end_date, drug_type_concept_id) "
            f"VALUES (999999, {pid}, 0, '{year - 1}-06-01', '{year - 1}-07-01', 32817)"
        )
    engine.dispose()
    before = omop.read_bytes()
    env = {"FEDQI_AGENT_SOURCE__URL": str(omop), "FEDQI_AGENT_SOURCE__KIND": "omop"}
    expected = (
        f"error: omop source {omop}: rows dated before their person's birth (year_of_birth, "
        "month_of_birth, day_of_birth): drug_exposure.drug_exposure_start_date 1 row(s) of 1 "
        "person(s). A record cannot precede the patient's birth, so nothing is computed from "
        "this database until they are corrected in it (check-source counts them; "
        "docs/sources.md shows how to list them)\n"
    )  # the whole of it: no person id, no date
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03", "--local", env=env)
    assert (r.code, r.out, r.err) == (4, "", expected)

    key = SigningKey.from_private_bytes(bytes(32))
    # Enrolled to look at, with the network's catalogue to hand (no aggregator answers):
    # submit gets as far as computing.
    monkeypatch.setattr(submitter, "load_catalogue", lambda *_a, **_k: load_default_catalogue())
    # and is not first asked whether it is the aggregator enrolled with
    monkeypatch.setattr(submitter, "check_before_sending", lambda *_a, **_k: None)
    save_trust(
        agent_home,
        Trust(
            aud="test-net",
            practice="A12345",
            aggregator_url="http://127.0.0.1:9",
            log_origin="test-net/log/v1",
            log_key=PinnedKey(name="test-net/log/v1", jwk=key.public.jwk()),
        ),
    )
    r = cli("submit", "--home", str(agent_home), "--period", "2026-03", env=env)
    assert (r.code, r.err) == (4, expected)
    with Outbox.open(agent_home) as outbox:
        assert outbox.messages() == []  # nothing signed, nothing queued
    assert omop.read_bytes() == before


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
    r = cli(
        "check-source",
        "--home",
        str(agent_home),
        "--omop",
        f"duckdb:///{tmp_path / 'nothere.duckdb'}",
    )
    assert r.code == 4 and "nothere.duckdb: no such file" in r.err, r.err
    assert not (tmp_path / "nothere.duckdb").exists()


def test_check_source_omop_takes_a_url_or_a_database_file_path(
    practice_db: Path,
    tmp_path: Path,
    agent_home: Path,
    cli,  # type: ignore[no-untyped-def]
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """A path to an existing OMOP SQLite or DuckDB file is read as its URL would be; a value
    that is neither a URL nor such a path is a one-line usage error (exit 2) naming --omop and
    the forms it takes, never a traceback or a source error."""
    omop = _omop_file(practice_db, tmp_path)
    before = omop.read_bytes()
    monkeypatch.chdir(tmp_path)

    def check(value: str):  # type: ignore[no-untyped-def]
        return cli("check-source", "--home", str(agent_home), "--omop", value)

    by_url = check(f"sqlite:///{omop}")
    assert by_url.code == 0, by_url.err
    for path in (str(omop), "omop.sqlite"):  # absolute, and relative to the current directory
        r = check(path)
        assert (r.code, r.out) == (0, by_url.out), r.err
    assert omop.read_bytes() == before  # read in place: nothing written

    forms = "--omop takes a database URL (sqlite:///omop.sqlite relative"
    for value, why in (
        ("sqlite:/omop.sqlite", "not a database URL (a URL has :// after the database name)"),
        ("mysql://user@host/omop", "mysql is not a database fedqi reads"),
        ("postgres://user@host/omop", "the URL's scheme is postgresql://, not postgres://"),
        ("postgresql://user@host:abc/omop", "not a database URL (its port is not a number)"),
    ):
        r = check(value)
        assert r.code == 2 and r.out == "", r.err
        assert r.err.startswith(f"error: --omop {value!r}: {why}; {forms}"), r.err
        assert len(r.err.strip().splitlines()) == 1
    # A path to nothing, or to something that is not such a database, cannot be read: exit 4,
    # as for a URL naming a missing file; nothing is created.
    (tmp_path / "extract.csv").write_text("person_id\n1\n")
    for value, why in (
        ("nothere.sqlite", "no such file"),
        ("extract.csv", "neither a SQLite nor a DuckDB file"),
    ):
        r = check(value)
        assert r.code == 4 and r.err.startswith(f"error: --omop {value}: {why}; {forms}"), r.err
    assert not (tmp_path / "nothere.sqlite").exists()
    r = cli("check-source", "--home", str(agent_home), "--db", str(practice_db), "--omop", "x")
    assert r.code == 2 and "--db and --omop: give one" in r.err, r.err
