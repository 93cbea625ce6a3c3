"""A practice database file found clean of records dated before birth is not checked again until
it changes (agent/engine/clean.py): real SQLite and DuckDB files, real previews.

The check is seen where it runs: its statement through SQLAlchemy (SQLite; a DuckDB practice's
first preview, which compiles the stored statement), and the stored statement's run of it on a
plain ``duckdb`` connection (every later DuckDB preview)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from agent.engine import clean, stored
from agent.sources.birth import PRACTICE_CHECK_VERSION
from agent.sources.synth import generate_practice

PERIOD = ("--period", "2026-03", "--local")


@pytest.fixture(scope="module")
def practice_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "practice.duckdb"
    generate_practice(path, patients=200, seed=5, period_end=dt.date(2026, 3, 31))
    return path


@pytest.fixture(autouse=True)
def _a_minute_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's clock a minute ahead: every file these tests write, or stamp with
    ``os.utime`` (which makes its change time now), is then older than clean.RACY_NS and can
    be recorded; the test of a file written just now widens the window instead."""
    monkeypatch.setattr(clean, "_clock", lambda: time.time_ns() + 60 * 10**9)


def _aged(path: Path) -> Path:
    """``path``, last modified a minute ago: a file written just now is never recorded (a
    write in the same tick of the clock could leave its identity unchanged)."""
    old = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(old, old))
    return path


@pytest.fixture(params=["sqlite", "duckdb"])
def supplied(
    request: pytest.FixtureRequest, tmp_path: Path, practice_db: Path, practice_duckdb: Path
) -> Path:
    """A copy of a clean practice, SQLite or DuckDB, as a practice supplies it."""
    source = practice_db if request.param == "sqlite" else practice_duckdb
    path = tmp_path / f"supplied.{request.param}"
    shutil.copyfile(source, path)
    return _aged(path)


@contextmanager
def _checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each run of the before-birth check while inside: "sqlalchemy" for its statement executed
    through SQLAlchemy, "stored" for the stored statement's run of it."""
    seen: list[str] = []

    def statement(_c: Any, _cur: Any, sql: str, *_args: Any) -> None:
        if "persons_0" in sql:  # the check's one statement (agent.sources.birth.birth_check)
            seen.append("sqlalchemy")

    real = stored.count_before_birth

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.append("stored")
        return real(*args, **kwargs)

    monkeypatch.setattr(stored, "count_before_birth", counted)
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", statement)


def _preview(cli: Callable[..., Any], home: Path, db: Path) -> Any:
    return cli("preview", "--home", str(home), *PERIOD, env={"FEDQI_AGENT_SOURCE__URL": str(db)})


def _write_before_birth(db: Path) -> None:
    """One event dated the day before its patient's birth, written into ``db`` itself."""
    if db.suffix == ".sqlite":
        conn = sqlite3.connect(db)
        with conn:
            pid, birth = conn.execute(
                "SELECT patient_id, birth_date FROM patients ORDER BY patient_id LIMIT 1"
            ).fetchone()
            day = (dt.date.fromisoformat(birth) - dt.timedelta(days=1)).isoformat()
            conn.execute(
                "INSERT INTO events (patient_id, date, system, code) "
                "VALUES (?, ?, 'snomedct', '38341003')",
                (pid, day),
            )
        conn.close()
        return
    with duckdb.connect(str(db)) as con:
        pid, birth = con.execute(
            "SELECT patient_id, birth_date FROM patients ORDER BY patient_id LIMIT 1"
        ).fetchone()
        con.execute(
            "INSERT INTO events VALUES (?, ?, 'snomedct', '38341003', NULL, NULL)",
            [pid, birth - dt.timedelta(days=1)],
        )


def _refusal(db: Path) -> str:
    return (
        f"error: source.url: the practice database {db} has rows dated before their patient's "
        "birth (patients.birth_date): events.date 1 row(s) of 1 person(s). A record cannot "
        "precede the patient's birth, so nothing is computed from this database until they are "
        "corrected in it (check-source counts them; docs/sources.md shows how to list them)\n"
    )


