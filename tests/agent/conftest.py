"""Fixtures for the agent's path-out tests: a small synthetic practice and an agent home."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import main
from agent.sources.synth import generate_practice

PRACTICE = "A12345"
AUD = "test-net"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def practice_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-patient synthetic practice (period end 2026-03-31), shared read-only."""
    path = tmp_path_factory.mktemp("practice") / "practice.db"
    generate_practice(path, patients=300, seed=7)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``fedqi-agent`` in-process: ``cli(*argv, env={...})``."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Result:
        capsys.readouterr()
        code = main(list(argv), env or {})
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def agent_home(tmp_path: Path, practice_db: Path, cli: Callable[..., Result]) -> Path:
    """An initialised agent home reading ``practice_db`` (not enrolled)."""
    home = tmp_path / "agent-home"
    r = cli(
        "init",
        "--home",
        str(home),
        "--practice",
        PRACTICE,
        "--aud",
        AUD,
        "--aggregator-url",
        "http://127.0.0.1:9",
        "--source-url",
        str(practice_db),
    )
    assert r.code == 0, r.err
    return home
