"""docs/configuration.md documents every agent setting and every fedqi-agent command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from agent.cli import _load_commands, app
from agent.home.settings import known_env_names, setting_keys

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _commands() -> list[str]:
    _load_commands()
    names: list[str] = []

    def walk(group: object, prefix: str) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            full = f"{prefix}{name}"
            if getattr(sub, "commands", None):
                walk(sub, f"{full} ")
            else:
                names.append(full)

    walk(typer.main.get_command(app), "")
    return sorted(names)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


@pytest.mark.parametrize("key", setting_keys())
def test_every_setting_is_documented(doc: str, key: str) -> None:
    assert re.search(rf"^\| `{re.escape(key)}` \|", doc, re.M), f"{key} is not in {DOC}"


@pytest.mark.parametrize("name", sorted(known_env_names()))
def test_every_environment_variable_is_documented(doc: str, name: str) -> None:
    assert f"`{name}`" in doc


@pytest.mark.parametrize("command", _commands())
def test_every_command_is_documented(doc: str, command: str) -> None:
    assert f"`fedqi-agent {command}" in doc, f"fedqi-agent {command} is not in {DOC}"


def test_the_command_list_is_not_empty() -> None:
    assert {"init", "submit", "audit verify", "worklist"} <= set(_commands())