def test_a_clean_file_is_checked_once_then_again_only_once_it_changes(
    agent_home: Path,
    supplied: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first preview checks the file and records it; the second skips the check and prints
    the same; a row dated before birth written into the same file changes it, so the next
    preview checks again and refuses it (exit 4), recording nothing."""
    with _checks(monkeypatch) as seen:
        first = _preview(cli, agent_home, supplied)
        assert first.code == 0, first.err
        assert seen == ["sqlalchemy"]  # DuckDB: through SQLAlchemy, compiling the statement
        record = json.loads((agent_home / clean.RECORD).read_text("utf-8"))
        assert record["check"] == PRACTICE_CHECK_VERSION
        assert record["path"] == str(supplied.resolve())
        assert (agent_home / clean.RECORD).stat().st_mode & 0o777 == 0o600

        second = _preview(cli, agent_home, supplied)
        assert (second.code, second.out) == (0, first.out)
        assert seen == ["sqlalchemy"]  # not checked again

        _write_before_birth(supplied)
        refused = _preview(cli, agent_home, supplied)
        assert (refused.code, refused.out, refused.err) == (4, "", _refusal(supplied))
        assert len(seen) == 2
        # Nothing recorded of the database that failed: refused again, checked again.
        assert json.loads((agent_home / clean.RECORD).read_text("utf-8")) == record
        assert _preview(cli, agent_home, _aged(supplied)).code == 4
        assert len(seen) == 3


def test_a_duckdb_file_is_checked_by_the_stored_statement_when_not_recorded(
    agent_home: Path,
    practice_duckdb: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the statement stored but no file recorded (another practice file, or the record
    deleted), the stored statement checks the file on its own connection, and records it."""
    db = tmp_path / "supplied.duckdb"
    shutil.copyfile(practice_duckdb, db)
    _aged(db)
    assert _preview(cli, agent_home, db).code == 0  # compiles, checks and records
    (agent_home / clean.RECORD).unlink()
    with _checks(monkeypatch) as seen:
        assert _preview(cli, agent_home, db).code == 0
        assert _preview(cli, agent_home, db).code == 0
    assert seen == ["stored"]


@pytest.mark.parametrize(
    "damage",
    [
        "older check",
        "not JSON",
        "not UTF-8",
        "not an object",
        "nested past parsing",
        "a directory",
        "another file",
    ],  # fmt: skip
)
def test_a_record_that_is_not_this_file_s_current_one_is_ignored(
    agent_home: Path,
    supplied: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    """A record from an older version of the check, or one that cannot be read, makes the
    preview check the file (not crash); where it can, the preview then records it again."""
    assert _preview(cli, agent_home, supplied).code == 0
    path = agent_home / clean.RECORD
    record = json.loads(path.read_text("utf-8"))
    if damage == "older check":
        path.write_text(json.dumps({**record, "check": PRACTICE_CHECK_VERSION - 1}))
    elif damage == "not JSON":
        path.write_text('{"check": 1, "kind"')
    elif damage == "not UTF-8":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "not an object":
        path.write_text("[1, 2, 3]")
    elif damage == "nested past parsing":  # the parser's RecursionError, not a crash
        path.write_text("[" * 200_000)
    elif damage == "a directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(json.dumps({**record, "path": record["path"] + "-other"}))
    with _checks(monkeypatch) as seen:
        r = _preview(cli, agent_home, supplied)
        assert r.code == 0, r.err
        assert len(seen) == 1
        if damage != "a directory":  # it cannot be written over: checked every time
            assert json.loads(path.read_text("utf-8")) == record
            assert _preview(cli, agent_home, supplied).code == 0
            assert len(seen) == 1


def test_a_file_written_just_now_is_checked_every_time(
    agent_home: Path,
    supplied: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file modified within the last 2 s (clean.RACY_NS) is not recorded: a second write in
    the same tick of the file system's clock, keeping its size, would leave its identity as
    recorded. (A DuckDB file's first preview compiles its stored statement, which checks the
    file, and the statement's run checks it again, as it is not recorded: three checks.)"""
    monkeypatch.setattr(clean, "RACY_NS", 10**18)  # every file was written "just now"
    with _checks(monkeypatch) as seen:
        assert _preview(cli, agent_home, supplied).code == 0
        assert _preview(cli, agent_home, supplied).code == 0
    if supplied.suffix == ".duckdb":
        assert seen == ["sqlalchemy", "stored", "stored"]
    else:
        assert seen == ["sqlalchemy", "sqlalchemy"]
    assert not (agent_home / clean.RECORD).exists()


def test_the_identity_names_the_file_and_what_holds_its_content_beside_it(
    supplied: Path,
) -> None:
    """Resolved path; for the file and its write-ahead or journal files, present or not, size,
    modification and change times, inode and device; the version of the check."""
    kind = supplied.suffix[1:]
    link = supplied.with_name("link")
    link.symlink_to(supplied.name)
    ident = clean.identity(link, kind)
    assert ident is not None and not ident.racy
    st = supplied.stat()
    sides = {
        "sqlite": ["-wal", "-journal"],
        "duckdb": [".wal", ".wal.checkpoint", ".wal.recovery"],
    }[kind]
    assert ident.body == {
        "check": PRACTICE_CHECK_VERSION,
        "kind": kind,
        "path": str(supplied.resolve()),
        "files": {
            "": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev],
            **{s: None for s in sides},
        },
    }
    wal = Path(f"{supplied}{sides[0]}")
    wal.write_bytes(b"")
    assert clean.identity(supplied, kind) != ident  # a write-ahead file appeared
    assert clean.identity(supplied.with_name("absent"), kind) is None


def test_check_source_counts_whatever_is_recorded(
    agent_home: Path,
    supplied: Path,
    cli: Callable[..., Any],
) -> None:
    """check-source always checks: even for a file recorded as clean (here, falsely), it counts
    the row dated before birth."""
    _write_before_birth(supplied)
    ident = clean.identity(_aged(supplied), supplied.suffix[1:])
    assert ident is not None
    clean.record(agent_home, ident)
    r = cli(
        "check-source",
        "--home",
        str(agent_home),
        "--json",
        env={"FEDQI_AGENT_SOURCE__URL": str(supplied)},
    )
    assert r.code == 0, r.err
    assert json.loads(r.out)["before_birth"]["events"] == {"rows": 1, "persons": 1}


def test_a_duckdb_file_written_between_its_compile_and_its_run_is_refused(
    agent_home: Path,
    practice_duckdb: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DuckDB practice's first preview checks the file while compiling its stored statement,
    then closes it; a row dated before birth written before the statement runs changes the
    file, so the run (under DuckDB's lock) checks it again and refuses it: nothing computed on
    rows nobody checked."""
    db = tmp_path / "supplied.duckdb"
    shutil.copyfile(practice_duckdb, db)
    _aged(db)
    real = stored.save

    def save_then_write(home: Path, statement: Any) -> None:
        real(home, statement)
        _write_before_birth(db)  # a practice's writer, between the compile and the run

    monkeypatch.setattr(stored, "save", save_then_write)
    refused = _preview(cli, agent_home, db)
    assert (refused.code, refused.out, refused.err) == (4, "", _refusal(db))


def test_a_sqlite_file_in_wal_mode_is_recorded_and_not_checked_again(
    agent_home: Path,
    practice_db: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SQLite file in WAL mode: opening it makes its -wal file, so its identity is read
    before it is opened; the first preview checks and records it, the next ones do not check."""
    db = tmp_path / "supplied.sqlite"
    shutil.copyfile(practice_db, db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.close()
    with _checks(monkeypatch) as seen:
        for _ in range(3):
            r = _preview(cli, agent_home, db)
            assert r.code == 0, r.err
    assert seen == ["sqlalchemy"]
    assert (agent_home / clean.RECORD).exists()


def _form_statements(dialect: str) -> list[str]:
    """The statements agent.sources.form runs on a database of the canonical types."""
    from agent.sources.form import malformed
    from agent.sources.schema import TABLES
    from agent.sources.store import duckdb_type

    seen: list[str] = []

    def fetch(sql: str) -> list[tuple[Any, ...]]:
        seen.append(sql)
        if "information_schema" in sql:
            return [(t, c.name, duckdb_type(c.type)) for t, tbl in TABLES.items() for c in tbl.c]
        return [(0,) * max(sql.count("FILTER"), 1)]

    assert malformed(dialect, fetch) == []
    return seen


def test_the_check_recorded_as_version_2_is_the_one_the_code_runs() -> None:
    """A record names the version of the check it passed (PRACTICE_CHECK_VERSION); a change to
    what is checked, or to the statements that check it, must raise the version (or the old
    records would skip a check they never passed): this digest changes with them, and then
    this test fails until both are updated. Version 2: values not in their form
    (agent/sources/form.py) as well as rows dated before birth."""
    import hashlib

    from sqlalchemy.dialects import postgresql, sqlite

    from agent.sources.birth import PRACTICE_DATED, practice_check

    parts = [repr(sorted(PRACTICE_DATED.items()))]
    for name, dialect in (("sqlite", sqlite.dialect()), ("postgresql", postgresql.dialect())):
        check = practice_check(name)
        parts.append(str(check.persons.compile(dialect=dialect)))
        parts += [str(q.compile(dialect=dialect)) for _, q in sorted(check.rows.items())]
    for name in ("sqlite", "duckdb", "postgresql"):
        parts += _form_statements(name)
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    assert (PRACTICE_CHECK_VERSION, digest) == (2, DIGEST_OF_VERSION_2), digest


DIGEST_OF_VERSION_2 = "1898427366b584c8"
