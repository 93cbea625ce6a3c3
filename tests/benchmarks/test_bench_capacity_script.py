"""bench/capacity.py (the national capacity plan in docs/operations.md) runs end to end at a
tiny scale on a real PostgreSQL server: the rows it reports are exactly what was sent, the
database grows month by month, every month's groups are refreshed and a funnel is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench/capacity.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=os.environ.copy(),
    )  # fmt: skip


@pytest.mark.postgres
def test_capacity_counts_what_was_stored(pg_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # (the fixture only skips where no server answers; the script makes and drops its own)
    out = tmp_path / "capacity.json"
    proc = _run("--practices", "4", "--months", "2", "--reads", "1", "--workers", "1",
                "--threads", "2", "--corrections", "2", "--upgrade", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    months = result["months"]
    assert [m["month"] for m in months] == [1, 2]
    for i, m in enumerate(months, start=1):
        tables = m["tables"]
        assert m["submissions"] == 4
        assert tables["submissions"]["rows"] == 4 * i
        assert tables["cells"]["rows"] == 4 * i * 40  # one row per indicator
        assert tables["log_leaves"]["rows"] == 4 + 4 * i  # the enrolments, then the submissions
        assert m["refresh_groups"] == 40  # the month's 40 indicators, nothing older
        assert m["funnel_read_s"] > 0
    assert months[1]["database_bytes"] > months[0]["database_bytes"]
    assert "growth per month" in proc.stdout
    # --upgrade: verdicts cleared, then two full refreshes of every stored group
    assert [r["groups"] for r in result["upgrade_refreshes"]] == [80, 80]
    assert "upgraded network, verdicts cleared: refresh 2 of 80 groups" in proc.stdout
    # each correction was shown by the next read, which recomputed only the group it shows
    assert len(result["fresh_read_s"]) == 2 and result["fresh_read_groups"] == [1, 1]


@pytest.mark.postgres
def test_a_backlog_is_drained_newest_month_first(pg_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "capacity.json"
    proc = _run("--practices", "3", "--months", "3", "--reads", "1", "--workers", "1",
                "--threads", "2", "--corrections", "1", "--backlog", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [m["refresh_groups"] for m in result["months"]] == [0, 0, 0]  # nothing until the end
    backlog = result["backlog"]
    assert backlog["groups"] == 3 * 40
    # the newest month's 40 groups came first, fresh after about a third of the drain (taken
    # oldest first, they were fresh only at its end)
    assert 0 < backlog["newest_fresh_s"] < 0.7 * backlog["all_fresh_s"]
    assert "backlog of 3 month(s), 120 groups: the newest month fresh after" in proc.stdout
    assert len(result["fresh_read_s"]) == 1 and result["fresh_read_groups"] == [1]


@pytest.mark.postgres
def test_a_backlog_drained_by_several_processes(pg_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "capacity.json"
    proc = _run("--practices", "3", "--months", "2", "--reads", "1", "--workers", "1",
                "--threads", "2", "--corrections", "0", "--backlog", "--drainers", "1,2",
                "--rounds", "1", "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    drains = json.loads(out.read_text())["drains"]
    assert [(d["round"], d["drainers"]) for d in drains] == [(1, 1), (1, 2)]
    for d in drains:  # every group once, however many processes shared the queue
        assert d["groups"] == 2 * 40
        assert 0 < d["newest_fresh_s"] <= d["all_fresh_s"] and d["cpu_s"] > 0
    assert "round 1, 2 drainer(s): 80 groups; the newest month fresh after" in proc.stdout


@pytest.mark.postgres
def test_a_kept_database_drained_by_refresh_drain(pg_database_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """capacity.py --keep leaves its database and keys; bench/refresh_drain.py drains that
    database's groups with one process, then two, each recomputing every group once; and
    bench/read_compute.py times a group's funnel read for each kind of viewer, on the same
    database (and names an indicator it does not hold)."""
    import re
    import shutil

    import psycopg

    proc = _run("--practices", "3", "--months", "1", "--reads", "1", "--workers", "1",
                "--threads", "2", "--corrections", "0", "--keep")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = re.search(r"kept: (\S+) \(keys and settings in (\S+)\)", proc.stdout)
    assert kept is not None, proc.stdout
    url, tmp = kept.group(1), Path(kept.group(2))
    try:
        (key_dir,) = tmp.glob("keys-*")
        drain = subprocess.run(
            [sys.executable, str(REPO / "bench/refresh_drain.py"), "--db", url, "--key-dir",
             str(key_dir), "--drainers", "1,2", "--rounds", "1"],
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip
        assert drain.returncode == 0, drain.stderr[-3000:]
        assert "round 1, 1 drainer(s): 40 groups" in drain.stdout
        assert "round 1, 2 drainer(s): 40 groups" in drain.stdout
        # bench/read_compute.py times one group's funnel read, computed at read, per viewer
        read = subprocess.run(
            [sys.executable, str(REPO / "bench/read_compute.py"), "--db", url, "--runs", "2"],
            capture_output=True, text=True, timeout=600, cwd=REPO,
        )  # fmt: skip
        assert read.returncode == 0, read.stderr[-3000:]
        assert re.search(r"group \S+ \S+: 3 practices, 2 runs each", read.stdout), read.stdout
        for viewer in ("admin, first", "admin, again", "network lead, first", "network lead, again",
                       "practice, first", "practice, again"):  # fmt: skip
            assert re.search(rf"{viewer}: wall median [\d.]+ ms, this process's CPU median "
                             r"[\d.]+ ms, [\d,]+ bytes", read.stdout), read.stdout  # fmt: skip
        assert "a full national refresh writes 960 such values" in read.stdout
        nope = subprocess.run(
            [sys.executable, str(REPO / "bench/read_compute.py"), "--db", url, "--indicator", "NOPE"],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert nope.returncode == 2 and "no indicator NOPE stored" in nope.stderr, nope.stderr
    finally:
        admin = os.environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


def test_read_compute_refuses_no_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/read_compute.py"), "--db", "sqlite:///x.db", "--runs", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "--runs 0: use 1 or more" in proc.stderr


def test_refresh_drain_names_a_bad_key_dir(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/refresh_drain.py"), "--db", "sqlite:///x.db",
         "--key-dir", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "--key-dir" in proc.stderr and "not a directory" in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--months", "0"], "--months 0: use 1 to 24"),
        (["--practices", "0"], "--practices 0: use 1 or more"),
        (["--drainers", "1,2"], "--drainers: only with --backlog"),
        (["--backlog", "--drainers", "0"], "--drainers '0': use counts of 1 or more"),
        (["--backlog", "--drainers", "x"], "--drainers 'x': use counts of 1 or more"),
        (["--admin-url", "postgresql://postgres@127.0.0.1:1/test"], "no PostgreSQL server answers"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: list[str], says: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert says in proc.stderr
