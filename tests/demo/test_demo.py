"""End to end: `fedqi-demo --once --json` builds a small network through the real CLIs and HTTP,
and its summary is checked here against what the agents and the aggregator actually hold."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.cli import MAX_PATIENTS, MIN_PATIENTS, main, plan_network
from tests.demo_process import serve_demo
from tests.ports import free_port, on_a_free_port, started

REPO = Path(__file__).resolve().parents[2]
DEMO = Path(sys.executable).parent / "fedqi-demo"
PRACTICES, GROUPS, PERIODS = 3, 2, 2


def _run_demo(home: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [
            str(DEMO),
            "--practices", str(PRACTICES),
            "--groups", str(GROUPS),
            "--periods", str(PERIODS),
            "--once", "--json",
            "--home", str(home),
            "--port", "0",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=home.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    if not DEMO.exists():
        pytest.fail(f"{DEMO} is not installed (pip install -e .)")
    home = tmp_path_factory.mktemp("demo") / "demo-home"
    proc, summary = _run_demo(home)
    return home, summary, proc.stderr


def test_demo_summary_counts_match_the_network(demo: tuple[Path, dict[str, Any], str]) -> None:
    _, s, _ = demo
    assert s["ok"] is True, s["failures"]
    assert s["failures"] == []
    assert s["mode"] == "new"
    assert s["practices"] == {"planned": PRACTICES, "registered": PRACTICES, "enrolled": PRACTICES}
    assert s["periods"]["per_practice"] == PERIODS
    sub = s["submissions"]
    assert sub == {
        "expected": PRACTICES * PERIODS,
        "accepted": PRACTICES * PERIODS,
        "rejected": 0,
        "pending": 0,
        # months the disclosure guard held in this run, each approved by the demo and accepted
        "guard_holds_approved": sub["guard_holds_approved"],
    }
    assert 0 <= sub["guard_holds_approved"] <= PRACTICES * PERIODS
    # every enrolment and every accepted submission is a leaf of the log
    assert s["log"]["size"] >= PRACTICES + sub["accepted"]
    assert s["log"]["checkpoint_verified"] is True
    assert s["audit"] == {"verified": PRACTICES, "failed": [], "all_passed": True}
    assert s["dashboard"] == {"reachable": True, "practices_shown": PRACTICES}
    assert [u["role"] for u in s["users"]] == ["admin", "network_lead", "practice", "ig_officer"]
    assert s["url"].startswith("http://127.0.0.1:") and s["url"].endswith("/dashboard")
    assert len(s["network"]["groups"]) == GROUPS
    # every step a process of its own: per practice synth, practice add, init, enrol-token,
    # enrol, run and audit verify
    assert s["commands_run"] >= 7 * PRACTICES
    assert s["cpu_seconds"]["commands"] > 0


def test_demo_summary_agrees_with_each_agents_outbox(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    home, s, _ = demo
    agents = sorted((home / "agents").iterdir())
    assert len(agents) == PRACTICES
    accepted = 0
    for agent_home in agents:
        # each agent has its own key and its own outbox, holding its receipts
        keys = [k for k in (agent_home / "keys").glob("*.key")]
        assert len(keys) == 1 and oct(keys[0].stat().st_mode & 0o777) == "0o600"
        with contextlib.closing(sqlite3.connect(agent_home / "outbox.sqlite")) as db:
            rows = db.execute(
                "select kind, (select state from states s where s.message_id = m.id "
                "order by s.id desc limit 1) from messages m"
            ).fetchall()
        assert ("enrol", "accepted") in rows
        accepted += sum(1 for kind, state in rows if (kind, state) == ("submission", "accepted"))
    assert accepted == s["submissions"]["accepted"]
    kids = {(a / "keys" / "active").read_text().strip() for a in agents}
    assert len(kids) == PRACTICES  # one key per practice, no sharing


def test_demo_summary_agrees_with_the_aggregators_database(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    home, s, _ = demo
    with contextlib.closing(sqlite3.connect(home / "aggregator" / "aggregator.db")) as db:
        practices = db.execute("select count(*) from practices").fetchone()[0]
        active = db.execute(
            "select count(distinct practice_ods) from practice_keys where status = 'active'"
        ).fetchone()[0]
        submissions = db.execute("select count(*) from submissions").fetchone()[0]
        leaves = db.execute("select count(*) from log_leaves").fetchone()[0]
    assert practices == active == PRACTICES
    assert submissions == s["submissions"]["accepted"]
    assert leaves == s["log"]["size"] == PRACTICES + submissions


def test_demo_counts_every_indicator_on_real_coding(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    """The demo's practices are coded with the national clusters: on the demo's last period,
    every default indicator (AF anticoagulation with its computed CHA2DS2-VASc included) counts
    patients in the practices' own exact totals, and the network holds a cell for every
    indicator of every submission (small practices' totals may be suppressed on the way)."""
    import datetime as dt

    from agent.engine import compute_cells
    from agent.library import load_default_catalogue
    from agent.sources.store import open_practice

    home, _, _ = demo
    catalogue = load_default_catalogue()
    period_end = dt.date.fromisoformat(json.loads((home / "demo.json").read_text())["period_end"])
    numerators = dict.fromkeys((i.id for i in catalogue.indicators), 0)
    for path in sorted((home / "practices").glob("*.sqlite")):
        engine = open_practice(path, read_only=True)
        try:
            for cell in compute_cells(engine, catalogue, period_end):
                if (cell.age_band, cell.sex) == ("all", "all"):
                    numerators[cell.indicator] += cell.numerator
        finally:
            engine.dispose()
    assert all(n > 0 for n in numerators.values()), numerators
    with contextlib.closing(sqlite3.connect(home / "aggregator" / "aggregator.db")) as db:
        per_submission = db.execute(
            "select count(distinct indicator), count(*) from cells group by submission_id"
        ).fetchall()
    n = len(catalogue.indicators)
    assert per_submission and all(row == (n, n) for row in per_submission)


def _documented_home() -> dict[str, set[str]]:
    """docs/demo.md's "The demo home" listing: each top-level entry, with the entries it names
    inside it (``aggregator/aggregator.toml`` names ``aggregator``'s ``aggregator.toml``)."""
    text = (REPO / "docs" / "demo.md").read_text(encoding="utf-8")
    block = text.split("## The demo home", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    for line in block.splitlines():
        if not line.startswith("  ") or line.startswith("   "):
            continue  # the root line, and a description's second line
        top, _, rest = line.split()[0].partition("/")
        listed.setdefault(top, set()).update({rest.strip("/")} - {""})
    return listed


def test_the_documented_demo_home_is_what_a_run_makes(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    home, _, _ = demo
    listed = _documented_home()
    assert set(listed) == {p.name for p in home.iterdir()}
    for top, inside in listed.items():
        for name in inside:  # Y90001 is the first practice's ODS code
            assert (home / top / name).exists(), f"{top}/{name}"


def test_demo_stops_its_server_with_once(demo: tuple[Path, dict[str, Any], str]) -> None:
    _, s, _ = demo
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{s['api_url']}/healthz", timeout=2)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_demo_rerun_resumes_serves_and_stops_on_ctrl_c(
    demo: tuple[Path, dict[str, Any], str], stop: signal.Signals
) -> None:
    """Ctrl-C (SIGINT), or closing the terminal (SIGHUP: a new-user run found it left the
    aggregator running), stops the demo and its aggregator, exit 0."""
    home, first, _ = demo
    serving = serve_demo(
        [
            "--practices", str(PRACTICES),
            "--groups", str(GROUPS),
            "--periods", str(PERIODS),
            "--json",
            "--home", str(home),
        ],
        timeout=600,
        poll=0.5,
        stdout=subprocess.PIPE,
        # As from a terminal: Ctrl-C is not ignored (a test run started in the background by a
        # shell inherits SIGINT ignored, and so would the demo, which then could not be stopped).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    proc, lines = serving.proc, serving.output.lines
    try:
        # while it serves: the dashboard and the API answer, with every practice
        base = serving.url
        admin = next(u["token"] for u in first["users"] if u["role"] == "admin")
        assert httpx.get(f"{base}/dashboard/login", timeout=10).status_code == 200
        listed = httpx.get(
            f"{base}/v1/practices", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
        assert listed.status_code == 200 and len(listed.json()) == PRACTICES
        proc.send_signal(stop)  # what Ctrl-C, or a closed terminal, sends
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    serving.output.join(10)
    again = json.loads(proc.stdout.read())  # type: ignore[union-attr]
    assert any("Resuming" in ln for ln in lines)
    # the way back is said plainly
    assert any("stopped; run `fedqi-demo` again to serve this network again" in ln for ln in lines)
    assert again["ok"] is True, again["failures"]
    assert again["mode"] == "resumed"
    assert again["submissions"] == first["submissions"]
    assert again["log"]["size"] == first["log"]["size"]  # nothing resent, nothing new in the log
    assert [u["token"] for u in again["users"]] == [u["token"] for u in first["users"]]
    with pytest.raises(httpx.TransportError):  # the server stopped with it
        httpx.get(f"{base}/healthz", timeout=2)


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["summary", "json"])
def test_a_demo_whose_stdout_is_closed_stops_its_aggregator(
    demo: tuple[Path, dict[str, Any], str], as_json: list[str]
) -> None:
    """`fedqi-demo --once | head`: what reads stdout goes away before the summary is written;
    the demo stops its aggregator, says so in one line and exits 1 (a new-user run found the
    aggregator left running)."""
    home, _, _ = demo
    port = free_port()
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write of the summary fails (EPIPE)
    try:
        proc = subprocess.run(
            [str(DEMO), "--practices", str(PRACTICES), "--groups", str(GROUPS),
             "--periods", str(PERIODS), "--once", "--home", str(home), "--port", str(port),
             *as_json],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=600, cwd=home.parent,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.rstrip().splitlines()[-1] == (
        "stdout was closed before the summary was written; stopping"
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    with pytest.raises(httpx.TransportError):  # the aggregator stopped with it
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_every_dashboard_page_of_the_demo_answers_for_every_role(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    """The demo's own network, served again by `fedqi-aggregator serve`: every page, every
    indicator, every period, as each of the demo's users (tests/benchmarks/dashboard_walk.py)."""
    home, s, _ = demo
    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    from dashboard_walk import Walk, dashboard_get_routes

    from protocol.catalogue import Catalogue

    plan = plan_network(PRACTICES, GROUPS, seed=1)
    first = plan.practices[0]
    every = {p.ods for p in plan.practices}
    readable = {
        "admin": every,
        "network_lead": {p.ods for p in plan.practices if p.group == first.group},
        "practice": {first.ods},
        "ig_officer": {first.ods},
    }
    catalogue = Catalogue.model_validate_json(
        (REPO / "protocol" / "catalogues" / "default.json").read_text()
    )

    def start(port: int) -> tuple[subprocess.Popen[str], str]:
        server = subprocess.Popen(
            [str(DEMO.parent / "fedqi-aggregator"), "serve", "--config", str(home / "aggregator" / "aggregator.toml"),
             "--port", str(port)],
            cwd=home.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        return started(server, f"{base}/readyz", what="the aggregator"), base

    server, base = on_a_free_port(start)
    try:
        for user in s["users"]:
            role = user["role"]
            forbidden = set()
            for ods in sorted(every - readable[role]):
                forbidden |= {f"/dashboard/practices/{ods}{tail}" for tail in ("", "/summary.csv", "/pack")}  # fmt: skip
            if role == "network_lead":
                forbidden.add("/dashboard/ig")
            walk = Walk(base, user["token"], indicators=[i.id for i in catalogue.indicators],
                        readable=sorted(readable[role]), forbidden=forbidden).run()  # fmt: skip
            assert walk.problems == [], role
            assert len(walk.periods) == PERIODS, role
            routes = {r.path for r in dashboard_get_routes()}
            if role == "network_lead":  # no payload audit: no envelope or proof links
                routes -= {"/dashboard/ig/envelopes/{sha256}", "/dashboard/ig/proof/{index}"}
            assert walk.routes_walked == routes, role
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_demo_refuses_other_options_on_an_existing_home(
    demo: tuple[Path, dict[str, Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    home, _, _ = demo
    code = main(
        ["--practices", "4", "--groups", "2", "--periods", "2", "--home", str(home), "--once"], {}
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "--practices 3" in err and "--fresh" in err


def test_demo_refuses_a_directory_that_is_not_a_demo_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code = main(["--home", str(tmp_path), "--fresh", "--once"], {})
    assert code != 0
    assert "not a fedqi demo home" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_demo_names_a_home_that_is_a_file_or_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh: list[str]
) -> None:
    """--home naming a file, or a directory under a file, is one line naming it (exit 1), not
    a traceback, and the file is left as it was."""
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for home, says in ((file, "exists and is not a directory"), (file / "h", "cannot be made")):
        code = main(["--home", str(home), "--once", *fresh], {})
        err = capsys.readouterr().err
        assert code == 1 and f"--home {home}: {says}" in err, err
        assert "Traceback" not in err and err.count("\n") == 1, err
    assert file.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--practices", "0"], "--practices"),
        (["--practices", "3", "--groups", "4"], "--groups"),
        (["--periods", "0"], "--periods"),
        (["--port", "70000"], "--port"),
    ],
)
def test_demo_rejects_bad_arguments_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    home = tmp_path / "h"
    assert main([*args, "--home", str(home), "--once"], {}) != 0
    assert named in capsys.readouterr().err
    assert not home.exists()


def test_demo_on_a_port_in_use_says_so_before_making_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    home = tmp_path / "h"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--practices", "1", "--periods", "1", "--home", str(home), "--once",
                     "--port", str(port)], {})  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and f"port {port} on 127.0.0.1 is in use" in err, err
    assert "Creating" not in err and not home.exists()


def test_demo_on_port_0_serves_on_another_free_port_when_its_first_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--port 0: the free port chosen can be taken by another process before the aggregator
    binds it, seconds later. Here the first port chosen is held (listening), and said to be
    free as it was when chosen: serve exits saying so, and the demo serves on the next one."""
    import socket

    import demo.cli

    home = tmp_path / "h"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        chosen = iter([held, free_port()])
        monkeypatch.setattr(demo.cli, "free_port", lambda: next(chosen))
        monkeypatch.setattr(demo.cli, "port_is_free", lambda port: True)
        code = main(["--practices", "1", "--periods", "1", "--home", str(home), "--once",
                     "--json", "--port", "0"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert next(chosen, None) is None  # both ports were chosen
    log = (home / "logs" / "aggregator.log").read_text()
    assert f"cannot listen on 127.0.0.1:{held}: Address already in use" in log, log[-3000:]
    summary = json.loads(out)
    assert summary["ok"] is True, summary["failures"]
    assert summary["api_url"].startswith("http://127.0.0.1:")
    assert summary["api_url"] != f"http://127.0.0.1:{held}"
    assert summary["submissions"]["accepted"] == 1  # the agent sent to the server that answered


def test_the_demo_knows_the_aggregators_exit_code_for_a_port_in_use() -> None:
    from aggregator.errors import ExitCode
    from demo.cli import AGGREGATOR_PORT_IN_USE

    assert AGGREGATOR_PORT_IN_USE == ExitCode.PORT_IN_USE


@pytest.mark.parametrize(
    ("code", "said", "taken"),
    [
        # Windows' words for a port in use: the exit code, not the words, says it
        (4, "cannot listen on 127.0.0.1:8400: Only one usage of each socket address "
            "(protocol/network address/port) is normally permitted", True),
        (1, "database sqlite:///x.db is not migrated (at 0007, needs 0008)", False),
    ],
    ids=["port-in-use-in-windows-words", "not-migrated"],
)  # fmt: skip
def test_the_demo_tries_another_port_by_serves_exit_code_not_its_words(
    tmp_path: Path, code: int, said: str, taken: bool
) -> None:
    """A server that exits while starting: the demo takes another port (PortTakenError) only
    when serve exits with its code for a port in use, whatever language the line is in;
    any other failure is the demo's error, with serve's last line."""
    from demo.cli import DemoError, DemoHome, PortTakenError, Server, Tools

    fake = tmp_path / "fedqi-aggregator"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nprint('error: serve: {said}')\nsys.exit({code})\n"
    )
    fake.chmod(0o755)
    home = DemoHome(tmp_path / "home")
    home.logs.mkdir(parents=True)
    tools = Tools(home, {}, runner="process")
    tools.aggregator_cmd = str(fake)
    with pytest.raises(DemoError) as raised:
        Server(tools, 8400).start(timeout=60)
    assert isinstance(raised.value, PortTakenError) is taken
    assert f"exited ({code}) while starting: error: serve: {said}" in str(raised.value)


def test_one_practice_runs_with_the_default_groups(tmp_path: Path) -> None:
    """--groups defaults to 5, or to --practices when there are fewer practices."""
    home = tmp_path / "demo-home"
    proc = subprocess.run(
        [str(DEMO), "--practices", "1", "--periods", "1", "--once", "--json", "--home", str(home), "--port", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True, summary["failures"]
    assert len(summary["network"]["groups"]) == 1
    assert summary["submissions"]["accepted"] == 1
    assert "1 practice in 1 PCN, 1 month (" in proc.stderr  # counted in words that agree
    # progress names each phase with its count done of all and the time left
    for phase in (
        "practice records",
        "agents enrolled",
        "monthly submissions sent",
        "agents audited",
    ):
        assert re.search(phase + r".*\b1/1\b.*left", proc.stderr), proc.stderr[-2000:]
    # the demo writes the IG pack, naming the catalogue it was made from
    from protocol.catalogue import Catalogue

    shipped = Catalogue.model_validate_json(
        (
            Path(__file__).resolve().parents[2] / "protocol" / "catalogues" / "default.json"
        ).read_text()
    )
    pack = Path(summary["ig_pack"])
    assert pack == home.resolve() / "ig-pack"
    for doc in ("index", "data-items", "data-flow", "dpia", "processing"):
        for ext in ("html", "md"):
            assert shipped.sha256() in (pack / f"{doc}.{ext}").read_text(), f"{doc}.{ext}"
    # resumed with --once, in words: the dashboard's URL is printed with the word that it is
    # not being served (the server stops with the run)
    again = subprocess.run(
        [str(DEMO), "--practices", "1", "--periods", "1", "--once", "--home", str(home), "--port", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Dashboard (not served now, --once: " in again.stdout
    assert "--once: the aggregator stops now, so the dashboard above is not served" in again.stderr


def test_an_explicit_groups_above_practices_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--practices", "1", "--groups", "2", "--home", str(tmp_path / "h"), "--once"], {})
        == 2
    )
    assert "--groups 2: choose 1 to --practices (1)" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--practices", "0", "--practices 0: choose 1 to 500"),
        ("--periods", "99", "--periods 99: choose 1 to 60 months"),
        ("--jobs", "17", "--jobs 17: choose 1 to 16"),
        ("--port", "70000", "--port 70000: choose 1 to 65535"),
        ("--runner", "threads", "--runner 'threads': choose"),
    ],
)
def test_an_option_out_of_range_exits_2_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, says: str
) -> None:
    home = tmp_path / "h"
    assert main([option, value, "--home", str(home), "--once"], {}) == 2
    assert says in capsys.readouterr().err
    assert not home.exists()


def test_plan_is_deterministic_and_varied() -> None:
    plan = plan_network(30, 5, seed=1)
    assert plan == plan_network(30, 5, seed=1)
    assert plan != plan_network(30, 5, seed=2)
    practices = plan.practices
    assert len({p.ods for p in practices}) == 30 and len({p.name for p in practices}) == 30
    assert {p.group for p in practices} == set(plan.groups) and len(plan.groups) == 5
    assert all(MIN_PATIENTS <= p.patients <= MAX_PATIENTS for p in practices)
    assert max(p.patients for p in practices) > 2 * min(p.patients for p in practices)
    assert len({p.imd_decile for p in practices}) >= 5
    assert max(p.quality for p in practices) - min(p.quality for p in practices) > 0.2
    assert len({p.seed for p in practices}) == 30


def test_demo_drives_the_aggregator_only_through_its_cli_and_http() -> None:
    tree = ast.parse((REPO / "demo" / "cli.py").read_text())
    imported = {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "aggregator" not in imported
    assert "sqlite3" not in imported and "sqlalchemy" not in imported
    assert shutil.which("fedqi-aggregator") or (DEMO.parent / "fedqi-aggregator").exists()


def test_every_demo_option_is_documented() -> None:
    import typer.main

    from demo.cli import app

    text = (REPO / "docs" / "demo.md").read_text()
    options = [
        opt
        for param in typer.main.get_command(app).params
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    ]
    assert len(options) >= 10
    missing = [opt for opt in options if f"`{opt}" not in text]
    assert missing == []


def test_an_agent_home_left_without_its_key_is_pointed_at_this_runs_server_first(
    tmp_path: Path,
) -> None:
    """A demo interrupted inside ``fedqi-agent init`` leaves the agent's config without its key;
    resumed on another --port, the config is pointed at the new server before ``init`` makes the
    key (which is then enrolled there), not left on the old port. A home with its key is
    pointed there without ``init``; a new one gets ``init`` with every option."""
    from demo.cli import _init_agent

    agent_home = tmp_path / "agents" / "A81001"
    made = subprocess.run(
        [str(Path(sys.executable).parent / "fedqi-agent"), "init", "--practice", "A81001",
         "--aud", "fedqi-demo", "--aggregator-url", "http://127.0.0.1:1111",
         "--source-url", str(tmp_path / "records"), "--home", str(agent_home), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    shutil.rmtree(agent_home / "keys")  # interrupted before the key was written

    class Tools:  # records what the demo would run, and the config as it was then
        calls: list[tuple[str, tuple[str, ...], str]] = []

        def agent(self, ods: str, *args: str) -> None:
            config = agent_home / "agent.toml"
            self.calls.append((ods, args, config.read_text() if config.exists() else ""))

    tools = Tools()
    new = "http://127.0.0.1:2222"
    assert _init_agent(tools, "A81001", agent_home, new, tmp_path / "records") is True
    ((ods, args, config),) = tools.calls
    assert (ods, args) == ("A81001", ("init",))
    assert f'aggregator_url = "{new}"' in config and "1111" not in config

    (agent_home / "keys").mkdir()
    (agent_home / "keys" / "active").write_text("kid")
    assert _init_agent(tools, "A81001", agent_home, "http://127.0.0.1:3333", tmp_path) is False
    assert len(tools.calls) == 1
    assert 'aggregator_url = "http://127.0.0.1:3333"' in (agent_home / "agent.toml").read_text()

    fresh = tmp_path / "agents" / "A81002"
    assert _init_agent(tools, "A81002", fresh, new, tmp_path / "records") is True
    assert tools.calls[-1][1] == ("init", "--practice", "A81002", "--aud", "fedqi-demo",
                                  "--aggregator-url", new, "--source-url",
                                  str(tmp_path / "records"))  # fmt: skip


@pytest.mark.parametrize(("groups", "says"), [(1, "in 1 PCN;"), (3, "in 3 PCNs;")])
def test_the_summary_counts_pcns_in_words(groups: int, says: str) -> None:
    """A network of one PCN read "1 PCNs" (a new-user run, ``--practices 1``)."""
    from io import StringIO

    from rich.console import Console

    from demo.cli import print_summary

    summary = {
        "ok": True,
        "seconds_to_dashboard": 60.0,
        "practices": {"enrolled": 2, "planned": 2},
        "network": {"groups": [f"PCN {i}" for i in range(groups)]},
        "submissions": {"accepted": 24, "rejected": 0},
        "log": {"size": 26, "checkpoint_verified": True},
        "audit": {"verified": 2},
        "cpu_seconds": {"commands": 10.0, "server": None},
        "commands_run": 8,
        "failures": [],
        "url": "http://127.0.0.1:1/dashboard",
        "ig_pack": "/tmp/pack",
        "users": [],
        "api_url": "http://127.0.0.1:1",
    }
    out = StringIO()
    print_summary(summary, Console(file=out, width=400))
    assert "2/2 practices enrolled " + says in out.getvalue(), out.getvalue()
    assert "\nDashboard: http://127.0.0.1:1/dashboard" in out.getvalue()
    # --once: the address is given as one served only by a run without it (a new-user run)
    out = StringIO()
    print_summary(summary, Console(file=out, width=400), served=False)
    assert "Dashboard (not served now, --once: `fedqi-demo` without it serves it here): " in (
        out.getvalue()
    )


def test_demo_logs_holding_tokens_are_readable_by_their_owner_only(
    demo: tuple[Path, dict[str, Any], str],
) -> None:
    """logs/aggregator-admin.log records `user add --json`, every role's API token in clear,
    as demo.json holds them: both are 0600 (the log was 0644)."""
    home, s, _ = demo
    assert oct((home / "demo.json").stat().st_mode & 0o777) == "0o600"
    admin_log = home / "logs" / "aggregator-admin.log"
    assert any(u["token"] in admin_log.read_text() for u in s["users"] if u.get("token"))
    for log in (home / "logs").glob("*.log"):
        assert oct(log.stat().st_mode & 0o777) == "0o600", log


def test_a_demo_log_left_readable_by_others_is_made_0600(tmp_path: Path) -> None:
    from demo.cli import DemoHome

    home = DemoHome(tmp_path)
    home.logs.mkdir(parents=True)
    old = home.log("aggregator-admin")
    old.write_text("from an earlier run\n")
    old.chmod(0o644)
    with home.open_log("aggregator-admin") as fh:
        fh.write("token\n")
    assert oct(old.stat().st_mode & 0o777) == "0o600"
    assert old.read_text() == "from an earlier run\ntoken\n"
    with home.open_log("aggregator", "ab") as fh:
        fh.write(b"$ serve\n")
    assert oct(home.log("aggregator").stat().st_mode & 0o777) == "0o600"


def test_a_logged_command_can_be_copied_and_run_as_it_is(tmp_path: Path) -> None:
    """A practice's log shows each command it ran on a `$ ` line; with a path holding a space,
    a quote and a `$`, that line run by a shell does the same command (the words were joined
    with spaces, unquoted: a shell split the path and stopped at the quote)."""
    from demo.cli import DemoHome, Tools

    home = DemoHome(tmp_path / "demo home")
    home.logs.mkdir(parents=True)
    out = tmp_path / "it's a $HOME test" / "practice.sqlite"
    out.parent.mkdir()
    tools = Tools(home, os.environ, runner="process")
    try:
        cmd = [tools.agent_cmd, "synth", "--patients", "20", "--seed", "3", "--out", str(out)]
        tools._run(cmd, "Y90001", what="practice Y90001")
    finally:
        tools.close()
    logged = [ln[2:] for ln in home.log("Y90001").read_text().splitlines() if ln[:2] == "$ "]
    assert len(logged) == 1, logged
    first = out.read_bytes()
    out.unlink()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["sh", "-c", logged[0]], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (logged[0], proc.stderr)
    assert out.read_bytes() == first  # the same practice, written where the first one was


def test_a_logged_command_shows_the_environment_the_demo_set_for_it(tmp_path: Path) -> None:
    """`fedqi-agent run` is run with FEDQI_AGENT_FIRST_PERIOD set, but its log line showed only
    the command, so a copied line sent only the last month: the variables the demo sets for a
    command are its prefix, shell-quoted; the caller's environment is not shown, and a variable
    named as a secret is shown without its value."""
    from demo.cli import DemoHome, Tools, _show

    home = DemoHome(tmp_path / "home")
    home.logs.mkdir(parents=True)
    out = tmp_path / "first period.txt"
    tools = Tools(home, {**os.environ, "FEDQI_DEMO_CALLER": "not-mine"}, runner="process")
    write = "import os, sys; open(sys.argv[1], 'w').write(os.environ['FEDQI_AGENT_FIRST_PERIOD'])"
    try:
        tools._run([sys.executable, "-c", write, str(out)], "Y90001", what="practice Y90001",
                   env={"FEDQI_AGENT_FIRST_PERIOD": "2025-12"})  # fmt: skip
    finally:
        tools.close()
    logged = [ln[2:] for ln in home.log("Y90001").read_text().splitlines() if ln[:2] == "$ "]
    assert len(logged) == 1 and logged[0].startswith("FEDQI_AGENT_FIRST_PERIOD=2025-12 "), logged
    assert "FEDQI_DEMO_CALLER" not in logged[0]
    out.unlink()
    env = {k: v for k, v in os.environ.items() if k != "FEDQI_AGENT_FIRST_PERIOD"}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    proc = subprocess.run(["sh", "-c", logged[0]], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (logged[0], proc.stderr)
    assert out.read_text() == "2025-12"  # the copied line runs with the month the demo set
    shown = _show(["/x/fedqi-agent", "run"], {"A": "it's $x", "FEDQI_API_TOKEN": "s3cret"})
    assert shown == "A='it'\"'\"'s $x' FEDQI_API_TOKEN=<not shown> fedqi-agent run", shown
