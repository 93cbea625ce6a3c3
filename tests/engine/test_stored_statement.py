"""A DuckDB practice's stored statement (agent/engine/stored.py): the same cells as compiling
every time, for any period end; keyed by everything its SQL depends on; a damaged or stale file
is compiled again; no patient data in it; and a preview that finds it loads no SQLAlchemy.

The spec tests also run on it (the ``duckdb-stored`` engine of tests/engine/conftest.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import duckdb
import pytest

from agent.engine import compute_cells, stored
from agent.engine.compute import compute_raw_cells, newest_record
from agent.errors import SourceError
from agent.home.settings import get_settings
from agent.library import load_default_catalogue
from agent.sources.store import open_practice
from agent.sources.synth import generate_practice
from protocol.catalogue import Catalogue
from tests.agent_process import agent_modules

REPO = Path(__file__).resolve().parents[2]
# Month ends of every shape: 31, 30, 28 and a leap day (date bounds clip to the month's end).
TABLES_DATED = ("events", "medications")
ENDS = [dt.date(2026, 3, 31), dt.date(2025, 11, 30), dt.date(2025, 2, 28), dt.date(2024, 2, 29)]


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stored") / "practice.duckdb"
    generate_practice(path, patients=400, seed=11, period_end=dt.date(2026, 3, 31))
    return path


@pytest.fixture
def home(tmp_path: Path, practice: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "agent.toml").write_text(f'[source]\nurl = "{practice}"\n')
    return home


def _compiled(practice: Path, catalogue: Catalogue, end: dt.date, indicators=None):
    engine = open_practice(practice, read_only=True)
    try:
        return compute_cells(engine, catalogue, end, indicators)
    finally:
        engine.dispose()


def _files(home: Path) -> list[Path]:
    return sorted((home / stored.STATEMENTS_DIR).glob("*.json"))


def test_stored_statement_gives_the_compiled_cells_for_every_period(
    home: Path, practice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = load_default_catalogue()
    settings = get_settings(home, environ={})
    computed = compute_raw_cells(settings, catalogue, ENDS[0])
    first, kind = computed.cells, computed.kind
    assert kind == "duckdb"
    assert [p.stat().st_mode & 0o777 for p in _files(home)] == [0o600]
    assert first == _compiled(practice, catalogue, ENDS[0])
    assert sum(c.denominator for c in first if c.age_band == "all") > 0  # not vacuous

    # Later periods read the stored statement: compiling again would fail here.
    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(stored, "compile_statement", no_compiling)
    for end in ENDS[1:]:
        cells = compute_raw_cells(settings, catalogue, end).cells
        assert cells == _compiled(practice, catalogue, end), end
    assert len(_files(home)) == 1


def test_a_subset_of_indicators_has_its_own_statement(home: Path, practice: Path) -> None:
    catalogue = load_default_catalogue()
    settings = get_settings(home, environ={})
    some = [catalogue.indicators[3].id, catalogue.indicators[0].id]
    cells = compute_raw_cells(settings, catalogue, ENDS[0], some).cells
    assert cells == _compiled(practice, catalogue, ENDS[0], some)
    assert {c.indicator for c in cells} == set(some)
    compute_raw_cells(settings, catalogue, ENDS[0])
    assert len(_files(home)) == 2


def test_the_key_names_catalogue_indicators_and_matching() -> None:
    catalogue = load_default_catalogue()
    key = stored.statement_key(catalogue, None)
    assert key == stored.statement_key(catalogue, None)
    changed = catalogue.model_copy(update={"version": catalogue.version + 1})
    assert (
        len(
            {
                key,
                stored.statement_key(changed, None),
                stored.statement_key(catalogue, [catalogue.indicators[0].id]),
                stored.statement_key(catalogue, None, "in"),
            }
        )
        == 4
    )


def test_the_code_fingerprint_follows_every_source_file(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    before = stored.fingerprint([pkg], ["duckdb=1"])
    assert before == stored.fingerprint([pkg], ["duckdb=1"])
    assert before != stored.fingerprint([pkg], ["duckdb=2"])
    (pkg / "sub" / "b.py").write_text("B = 3\n")
    edited = stored.fingerprint([pkg], ["duckdb=1"])
    assert edited != before
    (pkg / "c.py").write_text("")
    assert stored.fingerprint([pkg], ["duckdb=1"]) not in (before, edited)
    # This checkout's own fingerprint covers the engine's compiler.
    assert stored.code_fingerprint() == stored.fingerprint(
        [REPO / "agent", REPO / "protocol"],
        [f"{d}={v}" for d, v in _versions().items()],
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {d: version(d) for d in ("sqlalchemy", "duckdb_engine", "duckdb")}


@pytest.mark.parametrize("damage", ["truncated", "edited", "other key", "not json"])
def test_a_damaged_statement_is_compiled_again(home: Path, practice: Path, damage: str) -> None:
    catalogue = load_default_catalogue()
    settings = get_settings(home, environ={})
    compute_raw_cells(settings, catalogue, ENDS[0])
    [path] = _files(home)
    text = path.read_text()
    data = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "edited":  # a changed number, the digest left as it was
        data["body"]["sql"] = data["body"]["sql"].replace("sum(", "2 * sum(", 1)
        assert data["body"]["sql"] != json.loads(text)["body"]["sql"]
        path.write_text(json.dumps(data))
    elif damage == "other key":
        data["body"]["key"] = "0" * 64
        path.write_text(json.dumps(data))
    else:
        path.write_bytes(b"\x00\xff")
    assert stored.load(home, path.stem) is None
    cells = compute_raw_cells(settings, catalogue, ENDS[2]).cells
    assert cells == _compiled(practice, catalogue, ENDS[2])
    assert json.loads(path.read_text()) == json.loads(text)  # written again, whole


def test_only_the_newest_statements_are_kept(home: Path) -> None:
    catalogue = load_default_catalogue()
    settings = get_settings(home, environ={})
    ids = [i.id for i in catalogue.indicators]
    for n in range(stored.KEEP + 2):
        compute_raw_cells(settings, catalogue, ENDS[0], ids[n : n + 1])
        newest = max(_files(home), key=lambda p: p.stat().st_mtime_ns)
        os.utime(newest, ns=(n * 10**9, n * 10**9))  # distinct times, oldest first
    assert len(_files(home)) == stored.KEEP


def test_a_statement_holds_no_patient_data(home: Path, practice: Path) -> None:
    compute_raw_cells(get_settings(home, environ={}), load_default_catalogue(), ENDS[0])
    [path] = _files(home)
    text = path.read_text()
    with duckdb.connect(str(practice), read_only=True) as con:
        refs = [r[0] for r in con.execute("SELECT local_ref FROM patients").fetchall()]
        births = [r[0] for r in con.execute("SELECT DISTINCT birth_date FROM patients").fetchall()]
    assert refs and not [r for r in refs if r and str(r) in text]
    # No date at all: every date bound is a parameter computed from the period end.
    assert not [b for b in births if b.isoformat() in text]
    body = json.loads(text)["body"]
    assert all(not n.startswith("end__") for n in body["constants"])
    assert {n for n in body["names"] if n.startswith("end__")} >= {"end__period_end"}


def test_a_practice_file_without_the_tables_is_one_line(home: Path, tmp_path: Path) -> None:
    catalogue = load_default_catalogue()
    settings = get_settings(home, environ={})
    compute_raw_cells(settings, catalogue, ENDS[0])  # the statement is stored
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE patients (patient_id INTEGER)")
    (home / "agent.toml").write_text(f'[source]\nurl = "{other}"\n')
    with pytest.raises(SourceError, match=r"has no table events, medications \(not a fedqi"):
        compute_raw_cells(get_settings(home, environ={}), catalogue, ENDS[0])


def test_the_stored_statement_refuses_a_record_before_birth(
    home: Path, practice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DuckDB practice whose statement is stored never opens SQLAlchemy, so the stored
    statement carries the before-birth check (agent.sources.birth), run first on its own
    connection: the same refusal as opening the database does (tests/agent), counts only."""
    import shutil

    catalogue = load_default_catalogue()
    compute_raw_cells(get_settings(home, environ={}), catalogue, ENDS[0])  # the statement is stored
    supplied = tmp_path / "supplied.duckdb"
    shutil.copyfile(practice, supplied)
    with duckdb.connect(str(supplied)) as con:
        pid, birth = con.execute(
            "SELECT patient_id, birth_date FROM patients ORDER BY patient_id LIMIT 1"
        ).fetchone()
        con.execute(
            "INSERT INTO events VALUES (?, ?, 'snomedct', '38341003', NULL, NULL), "
            "(?, ?, 'snomedct', '38341003', NULL, NULL)",
            [pid, birth - dt.timedelta(days=1), pid, birth - dt.timedelta(days=400)],
        )
    (home / "agent.toml").write_text(f'[source]\nurl = "{supplied}"\n')
    expected = (
        f"source.url: the practice database {supplied} has rows dated before their patient's "
        "birth (patients.birth_date): events.date 2 row(s) of 1 person(s). A record cannot "
        "precede the patient's birth, so nothing is computed from this database until they "
        "are corrected in it (check-source counts them; docs/sources.md shows how to list them)"
    )
    # A home with no statement yet: opening the file to compile one refuses it.
    cold = tmp_path / "cold"
    cold.mkdir()
    (cold / "agent.toml").write_text(f'[source]\nurl = "{supplied}"\n')
    with pytest.raises(SourceError, match=r"^source\.url: the practice database") as err:
        compute_raw_cells(get_settings(cold, environ={}), catalogue, ENDS[0])
    assert str(err.value) == expected and not _files(cold)

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(stored, "compile_statement", no_compiling)  # the stored path, then
    with pytest.raises(SourceError) as err:
        compute_raw_cells(get_settings(home, environ={}), catalogue, ENDS[0])
    assert str(err.value) == expected
    assert err.value.exit_code == 4


