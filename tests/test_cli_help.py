"""Every command's ``--help`` of the three command lines reads as a user needs it: a flag shows
no value placeholder (``--local <bool>`` reads as if it took a value), and an option that takes
a value names its kind. Walks the whole command tree, so a new command, or a Typer release that
renders flags otherwise (0.29 printed ``<bool>`` beside every flag), is caught here."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner


def _apps() -> dict[str, typer.Typer]:
    from agent.cli import COMMAND_MODULES
    from agent.cli import app as agent_app
    from aggregator.cli import app as aggregator_app
    from demo.cli import app as demo_app

    for module in COMMAND_MODULES:  # the agent's commands register when their module loads
        importlib.import_module(module)
    return {"fedqi-agent": agent_app, "fedqi-aggregator": aggregator_app, "fedqi-demo": demo_app}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, command) below ``command`` (a Click command as Typer builds it)."""
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


def _tree(prog: str) -> dict[tuple[str, ...], Any]:
    return dict(_commands(typer.main.get_command(_apps()[prog])))


KIND = re.compile(r"\s+(<[^>]+>|[A-Z][A-Z_]+)(\s|$)")

HELPS = [(prog, path) for prog in ("fedqi-agent", "fedqi-aggregator", "fedqi-demo")
         for path in _tree(prog)]  # fmt: skip


def test_the_walk_finds_the_commands() -> None:
    paths = {" ".join((prog, *path)) for prog, path in HELPS}
    assert {"fedqi-agent preview", "fedqi-agent trust", "fedqi-aggregator log verify",
            "fedqi-aggregator serve"} <= paths  # fmt: skip
    assert len(HELPS) > 40


@pytest.mark.parametrize(("prog", "path"), HELPS, ids=[" ".join((p, *c)) for p, c in HELPS])
def test_help_shows_no_value_for_a_flag(prog: str, path: tuple[str, ...]) -> None:
    command = _tree(prog)[path]
    result = CliRunner().invoke(
        _apps()[prog], [*path, "--help"], prog_name=prog, env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    usage = next(ln for ln in result.output.splitlines() if "Usage:" in ln)
    # Typer shows an argument as {NAME}: each is given an upper-case metavar, not its Python name.
    for shown in re.findall(r"\{([^}]*)\}", usage):
        assert shown.isupper(), f"{prog} {' '.join(path)}: argument {{{shown}}} in {usage.strip()}"
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    for option in options:
        name = max(option.opts, key=len)
        (line,) = [
            ln
            for ln in result.output.splitlines()
            if ln.startswith("│") and ln.lstrip("│ *").startswith(f"{name} ")
        ]
        # What follows the name: the kind of value (<str>, TEXT or the option's own metavar),
        # then the help text.
        kind = KIND.match(line.split(name, 1)[1])
        where = f"{prog} {' '.join(path)} {name}: {line.strip()}"
        if option.is_flag:
            assert kind is None and "<bool>" not in line, where
        else:
            assert kind is not None, where
        assert option.help, f"{prog} {' '.join(path)} {name}: no help text"


def test_every_command_help_is_one_paragraph() -> None:
    """Typer prints a command's help in its group's command list with the help's line breaks
    as they are, so a docstring wrapped in the source broke mid-sentence there (`fedqi-aggregator
    user --help`): each command's help reaches Typer as one paragraph. (A program's own
    description, at the top of its --help, is wrapped afresh.)"""
    broken = [
        " ".join((prog, *path))
        for prog, path in HELPS
        if path and "\n" in (getattr(_tree(prog)[path], "help", None) or "")
    ]
    assert broken == []


@pytest.mark.parametrize(("prog", "path"), HELPS, ids=[" ".join((p, *c)) for p, c in HELPS])
def test_help_cuts_nothing_off_at_80_columns(prog: str, path: tuple[str, ...]) -> None:
    """A terminal is often 80 columns wide: a word longer than its column (a list of values
    joined with | and no space) was cut off with an ellipsis."""
    result = CliRunner().invoke(
        _apps()[prog], [*path, "--help"], prog_name=prog, env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output


def test_the_options_every_command_takes_are_as_the_docs_say() -> None:
    """docs/configuration.md: every agent command but `version` and `synth` takes --home;
    docs/aggregator.md: every aggregator command but `version` takes --db and --config (a
    new-user run found `synth` without the --home the docs promised)."""

    def leaves(prog: str) -> dict[str, set[str]]:
        return {
            " ".join(path): {o for p in cmd.params for o in p.opts}
            for path, cmd in _tree(prog).items()
            if path and not hasattr(cmd, "list_commands")
        }

    agent = leaves("fedqi-agent")
    assert {c for c, opts in agent.items() if "--home" not in opts} == {"version", "synth"}
    aggregator = leaves("fedqi-aggregator")
    assert {c for c, o in aggregator.items() if not {"--db", "--config"} <= o} == {"version"}


@pytest.mark.parametrize(
    ("prog", "args", "says"),
    [
        ("agent", ["audit", "show", "abc"], "error: Invalid value for 'ID': 'abc' is not a valid int. (see 'fedqi-agent audit show --help')"),
        ("agent", ["nope"], "error: No such command 'nope'. (see 'fedqi-agent --help')"),
        ("agent", ["run", "--keep-trying", "0"], "error: Invalid value for '--keep-trying': 0 is not in the range x>=1."),
        ("aggregator", ["db", "upgrade", "--bogus"], "error: No such option: --bogus (see 'fedqi-aggregator db upgrade --help')"),
        ("aggregator", ["key", "revoke", "--compromised-since", "2026-11-02"], "error: Missing argument 'KID'. (see 'fedqi-aggregator key revoke --help')"),
        ("demo", ["--practices", "abc"], "error: Invalid value for '--practices': 'abc' is not a valid int."),
        # An option without its value: Click gives no context, the arguments name the command.
        ("agent", ["submit", "--period"], "error: Option '--period' requires an argument. (see 'fedqi-agent submit --help')"),
        ("aggregator", ["user", "revoke", "--db"], "error: Option '--db' requires an argument. (see 'fedqi-aggregator user revoke --help')"),
        ("demo", ["--port"], "error: Option '--port' requires an argument. (see 'fedqi-demo --help')"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_exit_2(
    prog: str, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option or argument is one line on stderr naming it and where the help is, exit 2,
    as every other error is one line (a new-user run found Click's four-line boxed panel)."""
    from agent.cli import main as agent_main
    from aggregator.cli import main as aggregator_main
    from demo.cli import main as demo_main

    main = {"agent": agent_main, "aggregator": aggregator_main, "demo": demo_main}[prog]
    capsys.readouterr()
    assert main(args, {}) == 2
    err = capsys.readouterr().err
    assert err.startswith(says) and err.count("\n") == 1, err


def test_help_and_a_group_without_its_command_still_show_the_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.cli import main as agent_main

    capsys.readouterr()
    assert agent_main(["preview", "--help"], {}) == 0
    assert "Usage: fedqi-agent preview" in capsys.readouterr().out
    assert agent_main(["audit"], {}) == 2  # no command: the group's help, as Click gives it
    shown = capsys.readouterr()
    assert "Usage: fedqi-agent audit" in shown.out + shown.err
