"""docs/operations.md, followed step by step: every block marked ``<!-- ops-test -->`` runs in
order, in one shell, against a real aggregator (uvicorn on loopback, PostgreSQL) and the real
agent CLI. A step that fails (non-zero exit) fails the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ports import on_a_free_port, started

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operations.md"
BIN = Path(sys.executable).parent


def guide_blocks() -> list[str]:
    text = GUIDE.read_text()
    return re.findall(r"<!-- ops-test -->\n```sh\n(.*?)```", text, re.S)


def test_the_guide_has_runnable_steps() -> None:
    blocks = guide_blocks()
    assert len(blocks) >= 8
    joined = "\n".join(blocks)
    for step in (
        "init",
        "enrol",
        "rotate-key",
        "key revoke",
        "pg_restore",
        "log verify",
        "audit verify",
    ):
        assert step in joined, step


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_operations_guide_step_by_step(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    blocks = guide_blocks()
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEDQI_")},
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FEDQI_AGGREGATOR_DB": pg_database_factory(),
        "FEDQI_AGGREGATOR_KEY_DIR": str(tmp_path / "aggregator-keys"),
        "FEDQI_AGENT_HOME": str(tmp_path / "agent-home"),
        "PRACTICE_DB": str(tmp_path / "practice.duckdb"),
        "RESTORE_DB": pg_database_factory(),
    }
    synth = subprocess.run(
        [
            str(BIN / "fedqi-agent"),
            "synth",
            "--patients",
            "400",
            "--seed",
            "3",
            "--out",
            env["PRACTICE_DB"],
            # records up to the last month the guide submits, so none of them is stale
            "--period-end",
            "2026-10-31",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert synth.returncode == 0, synth.stderr

    def run(script: str) -> None:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"step failed:\n{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )

    # Section 2 sets up the network; then the service is started, as the guide says (on a free
    # port, which the later steps reach as $AGGREGATOR_URL).
    run(blocks[0])

    def start(port: int) -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [str(BIN / "fedqi-aggregator"), "serve", "--port", str(port)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started(server, f"http://127.0.0.1:{port}/readyz", what="the aggregator")
        env["AGGREGATOR_URL"] = f"http://127.0.0.1:{port}"
        return server

    server = on_a_free_port(start)
    try:
        # The remaining steps run in one shell, so variables (TOKEN, KID) carry between blocks.
        run("\n".join(blocks[1:]))
    finally:
        server.terminate()
        server.wait(timeout=30)
    # the lost-key step kept the old home, and the new one holds the later receipts
    assert (tmp_path / "agent-home.revoked" / "outbox.sqlite").exists()
    assert (tmp_path / "agent-home" / "outbox.sqlite").exists()
    # everything of the agent's, after every step of the guide, is its owner's only, as the key
    home = tmp_path / "agent-home"
    modes = {
        str(path.relative_to(tmp_path)): oct(path.stat().st_mode & 0o777)
        for path in [home, *home.rglob("*"), Path(env["PRACTICE_DB"])]
    }
    loose = {
        p: m for p, m in modes.items() if m != ("0o700" if (tmp_path / p).is_dir() else "0o600")
    }
    assert loose == {}, loose
    assert modes["agent-home/agent.toml"] == "0o600"
    # the administrator's files: the IG officer's token (section 2) and the dump (section 7)
    for name in ("ig-user.json", "fedqi.dump"):
        assert oct((work / name).stat().st_mode & 0o777) == "0o600", name
