"""``fedqi-agent synth``: the summary it prints, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main


def test_synth_json_summary_matches_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "practice.db"
    code = main(
        [
            "synth",
            "--patients",
            "120",
            "--seed",
            "8",
            "--out",
            str(out),
            "--json",
            "--quality",
            "0.7",
            "--period-end",
            "2025-03-31",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["patients"] == 120 and summary["quality"] == 0.7
    assert summary["period_end"] == "2025-03-31" and summary["seconds"] >= 0
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == 120
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == summary["events"]
        assert (
            conn.execute("SELECT COUNT(*) FROM medications").fetchone()[0] == summary["medications"]
        )
        assert conn.execute("SELECT MAX(date) FROM events").fetchone()[0] <= "2025-03-31"
    assert summary["bytes"] == out.stat().st_size


def test_synth_plain_output_names_what_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.duckdb"
    assert main(["synth", "--patients", "40", "--seed", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (duckdb" in text and "40 patients" in text and "events" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patients", "-5", "--seed", "1"], "--patients must be from 1 to 1,000,000"),
        (["--patients", "5", "--seed", "-2"], "--seed must be 0 or more"),
        (["--patients", "5", "--seed", "1", "--quality", "2"], "--quality must be between 0 and 1"),
        (["--patients", "5", "--seed", "1", "--period-end", "2025-02-30"], "not a date"),
    ],
)
def test_synth_rejects_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "x.db"
    assert main(["synth", *args, "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_synth_refuses_an_existing_file_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.db"
    out.write_text("keep me")
    assert main(["synth", "--patients", "5", "--seed", "1", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} already exists; use --force to replace it"
    assert out.read_text() == "keep me"
    assert main(["synth", "--patients", "5", "--seed", "1", "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing-dir/x.db", "does not exist"),
        ("afile/x.db", "does not exist"),
        ("x.csv", "not a synthetic practice target; name a .db/.sqlite/.sqlite3 (SQLite) or "),
        ("a.txt", ".ddb/.duckdb (DuckDB) file, or give a SQLAlchemy URL"),
        ("mysql://h/x", "--out mysql://h/x: not a synthetic practice target"),
        ("", "is a directory"),
    ],
)
def test_synth_rejects_unwritable_or_unknown_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    (tmp_path / "afile").write_text("not a directory")
    path = str(tmp_path / target) if target else str(tmp_path / "dir.db")
    if "://" in target:
        path = target
    if not target:
        (tmp_path / "dir.db").mkdir()
    # A bad --out is a bad argument (exit 2), not a database that cannot be read (4).
    assert main(["synth", "--patients", "5", "--seed", "1", "--out", path]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_synth_console_script_exits_non_zero(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: one line on stderr, exit status 2."""
    script = Path(sys.executable).parent / "fedqi-agent"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    proc = subprocess.run(
        [str(script), "synth", "--patients", "0", "--seed", "1", "--out", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: --patients must be from 1 to 1,000,000 (got 0); the largest practices have about 100,000"
    )
