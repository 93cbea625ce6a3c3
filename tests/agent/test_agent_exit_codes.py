"""Every ``fedqi-agent`` and ``fedqi-demo`` exit code comes from one table, shown in --help and
in the docs; no command exits with a literal number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.errors import EXIT_CODE_MEANINGS, ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_the_exit_code_table() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("### Exit codes", 1)[1].split("\n\n`audit verify`", 1)[0]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {int(c) for c in ExitCode}


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["--help"], {}) == 0
    out = " ".join(capsys.readouterr().out.split())
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {' '.join(meaning.split())}" in out


def test_demo_help_lists_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from demo.cli import DEMO_EXIT_MEANINGS, main

    assert main(["--help"], {}) == 0
    out = " ".join(capsys.readouterr().out.split())
    for code, meaning in DEMO_EXIT_MEANINGS.items():
        assert f"{int(code)} {' '.join(meaning.split())}" in out
    demo_doc = (REPO / "docs" / "demo.md").read_text()
    assert all(f"{int(code)} " in demo_doc for code in DEMO_EXIT_MEANINGS)


LITERAL_EXIT = re.compile(
    r"exit_code\s*=\s*\d|exit_code=\d|typer\.Exit\(\s*\d|SystemExit\(\s*[1-9]|sys\.exit\(\s*[1-9]"
)


def test_no_literal_exit_codes() -> None:
    offenders = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for package in ("agent", "demo")
        for p in (REPO / package).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if LITERAL_EXIT.search(line)
    ]
    assert offenders == []
