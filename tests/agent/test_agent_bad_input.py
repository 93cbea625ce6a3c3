"""Bad input to the agent, through the real command line: one line on stderr naming what is
wrong and where, the exit code of the table (docs/configuration.md, "Exit codes"), no
traceback, and never a patient-level value (a found fuzzing run's cases)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Result = Any  # tests/agent/conftest.py's: code, out, err


def one_line(r: Result, code: int, *names: str, secrets: tuple[str, ...] = ()) -> str:
    """The single stderr line of a refusal, exiting ``code``, naming each of ``names`` and
    none of ``secrets``."""
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    for name in names:
        assert name in lines[0], (name, lines[0])
    for secret in secrets:
        assert secret not in lines[0], (secret, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "show", "--", "99999999999999999999999"],
        ["audit", "show", "--", "9223372036854775808"],
        ["reject", "--", "9223372036854775808"],
        ["reject", "--", "-9223372036854775809"],
    ],
)
def test_a_message_id_sqlite_cannot_hold_is_no_message(
    cli: Callable[..., Result], agent_home: Path, argv: list[str]
) -> None:
    r = cli(*argv[:-2], "--home", str(agent_home), *argv[-2:])
    one_line(r, 2, f"no message #{argv[-1]}")


@pytest.mark.parametrize("period", ["0000-01", "0001-01", "0041-12", "0042-01", "1899-12"])
@pytest.mark.parametrize(
    "command", [["preview"], ["worklist", "HYP_BP_U80"], ["explain", "HYP_BP_U80"], ["submit"]]
)
def test_a_period_before_1900_is_a_bad_argument(
    cli: Callable[..., Result], agent_home: Path, command: list[str], period: str
) -> None:
    r = cli(*command, "--home", str(agent_home), "--period", period)
    one_line(r, 2, f"bad period {period!r}", "before 1900")


def test_a_first_period_before_1900_is_a_bad_setting(
    cli: Callable[..., Result], agent_home: Path
) -> None:
    r = cli(
        "preview",
        "--home",
        str(agent_home),
        "--period",
        "2026-03",
        env={"FEDQI_AGENT_FIRST_PERIOD": "0001-01"},
    )
    one_line(r, 3, "first_period", "FEDQI_AGENT_FIRST_PERIOD", "before 1900")