def test_a_preview_that_finds_its_statement_loads_no_sqlalchemy(
    tmp_path: Path, practice: Path
) -> None:
    """The point of storing it (docs/benchmarks.md): the first preview compiles and stores the
    statement with SQLAlchemy and duckdb_engine; the next loads neither, and prints the same."""
    home = tmp_path / "home"

    def agent(*args: str) -> tuple[str, set[str]]:
        return agent_modules(*args, env={"FEDQI_AGENT_GUARD": "off"})

    agent("init", "--home", str(home), "--practice", "A12345", "--aud", "test-net",
          "--aggregator-url", "http://127.0.0.1:9", "--source-url", str(practice))  # fmt: skip
    preview = ("preview", "--home", str(home), "--period", "2026-03", "--local")
    first_out, first = agent(*preview)
    second_out, second = agent(*preview)
    assert {"sqlalchemy", "duckdb_engine"} <= first
    assert not {m for m in second if m.split(".")[0] in ("sqlalchemy", "duckdb_engine")}
    assert "duckdb" in second
    assert second_out == first_out


def test_the_newest_record_comes_with_the_cells(home: Path, practice: Path, tmp_path: Path) -> None:
    """The newest dated record (agent.periods.stale_source compares the period with it) is the
    same from the stored statement's connection as from SQLAlchemy, on DuckDB and SQLite: the
    latest of the events' and the medications' dates."""
    con = duckdb.connect(str(practice), read_only=True)
    try:
        dates = [con.execute(f"SELECT max(date) FROM {t}").fetchone()[0] for t in TABLES_DATED]
    finally:
        con.close()
    computed = compute_raw_cells(get_settings(home, environ={}), load_default_catalogue(), ENDS[1])
    assert computed.newest == max(dates) == dt.date(2026, 3, 31)
    engine = open_practice(practice, read_only=True)
    try:
        assert newest_record(engine) == computed.newest
    finally:
        engine.dispose()
    sqlite = tmp_path / "p.sqlite"
    generate_practice(sqlite, patients=30, seed=2, period_end=dt.date(2025, 6, 15))
    with closing(sqlite3.connect(sqlite)) as db:
        text = max(db.execute(f"SELECT max(date) FROM {t}").fetchone()[0] for t in TABLES_DATED)
    engine = open_practice(sqlite, read_only=True)
    try:
        assert newest_record(engine) == dt.date.fromisoformat(text) <= dt.date(2025, 6, 15)
    finally:
        engine.dispose()
