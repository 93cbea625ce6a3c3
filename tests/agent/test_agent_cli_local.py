"""The agent CLI on a local practice: init, preview, explain, worklist, and its one-line errors."""

from __future__ import annotations

import ast
import csv
import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

import pytest

from protocol.submission import Submission

PRACTICE = "A12345"
AUD = "test-net"


def test_init_writes_config_and_private_key(agent_home: Path) -> None:
    assert stat.S_IMODE(agent_home.stat().st_mode) == 0o700
    keys = list((agent_home / "keys").glob("*.key"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert 'practice = "A12345"' in (agent_home / "agent.toml").read_text()


def test_init_refuses_an_existing_key(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    before = sorted(p.name for p in (agent_home / "keys").iterdir())
    r = cli("init", "--home", str(agent_home))
    assert r.code != 0 and "refusing to overwrite" in r.err
    assert sorted(p.name for p in (agent_home / "keys").iterdir()) == before


def test_init_rejects_a_bad_value_and_writes_nothing(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "h"
    r = cli("init", "--home", str(home), "--practice", "nope")
    assert r.code == 2 and "Traceback" not in r.err  # a bad argument
    # the option it came from (not a config file), and what an ODS code looks like
    assert "bad value for --practice: a practice's ODS code is a capital letter and five" in r.err
    assert not home.exists()  # not even an empty home
    # In words, not the validator's ("String should match pattern '^[a-z0-9]...'").
    r = cli("init", "--home", str(home), "--practice", "A81001", "--aud", "")
    assert r.code == 2 and "bad value for --aud: a network's name is lower-case letters" in r.err
    assert "should match" not in r.err and not home.exists()


#: What each command that takes --home (init apart, which makes one) needs to reach its reading
#: of the home; "DIR" is a folder that exists. Checked against the commands the CLI has.
NO_HOME_ARGS: dict[str, tuple[str, ...]] = {
    "enrol": ("--token", "t"),
    "rotate-key": (),
    "preview": ("--period", "2026-03"),
    "explain": ("HYP_BP_U80",),
    "worklist": ("HYP_BP_U80",),
    "submit": ("--period", "2026-03"),
    "run": (),
    "pending": (),
    "approve": ("1",),
    "reject": ("1",),
    "audit list": (),
    "audit show": ("1",),
    "audit verify": (),
    "trust show": (),
    "check-source": (),
    "load-csv": ("DIR",),
    "load-fhir": ("DIR",),
}


def _commands_taking_home() -> set[str]:
    import typer.main

    from agent.cli import _load_commands, app

    _load_commands()
    found: set[str] = set()

    def walk(command: object, path: tuple[str, ...]) -> None:
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))
        if any("--home" in getattr(p, "opts", ()) for p in getattr(command, "params", ())):
            found.add(" ".join(path))

    walk(typer.main.get_command(app), ())
    return found


def test_every_command_taking_a_home_is_checked_without_one() -> None:
    assert _commands_taking_home() == {"init", *NO_HOME_ARGS}


@pytest.mark.parametrize("command", sorted(NO_HOME_ARGS))
@pytest.mark.parametrize("given", ["--home", "FEDQI_AGENT_HOME", "a file"])
def test_a_command_on_a_home_that_does_not_exist_says_so(  # type: ignore[no-untyped-def]
    tmp_path: Path, cli, command: str, given: str
) -> None:
    """Every command meets a missing home with the same one line (exit 3), naming the path
    and the init that makes it, before it does anything: some said it, some said trust.json
    was missing, load-csv that it had no store, and explain read the default catalogue."""
    absent = tmp_path / "no such home"
    if given == "a file":
        absent.write_text("not a home\n")
    folder = tmp_path / "extract"
    folder.mkdir()
    args = [str(folder) if a == "DIR" else a for a in NO_HOME_ARGS[command]]
    if given == "FEDQI_AGENT_HOME":
        r = cli(*command.split(), *args, env={"FEDQI_AGENT_HOME": str(absent)})
    else:
        r = cli(*command.split(), *args, "--home", str(absent))
    if given == "a file":
        said = (
            f"error: {absent} is not a directory, so not an agent home: pass the --home that "
            "`fedqi-agent init` made"
        )
        assert absent.read_text() == "not a home\n"
    else:
        said = (
            f"error: there is no agent home at {absent}: run `fedqi-agent init --home "
            f"'{absent}'` to make one, or pass the --home that `fedqi-agent init` made"
        )
        assert not absent.exists()
    assert (r.code, r.err.strip()) == (3, said), (command, r.code, r.err, r.out)


def test_a_load_with_no_store_named_is_a_configuration_error(  # type: ignore[no-untyped-def]
    tmp_path: Path, cli
) -> None:
    """An agent home with no source.url and no --into: the setting to give (exit 3, as for any
    missing setting), not a source that "cannot be read" (it was exit 4)."""
    home = tmp_path / "home"
    assert cli("init", "--home", str(home)).code == 0
    r = cli("load-csv", str(tmp_path), "--home", str(home))
    assert r.code == 3, r.err
    assert "no store to load into: pass --into PATH" in r.err and str(home / "agent.toml") in r.err


def test_a_load_or_check_whose_options_name_everything_needs_no_home(  # type: ignore[no-untyped-def]
    tmp_path: Path, cli, practice_db: Path
) -> None:
    """Without a home, what the options name is read: the home is asked for only when it is
    read (the catalogue, source.url), so these still run where no agent was ever set up."""
    from agent.library import load_default_catalogue

    catalogue = tmp_path / "catalogue.json"
    catalogue.write_bytes(load_default_catalogue().to_bytes())
    absent = str(tmp_path / "no such home")
    r = cli("check-source", "--db", str(practice_db), "--catalogue", str(catalogue),
            "--json", "--home", absent)  # fmt: skip
    assert r.code == 0, r.err
    r = cli("explain", "HYP_BP_U80", "--json", env={"FEDQI_AGENT_HOME": absent,
            "FEDQI_AGENT_CATALOGUE__PATH": str(catalogue)})  # fmt: skip
    assert r.code == 0, r.err
    assert not Path(absent).exists()


def test_preview_json_is_a_valid_submission_payload(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03", "--json")
    assert r.code == 0, r.err
    data = r.out.strip().encode()
    sub = Submission.from_bytes(data)  # canonical bytes, schema and business rules
    assert sub.practice == PRACTICE and sub.aud == AUD and sub.period.label == "2026-03"
    assert Submission.model_validate(json.loads(data)) == sub
    assert len({c.indicator for c in sub.cells}) >= 15


def test_preview_local_labels_exact_counts_as_never_sent(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03", "--local")
    assert r.code == 0, r.err
    assert "NEVER SENT" in r.out and "local denom" in r.out
    assert not (agent_home / "outbox.sqlite").exists()  # preview sends and stores nothing


def test_explain_shows_rule_codelists_codes_and_sql(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("explain", "HYP_BP_U80", "--home", str(agent_home), "--period", "2026-03", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["id"] == "HYP_BP_U80" and "hyp" in info["population"]
    assert {cl["id"] for cl in info["codelists"]} >= {"hyp", "sbp", "dbp"}
    hyp = next(cl for cl in info["codelists"] if cl["id"] == "hyp")
    assert len(hyp["codes"]) == 117 and all(c["code"] for c in hyp["codes"])
    assert hyp["source"]["cluster"] == "HYP_COD" and hyp["source"]["version"]
    assert len(hyp["codes_sha256"]) == 64
    assert "SELECT" in info["sql"].upper() and "2026-03-31" in info["sql"]
    plain = cli("explain", "HYP_BP_U80", "--home", str(agent_home))
    assert plain.code == 0 and "SELECT" in plain.out.upper()
    assert "HYP_COD" in plain.out and "more not shown (--all-codes lists them)" in plain.out
    every = cli("explain", "HYP_BP_U80", "--home", str(agent_home), "--all-codes")
    assert every.code == 0 and "38341003" in every.out


STALE_NOVEMBER = (
    "warning: period 2026-11 ends on 2026-11-30, 244 days after the newest dated record in "
    "the practice database (2026-03-31): its counts would miss everything recorded since (is "
    "the extract still being updated?). "
)


def test_preview_warns_of_a_period_long_after_the_newest_record(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """The practice's records end on 2026-03-31: March previews quietly; November (ended, 244
    days later) still previews, with a warning on stderr naming both dates and the month to
    preview instead; April, 30 days on, is within the 31 days allowed."""
    for period in ("2026-03", "2026-04"):
        r = cli("preview", "--home", str(agent_home), "--period", period)
        assert r.code == 0 and r.err == "", r.err
    r = cli("preview", "--home", str(agent_home), "--period", "2026-11", "--local")
    assert r.code == 0 and "local denom" in r.out
    assert " ".join(r.err.split()) == (
        STALE_NOVEMBER + "The counts below are computed on those records, and submit and run "
        "refuse this period. Load a current extract, or preview --period 2026-03, the month "
        "of the newest record"
    )
    r = cli("preview", "--home", str(agent_home), "--period", "2026-11", "--json")
    assert r.code == 0 and json.loads(r.out)["period"]["end"] == "2026-11-30"  # stdout: JSON
    assert r.err.startswith("warning: period 2026-11 ends on 2026-11-30, 244 days after")


def test_worklist_warns_of_a_period_long_after_the_newest_record(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("worklist", "DM_HBA1C", "--home", str(agent_home), "--period", "2026-11", "--json")
    assert r.code == 0 and json.loads(r.out)["patients"]
    assert " ".join(r.err.split()) == (
        STALE_NOVEMBER + "The list below is computed on those records. Load a current "
        "extract, or use --period 2026-03, the month of the newest record"
    )
    r = cli("worklist", "DM_HBA1C", "--home", str(agent_home), "--period", "2026-03", "--json")
    assert r.code == 0 and r.err == ""


def test_worklist_prints_and_writes_a_private_local_file(
    agent_home: Path,
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    r = cli("worklist", "HYP_BP_U80", "--home", str(agent_home), "--period", "2026-03", "--json")
    assert r.code == 0, r.err
    patients = json.loads(r.out)["patients"]
    assert patients and all(p["local_ref"] for p in patients)
    out = tmp_path / "recall.csv"
    r = cli(
        "worklist",
        "HYP_BP_U80",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        "--out",
        str(out),
    )
    assert r.code == 0, r.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["patient_id", "local_ref", "last_sbp", "last_sbp_date", "last_dbp",
                             "last_dbp_date", "due", "why"]  # fmt: skip
    assert len(rows) == len(patients)
    # the CSV says what the JSON says, patient by patient
    assert [dict(r) for r in rows] == [{k: str(v) for k, v in p.items()} for p in patients]
    # every patient has a due date or is due now; a reading comes with its date
    assert all(r["due"] == "now" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["due"]) for r in rows)
    assert all(bool(r["last_sbp"]) == bool(r["last_sbp_date"]) for r in rows)
    assert any(r["last_sbp"] for r in rows) and any(r["due"] != "now" for r in rows)
    assert {r["why"] for r in rows} <= {"no record", "last record too old", "out of target"}
    assert all((r["why"] == "no record") == (r["due"] == "now") for r in rows)
    again = cli("worklist", "HYP_BP_U80", "--home", str(agent_home), "--out", str(out))
    assert again.code != 0 and "refusing to overwrite" in again.err
    inside = cli(
        "worklist", "HYP_BP_U80", "--home", str(agent_home), "--out", str(agent_home / "w.csv")
    )
    assert inside.code != 0 and "agent home" in inside.err
    assert not (agent_home / "outbox.sqlite").exists()
    # nothing of the worklist was kept in the agent home (where the outbox and logs live)
    refs = {p["local_ref"].encode() for p in patients}
    for f in agent_home.rglob("*"):
        if f.is_file():
            body = f.read_bytes()
            assert not any(ref in body for ref in refs), f


def test_worklist_code_cannot_reach_the_outbox() -> None:
    """The worklist modules import nothing that signs, stores or sends."""
    repo = Path(__file__).resolve().parents[2]
    forbidden = {
        "agent.outbound.outbox",
        "agent.outbound.transport",
        "agent.outbound.release",
        "agent.outbound.submitter",
        "agent.outbound.enrolment",
        "agent.outbound.audit",
        "protocol.envelope",
        "protocol.keys",
    }
    for rel in ("agent/engine/worklist.py", "agent/commands/worklist.py"):
        tree = ast.parse((repo / rel).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if node.level == 0 else f"agent.{node.module}"
                imported.add(base)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        assert not imported & forbidden, (rel, imported & forbidden)


# --- one-line errors ------------------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_bad_config_key_is_one_line_naming_key_and_file(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    config = agent_home / "agent.toml"
    config.write_text('relase = "hold"\n' + config.read_text())
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03")
    line = _one_line(r.err)
    assert r.code == 3 and "'relase'" in line and str(config) in line


def test_unknown_indicator_is_one_line(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    for command in ("explain", "worklist"):
        r = cli(command, "NOPE_1", "--home", str(agent_home))
        assert r.code != 0 and "unknown indicator 'NOPE_1'" in _one_line(r.err)


@pytest.mark.parametrize("content", [None, b"this is not a database at all" * 100, b""])
def test_unreadable_database_is_one_line(agent_home: Path, tmp_path: Path, cli, content) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "broken.db"
    if content is not None:
        db.write_bytes(content)
    env = {"FEDQI_AGENT_SOURCE__URL": str(db)}
    r = cli("preview", "--home", str(agent_home), "--period", "2026-03", env=env)
    line = _one_line(r.err)
    assert r.code == 4 and "broken.db" in line, line


def test_every_command_that_computes_refuses_a_practice_database_with_a_record_before_birth(
    agent_home: Path,
    practice_db: Path,
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """A practice database in the canonical tables, supplied as it is (never loaded, so never
    checked), with one medication dated before its patient's birth: preview, submit, worklist
    and explain stop (exit 4) naming the table, the column and the counts, not the patient or
    the date, as for an OMOP source (tests/agent/test_agent_omop_source.py); nothing is signed
    or queued and the database is not written to. The same database without it is read."""
    import shutil
    import sqlite3

    import agent.outbound.submitter as submitter
    from agent.home.keystore import PinnedKey, Trust, save_trust
    from agent.library import load_default_catalogue
    from agent.outbound.outbox import Outbox
    from protocol.keys import SigningKey

    db = tmp_path / "supplied.db"
    shutil.copyfile(practice_db, db)
    preview = ("preview", "--home", str(agent_home), "--period", "2026-03", "--local")
    env = {"FEDQI_AGENT_SOURCE__URL": str(db)}
    assert cli(*preview, env=env).code == 0  # a clean database is read
    with sqlite3.connect(db) as conn:
        pid, local_ref, birth = conn.execute(
            "SELECT patient_id, local_ref, birth_date FROM patients ORDER BY patient_id LIMIT 1"
        ).fetchone()
        day = (dt.date.fromisoformat(birth) - dt.timedelta(days=1)).isoformat()
        conn.execute(
            "INSERT INTO medications (patient_id, date, system, code) VALUES (?, ?, 'dmd', '1')",
            (pid, day),
        )
    conn.close()
    before = db.read_bytes()
    expected = (
        f"error: source.url: the practice database {db} has rows dated before their patient's "
        "birth (patients.birth_date): medications.date 1 row(s) of 1 person(s). A record cannot "
        "precede the patient's birth, so nothing is computed from this database until they are "
        "corrected in it (check-source counts them; docs/sources.md shows how to list them)\n"
    )  # the whole of it: no patient id, no date
    r = cli(*preview, env=env)
    assert (r.code, r.out, r.err) == (4, "", expected)
    assert local_ref not in r.err and day not in r.err and birth not in r.err
    for command in (
        ("worklist", "DM_HBA1C", "--period", "2026-03"),
        ("explain", "DM_HBA1C"),
    ):
        r = cli(*command, "--home", str(agent_home), env=env)
        assert (r.code, r.err) == (4, expected), command

    key = SigningKey.from_private_bytes(bytes(32))
    # Enrolled to look at, with the network's catalogue to hand (no aggregator answers):
    # submit gets as far as computing.
    monkeypatch.setattr(submitter, "load_catalogue", lambda *_a, **_k: load_default_catalogue())
    # and is not first asked whether it is the aggregator enrolled with
    monkeypatch.setattr(submitter, "check_before_sending", lambda *_a, **_k: None)
    save_trust(
        agent_home,
        Trust(
            aud=AUD,
            practice=PRACTICE,
            aggregator_url="http://127.0.0.1:9",
            log_origin="test-net/log/v1",
            log_key=PinnedKey(name="test-net/log/v1", jwk=key.public.jwk()),
        ),
    )
    r = cli("submit", "--home", str(agent_home), "--period", "2026-03", env=env)
    assert (r.code, r.err) == (4, expected)
    with Outbox.open(agent_home) as outbox:
        assert outbox.messages() == []  # nothing signed, nothing queued
    assert db.read_bytes() == before


@pytest.mark.parametrize("period", ["2026-3", "2026-13", "26-03", "March", ""])
def test_bad_period_is_one_line(agent_home: Path, cli, period: str) -> None:  # type: ignore[no-untyped-def]
    for command in ("preview", "submit"):
        r = cli(command, "--home", str(agent_home), "--period", period)
        assert r.code == 2 and "bad period" in _one_line(r.err)


def test_aggregator_unreachable_is_told_try_by_try_then_one_line(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    env = {"FEDQI_AGENT_TRANSPORT__RETRIES": "2", "FEDQI_AGENT_TRANSPORT__BACKOFF": "0"}
    r = cli("enrol", "--home", str(agent_home), "--token", "A" * 22, env=env)
    lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
    assert r.code == 5 and "Traceback" not in r.err, r.err
    # each failed try as it happens (docs/configuration.md, "Exit codes"), then the error
    assert len(lines) == 3, r.err
    for n, line in enumerate(lines[:2], 1):
        assert line.startswith(f"GET /v1/log/key: try {n} of 3 failed (ConnectError"), r.err
        assert line.endswith("; next in 0 s"), r.err
    assert lines[2].startswith("error: ") and "unreachable at http://127.0.0.1:9" in lines[2]


def test_submit_before_enrolment_says_enrol(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("submit", "--home", str(agent_home), "--period", "2026-03")
    assert r.code == 3 and "fedqi-agent enrol" in _one_line(r.err)


def test_stricter_disclosure_must_tighten(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    looser = '{"name": "looser", "stratified": {"suppress_at_or_below": 2, "round_to": 1}}'
    r = cli(
        "preview",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        env={"FEDQI_AGENT_DISCLOSURE": looser},
    )
    assert r.code == 3 and "does not tighten" in _one_line(r.err)
    stricter = '{"name": "stricter", "stratified": {"suppress_at_or_below": 10, "round_to": 10}}'
    r = cli(
        "preview",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        "--json",
        env={"FEDQI_AGENT_DISCLOSURE": stricter},
    )
    assert r.code == 0, r.err
    sub = Submission.from_bytes(r.out.strip().encode())
    values = [
        c.value
        for cell in sub.cells
        if not cell.stratum.is_total
        for c in (cell.denominator, cell.numerator, cell.exclusions)
        if c.status == "rounded"
    ]
    assert values and all(v % 10 == 0 for v in values if v is not None)


@pytest.mark.parametrize(
    ("period", "today", "ended"),
    [
        ("2026-11", dt.date(2026, 11, 30), False),  # its last day is today
        ("2026-11", dt.date(2026, 12, 1), True),
        ("2026-12", dt.date(2026, 12, 4), False),
        ("2027-01", dt.date(2026, 12, 4), False),
        ("2025-12", dt.date(2026, 1, 1), True),
    ],
)
def test_a_period_has_ended_once_its_last_day_is_before_today(
    period: str, today: dt.date, ended: bool
) -> None:
    from agent.errors import AgentUserError
    from agent.periods import last_complete_period, parse_period, require_ended

    p = parse_period(period)
    if ended:
        assert require_ended(p, today) == p
    else:
        with pytest.raises(AgentUserError) as exc:
            require_ended(p, today)
        assert f"period {period} has not ended" in str(exc.value)
        assert f"latest complete period is {last_complete_period(today).label}" in str(exc.value)


def test_init_writes_a_source_beside_the_user_by_its_absolute_path(
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--source-url p.sqlite run beside p.sqlite means that file, though agent.toml reads a
    relative path relative to the agent home: init writes its absolute path and says so."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.sqlite").write_bytes(b"")  # beside the user, not in the agent home
    r = cli("init", "--home", "ha", "--source-url", "p.sqlite")
    assert r.code == 0, r.err
    assert (
        "source.url: p.sqlite is not in the agent home but in the current directory; "
        f"ha/agent.toml names it by its absolute path, {tmp_path / 'p.sqlite'}"
    ) in " ".join(r.err.split())
    assert "warning" not in r.err
    assert f'url = "{tmp_path / "p.sqlite"}"' in (tmp_path / "ha" / "agent.toml").read_text()
    r = cli("preview", "--home", "ha", "--period", "2026-03", "--local")
    assert "no such file" not in r.err  # the file it names is the one beside the user
    # the same for a SQLite or DuckDB URL's relative database path
    r = cli("init", "--home", "hu", "--source-url", "sqlite:///p.sqlite")
    assert r.code == 0, r.err
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    assert f"hu/agent.toml names it by its absolute path, {url}" in " ".join(r.err.split())
    assert f'url = "{url}"' in (tmp_path / "hu" / "agent.toml").read_text()


def test_a_relative_database_in_a_url_is_relative_to_the_agent_home(tmp_path: Path) -> None:
    """As a relative path is: a command's working directory (a timer's) does not change which
    database it reads."""
    from agent.engine.compute import source_target
    from agent.home.settings import get_settings

    home = tmp_path / "home"
    home.mkdir()
    for url, target in (
        ("duckdb:///p.duckdb", f"duckdb:///{home / 'p.duckdb'}"),
        ("sqlite:///data/p.sqlite", f"sqlite:///{home / 'data/p.sqlite'}"),
        ("sqlite+pysqlite:///p.db?mode=ro", f"sqlite+pysqlite:///{home / 'p.db'}?mode=ro"),
        ("p.duckdb", str(home / "p.duckdb")),
        (f"duckdb:///{tmp_path / 'abs.duckdb'}", f"duckdb:///{tmp_path / 'abs.duckdb'}"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://u@h/practice", "postgresql://u@h/practice"),
    ):
        settings = get_settings(home, {}, source={"url": url})
        assert source_target(settings) == target, url


def test_a_source_url_whose_port_is_not_a_number_is_refused_up_front(
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    """Such a URL reached the database driver's parser at the first command that read the
    source, which ended in a traceback; init now refuses it (nothing written), a config or
    environment variable carrying it is a bad setting, and --db with it a source error. The
    password in the URL is not shown."""
    from agent.errors import SourceError
    from agent.sources.store import practice_url

    bad = "postgresql://fedqi:secret@db.example:abc/practice"
    r = cli("init", "--home", str(tmp_path / "h"), "--source-url", bad)
    assert r.code == 2 and r.out == "", r.err
    assert "--source-url" in r.err and "the port after the host is not a number" in r.err
    assert "secret" not in r.err and "fedqi:***@db.example:abc" in r.err
    assert not (tmp_path / "h").exists()
    with pytest.raises(SourceError, match="the port after the host is not a number") as exc:
        practice_url(bad)
    assert "secret" not in str(exc.value)


def test_init_warns_when_the_source_it_will_read_does_not_exist(
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("init", "--home", "ha", "--source-url", "p.sqlite")  # nowhere
    assert r.code == 0, r.err
    assert (
        "warning: source.url p.sqlite resolves to ha/p.sqlite, which does not exist (a relative "
        "path is read relative to the agent home)"
    ) in " ".join(r.err.split())
    assert 'url = "p.sqlite"' in (tmp_path / "ha" / "agent.toml").read_text()
    r = cli("init", "--home", "hb", "--source-url", str(tmp_path / "gone.sqlite"))
    assert r.code == 0 and f"warning: source.url {tmp_path / 'gone.sqlite'} does not exist" in r.err
    (tmp_path / "hc").mkdir()
    (tmp_path / "hc" / "p.sqlite").write_bytes(b"")
    r = cli("init", "--home", "hc", "--source-url", "p.sqlite")  # there, as resolved: no warning
    assert r.code == 0 and r.err == ""
    # an agent.toml written by hand, naming a file beside the user: init keeps the file as it
    # is and says where that file is
    (tmp_path / "hd").mkdir()
    (tmp_path / "hd" / "agent.toml").write_text('[source]\nurl = "q.sqlite"\n')
    (tmp_path / "q.sqlite").write_bytes(b"")
    r = cli("init", "--home", "hd")
    assert r.code == 0, r.err
    assert (
        "warning: source.url q.sqlite resolves to hd/q.sqlite, which does not exist (a relative "
        "path is read relative to the agent home); q.sqlite exists in the current directory: set "
        f"source.url to its absolute path, {tmp_path / 'q.sqlite'}, in hd/agent.toml"
    ) in " ".join(r.err.split())


def test_init_refuses_a_home_that_is_a_file(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    r = cli("init", "--home", str(afile))
    assert r.code == 2
    assert r.err.strip() == (
        f"error: agent home {afile}: the agent home must be a directory, and {afile} is a file"
    )
    assert afile.read_text() == "not a directory"


def test_init_names_the_next_steps_in_order(tmp_path: Path, practice_db: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from agent.periods import last_complete_period

    latest = last_complete_period(dt.date.today()).label
    full = cli("init", "--home", str(tmp_path / "full"), "--practice", PRACTICE, "--aud", AUD,
               "--aggregator-url", "http://127.0.0.1:9", "--source-url", str(practice_db))  # fmt: skip
    assert full.code == 0, full.err
    hint = " ".join(full.out.split()).split("next: ", 1)[1]
    assert "set " not in hint  # nothing is missing
    home = tmp_path / "full"
    # the commands to copy carry the --home init was given
    assert hint.index(f"fedqi-agent preview --home {home} --period {latest} --local") < hint.index(
        f"fedqi-agent enrol --home {home} --token"
    )
    # the preview it names runs as it stands
    assert cli("preview", "--home", str(home), "--period", latest).code == 0
    bare = cli("init", "--home", str(tmp_path / "bare"))
    hint = " ".join(bare.out.split()).split("next: ", 1)[1]
    assert hint.startswith("set practice, aud, aggregator_url, source in ")
    assert "fedqi-agent preview" in hint and "fedqi-agent enrol" in hint


def test_every_indicator_a_help_text_names_is_in_the_default_catalogue() -> None:
    import re

    import typer.main

    from agent.cli import _load_commands, app
    from agent.library import load_default_catalogue

    _load_commands()
    known = {i.id for i in load_default_catalogue().indicators}
    named = []
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            text = getattr(param, "help", None) or ""
            if "indicator" in text:
                named += [(name, m) for m in re.findall(r"e\.g\. ([A-Z][A-Z0-9_]+)", text)]
    assert named, "no help text names an example indicator"
    assert [(c, i) for c, i in named if i not in known] == []


def test_the_command_table_names_each_module_s_commands() -> None:
    """``agent.cli.COMMAND_MODULES`` (which module a command line imports) against what each
    module registers on the app when it is imported."""
    import importlib

    from agent.cli import COMMAND_MODULES, app

    for name in COMMAND_MODULES:
        importlib.import_module(name)
    registered: dict[str, list[str]] = {}
    for c in app.registered_commands:
        assert c.callback is not None
        name = c.name or c.callback.__name__.replace("_", "-")
        registered.setdefault(c.callback.__module__, []).append(name)
    for g in app.registered_groups:
        assert g.name is not None and g.typer_instance is not None
        modules = {
            c.callback.__module__ for c in g.typer_instance.registered_commands if c.callback
        }
        assert len(modules) == 1, (g.name, modules)
        registered.setdefault(modules.pop(), []).append(g.name)
    registered.pop("agent.cli")  # ``version``, defined beside the table
    assert {m: sorted(c) for m, c in registered.items()} == {
        m: sorted(c) for m, c in COMMAND_MODULES.items()
    }


def test_preview_loads_neither_the_sending_path_nor_an_unused_guard(
    agent_home: Path, tmp_path: Path
) -> None:
    """Start-up is most of a preview's cost (docs/benchmarks.md): a ``preview`` process imports
    only its own command, never httpx (transport) or the synthetic practice generator; numpy
    and HiGHS only when the practice's disclosure guard is on (they are its solvers); SciPy not
    even then (the guard's sparse matrices are its own, agent/outbound/sparse.py, and SciPy's
    integer program loads only for a release whose linear relaxation does not settle it, which
    this practice's does)."""
    from tests.agent_process import agent_modules

    home = str(agent_home)

    def loaded(guard: str) -> set[str]:
        out, modules = agent_modules(
            "preview", "--home", home, "--period", "2026-03", "--json",
            env={"FEDQI_AGENT_GUARD": guard},
        )  # fmt: skip
        assert Submission.from_bytes(out.strip().encode()).period.label == "2026-03"
        return modules

    solvers = {"numpy", "highspy", "agent.outbound.guard", "agent.outbound.sparse"}
    for guard in ("on", "off"):
        modules = loaded(guard)
        assert "agent.commands.report" in modules
        assert modules & {"httpx", "agent.sources.synth"} == set()
        assert {m for m in modules if m.startswith("agent.commands.")} <= {
            "agent.commands",
            "agent.commands._cells",
            "agent.commands._common",
            "agent.commands.report",
        }
        assert (modules & solvers == solvers) if guard == "on" else not modules & solvers
        assert not {m for m in modules if m == "scipy" or m.startswith("scipy.")}


def test_the_console_script_loads_with_the_collector_paused_then_turns_it_on() -> None:
    """``fedqi-agent`` (agent.entry) freezes what start-up made and leaves the cyclic collector
    on for the command itself; an error still exits with its code."""
    import subprocess
    import sys

    script = (
        "import gc, sys\n"
        "from agent.entry import main\n"
        "code = main(sys.argv[1:])\n"
        "frozen = gc.get_freeze_count()\n"
        "print('GC', gc.isenabled(), frozen > 1000, code)\n"
        "code = main(sys.argv[1:], {})  # a second command line in the process (the demo's)\n"
        "print('GC', gc.isenabled(), gc.get_freeze_count() == frozen, code)\n"
    )
    ok = subprocess.run(
        [sys.executable, "-c", script, "version"], capture_output=True, text=True, check=True
    )
    lines = ok.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("fedqi-agent ") and lines[2] == lines[0]
    assert lines[1] == lines[3] == "GC True True 0"
    bad = subprocess.run(
        [sys.executable, "-m", "agent", "preview", "--period", "2026-13"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "2026-13" in bad.stderr, bad.stderr


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
    reason="counts the process's threads in /proc, on a machine with more than one core",
)
def test_the_console_script_holds_openblas_to_one_thread_unless_told_otherwise() -> None:
    """NumPy's OpenBLAS starts a thread per core when it loads (about 0.07 s of CPU in every
    command, docs/benchmarks.md); ``fedqi-agent`` holds it to one unless the environment sets
    OPENBLAS_NUM_THREADS, which it leaves as it is."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from agent.entry import main\n"
        "code = main(['version'])\n"
        "assert 'numpy' not in sys.modules\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "import numpy\n"
        "print('BLAS', os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')) - before, code)\n"
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    held = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert held.stdout.splitlines()[-1] == "BLAS 1 0 0", held.stdout
    told = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "OPENBLAS_NUM_THREADS": "2"},
    )
    assert told.stdout.splitlines()[-1] == "BLAS 2 1 0", told.stdout


def test_enrol_with_a_malformed_token_says_what_a_token_is(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("enrol", "--home", str(agent_home), "--token", "not a token")
    assert r.code == 2 and "--token: not an enrolment token (22 to 64 letters" in r.err
    assert "not a token" not in r.err  # a token is a secret: never echoed
    assert "pydantic" not in r.err and r.err.count("\n") == 1


def test_a_worklist_of_a_period_that_has_not_ended_is_refused(agent_home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("worklist", "HYP_BP_U80", "--home", str(agent_home), "--period", "2099-01")
    assert r.code == 2 and "period 2099-01 has not ended" in r.err
    # The current month, unfinished, is refused as preview and submit refuse it.
    current = dt.date.today().strftime("%Y-%m")
    r = cli("worklist", "HYP_BP_U80", "--home", str(agent_home), "--period", current)
    assert r.code == 2 and f"period {current} has not ended" in r.err
    assert "the latest complete period is" in r.err
    r = cli("worklist", "DM_REG", "--home", str(agent_home))
    assert r.code == 2 and "DM_REG is a register" in r.err and "no worklist" in r.err


def test_a_worklist_of_one_patient_says_one_patient(agent_home: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A new-user run read "1 patients in the denominator". The shared practice has one
    patient in AF_ANTICOAG's denominator but not its numerator in 2026-03."""
    args = ("worklist", "AF_ANTICOAG", "--home", str(agent_home), "--period", "2026-03")
    r = cli(*args, "--json")
    assert r.code == 0 and len(json.loads(r.out)["patients"]) == 1, r.out
    r = cli(*args)
    text = " ".join(r.out.split())
    assert r.code == 0 and "1 patient in the denominator but not the numerator" in text, text
    assert "1 patients" not in text and "For each" not in text
    r = cli(*args, "--out", str(tmp_path / "one.csv"))
    assert r.code == 0 and "1 patient written to" in " ".join(r.out.split()), r.out
